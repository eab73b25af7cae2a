//! Forwarding a translated packet straight to its egress interface (FIB lookup + redirect), the way
//! Cilium's "BPF host routing" does.
//!
//! Besides skipping the host stack's routing and netfilter work, this is what makes NodePort SNAT
//! possible at all: a packet arriving with the node's own address as source (a SNATed request, or a
//! reply rewritten to come from `node-ip:nodePort`) would be dropped by the stack as a martian.
//!
//! The next hop (egress interface and MACs) is cached in the flow's conntrack entry and re-resolved
//! once per `NEXTHOP_TTL_NS`, so established packets pay no FIB lookup. When the FIB has no answer (no
//! route, destination local, fragmentation needed) the packet goes to the stack.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, bpf_fib_lookup as FibParams},
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use berth_common::{CT_F_NH_PEER, CtEntry, NEXTHOP_TTL_NS};

use crate::{local, maps::CONFIG, nat::csum_apply, overlay, packet::ETH_HLEN};

const AF_INET: u8 = 2;

/// Decrements the IPv4 TTL like a router and writes the MACs; `false` when the TTL ran out or the
/// packet is too short (the stack then handles it).
#[inline(always)]
pub fn rewrite_l2(ctx: &TcContext, smac: &[u8; 6], dmac: &[u8; 6]) -> bool {
    let start = ctx.data();
    if start + ETH_HLEN + 20 > ctx.data_end() {
        return false;
    }
    // SAFETY: bounds checked: Ethernet header and the IPv4 header.
    unsafe {
        let ip = (start + ETH_HLEN) as *mut u8;
        let ttl = *ip.add(8);
        if ttl <= 1 {
            return false;
        }
        let old = (ip.add(8) as *const u16).read_unaligned();
        *ip.add(8) = ttl - 1;
        let new = (ip.add(8) as *const u16).read_unaligned();
        let csum = (ip.add(10) as *mut u16).read_unaligned();
        let d = (!(old as u32)).wrapping_add(new as u32);
        (ip.add(10) as *mut u16).write_unaligned(csum_apply(csum, d));
        let eth = start as *mut [u8; 6];
        *eth = *dmac;
        *eth.add(1) = *smac;
    }
    true
}

/// Resolves the next hop for the translated packet and redirects it there, caching the result in
/// `entry` when given. Returns the TC verdict.
#[inline(always)]
pub fn redirect(
    ctx: &TcContext,
    saddr: u32,
    daddr: u32,
    proto: u8,
    entry: Option<&mut CtEntry>,
    now: u64,
) -> i32 {
    if let Some(e) = &entry
        && e.nh_ifindex != 0
        && now.wrapping_sub(e.nh_checked_ns) < NEXTHOP_TTL_NS
    {
        if !rewrite_l2(ctx, &e.nh_smac, &e.nh_dmac) {
            return TC_ACT_OK as i32;
        }
        // SAFETY: plain helper calls.
        return unsafe {
            if e.flags & CT_F_NH_PEER != 0 {
                bpf_redirect_peer(e.nh_ifindex, 0)
            } else {
                bpf_redirect(e.nh_ifindex, 0)
            }
        } as i32;
    }
    // A pod of this node: straight into its namespace.
    if let Some(ep) = local::endpoint(daddr) {
        if let Some(e) = entry {
            e.nh_ifindex = ep.ifindex;
            e.nh_smac = ep.host_mac;
            e.nh_dmac = ep.pod_mac;
            e.nh_checked_ns = now;
            e.flags |= CT_F_NH_PEER;
        }
        return local::deliver(ctx, &ep).unwrap_or(TC_ACT_OK as i32);
    }
    // A translated packet for a remote node's pod goes into the overlay (not cached: the outer header is
    // set per packet).
    if let Some(verdict) = CONFIG
        .get(0)
        .and_then(|cfg| overlay::to_remote_pod(ctx, cfg, daddr))
    {
        return verdict;
    }
    // SAFETY: zeroed plain-data struct; helper calls on the program's own skb.
    unsafe {
        let mut p: FibParams = core::mem::zeroed();
        p.family = AF_INET;
        p.l4_protocol = proto;
        p.ifindex = (*ctx.skb.skb).ifindex;
        p.__bindgen_anon_1.tot_len = (ctx.len() as usize).saturating_sub(ETH_HLEN) as u16;
        p.__bindgen_anon_3.ipv4_src = saddr;
        p.__bindgen_anon_4.ipv4_dst = daddr;
        let rc = bpf_fib_lookup(ctx.as_ptr(), &mut p, core::mem::size_of::<FibParams>() as i32, 0);
        if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
            if let Some(e) = entry {
                e.flags &= !CT_F_NH_PEER;
                e.nh_ifindex = p.ifindex;
                e.nh_smac = p.smac;
                e.nh_dmac = p.dmac;
                e.nh_checked_ns = now;
            }
            if !rewrite_l2(ctx, &p.smac, &p.dmac) {
                return TC_ACT_OK as i32;
            }
            bpf_redirect(p.ifindex, 0) as i32
        } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
            // The neighbour is not resolved yet: let the kernel resolve it (nothing cached).
            let eth = ctx.data();
            if eth + ETH_HLEN + 20 > ctx.data_end() {
                return TC_ACT_OK as i32;
            }
            let ttl = *((eth + ETH_HLEN + 8) as *const u8);
            if ttl <= 1 {
                return TC_ACT_OK as i32;
            }
            bpf_redirect_neigh(p.ifindex, core::ptr::null_mut(), 0, 0) as i32
        } else {
            TC_ACT_OK as i32
        }
    }
}
