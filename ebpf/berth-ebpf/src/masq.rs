//! Pod egress masquerade in eBPF: a pod's flow to an address outside the cluster's pod network leaves
//! with the node's address and a port of the SNAT range, as flannel's `--ip-masq` (netfilter
//! `MASQUERADE`) does, but without netfilter's connection tracking on the node. The flow's two
//! conntrack entries are the ones Service flows use (the reply entry claims the port, see `snat`), so
//! replies arriving at the uplink are reverse-translated and delivered into the pod on the fast path,
//! and the agent's garbage collection expires them with the same timeouts.
//!
//! Like Cilium's BPF masquerade, the packet must not walk the host stack once its source is the node's
//! own address (the stack would drop it as a martian): it goes straight to the next hop the FIB names.
//! Destinations the FIB does not forward to (the node's own addresses) are left to the stack untouched.

use aya_ebpf::programs::TcContext;
use berth_common::{
    CFG_F_MASQUERADE, CT_F_MASQ, CT_F_REPLY, CT_F_SNAT, CtKey, NextHop, PROTO_ICMP, PROTO_TCP, counter,
};

use crate::{
    forward::{Decision, Route, Translation},
    local,
    maps::{CONFIG, CONNTRACK, PEER_NODES, count, new_flow_entries},
    nat::Rewrite,
    nexthop::{self, Lookup},
    packet::{ETH_HLEN, Flow, TCP_ACK, TCP_SYN},
    snat,
};

/// Masquerades the first packet of a pod's flow to outside the cluster: claims a port, writes the
/// flow's two entries, and fills `out` with the rewrite and the next hop; [`Decision::Pass`] when the
/// flow is not one to masquerade (masquerade off, a destination in the pod network, multicast, one
/// the stack must handle). The packet itself is rewritten and sent by the caller. Not inlined: a BPF
/// subprogram with its own stack frame.
#[inline(never)]
pub fn egress(ctx: &TcContext, flow: &Flow, key: &CtKey, now: u64, out: &mut Translation) -> Decision {
    let Some(cfg) = CONFIG.get(0) else {
        return Decision::Pass;
    };
    if cfg.flags & CFG_F_MASQUERADE == 0
        || cfg.snat_addr == 0
        || !local::from_cluster(cfg, flow.saddr)
        || local::from_cluster(cfg, flow.daddr)
        || is_multicast(flow.daddr)
        || is_peer_node(flow.daddr)
        || (flow.proto == PROTO_TCP && flow.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN)
        || (flow.proto == PROTO_ICMP && flow.sport == 0)
    {
        // A TCP packet other than a connection's first, or an ICMP echo reply, is no flow this pod
        // starts: a pod's answer to a connection another node SNATed to its own address (a NodePort
        // crossing the overlay, which eBPF delivered past netfilter) or to a node's ping must leave
        // as it is, as netfilter leaves such a packet (invalid for conntrack, never NATed).
        return Decision::Pass;
    }
    let len = (ctx.len() as usize).saturating_sub(ETH_HLEN).min(0xffff) as u16;
    let mut hop = NextHop::default();
    let lookup = nexthop::lookup(ctx, cfg.snat_addr, flow.daddr, flow.proto, len, now, &mut hop);
    if lookup == Lookup::Stack {
        return Decision::Pass;
    }
    let route = Route::of(lookup, &hop);
    let Some(entries) = new_flow_entries() else {
        return Decision::Drop;
    };
    let reply = &mut entries.reply;
    reply.set(
        (flow.daddr, flow.saddr, flow.dport, flow.sport),
        0,
        0,
        CT_F_MASQ | CT_F_SNAT | CT_F_REPLY,
        now,
    );
    let mut reply_key = CtKey {
        saddr: flow.daddr,
        daddr: cfg.snat_addr,
        sport: flow.dport,
        dport: 0,
        proto: flow.proto,
        pad: [0; 3],
    };
    if !snat::claim_port(cfg, &mut reply_key, &*reply) {
        count(counter::ERRORS);
        return Decision::Drop;
    }
    let forward = &mut entries.forward;
    forward.set(
        (cfg.snat_addr, flow.daddr, reply_key.dport, flow.dport),
        0,
        0,
        CT_F_MASQ | CT_F_SNAT,
        now,
    );
    route.remember(forward, now);
    if CONNTRACK.insert(key, &*forward, 0).is_err() {
        let _ = CONNTRACK.remove(&reply_key);
        count(counter::ERRORS);
        return Decision::Drop;
    }
    out.to = Rewrite::of(forward);
    out.route = route;
    Decision::Translate
}

/// Whether `addr` is another node of the overlay. Pod traffic to it keeps the pod's address: that
/// node routes the pod network back through the overlay, and such a packet may be a reply, which must
/// not be rewritten: a NodePort flow the other node SNATed to its own address and sent across the
/// overlay to a pod here is answered to that address, and a UDP answer, unlike TCP's, has no flag that
/// tells it from a new flow.
#[inline(always)]
fn is_peer_node(addr: u32) -> bool {
    // SAFETY: presence check only.
    unsafe { PEER_NODES.get(&addr) }.is_some()
}

/// 224.0.0.0/4 (network order in, first octet in the low byte on little-endian hosts).
#[inline(always)]
fn is_multicast(addr: u32) -> bool {
    u32::from_be(addr) >> 28 == 0xe
}
