//! The pod network between nodes: a packet for a remote node's pod CIDR is handed to the node's one
//! collect-metadata VXLAN device with the tunnel key set from eBPF (VNI 1, the remote underlay address),
//! the inner frame addressed to the remote VTEP's MAC as flannel addresses it. No per-peer kernel state
//! (neighbour, FDB, route) is needed, as in Cilium's tunnel mode; flannel nodes read the same wire.

use aya_ebpf::{
    bindings::bpf_tunnel_key,
    helpers::{bpf_redirect, bpf_skb_set_tunnel_key},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use berth_common::{OVERLAY_VNI, counter};

use crate::{
    forward::rewrite_l2,
    maps::{CONFIG, OVERLAY, count},
};

/// `BPF_F_ZERO_CSUM_TX`: no outer UDP checksum, as flannel's VXLAN devices send (the inner packet
/// carries its own checksums; VXLAN over IPv4 allows a zero UDP checksum).
const BPF_F_ZERO_CSUM_TX: u64 = 1 << 1;
/// Outer TTL of VXLAN packets.
const TUNNEL_TTL: u8 = 64;

/// If `daddr` (network order) is in a remote node's pod CIDR, encapsulates towards that node and
/// returns the verdict; `None` when the destination is not remote (or there is no overlay).
#[inline(always)]
pub fn to_remote_pod(ctx: &TcContext, daddr: u32) -> Option<i32> {
    let cfg = CONFIG.get(0)?;
    if cfg.vtep_ifindex == 0 {
        return None;
    }
    let peer = OVERLAY.get(Key::new(32, daddr))?;
    // SAFETY: zeroed plain-data struct; helper on the program's own skb.
    unsafe {
        let mut key: bpf_tunnel_key = core::mem::zeroed();
        key.tunnel_id = OVERLAY_VNI;
        key.__bindgen_anon_1.remote_ipv4 = u32::from_be(peer.underlay);
        key.tunnel_ttl = TUNNEL_TTL;
        if bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            BPF_F_ZERO_CSUM_TX,
        ) != 0
        {
            return None;
        }
    }
    if !rewrite_l2(ctx, &cfg.vtep_mac, &peer.vtep_mac) {
        return None;
    }
    count(counter::OVERLAY_ENCAP);
    // SAFETY: plain helper call.
    Some(unsafe { bpf_redirect(cfg.vtep_ifindex, 0) } as i32)
}
