//! VXLAN decapsulation in eBPF, at the uplink's TC ingress, for packets whose inner destination is a
//! pod of this node: the outer IPv4/UDP/VXLAN headers and the inner Ethernet header are removed in
//! place (`bpf_skb_adjust_room`) and the inner packet goes on through the same load-balancing and
//! delivery logic as a packet from a pod, ending in the pod's namespace.
//!
//! Why: it skips the UDP socket, the VXLAN driver, its GRO cell and the host's routing for the packet,
//! which shortens the round trip of small packets (handshakes, ACKs, requests and responses).
//!
//! TCP GSO aggregates (several segments in one skb: a sender's unsegmented burst, or what GRO merged
//! on arrival) are decapsulated too, whole: bulk transfers then skip the VXLAN device as well (single
//! stream 14.7 -> 16.1 Gbit/s in the overlay bench, 1.09x flannel-style kernel VXLAN). The aggregate
//! keeps its segment size and checksum state (see below), and also its tunnel GSO type, which only
//! `BPF_F_ADJ_ROOM_DECAP_L4_UDP` (newer kernels than 6.18) would clear: harmless for the pod's own
//! sockets, which take the aggregate whole; a pod that routes such a packet on (a router or VPN pod)
//! would have it segmented as a tunnel packet, which it no longer is. Calico's eBPF data plane
//! decapsulates aggregates the same way. The outer UDP checksum is not verified (VXLAN over IPv4
//! senders, flannel's included, commonly send none); for single packets adjusting the room resets
//! the skb's checksum state, so their own checksums are verified by the pod's stack.

use aya_ebpf::{
    bindings::{BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_ADJ_ROOM_NO_CSUM_RESET, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    programs::TcContext,
};
use berth_common::{OVERLAY_VNI, PROTO_TCP, counter, vxlan_port_be};

use crate::{
    local,
    maps::{CONFIG, count},
    packet::ETH_HLEN,
};

/// Outer IPv4 (no options) + UDP + VXLAN headers, and the inner Ethernet header.
const ENCAP_LEN: usize = 20 + 8 + 8 + ETH_HLEN;
/// VXLAN flags byte: a valid VNI follows.
const VXLAN_F_VNI: u8 = 0x08;

/// What the uplink does with an arriving packet.
pub enum Arrival {
    /// VXLAN for a local pod, decapsulated: the context holds the inner packet behind an Ethernet header.
    Decapsulated,
    /// The overlay's own traffic left to the node's VXLAN device (inner destinations that are not
    /// local pods, aggregates that are not TCP): nothing for the load balancer to look at.
    Overlay,
    /// Anything else.
    Other,
}

/// Decapsulates VXLAN (VNI 1, to this node's address) carrying an IPv4 packet for a local pod.
#[inline(always)]
pub fn vxlan_to_local_pod(ctx: &TcContext) -> Arrival {
    let start = ctx.data();
    if start + ETH_HLEN + ENCAP_LEN + 20 > ctx.data_end() {
        return Arrival::Other;
    }
    let Some(cfg) = CONFIG.get(0) else {
        return Arrival::Other;
    };
    if cfg.vtep_ifindex == 0 || cfg.snat_addr == 0 {
        return Arrival::Other;
    }
    // SAFETY: every read below is inside the bounds checked above.
    unsafe {
        let outer = start + ETH_HLEN;
        if *((start + 12) as *const u16) != 0x0800u16.to_be()
            || *(outer as *const u8) != 0x45
            || *((outer + 9) as *const u8) != 17
            || *((outer + 6) as *const u16) & 0x3fffu16.to_be() != 0 // fragments
            || ((outer + 16) as *const u32).read_unaligned() != cfg.snat_addr
        {
            return Arrival::Other;
        }
        let udp = outer + 20;
        if ((udp + 2) as *const u16).read_unaligned() != vxlan_port_be(cfg) {
            return Arrival::Other;
        }
        let vxlan = udp + 8;
        if *(vxlan as *const u8) & VXLAN_F_VNI == 0
            || ((vxlan + 4) as *const u32).read_unaligned() != (OVERLAY_VNI << 8).to_be()
        {
            return Arrival::Other;
        }
        let inner_eth = vxlan + 8;
        if *((inner_eth + 12) as *const u16) != 0x0800u16.to_be() {
            return Arrival::Overlay;
        }
        let inner_ip = inner_eth + ETH_HLEN;
        let daddr = ((inner_ip + 16) as *const u32).read_unaligned();
        if local::endpoint(daddr).is_none() {
            return Arrival::Overlay;
        }
    }
    // SAFETY: reading a plain field of the context.
    let aggregate = unsafe { (*ctx.skb.skb).gso_size } != 0;
    // Only TCP aggregates: the pod's TCP takes one whole, while its UDP splits a UDP GSO aggregate
    // (`udp_rcv_segment`), and with the tunnel GSO type still set (see above) it would split it as a
    // tunnel packet. Those stay with the VXLAN device.
    // SAFETY: inside the bounds checked above (inner IPv4 header).
    if aggregate && unsafe { *((start + ETH_HLEN + ENCAP_LEN + 9) as *const u8) } != PROTO_TCP {
        return Arrival::Overlay;
    }
    // A GSO aggregate keeps its segment size (the inner TCP's MSS, not 50 bytes more) and its
    // checksum state: its inner checksums were validated when it was aggregated (GRO) or are still
    // to be filled in (a local sender's CHECKSUM_PARTIAL), and a reset would make the pod's stack
    // check one checksum over the whole aggregate and drop it.
    let flags = if aggregate {
        (BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_NO_CSUM_RESET) as u64
    } else {
        0
    };
    if ctx
        .adjust_room(-(ENCAP_LEN as i32), BPF_ADJ_ROOM_MAC, flags)
        .is_err()
    {
        return Arrival::Overlay;
    }
    count(counter::OVERLAY_DECAP);
    if aggregate {
        count(counter::OVERLAY_DECAP_GSO);
    }
    Arrival::Decapsulated
}
