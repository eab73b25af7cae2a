//! Forwarding a translated packet straight to its egress interface (FIB lookup + redirect), the way
//! Cilium's "BPF host routing" does.
//!
//! Besides skipping the host stack's routing and netfilter work, this is what makes NodePort SNAT
//! possible at all: a packet arriving with the node's own address as source (a SNATed request, or a
//! reply rewritten to come from `node-ip:nodePort`) would be dropped by the stack as a martian.
//! When the FIB has no answer (no route, destination local, fragmentation needed) the packet goes to
//! the stack as before.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, bpf_fib_lookup as FibParams},
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};

use crate::packet::ETH_HLEN;

const AF_INET: u8 = 2;
const IP_TTL_OFF: usize = ETH_HLEN + 8;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;

/// Decrements the IPv4 TTL like a router; `false` when it reached zero (let the stack answer).
#[inline(always)]
fn decrement_ttl(ctx: &TcContext) -> bool {
    let Ok(word) = ctx.load::<[u8; 2]>(IP_TTL_OFF) else {
        return false;
    };
    if word[0] <= 1 {
        return false;
    }
    let old = u16::from_ne_bytes(word);
    let new = u16::from_ne_bytes([word[0] - 1, word[1]]);
    ctx.l3_csum_replace(IP_CSUM_OFF, old as u64, new as u64, 2)
        .is_ok()
        && ctx.store(IP_TTL_OFF, &(word[0] - 1), 0).is_ok()
}

/// Sends the (already translated) packet to the next hop for `daddr`, or returns `TC_ACT_OK` to let
/// the stack route it.
#[inline(always)]
pub fn redirect(ctx: &TcContext, saddr: u32, daddr: u32, proto: u8) -> i32 {
    // SAFETY: zeroed plain-data struct; helper calls on the program's own skb.
    unsafe {
        let mut p: FibParams = core::mem::zeroed();
        p.family = AF_INET;
        p.l4_protocol = proto;
        p.ifindex = (*ctx.skb.skb).ifindex;
        p.__bindgen_anon_1.tot_len = (ctx.len() as usize).saturating_sub(ETH_HLEN) as u16;
        p.__bindgen_anon_3.ipv4_src = saddr;
        p.__bindgen_anon_4.ipv4_dst = daddr;
        let rc = bpf_fib_lookup(ctx.as_ptr(), &mut p, core::mem::size_of::<FibParams>() as i32, 0);
        if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
            if !decrement_ttl(ctx) || ctx.store(0, &p.dmac, 0).is_err() || ctx.store(6, &p.smac, 0).is_err() {
                return TC_ACT_OK as i32;
            }
            bpf_redirect(p.ifindex, 0) as i32
        } else if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
            if !decrement_ttl(ctx) {
                return TC_ACT_OK as i32;
            }
            bpf_redirect_neigh(p.ifindex, core::ptr::null_mut(), 0, 0) as i32
        } else {
            TC_ACT_OK as i32
        }
    }
}
