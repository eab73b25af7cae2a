//! Refusing flows to a Service with no backend, as kube-proxy does: a TCP SYN is answered with a reset,
//! a UDP datagram with ICMP port unreachable, so clients fail at once instead of hanging.
//!
//! The reply is built in place (the packet is trimmed or grown with `bpf_skb_change_tail`) and sent
//! back out of the interface it came in on.

use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use berth_common::{PROTO_TCP, PROTO_UDP};

use crate::packet::{ETH_HLEN, Flow, TCP_ACK, TCP_SYN};

const RST_LEN: usize = ETH_HLEN + 20 + 20;
const ICMP_QUOTE: usize = 20 + 8;
const ICMP_LEN: usize = ETH_HLEN + 20 + 8 + ICMP_QUOTE;

/// Sums 16-bit big-endian words (one's complement, unfolded).
#[inline(always)]
fn sum16(bytes: &[u8], mut acc: u32) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        acc += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    acc
}

#[inline(always)]
fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// Writes an IPv4 header (no options) into `ip` with its checksum.
#[inline(always)]
fn ipv4_header(ip: &mut [u8], total_len: u16, proto: u8, saddr: u32, daddr: u32) {
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]);
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&saddr.to_ne_bytes());
    ip[16..20].copy_from_slice(&daddr.to_ne_bytes());
    let csum = fold(sum16(&ip[..20], 0));
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
}

#[inline(always)]
fn swapped_ethernet(ctx: &TcContext, out: &mut [u8]) -> Option<()> {
    let eth: [u8; ETH_HLEN] = ctx.load(0).ok()?;
    out[0..6].copy_from_slice(&eth[6..12]);
    out[6..12].copy_from_slice(&eth[0..6]);
    out[12..14].copy_from_slice(&eth[12..14]);
    Some(())
}

#[inline(always)]
fn tcp_reset(ctx: &TcContext, flow: &Flow) -> Option<i32> {
    if flow.tcp_flags & TCP_SYN == 0 || flow.tcp_flags & TCP_ACK != 0 || flow.ihl != 20 {
        return None;
    }
    let seq: u32 = ctx.load::<u32>(flow.l4_off as usize + 4).ok()?;
    let mut f = [0u8; RST_LEN];
    swapped_ethernet(ctx, &mut f)?;
    ipv4_header(
        &mut f[ETH_HLEN..ETH_HLEN + 20],
        40,
        PROTO_TCP,
        flow.daddr,
        flow.saddr,
    );
    let tcp = &mut f[ETH_HLEN + 20..];
    tcp[0..2].copy_from_slice(&flow.dport.to_ne_bytes());
    tcp[2..4].copy_from_slice(&flow.sport.to_ne_bytes());
    // seq 0, ack = their SYN + 1
    tcp[8..12].copy_from_slice(&u32::from_be(seq).wrapping_add(1).to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x14; // RST | ACK
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&flow.daddr.to_ne_bytes());
    pseudo[4..8].copy_from_slice(&flow.saddr.to_ne_bytes());
    pseudo[9] = PROTO_TCP;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let csum = fold(sum16(&tcp[..20], sum16(&pseudo, 0)));
    tcp[16..18].copy_from_slice(&csum.to_be_bytes());
    Some(write_and_redirect(ctx, &f))
}

#[inline(always)]
fn icmp_unreachable(ctx: &TcContext, flow: &Flow) -> Option<i32> {
    if flow.ihl != 20 {
        return None;
    }
    let quote: [u8; ICMP_QUOTE] = ctx.load(ETH_HLEN).ok()?;
    let mut f = [0u8; ICMP_LEN];
    swapped_ethernet(ctx, &mut f)?;
    ipv4_header(
        &mut f[ETH_HLEN..ETH_HLEN + 20],
        (ICMP_LEN - ETH_HLEN) as u16,
        1,
        flow.daddr,
        flow.saddr,
    );
    let icmp = &mut f[ETH_HLEN + 20..];
    icmp[0] = 3; // destination unreachable
    icmp[1] = 3; // port unreachable
    icmp[8..8 + ICMP_QUOTE].copy_from_slice(&quote);
    let csum = fold(sum16(&icmp[..8 + ICMP_QUOTE], 0));
    icmp[2..4].copy_from_slice(&csum.to_be_bytes());
    Some(write_and_redirect(ctx, &f))
}

#[inline(always)]
fn write_and_redirect<const N: usize>(ctx: &TcContext, frame: &[u8; N]) -> i32 {
    // SAFETY: plain helper calls on the program's own skb; the frame is a fixed-size stack array.
    unsafe {
        if bpf_skb_change_tail(ctx.skb.skb, N as u32, 0) != 0 {
            return TC_ACT_SHOT as i32;
        }
        if ctx.store(0, frame, 0).is_err() {
            return TC_ACT_SHOT as i32;
        }
        let ifindex = (*ctx.skb.skb).ifindex;
        if bpf_redirect(ifindex, 0) == TC_ACT_REDIRECT as i64 {
            TC_ACT_REDIRECT as i32
        } else {
            TC_ACT_SHOT as i32
        }
    }
}

/// Answers a packet for a frontend without backends; drops what cannot be answered.
#[inline(never)]
pub fn refuse(ctx: &TcContext, flow: &Flow) -> i32 {
    let answered = match flow.proto {
        PROTO_TCP => tcp_reset(ctx, flow),
        PROTO_UDP => icmp_unreachable(ctx, flow),
        _ => None,
    };
    answered.unwrap_or(TC_ACT_SHOT as i32)
}
