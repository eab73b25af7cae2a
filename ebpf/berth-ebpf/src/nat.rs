//! Header rewrites with checksum fix-ups.
//!
//! Addresses, ports, TTL and the IPv4 header checksum are written directly (the IP header checksum is
//! always complete, so an incremental update is exact). The L4 checksum goes through
//! `bpf_l4_csum_replace`, because only the kernel knows whether the skb is `CHECKSUM_PARTIAL` (veth
//! traffic with offload carries just the pseudo-header sum there, which changes with the addresses but
//! not with the ports) and how to treat UDP's "no checksum" zero. The changes are folded into at most two
//! helper calls: one for the pseudo-header (addresses), one for the ports.

use aya_ebpf::{bindings::BPF_F_PSEUDO_HDR, programs::TcContext};
use berth_common::{PROTO_ICMP, PROTO_UDP};

use crate::packet::{ETH_HLEN, Flow, LATER_FRAGMENT};

/// `BPF_F_MARK_MANGLED_0`: a UDP checksum of zero (none) stays zero.
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

/// The four fields a load-balancer translation may change. Network order.
#[derive(Clone, Copy)]
pub struct Rewrite {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
}

impl Rewrite {
    /// The rewrite a conntrack entry carries.
    #[inline(always)]
    pub fn of(e: &berth_common::CtEntry) -> Self {
        Rewrite {
            saddr: e.nat_saddr,
            daddr: e.nat_daddr,
            sport: e.nat_sport,
            dport: e.nat_dport,
        }
    }
}

/// One's complement addition with end-around carry (the kernel's `csum_add`).
#[inline(always)]
fn csum_add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(carry as u32)
}

/// The checksum difference of replacing `old` by `new` (a 32-bit word, or a zero-extended 16-bit one).
#[inline(always)]
pub fn diff(acc: u32, old: u32, new: u32) -> u32 {
    csum_add(csum_add(acc, !old), new)
}

#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Applies a difference to a stored (complemented) 16-bit checksum: RFC 1624 `HC' = ~(~HC + diff)`.
#[inline(always)]
pub fn csum_apply(csum: u16, d: u32) -> u16 {
    !fold(csum_add(!csum as u32, d))
}

/// Rewrites whichever of the four fields differ from the packet's. Errors come from the helpers or a
/// packet too short to write; the caller counts them and drops the packet.
#[inline(always)]
pub fn apply(ctx: &TcContext, flow: &Flow, to: &Rewrite) -> Result<(), i64> {
    let start = ctx.data();
    let end = ctx.data_end();
    let l4 = flow.l4_off as usize;
    // 8 bytes: a UDP or ICMP header, the start of a TCP header.
    if start + ETH_HLEN + 20 > end || start + l4 + 8 > end {
        return Err(-1);
    }
    let icmp = flow.proto == PROTO_ICMP;
    // A later fragment has no L4 header: only its addresses change (the first fragment's L4
    // checksum, which covers the whole datagram, took the address change already). Its `l4_off`
    // keeps the bounds check above within the IPv4 header (see `Flow::l4_off`).
    let has_l4 = flow.fragment != LATER_FRAGMENT;
    let mut addr_diff = 0u32;
    let mut port_diff = 0u32;
    // SAFETY: bounds checked above: IPv4 header (20 bytes) and 8 bytes of the L4 header.
    unsafe {
        let ip = (start + ETH_HLEN) as *mut u8;
        let ports = (start + l4) as *mut u16;
        if to.saddr != flow.saddr {
            addr_diff = diff(addr_diff, flow.saddr, to.saddr);
            (ip.add(12) as *mut u32).write_unaligned(to.saddr);
        }
        if to.daddr != flow.daddr {
            addr_diff = diff(addr_diff, flow.daddr, to.daddr);
            (ip.add(16) as *mut u32).write_unaligned(to.daddr);
        }
        if addr_diff != 0 {
            let csum = (ip.add(10) as *mut u16).read_unaligned();
            (ip.add(10) as *mut u16).write_unaligned(csum_apply(csum, addr_diff));
        }
        if !has_l4 {
            return Ok(());
        }
        if icmp {
            // The echo identifier (bytes 4-5) is the one "port" that is set (see `Flow`).
            let (old, new) = if flow.sport != 0 {
                (flow.sport, to.sport)
            } else {
                (flow.dport, to.dport)
            };
            if old != new {
                port_diff = diff(port_diff, old as u32, new as u32);
                ports.add(2).write_unaligned(new);
            }
        } else {
            if to.sport != flow.sport {
                port_diff = diff(port_diff, flow.sport as u32, to.sport as u32);
                ports.write_unaligned(to.sport);
            }
            if to.dport != flow.dport {
                port_diff = diff(port_diff, flow.dport as u32, to.dport as u32);
                ports.add(1).write_unaligned(to.dport);
            }
        }
    }
    let mangled = if flow.proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0
    } else {
        0
    };
    let off = flow.l4_csum_off() as usize;
    // Size 0: `to` is a precomputed difference (kernel `inet_proto_csum_replace_by_diff`). ICMP's
    // checksum covers no pseudo-header: addresses leave it unchanged.
    if addr_diff != 0 && !icmp {
        ctx.l4_csum_replace(off, 0, addr_diff as u64, mangled | BPF_F_PSEUDO_HDR as u64)?;
    }
    if port_diff != 0 {
        ctx.l4_csum_replace(off, 0, port_diff as u64, mangled)?;
    }
    Ok(())
}
