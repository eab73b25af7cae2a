//! Pod egress to addresses outside the cluster leaves with the node's address (masquerade), as
//! flannel's `--ip-masq` does: pod addresses are not routable outside the cluster.
//!
//! By default the eBPF programs do it (`ebpf/berth-ebpf/src/masq.rs`, turned on by a flag of the node
//! configuration): no netfilter connection tracking on the node, whose per-packet cost every flow of
//! the node would pay. The fallback (`--masquerade-mode nftables`) is one nftables table in the node's
//! namespace, `ip berth`, replaced atomically whenever the pod CIDR changes: netfilter's conntrack
//! does the port allocation and the reverse translation. The eBPF path delivers straight to pods only
//! traffic from inside the cluster's pod network, so netfilter always sees both directions of the
//! flows it translates. In eBPF mode the table is removed.

use thiserror::Error;

use crate::{
    cmd::{CmdError, run_with_input},
    net::PodCidr,
};

/// Who translates pod egress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MasqueradeMode {
    /// berth's eBPF programs (ports from `--snat-ports`, entries in berth's conntrack map).
    #[default]
    Ebpf,
    /// An nftables `masquerade` rule: netfilter's connection tracking on the node.
    Nftables,
}

/// Name of berth's nftables table (family `ip`).
pub const TABLE: &str = "berth";

/// Errors of installing the masquerade rule.
#[derive(Debug, Error)]
pub enum MasqueradeError {
    /// `nft` failed or is missing.
    #[error("masquerade rules: {0}")]
    Nft(#[from] CmdError),
}

/// The ruleset: from this node's pods to anything outside the cluster's pod network (and not
/// multicast), masquerade with random ports. A NAT rule makes netfilter track every flow through the
/// node; the overlay's own VXLAN packets (the VXLAN port, both directions) are exempt (`notrack`): tracking
/// them buys nothing and costs a conntrack lookup per packet.
pub fn ruleset(node: PodCidr, cluster: PodCidr, vxlan_port: u16) -> String {
    let port = vxlan_port;
    format!(
        "table ip {TABLE} {{}}
delete table ip {TABLE}
table ip {TABLE} {{
  chain raw-prerouting {{
    type filter hook prerouting priority raw; policy accept;
    udp dport {port} notrack
  }}
  chain raw-output {{
    type filter hook output priority raw; policy accept;
    udp dport {port} notrack
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {node} ip daddr != {cluster} ip daddr != 224.0.0.0/4 masquerade fully-random
  }}
}}
"
    )
}

/// Applies an nftables ruleset in one transaction. The agent's one remaining system tool sits behind
/// this trait so that the code deciding what to apply is tested without root or `nft`.
pub trait Nft: Send + Sync {
    fn apply(&self, ruleset: &str) -> Result<(), CmdError>;
}

/// The real thing: `nft -f -` in the calling thread's network namespace.
#[derive(Clone, Copy, Debug, Default)]
pub struct NftCommand;

impl Nft for NftCommand {
    fn apply(&self, ruleset: &str) -> Result<(), CmdError> {
        run_with_input("nft", &["-f", "-"], Some(ruleset)).map(drop)
    }
}

/// Installs (or replaces) the rule, atomically.
pub fn install(
    nft: &dyn Nft,
    node: PodCidr,
    cluster: PodCidr,
    vxlan_port: u16,
) -> Result<(), MasqueradeError> {
    nft.apply(&ruleset(node, cluster, vxlan_port))?;
    Ok(())
}

/// Removes berth's table, if present.
pub fn remove(nft: &dyn Nft) -> Result<(), MasqueradeError> {
    nft.apply(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"))?;
    Ok(())
}
