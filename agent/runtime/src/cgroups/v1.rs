//! cgroup v1: one hierarchy per controller, found by cgroups-rs in `/proc/self/mountinfo`. A pod's
//! cgroup is made in every mounted controller, as runc makes a container's (cpuset gets its parent's
//! cpus and mems, or nothing could join it).

use std::path::PathBuf;

use cgroups_rs::{Cgroup, hierarchies};

use super::{CgroupBackend, CgroupError, apply, counter, relative, remove_tree};
use crate::spec::Resources;

/// The v1 hierarchies mounted below `root` (`/sys/fs/cgroup`).
pub struct V1 {
    pub root: PathBuf,
}

impl V1 {
    fn load(&self, rel: &str) -> Cgroup {
        Cgroup::load(Box::new(hierarchies::V1::new()), rel)
    }
}

/// v1 takes kubelet's shares as they are.
fn shares(shares: u64) -> u64 {
    shares
}

impl CgroupBackend for V1 {
    /// The memory controller's `memory.oom_control` has an `oom_kill` count (kernel 4.13 and later).
    fn oom_kills(&self, path: &str) -> Option<u64> {
        let dir = self.root.join("memory").join(path.trim_start_matches('/'));
        let text = std::fs::read_to_string(dir.join("memory.oom_control")).ok()?;
        counter(&text, "oom_kill")
    }

    fn ensure(&self, path: &str, limits: &Resources) -> Result<(), CgroupError> {
        let rel = relative(path)?;
        let cg = self.load(rel);
        cg.create().map_err(|source| CgroupError::Cgroup {
            path: path.to_string(),
            source,
        })?;
        apply(&cg, path, limits, shares)
    }

    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        let rel = relative(path)?;
        let mut dirs: Vec<PathBuf> = self
            .load(rel)
            .subsystems()
            .iter()
            .map(|s| s.to_controller().path().to_path_buf())
            .collect();
        // Co-mounted controllers (cpu,cpuacct) share one directory.
        dirs.sort();
        dirs.dedup();
        dirs.iter().try_for_each(|d| remove_tree(d))
    }

    fn exists(&self, path: &str) -> bool {
        relative(path).is_ok_and(|rel| self.root.join("memory").join(rel).is_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs on hosts with v1 controllers and root (this machine kind): a real cgroup of this test's
    /// own, below the hierarchies' roots, removed at the end.
    #[test]
    fn a_pod_cgroup_gets_its_limits_in_every_v1_controller() {
        let root = PathBuf::from("/sys/fs/cgroup");
        let writable = std::fs::metadata(root.join("memory/cgroup.procs"))
            .is_ok_and(|_| unsafe { libc::geteuid() } == 0);
        if !root.join("memory/memory.oom_control").exists() || !writable {
            eprintln!("no writable cgroup v1 memory controller here; skipped");
            return;
        }
        let v1 = V1 { root: root.clone() };
        let base = format!("/berth-unit-v1-{}", std::process::id());
        let pod = format!("{base}/kubepods/burstable/podu1");
        let limits = Resources {
            memory_limit: Some(96 << 20),
            cpu_shares: Some(358),
            cpu_quota: Some(70_000),
            cpu_period: Some(100_000),
            pids_limit: Some(321),
        };
        let made = v1.ensure(&pod, &limits);
        let read = |controller: &str, file: &str| {
            std::fs::read_to_string(root.join(controller).join(&pod[1..]).join(file))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let seen = (
            read("memory", "memory.limit_in_bytes"),
            read("cpu", "cpu.shares"),
            read("cpu", "cpu.cfs_quota_us"),
            read("pids", "pids.max"),
            v1.exists(&pod),
        );
        // A container cgroup below (as runc makes it) goes with the pod's.
        std::fs::create_dir_all(root.join("memory").join(&pod[1..]).join("c1")).expect("child");
        let removed = v1.remove(&base);
        let gone = !root.join("memory").join(&base[1..]).exists() && !v1.exists(&pod);
        made.expect("ensure");
        assert_eq!(
            seen,
            (
                (96u64 << 20).to_string(),
                "358".to_string(),
                "70000".to_string(),
                "321".to_string(),
                true
            )
        );
        removed.expect("remove");
        assert!(gone, "the tree is removed");
        assert!(v1.remove(&base).is_ok(), "removing twice is nothing to do");
    }
}
