//! The pod network between nodes: a packet for a remote node's pod CIDR is wrapped in VXLAN here, in
//! eBPF — outer IPv4 and UDP headers, the VXLAN header (VNI 1) and an inner Ethernet header addressed
//! to the remote VTEP's MAC as flannel addresses it — and sent straight out of the underlay interface.
//! No per-peer kernel state (neighbour, FDB, route) exists, as in Cilium's tunnel mode; flannel nodes
//! read the same wire.
//!
//! Why not a collect-metadata VXLAN device with the tunnel key set from eBPF: its socket's receive
//! path costs an RCU-freed metadata dst per packet (about a fifth of cross-node TCP throughput here,
//! see bench/README.md), and a classic device cannot share UDP 8472 with it. So berth transmits
//! without a device and receives bulk (GSO) traffic through a classic VXLAN device with no per-peer
//! entries, which only ever receives; smaller packets are decapsulated in eBPF (`decap.rs`).
//!
//! `bpf_skb_adjust_room` with the encapsulation flags marks GSO packets as UDP tunnel packets, so they
//! stay aggregated until a device segments them, as the kernel's own VXLAN driver does.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_SHOT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::{
        bpf_get_hash_recalc, bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_redirect, bpf_redirect_neigh,
    },
    maps::lpm_trie::Key,
    programs::TcContext,
};
use berth_common::{NextHop, NodeConfig, OVERLAY_VNI, OverlayPeer, counter, vxlan_port_be};

use crate::{
    forward::rewrite_l2,
    maps::{OVERLAY, count},
    nexthop::{self, Lookup},
    packet::ETH_HLEN,
};

/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
const ENCAP_LEN: usize = 50;
/// Outer TTL.
const TUNNEL_TTL: u8 = 64;
/// Source ports of the outer UDP header, chosen by the inner flow's hash (the kernel VXLAN driver's
/// default range), so the underlay can spread flows.
const SPORT_MIN: u32 = 32768;
const SPORT_RANGE: u32 = 61000 - 32768;
/// `BPF_F_ADJ_ROOM_ENCAP_L2(len)`: the inner MAC header's length.
const ENCAP_L2_ETH_LEN: u64 = (ETH_HLEN as u64) << 56;

/// The one's-complement checksum of an IPv4 header given as its 16-bit words (host order), the
/// checksum word left out.
#[inline(always)]
fn ipv4_csum(words: &[u16; 9]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < words.len() {
        sum += words[i] as u32;
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// If `daddr` (network order) is in a remote node's pod CIDR, encapsulates towards that node and
/// returns the verdict; `None` when the destination is not remote (or there is no overlay, or the
/// packet cannot be grown), and the stack takes the packet (its MACs and TTL may have been rewritten).
#[inline(always)]
pub fn to_remote_pod(ctx: &TcContext, cfg: &NodeConfig, daddr: u32) -> Option<i32> {
    encapsulate(ctx, cfg, &peer(cfg, daddr)?)
}

/// The remote node whose pod CIDR holds `daddr`, when this node runs the overlay.
#[inline(always)]
pub fn peer(cfg: &NodeConfig, daddr: u32) -> Option<OverlayPeer> {
    if cfg.vtep_ifindex == 0 || cfg.snat_addr == 0 {
        return None;
    }
    OVERLAY.get(Key::new(32, daddr)).copied()
}

/// Encapsulates the packet towards `peer` and returns the verdict; `None` when the stack must take it
/// (no route to the peer, too large for the underlay, not growable). Not inlined: a BPF subprogram,
/// so its header buffer is not part of the callers' stack frames (they share 512 bytes).
#[inline(never)]
pub fn encapsulate(ctx: &TcContext, cfg: &NodeConfig, peer: &OverlayPeer) -> Option<i32> {
    // The underlay's next hop towards the peer, as if this node forwarded a packet to it (cached per
    // peer). The MTU check is made with the packet's size once encapsulated: a packet too large for
    // the underlay is left to the stack, which routes it to the VXLAN device (MTU underlay - 50) and
    // so answers "fragmentation needed" with the right MTU (path MTU discovery). A GSO aggregate is
    // checked by the kernel as segments (length 0: not checked here).
    // SAFETY: reads of the skb's GSO size.
    let len = if unsafe { (*ctx.skb.skb).gso_size } != 0 {
        0
    } else {
        ((ctx.len() as usize).saturating_sub(ETH_HLEN) + ENCAP_LEN).min(0xffff) as u16
    };
    // SAFETY: coarse clock helper, no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let mut hop = NextHop::default();
    // Unresolved: the underlay neighbour is not known yet; the kernel resolves it (outer MACs too).
    let resolved = match nexthop::lookup(ctx, cfg.snat_addr, peer.underlay, 17, len, now, &mut hop) {
        Lookup::Hop => true,
        Lookup::Unresolved => false,
        Lookup::Stack => return None,
    };
    let (ifindex, smac, dmac) = (hop.ifindex, hop.smac, hop.dmac);
    // Inner packet: one routing hop (TTL), inner frame MACs are written below; the outer MACs now.
    if !rewrite_l2(ctx, &smac, &dmac) {
        return None;
    }
    let start = ctx.data();
    if start + ETH_HLEN + 20 > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked above; reads of the inner IPv4 header's TOS byte.
    let tos = unsafe { *((start + ETH_HLEN + 1) as *const u8) };
    // SAFETY: helpers on the program's own skb, no arguments.
    let (hash, id) = unsafe { (bpf_get_hash_recalc(ctx.skb.skb), bpf_get_prandom_u32() as u16) };
    let flags = BPF_F_ADJ_ROOM_FIXED_GSO as u64
        | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 as u64
        | BPF_F_ADJ_ROOM_ENCAP_L4_UDP as u64
        | BPF_F_ADJ_ROOM_ENCAP_L2_ETH as u64
        | ENCAP_L2_ETH_LEN;
    if ctx
        .adjust_room(ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, flags)
        .is_err()
    {
        // Already encapsulated, or not a packet the helper can grow: the stack decides.
        return None;
    }
    let outer_len = (ctx.len() as usize).saturating_sub(ETH_HLEN).min(0xffff) as u16;
    let sport = (SPORT_MIN + hash % SPORT_RANGE) as u16;
    // The new headers are written in place (the room just made is in the linear head), without a
    // buffer on the stack and a `bpf_skb_store_bytes` copy.
    let start = ctx.data();
    if start + ETH_HLEN + ENCAP_LEN > ctx.data_end() {
        return Some(TC_ACT_SHOT as i32);
    }
    let (saddr, daddr) = (cfg.snat_addr.to_ne_bytes(), peer.underlay.to_ne_bytes());
    // Outer IPv4: no options, no DF (as the kernel VXLAN driver sends by default), random id, its
    // checksum computed from the same fields.
    let csum = ipv4_csum(&[
        0x4500 | tos as u16,
        outer_len,
        id,
        0,
        (TUNNEL_TTL as u16) << 8 | 17,
        u16::from_be_bytes([saddr[0], saddr[1]]),
        u16::from_be_bytes([saddr[2], saddr[3]]),
        u16::from_be_bytes([daddr[0], daddr[1]]),
        u16::from_be_bytes([daddr[2], daddr[3]]),
    ]);
    // SAFETY: bounds checked above: ENCAP_LEN bytes after the outer Ethernet header.
    unsafe {
        let h = (start + ETH_HLEN) as *mut u8;
        let put16 = |off: usize, v: u16| (h.add(off) as *mut u16).write_unaligned(v.to_be());
        h.write(0x45);
        h.add(1).write(tos);
        put16(2, outer_len);
        put16(4, id);
        put16(6, 0);
        h.add(8).write(TUNNEL_TTL);
        h.add(9).write(17);
        put16(10, csum);
        (h.add(12) as *mut [u8; 4]).write_unaligned(saddr);
        (h.add(16) as *mut [u8; 4]).write_unaligned(daddr);
        // UDP: zero checksum (allowed over IPv4; flannel's devices and Cilium send none).
        put16(20, sport);
        (h.add(22) as *mut u16).write_unaligned(vxlan_port_be(cfg));
        put16(24, outer_len.saturating_sub(20));
        put16(26, 0);
        // VXLAN: flags (valid VNI), reserved, VNI.
        (h.add(28) as *mut u32).write_unaligned(0x0800_0000u32.to_be());
        (h.add(32) as *mut u32).write_unaligned((OVERLAY_VNI << 8).to_be());
        // Inner Ethernet: from this node's VTEP to the remote VTEP, as flannel addresses it.
        (h.add(36) as *mut [u8; 6]).write_unaligned(peer.vtep_mac);
        (h.add(42) as *mut [u8; 6]).write_unaligned(cfg.vtep_mac);
        put16(48, 0x0800);
    }
    count(counter::OVERLAY_ENCAP);
    // SAFETY: plain helper calls.
    Some(unsafe {
        if resolved {
            bpf_redirect(ifindex, 0)
        } else {
            bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0)
        }
    } as i32)
}
