//! The eBPF side of the agent: loading the embedded object with its maps pinned under the node's pin
//! directory ([`loader`]), attaching programs with pinned links ([`attach`]), typed access to the
//! Service maps ([`maps`]), programming them from the desired state ([`programmer`]), conntrack
//! garbage collection ([`conntrack`]), the overlay device and peers ([`overlay`]) and local pod
//! delivery ([`endpoints`]).

pub mod attach;
pub mod conntrack;
pub mod endpoints;
pub mod loader;
pub mod maps;
pub mod overlay;
pub mod programmer;

use std::path::{Path, PathBuf};

/// Default root of berth's pins; each node has its own directory below it.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/berth";

/// The pin directory of one node: maps directly inside, links under `links/`.
#[derive(Clone, Debug)]
pub struct PinDir(PathBuf);

impl PinDir {
    /// `root/<node>`.
    pub fn new(root: &Path, node: &str) -> Self {
        PinDir(root.join(node))
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Where a map is pinned.
    pub fn map(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Directory of pinned links.
    pub fn links(&self) -> PathBuf {
        self.0.join("links")
    }
}

/// Current `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
