//! Entering a named network namespace (`ip netns` style, `/var/run/netns/NAME`).
//!
//! The agent switches its own network namespace with setns(2) instead of running under
//! `ip netns exec`: that command also remounts /sys, which would hide the host's bpffs at
//! /sys/fs/bpf, and pins must live in the host's bpffs to survive the agent.

use std::{fs::File, os::fd::AsRawFd, path::PathBuf};

use thiserror::Error;

/// Errors of entering a namespace.
#[derive(Debug, Error)]
pub enum NetnsError {
    /// No such named namespace.
    #[error("network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// setns(2) failed (needs CAP_SYS_ADMIN).
    #[error("setns into {path}: {source}")]
    Setns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The file of a network namespace: `name` is an `ip netns` name, or a path (holding a `/`) to a
/// namespace pinned elsewhere (a pod sandbox's).
pub fn path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        PathBuf::from("/var/run/netns").join(name)
    }
}

/// Moves the calling thread into the network namespace `name` (see [`path`]). Call before starting
/// other threads: threads inherit the namespace of the thread that creates them.
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let path = path(name);
    let file = File::open(&path).map_err(|source| NetnsError::Open {
        path: path.clone(),
        source,
    })?;
    // SAFETY: valid descriptor of a network namespace file.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetnsError::Setns {
            path,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Names of the interfaces in the current network namespace (via netlink, so correct after setns).
pub fn interfaces() -> Vec<String> {
    let mut names = Vec::new();
    // SAFETY: if_nameindex returns a heap array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return names;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            names.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    names
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn glob() {
        assert!(matches("veth*", "veth1234"));
        assert!(matches("*-h", "pod1-h"));
        assert!(matches("p*d*h", "pod1-h"));
        assert!(!matches("veth*", "eth0"));
        assert!(matches("eth0", "eth0"));
        assert!(!matches("a*a", "a"));
    }
}
