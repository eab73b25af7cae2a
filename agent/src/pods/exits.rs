//! Container exits as they happen, so that idle pods cost nothing between kubelet-style resyncs.
//!
//! A container's shim writes its exit record (`exit.json`, through a temporary name and a rename) into
//! the instance's directory when the container ends. One inotify instance for the whole agent watches
//! the directory of every running instance and wakes that pod's worker when the record appears.
//! One instance, not one per container: the kernel allows a user 128 inotify instances by default
//! (`fs.inotify.max_user_instances`) but thousands of watches.

use std::{
    collections::HashMap,
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    sync::{Arc, Mutex},
};

use thiserror::Error;
use tokio::{io::unix::AsyncFd, sync::Notify};
use tracing::warn;

/// The file the shim writes when its container ends (see `berth_runtime::shim::exit_file`).
const EXIT_RECORD: &[u8] = b"exit.json";

/// Why exits cannot be watched.
#[derive(Debug, Error)]
pub enum ExitWatchError {
    /// `inotify_init1` failed (the per-user instance limit, or no inotify in this kernel).
    #[error("inotify: {0}")]
    Init(std::io::Error),
    /// The instance descriptor could not be registered with the async runtime.
    #[error("registering the inotify descriptor: {0}")]
    Register(std::io::Error),
    /// A directory could not be watched (gone, or the per-user watch limit).
    #[error("watching {path}: {source}")]
    Watch { path: String, source: std::io::Error },
}

/// Watch descriptor -> the worker to wake.
type Wakers = Mutex<HashMap<i32, Arc<Notify>>>;

struct Shared {
    fd: AsyncFd<OwnedFd>,
    wakers: Wakers,
}

/// The agent's one inotify instance for exit records.
#[derive(Clone)]
pub struct ExitWatcher {
    shared: Arc<Shared>,
}

/// One watched instance directory; the watch ends when this is dropped.
pub struct ExitWatch {
    wd: i32,
    shared: Arc<Shared>,
}

impl ExitWatcher {
    /// Creates the inotify instance and the task that reads it (within a Tokio runtime).
    pub fn new() -> Result<Self, ExitWatchError> {
        // SAFETY: inotify_init1 with constant flags; the descriptor is owned from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(ExitWatchError::Init(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and nothing else owns it; an OwnedFd returns the same open
        // descriptor until the AsyncFd drops it.
        let fd = unsafe {
            AsyncFd::register_with_interest(OwnedFd::from_raw_fd(fd), tokio::io::Interest::READABLE)
        }
        .map_err(|e| ExitWatchError::Register(std::io::Error::other(e.to_string())))?;
        let shared = Arc::new(Shared {
            fd,
            wakers: Mutex::new(HashMap::new()),
        });
        tokio::spawn(read_events(Arc::clone(&shared)));
        Ok(ExitWatcher { shared })
    }

    /// Wakes `wake` when an exit record appears in `dir`. Watch before reading the instance's state:
    /// a record written in between is then either read or announced.
    pub fn watch(&self, dir: &Path, wake: Arc<Notify>) -> Result<ExitWatch, ExitWatchError> {
        let failed = |source| ExitWatchError::Watch {
            path: dir.display().to_string(),
            source,
        };
        let path = CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| failed(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        // SAFETY: a NUL-terminated path and an inotify descriptor owned by `shared`.
        let wd = unsafe {
            libc::inotify_add_watch(
                self.shared.fd.get_ref().as_raw_fd(),
                path.as_ptr(),
                libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_ONLYDIR,
            )
        };
        if wd < 0 {
            return Err(failed(std::io::Error::last_os_error()));
        }
        if let Ok(mut wakers) = self.shared.wakers.lock() {
            wakers.insert(wd, wake);
        }
        Ok(ExitWatch {
            wd,
            shared: Arc::clone(&self.shared),
        })
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        if let Ok(mut wakers) = self.shared.wakers.lock() {
            wakers.remove(&self.wd);
        }
        // SAFETY: removing a watch of a descriptor owned by `shared`; a watch the kernel already
        // dropped (its directory was deleted) only makes this fail with EINVAL.
        unsafe { libc::inotify_rm_watch(self.shared.fd.get_ref().as_raw_fd(), self.wd) };
    }
}

/// Reads inotify events for as long as any watcher or watch lives.
async fn read_events(shared: Arc<Shared>) {
    // Room for many events at once; each is a 16-byte header and a NUL-padded name.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut ready = match shared.fd.readable().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "exit watcher stopped; exits are found by the periodic pass");
                return;
            }
        };
        // SAFETY: reading into a live buffer of the length given from the non-blocking descriptor.
        let n = unsafe {
            libc::read(
                shared.fd.get_ref().as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                ready.clear_ready();
                continue;
            }
            warn!(error = %e, "exit watcher stopped; exits are found by the periodic pass");
            return;
        }
        let Ok(wakers) = shared.wakers.lock() else {
            return;
        };
        for wd in exit_events(&buf[..n as usize]) {
            if let Some(w) = wakers.get(&wd) {
                w.notify_one();
            }
        }
        if Arc::strong_count(&shared) == 1 {
            return;
        }
    }
}

/// The watch descriptors of the events in `buf` that concern an exit record.
fn exit_events(buf: &[u8]) -> Vec<i32> {
    const HEADER: usize = 16;
    let mut found = Vec::new();
    let mut at = 0;
    while at + HEADER <= buf.len() {
        let field =
            |o: usize| u32::from_ne_bytes([buf[at + o], buf[at + o + 1], buf[at + o + 2], buf[at + o + 3]]);
        let wd = field(0) as i32;
        let len = field(12) as usize;
        let name = buf.get(at + HEADER..at + HEADER + len).unwrap_or_default();
        let name = name.split(|b| *b == 0).next().unwrap_or_default();
        if name == EXIT_RECORD {
            found.push(wd);
        }
        at += HEADER + len;
    }
    found
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(wd: i32, name: &str) -> Vec<u8> {
        let mut padded = name.as_bytes().to_vec();
        padded.resize(name.len().div_ceil(16) * 16 + 16, 0);
        let mut v = Vec::new();
        v.extend_from_slice(&wd.to_ne_bytes());
        v.extend_from_slice(&libc::IN_MOVED_TO.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&(padded.len() as u32).to_ne_bytes());
        v.extend_from_slice(&padded);
        v
    }

    #[test]
    fn only_exit_records_count() {
        let mut buf = event(3, "runc.log");
        buf.extend(event(4, "exit.json"));
        buf.extend(event(5, "exit.tmp"));
        buf.extend_from_slice(&[0u8; 7]); // a truncated trailer is ignored
        assert_eq!(exit_events(&buf), vec![4]);
    }

    #[tokio::test]
    async fn a_renamed_record_wakes_the_worker_and_nothing_else_does() {
        let dir = std::env::temp_dir().join(format!("berth-exits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let watcher = ExitWatcher::new().expect("inotify");
        let wake = Arc::new(Notify::new());
        let watch = watcher.watch(&dir, Arc::clone(&wake)).expect("watch");
        std::fs::write(dir.join("runc.log"), b"x").expect("write");
        let early = tokio::time::timeout(Duration::from_millis(200), wake.notified()).await;
        assert!(
            early.is_err(),
            "a file other than the exit record woke the worker"
        );
        std::fs::write(dir.join("exit.tmp"), b"{}").expect("write");
        std::fs::rename(dir.join("exit.tmp"), dir.join("exit.json")).expect("rename");
        tokio::time::timeout(Duration::from_secs(5), wake.notified())
            .await
            .expect("the exit record did not wake the worker");
        drop(watch);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
