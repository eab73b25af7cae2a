//! IP fragments after the first follow their flow.
//!
//! Only a datagram's first fragment carries the L4 header, so only it has ports to look a flow up by;
//! the others would reach the Service address untranslated and be lost (a large DNS answer, a UDP
//! datagram above the MTU). The first fragment's ports are remembered under the datagram's identity
//! (addresses, IP identification, protocol), as Cilium's fragment map does; a later fragment takes
//! them and is translated like its flow's other packets, addresses only. A later fragment that
//! arrives before its first passes untranslated.

use aya_ebpf::{macros::map, maps::LruHashMap, programs::TcContext};
use berth_common::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

use crate::packet::{ETH_HLEN, Flow, IP_OFFSET, LATER_FRAGMENT};

/// Datagrams being fragmented at once; entries are only needed for the milliseconds between a
/// datagram's fragments, so the LRU's oldest go first.
const DATAGRAMS: u32 = 8192;

/// A fragmented datagram's identity. Addresses as in the packet (network order).
#[repr(C)]
#[derive(Clone, Copy)]
struct DatagramKey {
    saddr: u32,
    daddr: u32,
    id: u16,
    proto: u8,
    pad: u8,
}

/// The first fragment's ports (network order), as [`Flow`] has them.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ports {
    sport: u16,
    dport: u16,
}

#[map(name = "BERTH_FRAGS")]
static DATAGRAMS_MAP: LruHashMap<DatagramKey, Ports> = LruHashMap::with_max_entries(DATAGRAMS, 0);

/// The packet's start and end, read volatile so that LLVM keeps the loads in this subprogram (hoisted
/// into the caller, the packet pointers would arrive as plain integers the verifier cannot compare).
#[inline(always)]
fn bounds(ctx: &TcContext) -> (usize, usize) {
    // SAFETY: reading two fields of the context.
    unsafe {
        let skb = ctx.skb.skb;
        (
            core::ptr::read_volatile(&(*skb).data) as usize,
            core::ptr::read_volatile(&(*skb).data_end) as usize,
        )
    }
}

/// Remembers the ports of a first fragment (`flow` parsed from it). Not inlined: a BPF subprogram.
#[inline(never)]
pub fn remember(ctx: &TcContext, flow: &Flow) {
    let (start, end) = bounds(ctx);
    if start + ETH_HLEN + 20 > end {
        return;
    }
    // SAFETY: bounds checked above (the IPv4 header).
    let id = unsafe { ((start + ETH_HLEN + 4) as *const u16).read_unaligned() };
    let key = DatagramKey {
        saddr: flow.saddr,
        daddr: flow.daddr,
        id,
        proto: flow.proto,
        pad: 0,
    };
    let ports = Ports {
        sport: flow.sport,
        dport: flow.dport,
    };
    let _ = DATAGRAMS_MAP.insert(&key, &ports, 0);
}

/// If the packet is a later fragment of a datagram whose first fragment was seen, fills `out` as
/// that datagram's flow (with [`LATER_FRAGMENT`]) and returns true. Not inlined: a BPF subprogram.
#[inline(never)]
pub fn later(ctx: &TcContext, out: &mut Flow) -> bool {
    let (start, end) = bounds(ctx);
    if start + ETH_HLEN + 20 > end {
        return false;
    }
    // SAFETY: bounds checked above (the IPv4 header without options).
    unsafe {
        let ip = (start + ETH_HLEN) as *const u8;
        if *ip >> 4 != 4 || *((start + 12) as *const u16) != 0x0800u16.to_be() {
            return false;
        }
        let frag = u16::from_be((ip.add(6) as *const u16).read_unaligned());
        let proto = *ip.add(9);
        if frag & IP_OFFSET == 0 || (proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP) {
            return false;
        }
        let key = DatagramKey {
            saddr: (ip.add(12) as *const u32).read_unaligned(),
            daddr: (ip.add(16) as *const u32).read_unaligned(),
            id: (ip.add(4) as *const u16).read_unaligned(),
            proto,
            pad: 0,
        };
        let Some(ports) = DATAGRAMS_MAP.get(&key).copied() else {
            return false;
        };
        let ihl = ((*ip & 0x0f) as u32) * 4;
        out.saddr = key.saddr;
        out.daddr = key.daddr;
        out.sport = ports.sport;
        out.dport = ports.dport;
        out.proto = proto;
        out.tcp_flags = 0;
        out.fragment = LATER_FRAGMENT;
        out.ihl = ihl;
        out.l4_off = ETH_HLEN as u32 + ihl - 8;
    }
    true
}
