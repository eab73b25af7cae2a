//! cgroup v2: one unified hierarchy. cgroups-rs's own v2 hierarchy is fixed at `/sys/fs/cgroup`;
//! [`Unified`] is the same hierarchy at any root, so the mapping is unit-tested on a directory where
//! the host has no v2 controllers (this machine kind).

use std::path::{Path, PathBuf};

use cgroups_rs::{
    Cgroup, Hierarchy, Subsystem, cpu::CpuController, memory::MemController, pid::PidController,
};

use super::{CgroupBackend, CgroupError, apply, counter, relative, remove_tree};
use crate::spec::Resources;

/// The unified hierarchy at `root` (`/sys/fs/cgroup`).
pub struct V2 {
    pub root: PathBuf,
}

/// cgroups-rs's `Hierarchy` for a unified hierarchy mounted at `root`, with the controllers a pod's
/// limits need (cpu, memory, pids) where the root offers them.
#[derive(Clone, Debug)]
struct Unified {
    root: PathBuf,
}

impl Hierarchy for Unified {
    fn subsystems(&self) -> Vec<Subsystem> {
        let offered = std::fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
        let root = || self.root.clone();
        offered
            .split_whitespace()
            .filter_map(|c| match c {
                "cpu" => Some(Subsystem::Cpu(CpuController::new(root(), true))),
                "memory" => Some(Subsystem::Mem(MemController::new(root(), true))),
                "pids" => Some(Subsystem::Pid(PidController::new(root(), true))),
                _ => None,
            })
            .collect()
    }

    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        let parent = Path::new(path).parent().unwrap_or(Path::new(""));
        Cgroup::load(Box::new(self.clone()), parent)
    }

    fn v2(&self) -> bool {
        true
    }
}

/// runc's (and kubelet's) conversion of cpu shares [2, 262144] to a v2 weight [1, 10000].
pub fn weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

impl CgroupBackend for V2 {
    /// `memory.events` has `oom_kill`.
    fn oom_kills(&self, path: &str) -> Option<u64> {
        let dir = self.root.join(path.trim_start_matches('/'));
        let text = std::fs::read_to_string(dir.join("memory.events")).ok()?;
        counter(&text, "oom_kill")
    }

    fn ensure(&self, path: &str, limits: &Resources) -> Result<(), CgroupError> {
        let rel = relative(path)?;
        let unified = Unified {
            root: self.root.clone(),
        };
        let cg = Cgroup::load(Box::new(unified), rel);
        // Makes each level and enables the controllers in its parent's cgroup.subtree_control.
        cg.create().map_err(|source| CgroupError::Cgroup {
            path: path.to_string(),
            source,
        })?;
        apply(&cg, path, limits, weight)
    }

    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        remove_tree(&self.root.join(relative(path)?))
    }

    fn exists(&self, path: &str) -> bool {
        relative(path).is_ok_and(|rel| self.root.join(rel).is_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop_files(dir: &Path) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                drop_files(&e.path());
            } else {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    #[test]
    fn shares_become_weights_as_runc_converts_them() {
        assert_eq!(weight(2), 1);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10_000);
        assert_eq!(weight(1), 1, "clamped");
    }

    /// The v2 files of a pod's limits, on a directory laid out as the kernel lays out a unified
    /// hierarchy (the kernel makes each cgroup's files; here the test does).
    #[test]
    fn a_pod_cgroup_gets_its_limits_in_the_unified_hierarchy() {
        let root = std::env::temp_dir().join(format!("berth-cgroups-v2-{}", std::process::id()));
        let pod = root.join("kubepods/burstable/podu1");
        std::fs::create_dir_all(&pod).expect("dirs");
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma\n",
        )
        .expect("controllers");
        std::fs::write(pod.join("cpu.max"), "max 100000\n").expect("cpu.max");
        let v2 = V2 { root: root.clone() };
        let limits = Resources {
            memory_limit: Some(96 << 20),
            cpu_shares: Some(1024),
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            pids_limit: Some(512),
        };
        let made = v2.ensure("/kubepods/burstable/podu1", &limits);
        let read = |f: &str| std::fs::read_to_string(pod.join(f)).unwrap_or_default();
        let seen = [
            read("cpu.weight"),
            read("cpu.max"),
            read("memory.max"),
            read("pids.max"),
        ];
        let subtree = std::fs::read_to_string(root.join("kubepods/cgroup.subtree_control"));
        let unlimited = v2.ensure(
            "/kubepods/besteffort",
            &Resources {
                cpu_shares: Some(2),
                pids_limit: Some(-1),
                ..Resources::default()
            },
        );
        let besteffort = [
            std::fs::read_to_string(root.join("kubepods/besteffort/cpu.weight")).unwrap_or_default(),
            std::fs::read_to_string(root.join("kubepods/besteffort/pids.max")).unwrap_or_default(),
        ];
        // On cgroupfs the kernel's files go with rmdir; here the test takes them away first.
        drop_files(&root.join("kubepods"));
        let removed = v2.remove("/kubepods");
        let gone = !root.join("kubepods").exists();
        std::fs::remove_dir_all(&root).ok();
        made.expect("ensure");
        assert_eq!(seen, ["39", "150000 100000", &(96u64 << 20).to_string(), "512"]);
        assert!(subtree.is_ok(), "controllers enabled for the children");
        unlimited.expect("ensure besteffort");
        assert_eq!(besteffort, ["1", "max"]);
        removed.expect("remove");
        assert!(gone);
        assert!(v2.ensure("/../escape", &limits).is_err());
    }
}
