//! The node's cgroups, behind one trait per cgroup version (as youki's `CgroupManager`): this machine
//! kind mounts v1 controllers (with an empty cgroup2 beside them), most current nodes mount only v2.
//!
//! Two owners share the tree, as with kubelet and runc: the agent makes the QoS parents (`kubepods`,
//! `kubepods/burstable`, `kubepods/besteffort`) and one cgroup per pod with the pod's summed limits,
//! through `cgroups-rs`; runc creates and removes each container's cgroup below its pod's (cgroupfs
//! driver). The agent also reads what the kernel recorded (OOM kills) before runc removes it.
//!
//! - [`v1`]: one hierarchy per controller.
//! - [`v2`]: the unified hierarchy.

pub mod v1;
pub mod v2;

use std::path::{Path, PathBuf};

use cgroups_rs::{Cgroup, MaxValue, cpu::CpuController, memory::MemController, pid::PidController};
use thiserror::Error;

pub use v1::V1;
pub use v2::V2;

use crate::spec::Resources;

/// Errors of making, setting or removing a cgroup.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// The path is empty or leaves the hierarchy (`..`): refused before anything is made.
    #[error("cgroup path {0:?} is not a path below the cgroup root")]
    InvalidPath(String),
    /// cgroups-rs could not make the cgroup or write one of its limits.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: String,
        #[source]
        source: cgroups_rs::error::Error,
    },
    /// A directory of the cgroup could not be removed (processes still in it: EBUSY).
    #[error("removing cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One cgroup hierarchy layout.
pub trait CgroupBackend: Send + Sync {
    /// OOM kills recorded in the cgroup at `path` (a `cgroupsPath`), if it can be read.
    fn oom_kills(&self, path: &str) -> Option<u64>;

    /// Makes the cgroup at `path` (below the root, parents included) in every controller and sets
    /// `limits` on it; for an existing one only the limits are written. Limits left `None` are left
    /// as they are.
    fn ensure(&self, path: &str, limits: &Resources) -> Result<(), CgroupError>;

    /// Removes the cgroup at `path` and whatever runc left below it, deepest first; nothing to do if
    /// it does not exist. Fails while processes remain in it.
    fn remove(&self, path: &str) -> Result<(), CgroupError>;

    /// Whether the cgroup at `path` exists (in the memory controller, where pods are always made).
    fn exists(&self, path: &str) -> bool;
}

/// The backend of this host: v1 when the memory controller is mounted as a v1 hierarchy, else v2.
pub fn detect() -> Box<dyn CgroupBackend> {
    let root = PathBuf::from("/sys/fs/cgroup");
    if root.join("memory").join("memory.oom_control").exists() {
        Box::new(V1 { root })
    } else {
        Box::new(V2 { root })
    }
}

/// `path` without its leading `/`, as cgroups-rs joins it to each controller's mount (an absolute
/// path would replace the mount); refused if empty or if a component would leave the hierarchy.
fn relative(path: &str) -> Result<&str, CgroupError> {
    let rel = path.trim_matches('/');
    let bad = rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(CgroupError::InvalidPath(path.to_string()));
    }
    Ok(rel)
}

fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Writes `limits` through the cgroup's controllers. `cpu_weight` turns kubelet's cpu shares into
/// what the hierarchy's cpu controller takes (v2 has weights, and cgroups-rs writes the number it is
/// given verbatim).
fn apply(cg: &Cgroup, path: &str, limits: &Resources, cpu_weight: fn(u64) -> u64) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Cgroup {
        path: path.to_string(),
        source,
    };
    if let Some(cpu) = cg.controller_of::<CpuController>() {
        if let Some(shares) = limits.cpu_shares {
            cpu.set_shares(cpu_weight(shares)).map_err(err)?;
        }
        if limits.cpu_quota.is_some() || limits.cpu_period.is_some() {
            cpu.set_cfs_quota_and_period(limits.cpu_quota, limits.cpu_period)
                .map_err(err)?;
        }
    }
    if let (Some(memory), Some(limit)) = (cg.controller_of::<MemController>(), limits.memory_limit) {
        memory.set_limit(limit).map_err(err)?;
    }
    if let (Some(pids), Some(max)) = (cg.controller_of::<PidController>(), limits.pids_limit) {
        let max = u64::try_from(max).map_or(MaxValue::Max, |n| MaxValue::Value(n as i64));
        pids.set_pid_max(max).map_err(err)?;
    }
    Ok(())
}

/// Removes `dir` and every directory below it, deepest first (cgroup directories hold only the
/// kernel's files, which go with `rmdir`).
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // never made, or already gone
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CgroupError::Remove {
            path: dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_below_the_root() {
        assert_eq!(
            relative("/berth/kubepods/podu1").ok(),
            Some("berth/kubepods/podu1")
        );
        assert_eq!(relative("kubepods").ok(), Some("kubepods"));
        for bad in ["", "/", "/kubepods/../..", "a//b", "./a"] {
            assert!(relative(bad).is_err(), "{bad:?} accepted");
        }
    }
}
