//! Delivery to this node's own pods without the host stack: the frame is addressed from the pod's
//! gateway (the host side of its veth pair) to the pod, and `bpf_redirect_peer` puts it straight into
//! the pod's namespace, skipping the veth's backlog queue and the host's routing and netfilter work.
//! The agent keeps `BERTH_ENDPOINTS` (pod address -> veth, MACs) in step with the pods it wired.

use aya_ebpf::{helpers::bpf_redirect_peer, programs::TcContext};
use berth_common::{LocalEndpoint, NodeConfig};

use crate::{forward::rewrite_l2, maps::ENDPOINTS};

/// The local pod with address `daddr` (network order), if any.
#[inline(always)]
pub fn endpoint(daddr: u32) -> Option<LocalEndpoint> {
    // SAFETY: copied out at once.
    unsafe { ENDPOINTS.get(&daddr) }.copied()
}

/// Whether `saddr` is in the cluster's pod network. Only such traffic is delivered to local pods
/// untranslated: flows from node addresses or from outside keep walking the stack, so netfilter (pod
/// egress masquerade) sees both of their directions.
#[inline(always)]
pub fn from_cluster(cfg: &NodeConfig, saddr: u32) -> bool {
    cfg.cluster_mask != 0 && saddr & cfg.cluster_mask == cfg.cluster_net
}

/// Rewrites the frame for `ep` and redirects it into the pod's namespace. `None` when the packet must go
/// to the stack instead (TTL exhausted: the stack answers with ICMP time exceeded).
#[inline(always)]
pub fn deliver(ctx: &TcContext, ep: &LocalEndpoint) -> Option<i32> {
    if !rewrite_l2(ctx, &ep.host_mac, &ep.pod_mac) {
        return None;
    }
    // SAFETY: plain helper call; only valid at TC ingress, where all of berth's TC programs run.
    Some(unsafe { bpf_redirect_peer(ep.ifindex, 0) } as i32)
}
