//! Forwarding a translated packet straight to its egress interface (FIB lookup + redirect), the way
//! Cilium's "BPF host routing" does.
//!
//! Besides skipping the host stack's routing and netfilter work, this is what makes NodePort SNAT
//! possible at all: a packet arriving with the node's own address as source (a SNATed request, or a
//! reply rewritten to come from `node-ip:nodePort`) would be dropped by the stack as a martian.
//!
//! The next hop (egress interface and MACs) is resolved when a flow is created and cached in its
//! conntrack entries, re-resolved once per `NEXTHOP_TTL_NS`, so established packets pay no lookup; the
//! FIB's answers are also cached per destination (`nexthop`), so a new flow to a known backend pays a
//! hash lookup. When the FIB has no answer (no route, destination local, fragmentation needed) the
//! packet goes to the stack.

use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use berth_common::{CT_F_NH_PEER, CtEntry, NEXTHOP_TTL_NS, OverlayPeer};

use crate::{
    local,
    maps::CONFIG,
    nat::csum_apply,
    nexthop::{self, Lookup},
    overlay,
    packet::ETH_HLEN,
};

/// Where a translated packet goes next.
pub enum Route {
    /// Straight out of an interface with these MACs: into a local pod's namespace (`peer`, with
    /// `bpf_redirect_peer`) or out of a routed interface.
    Hop {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
        peer: bool,
    },
    /// A remote node's pod: encapsulated towards that node.
    Overlay(OverlayPeer),
    /// A route whose neighbour is not resolved yet: the kernel resolves it.
    Unresolved(u32),
    /// The stack decides (no route, a local address, too large for the route).
    Stack,
}

impl Route {
    /// Caches a direct hop in a conntrack entry (overlay and unresolved routes are not cached).
    #[inline(always)]
    pub fn remember(&self, e: &mut CtEntry, now: u64) {
        if let Route::Hop {
            ifindex,
            smac,
            dmac,
            peer,
        } = self
        {
            e.nh_ifindex = *ifindex;
            e.nh_smac = *smac;
            e.nh_dmac = *dmac;
            e.nh_checked_ns = now;
            if *peer {
                e.flags |= CT_F_NH_PEER;
            } else {
                e.flags &= !CT_F_NH_PEER;
            }
        }
    }
}

/// Where a packet from `saddr` to `daddr` goes: a pod of this node, a remote node's pod, or the next
/// hop the FIB names (cached per destination).
#[inline(always)]
pub fn route(ctx: &TcContext, saddr: u32, daddr: u32, proto: u8, now: u64) -> Route {
    if let Some(ep) = local::endpoint(daddr) {
        return Route::Hop {
            ifindex: ep.ifindex,
            smac: ep.host_mac,
            dmac: ep.pod_mac,
            peer: true,
        };
    }
    if let Some(peer) = CONFIG.get(0).and_then(|cfg| overlay::peer(cfg, daddr)) {
        return Route::Overlay(peer);
    }
    let len = (ctx.len() as usize).saturating_sub(ETH_HLEN).min(0xffff) as u16;
    match nexthop::lookup(ctx, saddr, daddr, proto, len, now) {
        Lookup::Hop(h) => Route::Hop {
            ifindex: h.ifindex,
            smac: h.smac,
            dmac: h.dmac,
            peer: false,
        },
        Lookup::Unresolved(ifindex) => Route::Unresolved(ifindex),
        Lookup::Stack => Route::Stack,
    }
}

/// Sends the packet along `route`; returns the TC verdict.
#[inline(always)]
pub fn send(ctx: &TcContext, route: &Route) -> i32 {
    match route {
        Route::Hop {
            ifindex,
            smac,
            dmac,
            peer,
        } => go(ctx, *ifindex, smac, dmac, *peer),
        Route::Overlay(peer) => CONFIG
            .get(0)
            .and_then(|cfg| overlay::encapsulate(ctx, cfg, peer))
            .unwrap_or(TC_ACT_OK as i32),
        Route::Unresolved(ifindex) => {
            let eth = ctx.data();
            if eth + ETH_HLEN + 20 > ctx.data_end() {
                return TC_ACT_OK as i32;
            }
            // SAFETY: bounds checked above.
            let ttl = unsafe { *((eth + ETH_HLEN + 8) as *const u8) };
            if ttl <= 1 {
                return TC_ACT_OK as i32;
            }
            // SAFETY: plain helper call.
            unsafe { bpf_redirect_neigh(*ifindex, core::ptr::null_mut(), 0, 0) as i32 }
        }
        Route::Stack => TC_ACT_OK as i32,
    }
}

/// Rewrites the frame for one routing hop and redirects it to `ifindex`.
#[inline(always)]
fn go(ctx: &TcContext, ifindex: u32, smac: &[u8; 6], dmac: &[u8; 6], peer: bool) -> i32 {
    if !rewrite_l2(ctx, smac, dmac) {
        return TC_ACT_OK as i32;
    }
    // SAFETY: plain helper calls.
    let verdict = unsafe {
        if peer {
            bpf_redirect_peer(ifindex, 0)
        } else {
            bpf_redirect(ifindex, 0)
        }
    };
    verdict as i32
}

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

/// Sends a translated packet on: by the next hop cached in `entry` while it is fresh, else by
/// [`route`] (cached in `entry` when given). Returns the TC verdict.
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
        return go(ctx, e.nh_ifindex, &e.nh_smac, &e.nh_dmac, e.flags & CT_F_NH_PEER != 0);
    }
    let route = route(ctx, saddr, daddr, proto, now);
    if let Some(e) = entry {
        route.remember(e, now);
    }
    send(ctx, &route)
}
