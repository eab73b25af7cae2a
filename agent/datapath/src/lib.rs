//! berth's data plane in userspace: everything between "what the maps must hold" and the kernel, with
//! no Kubernetes types (the agent translates API objects into [`service`] and [`net`] terms).
//!
//! - [`service`], [`net`], [`maglev`]: the data plane's model (frontends and backends, pod CIDRs and
//!   overlay peers) and the Maglev table construction.
//! - [`loader`], [`attach`]: the embedded eBPF object with its maps pinned under the node's pin
//!   directory, and programs attached with pinned links.
//! - [`maps`]: typed handles on the pinned maps, one group per owner.
//! - [`programmer`], [`overlay`], [`endpoints`], [`conntrack`]: the programmers that keep their maps
//!   equal to a desired state (Services, overlay peers, local pods) and conntrack garbage collection.
//! - [`podnet`], [`masquerade`], [`netns`], [`cmd`]: host networking: pod addressing and veth wiring,
//!   pod egress masquerade, network namespaces, running `ip` and `nft`.
//! - [`udp_sockets`]: ending connected UDP sockets whose socket-LB backend went away.
//! - [`inspect`]: `berth-agent lb list` / `lb ct` / `lb pods` from the pins.

pub mod attach;
pub mod cmd;
pub mod conntrack;
pub mod endpoints;
pub mod inspect;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod masquerade;
pub mod net;
pub mod netlink;
pub mod netns;
pub mod overlay;
pub mod podnet;
pub mod programmer;
pub mod service;
pub mod udp_sockets;

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
