//! A pod's sandbox: the network, IPC and UTS namespaces its containers share, pinned by bind mounts
//! onto files in the pod's directory (as `ip netns add` pins a network namespace, and CRI-O's `pinns`
//! all of them) instead of being held by a pause process. Nothing runs while a pod has no container,
//! an agent restart does not touch them, and the hostname is set once, when the UTS namespace is made.

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
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pinned network namespace (a path `setns` and runc take).
    pub fn net(&self) -> PathBuf {
        self.dir.join("net")
    }

    pub fn ipc(&self) -> PathBuf {
        self.dir.join("ipc")
    }

    pub fn uts(&self) -> PathBuf {
        self.dir.join("uts")
    }

    /// Whether all three namespaces are pinned (a mount is on each file).
    pub fn is_complete(&self) -> bool {
        PINNED.iter().all(|(name, _)| is_nsfs(&self.dir.join(name)))
    }

    /// Makes new namespaces, sets their hostname and pins them in `dir` (created). A sandbox already
    /// complete there is kept as it is.
    pub fn create(dir: &Path, hostname: &str) -> Result<Self, SandboxError> {
        let sandbox = Sandbox::at(dir);
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
            s.spawn(|| pin_in_new_namespaces(dir, hostname))
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

/// Runs on its own thread: unshares, names the host, bind-mounts each namespace onto its file.
fn pin_in_new_namespaces(dir: &Path, hostname: &str) -> Result<(), SandboxError> {
    let flags = PINNED.iter().fold(0, |f, (_, flag)| f | flag);
    // SAFETY: unshare affects only this thread, which exits after pinning.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(sys(dir, "unshare"));
    }
    // SAFETY: pointer and length of a live byte slice.
    if unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } != 0 {
        return Err(sys(dir, "sethostname"));
    }
    for (name, _) in PINNED {
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
