//! Next hops by destination address: the FIB's answer (egress interface, MACs, route MTU) cached in
//! `BERTH_NEXTHOP` (per CPU, direct-mapped) for `NEXTHOP_TTL_NS`. A new flow to a routed backend and every packet into the
//! overlay (whose outer destination is a peer's underlay address) then cost one hash lookup instead of
//! a route and neighbour lookup; route and neighbour changes take effect within the TTL, as with the
//! next hop each conntrack entry caches.
//!
//! The cache is keyed by destination only: the FIB is asked with the packet's source and ingress
//! interface, so a node whose routing depends on those (policy routing by source) sees the first
//! answer for a destination reused for the TTL.

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
    },
    helpers::bpf_fib_lookup,
    programs::TcContext,
};
use berth_common::{NEXTHOP_TTL_NS, NextHop, nexthop_slot};

use crate::maps::NEXTHOP;

const AF_INET: u8 = 2;

/// What is known about the way to a destination.
pub enum Lookup {
    /// Resolved: interface, MACs, MTU.
    Hop(NextHop),
    /// A route, but its neighbour is not resolved yet: `bpf_redirect_neigh` to this interface lets the
    /// kernel resolve it (nothing is cached).
    Unresolved(u32),
    /// Nothing usable here (no route, a local destination, too large for the route): the stack
    /// decides.
    Stack,
}

/// The next hop towards `daddr` for an IPv4 packet of `len` bytes (as it will leave; 0 for a GSO
/// aggregate, which is segmented to fit later) from `saddr`, protocol `l4_proto`.
#[inline(always)]
pub fn lookup(ctx: &TcContext, saddr: u32, daddr: u32, l4_proto: u8, len: u16, now: u64) -> Lookup {
    let slot = nexthop_slot(daddr);
    // SAFETY: this CPU's slot, copied out at once.
    if let Some(hop) = NEXTHOP.get_ptr(slot).map(|p| unsafe { *p })
        && hop.addr == daddr
        && hop.ifindex != 0
        && now.wrapping_sub(hop.checked_ns) < NEXTHOP_TTL_NS
    {
        return if len > hop.mtu { Lookup::Stack } else { Lookup::Hop(hop) };
    }
    // SAFETY: zeroed plain-data struct; helper on the program's own skb.
    let (rc, p) = unsafe {
        let mut p: FibParams = core::mem::zeroed();
        p.family = AF_INET;
        p.l4_protocol = l4_proto;
        p.ifindex = (*ctx.skb.skb).ifindex;
        // Never 0, which would skip the MTU check and with it the route MTU in the answer.
        p.__bindgen_anon_1.tot_len = len.max(1);
        p.__bindgen_anon_3.ipv4_src = saddr;
        p.__bindgen_anon_4.ipv4_dst = daddr;
        let rc = bpf_fib_lookup(ctx.as_ptr(), &mut p, core::mem::size_of::<FibParams>() as i32, 0);
        (rc, p)
    };
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        let hop = NextHop {
            addr: daddr,
            ifindex: p.ifindex,
            smac: p.smac,
            dmac: p.dmac,
            // SAFETY: on success the kernel writes the route MTU over `tot_len` (a union).
            mtu: unsafe { p.__bindgen_anon_1.mtu_result },
            pad: 0,
            checked_ns: now,
        };
        if let Some(cached) = NEXTHOP.get_ptr_mut(slot) {
            // SAFETY: this CPU's slot; programs on one CPU do not interleave (softirq context).
            unsafe { *cached = hop };
        }
        Lookup::Hop(hop)
    } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        Lookup::Unresolved(p.ifindex)
    } else {
        Lookup::Stack
    }
}
