//! runc, driven through its command line with a root directory per node (`--root`), so each node's
//! agent sees only its own containers. Behind [`OciRuntime`] so that the pod logic above it can be
//! tested against a double.
//!
//! Starting a container is the shim's job ([`crate::shim`]): it runs `runc create` and `runc start`
//! with the container's stdio on pipes it reads, and outlives the agent. What remains here is what the
//! agent asks of runc directly: state, signals, deletion.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use serde::Deserialize;
use thiserror::Error;

/// Errors of a runc call.
#[derive(Debug, Error)]
pub enum RuncError {
    /// runc could not be started.
    #[error("runc {args}: {source}")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    /// runc failed; its message.
    #[error("runc {args}: {message}")]
    Failed { args: String, message: String },
    /// `runc state` printed something unexpected.
    #[error("runc state {id}: {message}")]
    State { id: String, message: String },
}

/// A container's state as runc reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RuncState {
    pub id: String,
    /// `created`, `running`, `paused`, `stopped`.
    pub status: String,
    /// The container's init process on the host (0 when stopped).
    #[serde(default)]
    pub pid: i32,
}

/// What the agent asks of an OCI runtime once a container exists.
pub trait OciRuntime: Send + Sync {
    /// The container's state; `None` if the runtime does not know it.
    fn state(&self, id: &str) -> Result<Option<RuncState>, RuncError>;
    /// Sends `signal` to the container's init (all its processes with `all`).
    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuncError>;
    /// Forgets a stopped container (kills it first with `force`).
    fn delete(&self, id: &str, force: bool) -> Result<(), RuncError>;
    /// Every container the runtime knows.
    fn list(&self) -> Result<Vec<RuncState>, RuncError>;
}

/// runc at `binary`, with its state under `root`.
#[derive(Clone, Debug)]
pub struct Runc {
    pub binary: PathBuf,
    pub root: PathBuf,
    /// Each container's init (pid, start time) once read from runc's state file, which does not
    /// change while the container exists (the file holds the whole config: parsed once, not twice
    /// a second).
    inits: Arc<Mutex<HashMap<String, StateFile>>>,
}

impl Runc {
    pub fn new(root: &Path) -> Self {
        Runc {
            binary: PathBuf::from("runc"),
            root: root.to_path_buf(),
            inits: Arc::default(),
        }
    }

    /// `runc --root ROOT ARGS`, its stdout on success.
    fn run(&self, args: &[&str]) -> Result<Vec<u8>, RuncError> {
        let joined = args.join(" ");
        let out = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| RuncError::Spawn {
                args: joined.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(RuncError::Failed {
                args: joined,
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out.stdout)
    }
}

fn not_found(e: &RuncError) -> bool {
    matches!(e, RuncError::Failed { message, .. } if message.contains("does not exist") || message.contains("not found"))
}

/// The part of runc's own state file (`ROOT/ID/state.json`) that says which process is the
/// container's init.
#[derive(Clone, Copy, Debug, Deserialize)]
struct StateFile {
    init_process_pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22): tells the init from a later
    /// process that reuses its pid.
    init_process_start: u64,
}

impl Runc {
    /// The state as `runc state` would say it, read from runc's state file and `/proc` without
    /// starting runc (the agent looks at every container twice a second). `None` when the file is
    /// not there or not understood: then runc is asked.
    fn state_from_files(&self, id: &str) -> Option<RuncState> {
        let dir = self.root.join(id);
        let known = self.inits.lock().ok().and_then(|m| m.get(id).copied());
        let file = match known {
            Some(f) => f,
            None => {
                let f: StateFile =
                    serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()?;
                if let Ok(mut m) = self.inits.lock() {
                    m.insert(id.to_string(), f);
                }
                f
            }
        };
        let alive = file.init_process_pid > 0
            && std::fs::read_to_string(format!("/proc/{}/stat", file.init_process_pid))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1.to_string();
                    // Field 22 of the line; the 20th after the command name.
                    after.split_whitespace().nth(19)?.parse::<u64>().ok()
                })
                .is_some_and(|start| start == file.init_process_start);
        let status = match (alive, dir.join("exec.fifo").exists()) {
            (false, _) => "stopped",
            (true, true) => "created",
            (true, false) => "running",
        };
        Some(RuncState {
            id: id.to_string(),
            status: status.to_string(),
            pid: if alive { file.init_process_pid } else { 0 },
        })
    }
}

impl OciRuntime for Runc {
    fn state(&self, id: &str) -> Result<Option<RuncState>, RuncError> {
        if let Some(state) = self.state_from_files(id) {
            return Ok(Some(state));
        }
        match self.run(&["state", id]) {
            Ok(out) => serde_json::from_slice(&out)
                .map(Some)
                .map_err(|e| RuncError::State {
                    id: id.into(),
                    message: e.to_string(),
                }),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuncError> {
        let sig = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, sig.as_str()]);
        match self.run(&args) {
            Ok(_) => Ok(()),
            // Already gone: nothing to signal.
            Err(e) if not_found(&e) => Ok(()),
            Err(RuncError::Failed { message, .. }) if message.contains("not running") => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuncError> {
        if let Ok(mut m) = self.inits.lock() {
            m.remove(id);
        }
        let args: &[&str] = if force {
            &["delete", "--force", id]
        } else {
            &["delete", id]
        };
        match self.run(args) {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn list(&self) -> Result<Vec<RuncState>, RuncError> {
        if !self.root.exists() {
            return Ok(Vec::new());
        }
        let out = self.run(&["list", "--format", "json"])?;
        if out.trim_ascii().is_empty() || out.trim_ascii() == b"null" {
            return Ok(Vec::new());
        }
        serde_json::from_slice(&out).map_err(|e| RuncError::State {
            id: "*".into(),
            message: e.to_string(),
        })
    }
}
