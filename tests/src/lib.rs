//! berth's test bed: worlds of network namespaces built per test, torn down on drop (also when the
//! test panics), with leftovers of a crashed run of the same prefix removed before starting.
//!
//! - [`testbed`]: namespaces, veth pairs, addresses, routes, commands and processes inside them.
//! - [`probe`]: the wire protocol of `berth-probe`, the TCP/UDP server and client run in namespaces.
//! - [`agent`]: starting, stopping and waiting for `berth-agent` processes.
//! - [`lbworld`]: the standard single-node load-balancer world (pods, uplink, external client).
//! - [`clusterworld`]: the control plane and nodes joined to it by token, driven with the real kubectl.
//! - [`registry`]: a real registry (`docker-registry`) and images built offline with `umoci`.
//! - [`overlayworld`]: nodes with pods on one underlay bridge, run as berth, flannel-configured or
//!   plainly routed nodes (the overlay tests and benchmark).

pub mod agent;
pub mod clusterworld;
pub mod lbworld;
pub mod overlayworld;
pub mod probe;
pub mod registry;
pub mod testbed;

/// Directory of the workspace's build outputs for this profile (where `berth-agent` and
/// `berth-probe` are), found from the running executable.
pub fn bin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; panics with the command that builds it when it is missing.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --release --workspace --bins` (cargo xtask test does)",
        path.display()
    );
    path
}
