//! Forwarding a translated packet straight to its egress interface (FIB lookup + redirect), the way
//! Cilium's "BPF host routing" does.
//!
//! Besides skipping the host stack's routing and netfilter work, this is what makes NodePort SNAT
//! possible at all: a packet arriving with the node's own address as source (a SNATed request, or a
//! reply rewritten to come from `node-ip:nodePort`) would be dropped by the stack as a martian.
//!
//! The next hop (egress interface and MACs) is cached in a flow's conntrack entry from its second
//! packet on (the masquerade's forward entry from its first), re-resolved once per `NEXTHOP_TTL_NS`, so
//! established packets pay no lookup; the FIB's answers are also cached per destination (`nexthop`),
//! so a new flow to a known backend pays an array lookup. When the FIB has no answer (no route, destination local, fragmentation needed) the
//! packet goes to the stack.

use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use berth_common::{CT_F_NH_PEER, CtEntry, NEXTHOP_TTL_NS, NextHop, OverlayPeer};

use crate::{
    local,
    maps::CONFIG,
    nat::{Rewrite, csum_apply},
    nexthop::{self, Lookup},
    overlay,
    packet::ETH_HLEN,
};

/// How a translated packet goes on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight out of `ifindex` with the route's MACs: into a local pod's namespace
    /// (`bpf_redirect_peer`) when `peer`, else out of a routed interface.
    Hop,
    /// A remote node's pod: encapsulated towards `overlay`.
    Overlay,
    /// A route to `ifindex` whose neighbour is not resolved yet: the kernel resolves it.
    Unresolved,
    /// The stack decides (no route, a local address, too large for the route).
    Stack,
}

/// Where a translated packet goes next. A plain struct, every field always written: an enum with
/// payloads would leave undefined bytes that the verifier refuses to see stored.
#[derive(Clone, Copy)]
pub struct Route {
    pub via: Via,
    pub peer: bool,
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub overlay: OverlayPeer,
}

impl Route {
    /// The stack decides.
    #[inline(always)]
    pub fn stack() -> Self {
        Route {
            via: Via::Stack,
            peer: false,
            ifindex: 0,
            smac: [0; 6],
            dmac: [0; 6],
            overlay: OverlayPeer::default(),
        }
    }

    /// Caches a direct hop in a conntrack entry (overlay and unresolved routes are not cached).
    #[inline(always)]
    pub fn remember(&self, e: &mut CtEntry, now: u64) {
        if self.via == Via::Hop {
            e.nh_ifindex = self.ifindex;
            e.nh_smac = self.smac;
            e.nh_dmac = self.dmac;
            e.nh_checked_ns = now;
            if self.peer {
                e.flags |= CT_F_NH_PEER;
            } else {
                e.flags &= !CT_F_NH_PEER;
            }
        }
    }

    /// The route of a next-hop lookup's answer.
    #[inline(always)]
    pub fn of(lookup: Lookup, hop: &NextHop) -> Self {
        Route {
            via: match lookup {
                Lookup::Hop => Via::Hop,
                Lookup::Unresolved => Via::Unresolved,
                Lookup::Stack => Via::Stack,
            },
            peer: false,
            ifindex: hop.ifindex,
            smac: hop.smac,
            dmac: hop.dmac,
            overlay: OverlayPeer::default(),
        }
    }
}

/// What the first packet of a flow without a conntrack entry gets.
pub enum Decision {
    /// Not a flow for this translation: the caller goes on.
    Pass,
    /// Translated: the flow's entries are in; the caller rewrites the packet as [`Translation::to`]
    /// says and sends it along [`Translation::route`].
    Translate,
    /// A Service without any backend: refused (TCP reset, ICMP unreachable), as kube-proxy does.
    Refuse,
    /// Dropped (counted): no free port, a map full, a Service dropping traffic by policy.
    Drop,
}

/// The rewrite and next hop of a translated flow's first packet.
pub struct Translation {
    pub to: Rewrite,
    pub route: Route,
}

impl Default for Translation {
    fn default() -> Self {
        Translation {
            to: Rewrite {
                saddr: 0,
                daddr: 0,
                sport: 0,
                dport: 0,
            },
            route: Route::stack(),
        }
    }
}

/// Where a packet from `saddr` to `daddr` goes: a pod of this node, a remote node's pod, or the next
/// hop the FIB names (cached per destination).
#[inline(always)]
pub fn route(ctx: &TcContext, saddr: u32, daddr: u32, proto: u8, now: u64) -> Route {
    if let Some(ep) = local::endpoint(daddr) {
        return Route {
            via: Via::Hop,
            peer: true,
            ifindex: ep.ifindex,
            smac: ep.host_mac,
            dmac: ep.pod_mac,
            overlay: OverlayPeer::default(),
        };
    }
    if let Some(peer) = CONFIG.get(0).and_then(|cfg| overlay::peer(cfg, daddr)) {
        return Route {
            via: Via::Overlay,
            overlay: peer,
            ..Route::stack()
        };
    }
    let len = (ctx.len() as usize).saturating_sub(ETH_HLEN).min(0xffff) as u16;
    let mut hop = NextHop::default();
    let lookup = nexthop::lookup(ctx, saddr, daddr, proto, len, now, &mut hop);
    Route::of(lookup, &hop)
}

/// Sends the packet along `route`; returns the TC verdict.
#[inline(always)]
pub fn send(ctx: &TcContext, route: &Route) -> i32 {
    match route.via {
        Via::Hop => go(ctx, route.ifindex, &route.smac, &route.dmac, route.peer),
        Via::Overlay => CONFIG
            .get(0)
            .and_then(|cfg| overlay::encapsulate(ctx, cfg, &route.overlay))
            .unwrap_or(TC_ACT_OK as i32),
        Via::Unresolved => {
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
            unsafe { bpf_redirect_neigh(route.ifindex, core::ptr::null_mut(), 0, 0) as i32 }
        }
        Via::Stack => TC_ACT_OK as i32,
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
        return go(
            ctx,
            e.nh_ifindex,
            &e.nh_smac,
            &e.nh_dmac,
            e.flags & CT_F_NH_PEER != 0,
        );
    }
    let route = route(ctx, saddr, daddr, proto, now);
    if let Some(e) = entry {
        route.remember(e, now);
    }
    send(ctx, &route)
}
