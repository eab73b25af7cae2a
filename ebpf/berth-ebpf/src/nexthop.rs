//! Next hops by destination address: the FIB's answer (egress interface, MACs, route MTU) cached in
//! `BERTH_NEXTHOP` (per CPU, direct-mapped) for `NEXTHOP_TTL_NS`. A new flow to a routed backend and
//! every packet into the overlay (whose outer destination is a peer's underlay address) then cost an
//! array lookup instead of a route and neighbour lookup; route and neighbour changes take effect within the TTL, as with the
//! next hop each conntrack entry caches.
//!
//! The cache is keyed by destination only: the FIB is asked with the packet's source and ingress
//! interface, so a node whose routing depends on those (policy routing by source) sees the first
//! answer for a destination reused for the TTL.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams},
    helpers::bpf_fib_lookup,
    programs::TcContext,
};
use berth_common::{NEXTHOP_TTL_NS, NextHop, nexthop_slot};

use crate::maps::NEXTHOP;

const AF_INET: u8 = 2;

/// What is known about the way to a destination (the details are in the [`NextHop`] filled beside).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Resolved: interface, MACs, MTU.
    Hop,
    /// A route, but its neighbour is not resolved yet: `bpf_redirect_neigh` to the hop's interface
    /// lets the kernel resolve it (nothing is cached).
    Unresolved,
    /// Nothing usable here (no route, a local destination, too large for the route): the stack
    /// decides.
    Stack,
}

/// The next hop towards `daddr` for an IPv4 packet of `len` bytes (as it will leave; 0 for a GSO
/// aggregate, which is segmented to fit later) from `saddr`, protocol `l4_proto`, written to `hop`.
#[inline(always)]
pub fn lookup(
    ctx: &TcContext,
    saddr: u32,
    daddr: u32,
    l4_proto: u8,
    len: u16,
    now: u64,
    hop: &mut NextHop,
) -> Lookup {
    let slot = nexthop_slot(daddr);
    // SAFETY: this CPU's slot, copied out at once.
    if let Some(cached) = NEXTHOP.get_ptr(slot).map(|p| unsafe { *p })
        && cached.addr == daddr
        && cached.ifindex != 0
        && now.wrapping_sub(cached.checked_ns) < NEXTHOP_TTL_NS
    {
        *hop = cached;
        return if len > cached.mtu {
            Lookup::Stack
        } else {
            Lookup::Hop
        };
    }
    hop.addr = daddr;
    let rc = fib(ctx, saddr, l4_proto, len, hop);
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        hop.checked_ns = now;
        if let Some(cached) = NEXTHOP.get_ptr_mut(slot) {
            // SAFETY: this CPU's slot; programs on one CPU do not interleave (softirq context).
            unsafe { *cached = *hop };
        }
        Lookup::Hop
    } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        Lookup::Unresolved
    } else {
        Lookup::Stack
    }
}

/// Asks the FIB for the way to `hop.addr` and fills `hop` (interface, MACs, route MTU); returns the
/// lookup's code. Not inlined: a BPF subprogram, so its 64-byte parameter block is not part of every
/// caller's stack frame (the programs inline everything else and share a 512-byte stack).
#[inline(never)]
fn fib(ctx: &TcContext, saddr: u32, l4_proto: u8, len: u16, hop: &mut NextHop) -> i64 {
    // SAFETY: zeroed plain-data struct; helper on the program's own skb.
    unsafe {
        let mut p: FibParams = core::mem::zeroed();
        p.family = AF_INET;
        p.l4_protocol = l4_proto;
        p.ifindex = (*ctx.skb.skb).ifindex;
        // Never 0, which would skip the MTU check and with it the route MTU in the answer.
        p.__bindgen_anon_1.tot_len = len.max(1);
        p.__bindgen_anon_3.ipv4_src = saddr;
        p.__bindgen_anon_4.ipv4_dst = hop.addr;
        let rc = bpf_fib_lookup(ctx.as_ptr(), &mut p, core::mem::size_of::<FibParams>() as i32, 0);
        hop.ifindex = p.ifindex;
        hop.smac = p.smac;
        hop.dmac = p.dmac;
        // On success the kernel writes the route MTU over `tot_len` (a union).
        hop.mtu = p.__bindgen_anon_1.mtu_result;
        rc
    }
}
