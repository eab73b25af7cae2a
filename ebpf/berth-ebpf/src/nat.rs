//! Header rewrites with checksum fix-ups.
//!
//! The kernel helpers `bpf_l3_csum_replace` / `bpf_l4_csum_replace` are used rather than computing
//! checksums by hand because they handle `CHECKSUM_PARTIAL` skbs (veth traffic with checksum offload
//! carries only the pseudo-header sum in the L4 field) and UDP's "no checksum" zero correctly.

use aya_ebpf::{bindings::BPF_F_PSEUDO_HDR, programs::TcContext};
use berth_common::PROTO_UDP;

use crate::packet::{ETH_HLEN, Flow};

/// `BPF_F_MARK_MANGLED_0`: a UDP checksum of zero (none) stays zero.
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;
const IP_CSUM_OFF: u32 = ETH_HLEN as u32 + 10;
const IP_SRC_OFF: u32 = ETH_HLEN as u32 + 12;
const IP_DST_OFF: u32 = ETH_HLEN as u32 + 16;

/// The four fields a load-balancer translation may change. Network order.
#[derive(Clone, Copy)]
pub struct Rewrite {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
}

#[inline(always)]
fn l4_flags(flow: &Flow) -> u64 {
    if flow.proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0
    } else {
        0
    }
}

#[inline(always)]
fn rewrite_addr(ctx: &TcContext, flow: &Flow, off: u32, old: u32, new: u32) -> Result<(), i64> {
    ctx.l4_csum_replace(
        flow.l4_csum_off() as usize,
        old as u64,
        new as u64,
        l4_flags(flow) | BPF_F_PSEUDO_HDR as u64 | 4,
    )?;
    ctx.l3_csum_replace(IP_CSUM_OFF as usize, old as u64, new as u64, 4)?;
    ctx.store(off as usize, &new, 0)
}

#[inline(always)]
fn rewrite_port(ctx: &TcContext, flow: &Flow, off: u32, old: u16, new: u16) -> Result<(), i64> {
    ctx.l4_csum_replace(
        flow.l4_csum_off() as usize,
        old as u64,
        new as u64,
        l4_flags(flow) | 2,
    )?;
    ctx.store(off as usize, &new, 0)
}

/// Rewrites whichever of the four fields differ from the packet's. Errors come from the helpers
/// (packet not writable); the caller counts them and passes the packet on.
#[inline(always)]
pub fn apply(ctx: &TcContext, flow: &Flow, to: &Rewrite) -> Result<(), i64> {
    if to.saddr != flow.saddr {
        rewrite_addr(ctx, flow, IP_SRC_OFF, flow.saddr, to.saddr)?;
    }
    if to.daddr != flow.daddr {
        rewrite_addr(ctx, flow, IP_DST_OFF, flow.daddr, to.daddr)?;
    }
    if to.sport != flow.sport {
        rewrite_port(ctx, flow, flow.l4_off, flow.sport, to.sport)?;
    }
    if to.dport != flow.dport {
        rewrite_port(ctx, flow, flow.l4_off + 2, flow.dport, to.dport)?;
    }
    Ok(())
}
