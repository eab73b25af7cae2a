//! What the agent reads from a container's cgroup, behind one trait per cgroup version (as youki's
//! `CgroupManager`): this machine kind mounts v1 controllers (with an empty cgroup2 beside them), most
//! current nodes mount only v2. runc creates and removes the container's cgroup (cgroupfs driver); the
//! agent reads what the kernel recorded in it before it is removed.

use std::path::{Path, PathBuf};

/// One cgroup hierarchy layout.
pub trait CgroupBackend: Send + Sync {
    /// OOM kills recorded in the cgroup at `path` (a `cgroupsPath`), if it can be read.
    fn oom_kills(&self, path: &str) -> Option<u64>;
}

/// cgroup v1: one hierarchy per controller; the memory controller's `memory.oom_control` has an
/// `oom_kill` count (kernel 4.13 and later).
pub struct V1 {
    pub root: PathBuf,
}

/// cgroup v2: one hierarchy; `memory.events` has `oom_kill`.
pub struct V2 {
    pub root: PathBuf,
}

fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

impl CgroupBackend for V1 {
    fn oom_kills(&self, path: &str) -> Option<u64> {
        let text = std::fs::read_to_string(under(&self.root.join("memory"), path).join("memory.oom_control"))
            .ok()?;
        counter(&text, "oom_kill")
    }
}

impl CgroupBackend for V2 {
    fn oom_kills(&self, path: &str) -> Option<u64> {
        let text = std::fs::read_to_string(under(&self.root, path).join("memory.events")).ok()?;
        counter(&text, "oom_kill")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counters_of_both_versions() {
        let dir = std::env::temp_dir().join(format!("berth-cgroups-{}", std::process::id()));
        let v1 = dir.join("v1/memory/kubepods/c1");
        let v2 = dir.join("v2/kubepods/c1");
        std::fs::create_dir_all(&v1).expect("v1");
        std::fs::create_dir_all(&v2).expect("v2");
        std::fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("write");
        std::fs::write(
            v2.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .expect("write");
        assert_eq!(V1 { root: dir.join("v1") }.oom_kills("/kubepods/c1"), Some(2));
        assert_eq!(V2 { root: dir.join("v2") }.oom_kills("/kubepods/c1"), Some(1));
        assert_eq!(V2 { root: dir.join("v2") }.oom_kills("/nope"), None);
        std::fs::remove_dir_all(&dir).ok();
    }
}
