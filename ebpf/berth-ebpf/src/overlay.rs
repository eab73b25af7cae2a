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
use berth_common::{NodeConfig, OVERLAY_VNI, OverlayPeer, counter, vxlan_port_be};

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

/// The one's-complement checksum of an IPv4 header.
#[inline(always)]
fn ipv4_csum(h: &[u8; 20]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 20 {
        sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        i += 2;
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
/// (no route to the peer, too large for the underlay, not growable).
#[inline(always)]
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
    let (ifindex, smac, dmac, resolved) = match nexthop::lookup(ctx, cfg.snat_addr, peer.underlay, 17, len, now) {
        Lookup::Hop(h) => (h.ifindex, h.smac, h.dmac, true),
        // The underlay neighbour is not resolved yet: the kernel resolves it (outer MACs too).
        Lookup::Unresolved(ifindex) => (ifindex, [0; 6], [0; 6], false),
        Lookup::Stack => return None,
    };
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
    let mut hdr = [0u8; ENCAP_LEN];
    // Outer IPv4: no options, no DF (as the kernel VXLAN driver sends by default), random id.
    hdr[0] = 0x45;
    hdr[1] = tos;
    hdr[2..4].copy_from_slice(&outer_len.to_be_bytes());
    hdr[4..6].copy_from_slice(&id.to_be_bytes());
    hdr[8] = TUNNEL_TTL;
    hdr[9] = 17;
    hdr[12..16].copy_from_slice(&cfg.snat_addr.to_ne_bytes());
    hdr[16..20].copy_from_slice(&peer.underlay.to_ne_bytes());
    let mut ip = [0u8; 20];
    ip.copy_from_slice(&hdr[..20]);
    hdr[10..12].copy_from_slice(&ipv4_csum(&ip).to_be_bytes());
    // UDP: zero checksum (allowed over IPv4; flannel's devices and Cilium send none).
    let sport = (SPORT_MIN + hash % SPORT_RANGE) as u16;
    hdr[20..22].copy_from_slice(&sport.to_be_bytes());
    hdr[22..24].copy_from_slice(&vxlan_port_be(cfg).to_ne_bytes());
    hdr[24..26].copy_from_slice(&outer_len.saturating_sub(20).to_be_bytes());
    // VXLAN: flags (valid VNI), VNI.
    hdr[28] = 0x08;
    hdr[32..36].copy_from_slice(&(OVERLAY_VNI << 8).to_be_bytes());
    // Inner Ethernet: from this node's VTEP to the remote VTEP, as flannel addresses it.
    hdr[36..42].copy_from_slice(&peer.vtep_mac);
    hdr[42..48].copy_from_slice(&cfg.vtep_mac);
    hdr[48..50].copy_from_slice(&0x0800u16.to_be_bytes());
    if ctx.store(ETH_HLEN, &hdr, 0).is_err() {
        return Some(TC_ACT_SHOT as i32);
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
