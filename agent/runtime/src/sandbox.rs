//! A pod's sandbox: the network, IPC and UTS namespaces its containers share, pinned by bind mounts
//! onto files in the pod's directory (as `ip netns add` pins a network namespace, and CRI-O's `pinns`
//! all of them) instead of being held by a pause process. Nothing runs while a pod has no container,
//! an agent restart does not touch them, and the hostname is set once, when the UTS namespace is made.
//! A `hostNetwork` pod's sandbox pins only its IPC namespace: its containers run in the node's network
//! and UTS namespaces, as kubelet's runtimes run them.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Errors of making or removing a sandbox.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// A system call failed.
    #[error("pod sandbox {path}: {call}: {source}")]
    Sys {
        path: PathBuf,
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The pinning thread could not run.
    #[error("pod sandbox {0}: the pinning thread failed")]
    Thread(PathBuf),
}

/// The namespaces a sandbox pins, as file names in its directory.
const PINNED: [(&str, libc::c_int); 3] = [
    ("net", libc::CLONE_NEWNET),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
];

/// A pod's pinned namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    dir: PathBuf,
    host_network: bool,
}

fn sys(path: &Path, call: &'static str) -> SandboxError {
    SandboxError::Sys {
        path: path.to_path_buf(),
        call,
        source: std::io::Error::last_os_error(),
    }
}

fn c_path(path: &Path) -> Result<CString, SandboxError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SandboxError::Sys {
        path: path.to_path_buf(),
        call: "path",
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

impl Sandbox {
    /// The sandbox kept in `dir` (made by [`Sandbox::create`] before, maybe by an earlier agent).
    pub fn at(dir: &Path) -> Self {
        Sandbox {
            dir: dir.to_path_buf(),
            host_network: false,
        }
    }

    /// The namespaces this sandbox pins: all three, or IPC alone for a `hostNetwork` pod.
    fn pinned(&self) -> impl Iterator<Item = &'static (&'static str, libc::c_int)> + '_ {
        PINNED
            .iter()
            .filter(|(_, flag)| !self.host_network || *flag == libc::CLONE_NEWIPC)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pinned network namespace (a path `setns` and runc take); `None` in the node's network.
    pub fn net(&self) -> Option<PathBuf> {
        (!self.host_network).then(|| self.dir.join("net"))
    }

    pub fn ipc(&self) -> PathBuf {
        self.dir.join("ipc")
    }

    /// The pinned UTS namespace; `None` with the node's network (and so its hostname).
    pub fn uts(&self) -> Option<PathBuf> {
        (!self.host_network).then(|| self.dir.join("uts"))
    }

    /// Whether the pod runs in the node's network namespace.
    pub fn host_network(&self) -> bool {
        self.host_network
    }

    /// Whether every namespace of the sandbox is pinned (a mount is on each file).
    pub fn is_complete(&self) -> bool {
        self.pinned().all(|(name, _)| is_nsfs(&self.dir.join(name)))
    }

    /// Makes new namespaces, sets their hostname and pins them in `dir` (created); with
    /// `host_network`, the IPC namespace alone (the hostname stays the node's). A sandbox already
    /// complete there is kept as it is.
    pub fn create(dir: &Path, hostname: &str, host_network: bool) -> Result<Self, SandboxError> {
        let sandbox = Sandbox {
            dir: dir.to_path_buf(),
            host_network,
        };
        if sandbox.is_complete() {
            return Ok(sandbox);
        }
        // Half-made by a crash: start over.
        sandbox.remove()?;
        std::fs::create_dir_all(dir).map_err(|source| SandboxError::Sys {
            path: dir.to_path_buf(),
            call: "mkdir",
            source,
        })?;
        let made = std::thread::scope(|s| {
            // A thread of its own: unshare moves only the calling thread, which then ends.
            s.spawn(|| pin_in_new_namespaces(dir, &sandbox, hostname))
                .join()
                .map_err(|_| SandboxError::Thread(dir.to_path_buf()))?
        });
        if let Err(e) = made {
            let _ = sandbox.remove();
            return Err(e);
        }
        Ok(sandbox)
    }

    /// Unpins the namespaces (they go once no process is in them) and removes the directory.
    pub fn remove(&self) -> Result<(), SandboxError> {
        for (name, _) in PINNED {
            let path = self.dir.join(name);
            if is_nsfs(&path) {
                let c = c_path(&path)?;
                // SAFETY: valid NUL-terminated path.
                if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                    return Err(sys(&path, "umount"));
                }
            }
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SandboxError::Sys {
                path: self.dir.clone(),
                call: "rmdir",
                source,
            }),
        }
    }
}

/// Runs on its own thread: unshares, names the host (in a UTS namespace of its own), bind-mounts each
/// namespace onto its file.
fn pin_in_new_namespaces(dir: &Path, sandbox: &Sandbox, hostname: &str) -> Result<(), SandboxError> {
    let flags = sandbox.pinned().fold(0, |f, (_, flag)| f | flag);
    // SAFETY: unshare affects only this thread, which exits after pinning.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(sys(dir, "unshare"));
    }
    // SAFETY: pointer and length of a live byte slice.
    if flags & libc::CLONE_NEWUTS != 0
        && unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } != 0
    {
        return Err(sys(dir, "sethostname"));
    }
    for (name, _) in sandbox.pinned() {
        let target = dir.join(name);
        std::fs::File::create(&target).map_err(|source| SandboxError::Sys {
            path: target.clone(),
            call: "create",
            source,
        })?;
        let source = c_path(&Path::new("/proc/thread-self/ns").join(name))?;
        let c_target = c_path(&target)?;
        // SAFETY: valid NUL-terminated paths; a bind mount takes no data.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                c_target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(sys(&target, "mount"));
        }
    }
    Ok(())
}

/// Whether `path` is a pinned namespace (nsfs mounted on it).
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = c_path(path) else {
        return false;
    };
    // SAFETY: statfs writes into the struct given.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == NSFS_MAGIC
}
