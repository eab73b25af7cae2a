//! Per-packet load balancing at TC ingress (attached with TCX).
//!
//! `berth_from_pod` runs on the host side of every pod-facing interface: it translates pod traffic to
//! Service frontends that did not go through the socket LB (raw sockets, traffic from pods outside
//! the node's cgroup) and reverse-translates every reply a backend sends. `berth_from_uplink` runs on
//! the node's uplink: NodePort (and ClusterIP routed to the node) from outside, with SNAT for
//! externalTrafficPolicy Cluster. `berth_host_reply`, at TC egress of both, reverse-translates the
//! replies of backends in the node's own network namespace (host-network pods).
//!
//! Fast path: one conntrack lookup keyed by the packet's exact tuple, one rewrite, a redirect to the
//! cached next hop. New flows (a BPF subprogram, `new_service_flow`): one frontend lookup (header and
//! first 16 backends in one value), the backend choice, two conntrack inserts (reply direction first,
//! so a reply can never arrive before its entry); then one rewrite and the next hop (per-destination
//! cache or a FIB lookup), which the flow's entry caches on its second packet. Pods' new flows to
//! outside the cluster that are for no Service are masqueraded (`masq`).

use aya_ebpf::{
    bindings::TC_ACT_SHOT, helpers::bpf_ktime_get_coarse_ns, macros::classifier, programs::TcContext,
};
use berth_common::{
    CT_F_CLOSING, CT_F_NODEPORT, CT_F_REPLY, CT_F_RST, CT_F_SNAT, CtEntry, CtKey, FrontendKey, NextHop,
    PROTO_ICMP, PROTO_TCP, SVC_F_LOCAL_DROP, SVC_F_NODEPORT, SVC_F_SNAT, counter,
};

use crate::{
    decap,
    forward::{self, Decision, Translation},
    frag, icmp_error, local,
    maps::{CONFIG, CONNTRACK, FRONTENDS, count, new_flow_entries},
    masq,
    nat::{self, Rewrite},
    nexthop::{self, Lookup},
    overlay,
    packet::{self, FIRST_FRAGMENT, Flow, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    reject, select, snat,
};

/// Hand the packet to the next program / the stack unchanged (`TCX_NEXT`).
const TC_ACT_UNSPEC: i32 = -1;
/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;
/// Attempts at picking a backend whose reply tuple is free before taking it over anyway.
const REPICK_ATTEMPTS: u32 = 2;

#[classifier]
pub fn berth_from_pod(ctx: TcContext) -> i32 {
    balance(&ctx, Side::Pod)
}

#[classifier]
pub fn berth_from_uplink(ctx: TcContext) -> i32 {
    // Overlay traffic for a local pod is decapsulated here and then treated like a pod's packet; the
    // rest of the overlay's traffic goes straight to the node's VXLAN device.
    match decap::vxlan_to_local_pod(&ctx) {
        decap::Arrival::Overlay => TC_ACT_UNSPEC,
        decap::Arrival::Decapsulated | decap::Arrival::Other => balance(&ctx, Side::Uplink),
    }
}

/// TC egress of pod-facing interfaces and of the uplink: reverse NAT for replies the host stack itself
/// sends. A Service backend in the node's own network namespace (a host-network pod, a node address in
/// an EndpointSlice) is reached by DNAT alone, and its replies are generated locally, so they pass no
/// ingress hook of ours: here they get the Service's address back. Packets the node forwards were
/// handled at their ingress (`ingress_ifindex` set) and pass with one load.
#[classifier]
pub fn berth_host_reply(ctx: TcContext) -> i32 {
    // SAFETY: reading a plain field of the context.
    if unsafe { (*ctx.skb.skb).ingress_ifindex } != 0 {
        return TC_ACT_UNSPEC;
    }
    let Some(flow) = packet::parse(&ctx) else {
        // The node's own ICMP errors about translated flows ("fragmentation needed" when it forwards
        // a translated packet too large for the backend's route: path MTU discovery).
        if icmp_error::reverse(&ctx) != 0 {
            count(counter::ICMP_ERRORS);
            return TC_ACT_UNSPEC;
        }
        let mut later = Flow::default();
        if !frag::later(&ctx, &mut later) {
            return TC_ACT_UNSPEC;
        }
        // Bounded for the verifier, as in `follow_fragment`.
        later.l4_off &= 0x7f;
        return reverse_host_reply(&ctx, &later);
    };
    if flow.fragment == FIRST_FRAGMENT {
        frag::remember(&ctx, &flow);
    }
    reverse_host_reply(&ctx, &flow)
}

/// Reverse-translates a locally generated packet of `flow` if it is a reply of a translated flow.
#[inline(always)]
fn reverse_host_reply(ctx: &TcContext, flow: &Flow) -> i32 {
    let Some(entry) = CONNTRACK.get_ptr_mut(&flow.key()) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: pointer from a successful lookup; plain integer fields.
    let entry = unsafe { &mut *entry };
    if entry.flags & CT_F_REPLY == 0 {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: coarse clock helper, no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    note_packet(entry, flow, now);
    match nat::apply(ctx, flow, &Rewrite::of(entry)) {
        Ok(()) => {
            count(counter::HOST_REPLY);
            TC_ACT_UNSPEC
        }
        Err(_) => {
            count(counter::ERRORS);
            TC_ACT_SHOT as i32
        }
    }
}

/// TC egress of the node's VXLAN device: what the host itself sends to other nodes' pods (routed to the
/// device by one route for the cluster's pod network) is encapsulated here. The device has no peers of
/// its own, so anything it cannot carry is dropped.
#[classifier]
pub fn berth_to_overlay(ctx: TcContext) -> i32 {
    match packet::ipv4_addrs(&ctx) {
        Some((_, daddr)) => CONFIG
            .get(0)
            .and_then(|cfg| overlay::to_remote_pod(&ctx, cfg, daddr))
            .unwrap_or(TC_ACT_SHOT as i32),
        None => TC_ACT_SHOT as i32,
    }
}

/// Which side of the node a packet arrived from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A pod's interface: its new flows to outside the cluster are masqueraded.
    Pod,
    /// The uplink (other nodes, outside; decapsulated overlay traffic).
    Uplink,
}

#[inline(always)]
fn balance(ctx: &TcContext, side: Side) -> i32 {
    let Some(flow) = packet::parse(ctx) else {
        // An ICMP error about a translated flow goes to the flow's client, rewritten.
        let client = icmp_error::reverse(ctx);
        if client != 0 {
            count(counter::ICMP_ERRORS);
            let from = packet::ipv4_addrs(ctx).map_or(0, |(saddr, _)| saddr);
            // SAFETY: coarse clock helper, no arguments.
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            return forward::send(ctx, &forward::route(ctx, from, client, PROTO_ICMP, now));
        }
        if let Some(verdict) = follow_fragment(ctx) {
            return verdict;
        }
        // Not TCP, UDP or ICMP echo (other ICMP, later fragments...): no Service, but it may be
        // pod-to-pod traffic.
        return match packet::ipv4_addrs(ctx) {
            Some((saddr, daddr)) => pod_to_pod(ctx, saddr, daddr),
            None => TC_ACT_UNSPEC,
        };
    };
    if flow.fragment == FIRST_FRAGMENT {
        frag::remember(ctx, &flow);
    }
    let key = flow.key();
    // SAFETY: coarse clock helper, no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(entry) = CONNTRACK.get_ptr_mut(&key) {
        // SAFETY: pointer from a successful lookup; plain integer fields.
        let entry = unsafe { &mut *entry };
        // A SYN on an existing forward entry is a client reusing the tuple for a new connection (or
        // retransmitting its first SYN). After the old connection closed (FIN or RST seen), the new
        // one is balanced anew, as netfilter's conntrack does: its backend may have gone meanwhile
        // (a deleted pod), and a busy client reuses ports within seconds. Also balanced anew when
        // the flow's reply entry was taken over (same client port, same backend, another Service),
        // as replies would be rewritten wrongly. A retransmitted SYN keeps its backend.
        let reused = is_fresh_syn(&flow)
            && entry.flags & CT_F_REPLY == 0
            && (entry.flags & CT_F_CLOSING != 0 || !reply_matches(&key, entry, &flow));
        if !reused {
            note_packet(entry, &flow, now);
            let to = Rewrite::of(entry);
            return finish(ctx, &flow, &to, entry, now);
        }
    }

    if CONFIG
        .get(0)
        .is_some_and(|cfg| local::from_cluster(cfg, flow.daddr))
    {
        // A pod address is never a Service frontend, nor a destination to masquerade: pod-to-pod
        // traffic (a socket-LB connection straight to its backend, most of all) skips both lookups.
        forget_stale_reply(&flow);
        let verdict = pod_to_pod(ctx, flow.saddr, flow.daddr);
        if verdict != TC_ACT_UNSPEC || side == Side::Uplink {
            return verdict;
        }
        // A pod that is neither this node's (known to the data plane) nor behind the overlay: the
        // FIB's next hop, as a translated packet gets, so untranslated pod traffic (the socket LB's)
        // is forwarded as cheaply as the TC path's.
        return forward_routed(ctx, &flow, now);
    }
    let mut out = Translation::default();
    let counter_index = match new_service_flow(&flow, &key, now, &mut out) {
        Decision::Translate => {
            // Resolved here, not in the subprogram (its stack is spent); the flow's entry caches the
            // next hop on its second packet, from the per-destination cache.
            out.route = forward::route(ctx, out.to.saddr, out.to.daddr, flow.proto, now);
            counter::NEW_FLOW
        }
        Decision::Refuse => {
            count(counter::REJECTED);
            return reject::refuse(ctx, &flow);
        }
        Decision::Drop => return TC_ACT_SHOT as i32,
        Decision::Pass => {
            forget_stale_reply(&flow);
            if side == Side::Uplink {
                return pod_to_pod(ctx, flow.saddr, flow.daddr);
            }
            match masq::egress(ctx, &flow, &key, now, &mut out) {
                Decision::Translate => counter::MASQUERADED,
                Decision::Drop | Decision::Refuse => return TC_ACT_SHOT as i32,
                Decision::Pass => return pod_to_pod(ctx, flow.saddr, flow.daddr),
            }
        }
    };
    match nat::apply(ctx, &flow, &out.to) {
        Ok(()) => {
            count(counter_index);
            forward::send(ctx, &out.route)
        }
        Err(_) => {
            count(counter::ERRORS);
            TC_ACT_SHOT as i32
        }
    }
}

/// A later fragment of a datagram (see `frag`): translated like its flow's other packets when the flow
/// has an entry, else passed on like any untranslated packet.
#[inline(always)]
fn follow_fragment(ctx: &TcContext) -> Option<i32> {
    let mut flow = Flow::default();
    if !frag::later(ctx, &mut flow) {
        return None;
    }
    // What a subprogram wrote through a pointer comes back as an unknown scalar to the verifier:
    // bound the offset (at most 14 + 60 - 8) so packet pointers built from it stay checkable.
    flow.l4_off &= 0x7f;
    let Some(entry) = CONNTRACK.get_ptr_mut(&flow.key()) else {
        return Some(pod_to_pod(ctx, flow.saddr, flow.daddr));
    };
    // SAFETY: pointer from a successful lookup; plain integer fields.
    let entry = unsafe { &mut *entry };
    // SAFETY: coarse clock helper, no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    note_packet(entry, &flow, now);
    Some(finish(ctx, &flow, &Rewrite::of(entry), entry, now))
}

/// The first packet of a flow without a conntrack entry: if it is for a Service frontend, picks the
/// backend, writes the flow's two entries and fills `out.to` (the packet is routed, rewritten and sent
/// by the caller); [`Decision::Pass`] when it is for no frontend. Not inlined: a BPF subprogram, so the
/// entries and keys it builds have their own stack frame instead of sharing the 512 bytes of the
/// program's with everything else.
#[inline(never)]
fn new_service_flow(flow: &Flow, key: &CtKey, now: u64, out: &mut Translation) -> Decision {
    let svc = FrontendKey {
        addr: flow.daddr,
        port: flow.dport,
        proto: flow.proto,
        pad: 0,
    };
    // SAFETY: read in place; the map frees a replaced value only after an RCU grace period.
    let Some(frontend) = (unsafe { FRONTENDS.get(&svc) }) else {
        return Decision::Pass;
    };
    let hdr = frontend.header;
    if hdr.flags & SVC_F_LOCAL_DROP != 0 {
        count(counter::REJECTED);
        return Decision::Drop;
    }
    let hash = select::flow_hash(flow.saddr, flow.daddr, flow.sport, flow.dport, flow.proto);
    let Some(mut choice) = select::pick(&svc, frontend, flow.saddr as u64, hash) else {
        if hdr.count == 0 && hdr.terminating == 0 {
            return Decision::Refuse;
        }
        // Backends exist but a slot or table vanished between our reads (the agent shrank the
        // frontend meanwhile): drop, the client's retransmission will find the new state. Never
        // refuse a Service that has backends.
        count(counter::ERRORS);
        return Decision::Drop;
    };
    let mut backend = choice.backend;

    let mut flags = if hdr.flags & SVC_F_NODEPORT != 0 {
        CT_F_NODEPORT
    } else {
        0
    };
    let Some(entries) = new_flow_entries() else {
        return Decision::Drop;
    };
    let reply = &mut entries.reply;
    reply.set(
        (flow.daddr, flow.saddr, flow.dport, flow.sport),
        choice.backend_id,
        hdr.rev_nat_id,
        flags | CT_F_REPLY,
        now,
    );
    let mut reply_key = CtKey {
        saddr: backend.addr,
        daddr: flow.saddr,
        sport: backend.port,
        dport: flow.sport,
        proto: flow.proto,
        pad: [0; 3],
    };

    if backend.addr == flow.saddr {
        // Hairpin: the client is its own backend. Its stack would drop a packet from its own address,
        // so the source becomes the frontend address (the way Cilium uses a loopback address).
        flags |= CT_F_SNAT;
        reply.flags |= CT_F_SNAT;
        reply_key.daddr = flow.daddr;
        if CONNTRACK.insert(&reply_key, &*reply, BPF_NOEXIST).is_err() {
            count(counter::ERRORS);
            return Decision::Drop;
        }
    } else if (hdr.flags & SVC_F_SNAT != 0 || leaves_pod_network(flow, backend.addr))
        && !is_this_node(backend.addr)
    {
        // externalTrafficPolicy Cluster: replies must come back through this node. Likewise a pod's
        // flow to a backend outside the pod network (the API server behind `kubernetes`, another
        // node's host-network endpoint): redirected straight to the uplink it would skip the stack's
        // masquerade, and that backend has no route back to pod addresses.
        let Some(cfg) = CONFIG.get(0) else {
            return Decision::Pass;
        };
        if cfg.snat_addr == 0 {
            // No node address configured: SNAT is impossible; the agent warns about it.
            count(counter::ERRORS);
            return Decision::Drop;
        }
        flags |= CT_F_SNAT;
        reply.flags |= CT_F_SNAT;
        reply_key.daddr = cfg.snat_addr;
        if !snat::claim_port(cfg, &mut reply_key, &*reply) {
            count(counter::ERRORS);
            return Decision::Drop;
        }
    } else {
        // Plain DNAT. The reply tuple (backend -> client port) may belong to a live flow of the same
        // client port to another Service on the same backend: pick again rather than steal it. The
        // check costs nothing in the common case: it only runs when the exclusive insert fails.
        let mut attempt = 0;
        while CONNTRACK.insert(&reply_key, &*reply, BPF_NOEXIST).is_err() {
            // SAFETY: copied out at once.
            let ours_or_stale = match unsafe { CONNTRACK.get(&reply_key) } {
                Some(r) => {
                    (r.nat_saddr == flow.daddr && r.nat_sport == flow.dport) || r.flags & CT_F_CLOSING != 0
                }
                None => true,
            };
            let other = if ours_or_stale || attempt >= REPICK_ATTEMPTS {
                None
            } else {
                select::pick(&svc, frontend, flow.saddr as u64, hash.rotate_left(7 + attempt))
                    .filter(|c| c.backend.addr != flow.saddr)
            };
            match other {
                Some(c) => {
                    choice = c;
                    backend = c.backend;
                    reply.backend_id = c.backend_id;
                    reply_key.saddr = backend.addr;
                    reply_key.sport = backend.port;
                    attempt += 1;
                }
                None => {
                    if CONNTRACK.insert(&reply_key, &*reply, 0).is_err() {
                        count(counter::ERRORS);
                        return Decision::Drop;
                    }
                    break;
                }
            }
        }
    }

    let forward = &mut entries.forward;
    forward.set(
        (reply_key.daddr, backend.addr, reply_key.dport, backend.port),
        choice.backend_id,
        hdr.rev_nat_id,
        flags,
        now,
    );
    if CONNTRACK.insert(key, &*forward, 0).is_err() {
        let _ = CONNTRACK.remove(&reply_key);
        count(counter::ERRORS);
        return Decision::Drop;
    }
    out.to = Rewrite::of(forward);
    Decision::Translate
}

/// Whether `addr` is this node's address: a backend there (a host-network pod) is reached by DNAT
/// alone. The stack delivers the request locally (with the node's address as its source it would drop
/// it as a martian), and the replies it generates are reverse-translated by `berth_host_reply`.
#[inline(always)]
fn is_this_node(addr: u32) -> bool {
    CONFIG.get(0).is_some_and(|cfg| cfg.snat_addr == addr)
}

/// Whether a flow from `flow`'s source to `backend` goes from the cluster's pod network out of it.
#[inline(always)]
fn leaves_pod_network(flow: &Flow, backend: u32) -> bool {
    CONFIG
        .get(0)
        .is_some_and(|cfg| local::from_cluster(cfg, flow.saddr) && !local::from_cluster(cfg, backend))
}

/// Traffic that is not for a Service: a pod of this node is reached straight in its namespace (when
/// the source is in the cluster's pod network), a remote node's pod through the overlay, anything else
/// through the host stack.
#[inline(always)]
fn pod_to_pod(ctx: &TcContext, saddr: u32, daddr: u32) -> i32 {
    let Some(cfg) = CONFIG.get(0) else {
        return TC_ACT_UNSPEC;
    };
    if local::from_cluster(cfg, saddr)
        && let Some(ep) = local::endpoint(daddr)
    {
        return match local::deliver(ctx, &ep) {
            Some(verdict) => {
                count(counter::LOCAL_DELIVERED);
                verdict
            }
            None => TC_ACT_UNSPEC,
        };
    }
    overlay::to_remote_pod(ctx, cfg, daddr).unwrap_or(TC_ACT_UNSPEC)
}

/// Records a packet of an existing flow in its entry: last seen, and closing on FIN or RST (the
/// garbage collector's shorter timeout for closing flows).
#[inline(always)]
fn note_packet(entry: &mut CtEntry, flow: &Flow, now: u64) {
    if entry.last_seen_ns != now {
        entry.last_seen_ns = now;
    }
    if flow.tcp_flags & TCP_FIN != 0 {
        entry.flags |= CT_F_CLOSING;
    }
    if flow.tcp_flags & TCP_RST != 0 {
        entry.flags |= CT_F_CLOSING | CT_F_RST;
    }
}

/// Sends a pod's untranslated packet straight to the FIB's next hop (cached per destination); the
/// stack takes it when the FIB has no direct answer.
#[inline(always)]
fn forward_routed(ctx: &TcContext, flow: &Flow, now: u64) -> i32 {
    let len = (ctx.len() as usize).saturating_sub(packet::ETH_HLEN).min(0xffff) as u16;
    let mut hop = NextHop::default();
    let lookup = nexthop::lookup(ctx, flow.saddr, flow.daddr, flow.proto, len, now, &mut hop);
    if lookup != Lookup::Hop {
        return TC_ACT_UNSPEC;
    }
    forward::send(ctx, &forward::Route::of(lookup, &hop))
}

#[inline(always)]
fn is_fresh_syn(flow: &Flow) -> bool {
    flow.proto == PROTO_TCP && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// Whether the reply entry of forward entry `fwd` still translates back to this packet's tuple. When
/// it does, the reused flow starts over: closing state is cleared on both entries.
#[inline(always)]
fn reply_matches(key: &CtKey, fwd: &mut CtEntry, flow: &Flow) -> bool {
    let Some(r) = CONNTRACK.get_ptr_mut(&key.partner(fwd)) else {
        return false;
    };
    // SAFETY: pointer from a successful lookup; plain integer fields.
    let r = unsafe { &mut *r };
    let same = r.nat_saddr == flow.daddr
        && r.nat_sport == flow.dport
        && r.nat_daddr == flow.saddr
        && r.nat_dport == flow.sport;
    if same {
        r.flags &= !(CT_F_CLOSING | CT_F_RST);
        fwd.flags &= !(CT_F_CLOSING | CT_F_RST);
    }
    same
}

/// A new flow that is not for a Service (e.g. a socket-LB connection straight to a backend) may reuse
/// the tuple of an earlier TC-translated flow whose reply entry still exists; that entry would rewrite
/// this flow's replies to come from the Service and the client would drop them. Checked only on packets
/// that can start a flow (TCP SYN, UDP), so established traffic pays nothing.
#[inline(always)]
fn forget_stale_reply(flow: &Flow) {
    if flow.proto == PROTO_TCP && !is_fresh_syn(flow) {
        return;
    }
    let reverse = flow.reverse_key();
    // SAFETY: copied out at once.
    if let Some(entry) = unsafe { CONNTRACK.get(&reverse) }
        && entry.flags & CT_F_REPLY != 0
    {
        let _ = CONNTRACK.remove(&reverse);
    }
}

/// Rewrites a packet of an existing flow and sends it on by the entry's cached next hop.
#[inline(always)]
fn finish(ctx: &TcContext, flow: &Flow, to: &Rewrite, entry: &mut CtEntry, now: u64) -> i32 {
    match nat::apply(ctx, flow, to) {
        Ok(()) => {
            count(counter::CT_HIT);
            forward::redirect(ctx, to.saddr, to.daddr, flow.proto, Some(entry), now)
        }
        Err(_) => {
            count(counter::ERRORS);
            TC_ACT_SHOT as i32
        }
    }
}
