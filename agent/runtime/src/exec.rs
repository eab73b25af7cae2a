//! A process started in a running container for a client that talks to it (`kubectl exec`): `runc
//! exec` in the foreground, with the container's user, environment and working directory, its
//! standard streams either pipes or a terminal.
//!
//! For a terminal the agent opens a pseudo-terminal pair and gives runc the subordinate side as its
//! controlling terminal: runc puts it in raw mode, makes the container's own terminal, copies between
//! the two and, on SIGWINCH, gives the container's terminal our size. A resize from the client is
//! then a `TIOCSWINSZ` on our side ([`resize`]), which the kernel turns into that SIGWINCH.

use std::{
    fs::File,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::Stdio,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use thiserror::Error;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use crate::{container::Instance, runc::Runc};

/// Why a process could not be started in the container.
#[derive(Debug, Error)]
pub enum ExecError {
    /// No pseudo-terminal could be opened.
    #[error("opening a terminal: {0}")]
    Terminal(std::io::Error),
    /// runc could not be started.
    #[error("starting runc exec: {0}")]
    Spawn(std::io::Error),
}

/// The standard streams of the process.
pub enum ExecStreams {
    /// Separate pipes; `stdin` only when the client sends input.
    Pipes {
        stdin: Option<ChildStdin>,
        stdout: ChildStdout,
        stderr: ChildStderr,
    },
    /// One terminal: read what the process prints from `output`, write its input to `input` (both
    /// the same terminal, opened twice so each direction has its own file).
    Terminal {
        input: tokio::fs::File,
        output: tokio::fs::File,
        control: File,
    },
}

/// A started process: wait on `child` (runc, which exits with the process's status).
pub struct ExecProcess {
    pub child: Child,
    /// Taken by the caller to copy to and from.
    pub streams: Option<ExecStreams>,
    /// Where runc writes the process's host pid (to end it when the client leaves first).
    pid_file: PathBuf,
}

impl ExecProcess {
    /// Ends the process in the container (SIGKILL), not only runc: a client that left does not leave
    /// its shell running.
    ///
    /// runc stays: it reaps the process and exits (were runc killed first, the process would become
    /// a zombie of the container's init, which reaps nothing). Only when runc has not yet said which
    /// process it started is runc itself killed.
    pub async fn kill(&mut self) {
        let pid = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| *p > 1);
        match pid {
            // SAFETY: kill(2) with a pid runc reported for this process.
            Some(pid) => unsafe {
                libc::kill(pid, libc::SIGKILL);
            },
            None => {
                let _ = self.child.start_kill();
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

static EXEC_SEQ: AtomicU64 = AtomicU64::new(0);

/// Starts `argv` in the instance.
pub fn spawn(
    runc: &Runc,
    instance: &Instance,
    argv: &[String],
    tty: bool,
    stdin: bool,
    size: Option<(u16, u16)>,
) -> Result<ExecProcess, ExecError> {
    let pid_file = instance.dir.join(format!(
        "exec-{}-{}.pid",
        std::process::id(),
        EXEC_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = Command::new(&runc.binary);
    cmd.arg("--root")
        .arg(&runc.root)
        .arg("exec")
        .arg("--pid-file")
        .arg(&pid_file);
    if tty {
        cmd.arg("--tty");
    }
    cmd.arg(&instance.id).args(argv).kill_on_drop(true);
    if !tty {
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(ExecError::Spawn)?;
        let streams = ExecStreams::Pipes {
            stdin: child.stdin.take(),
            stdout: child
                .stdout
                .take()
                .ok_or_else(|| ExecError::Spawn(missing("stdout")))?,
            stderr: child
                .stderr
                .take()
                .ok_or_else(|| ExecError::Spawn(missing("stderr")))?,
        };
        return Ok(ExecProcess {
            child,
            streams: Some(streams),
            pid_file,
        });
    }
    let (ours, theirs) = open_terminal().map_err(ExecError::Terminal)?;
    if let Some((columns, rows)) = size {
        resize(&ours, columns, rows).map_err(ExecError::Terminal)?;
    }
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(ExecError::Terminal);
    cmd.stdin(Stdio::from(dup(&theirs)?))
        .stdout(Stdio::from(dup(&theirs)?))
        .stderr(Stdio::from(dup(&theirs)?));
    // SAFETY: between fork and exec only async-signal-safe calls: setsid and ioctl.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(ExecError::Spawn)?;
    drop(theirs);
    let control = File::from(ours);
    let input = control.try_clone().map_err(ExecError::Terminal)?;
    let output = control.try_clone().map_err(ExecError::Terminal)?;
    Ok(ExecProcess {
        child,
        streams: Some(ExecStreams::Terminal {
            input: tokio::fs::File::from_std(input),
            output: tokio::fs::File::from_std(output),
            control,
        }),
        pid_file,
    })
}

fn missing(what: &str) -> std::io::Error {
    std::io::Error::other(format!("runc exec has no {what}"))
}

/// A pseudo-terminal pair: (ours, the subordinate side for runc).
fn open_terminal() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (mut ours, mut theirs) = (-1, -1);
    let size = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes the two descriptors; no name buffer, no termios, a valid winsize.
    let rc = unsafe {
        libc::openpty(
            &mut ours,
            &mut theirs,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded: both descriptors are open and ours alone.
    let pair = unsafe { (OwnedFd::from_raw_fd(ours), OwnedFd::from_raw_fd(theirs)) };
    for fd in [&pair.0, &pair.1] {
        // SAFETY: a valid descriptor; FD_CLOEXEC keeps them out of other children.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(pair)
}

/// Gives the terminal a new size (the client's window).
pub fn resize(control: &impl AsRawFd, columns: u16, rows: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(control.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_takes_a_size() {
        let (ours, _theirs) = open_terminal().expect("openpty");
        let control = File::from(ours);
        resize(&control, 132, 40).expect("resize");
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize.
        unsafe { libc::ioctl(control.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!((size.ws_col, size.ws_row), (132, 40));
    }
}
