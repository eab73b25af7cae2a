//! ICMP errors about translated flows, translated back, as netfilter's conntrack does for "related"
//! ICMP and Cilium's reverse NAT of ICMP errors.
//!
//! An ICMP error quotes the packet that caused it, as it was when it caused it: after translation.
//! "Fragmentation needed" from a router on the way to a backend quotes `client -> backend:port`, a
//! backend's "port unreachable" likewise, one about a masqueraded flow quotes `node:port -> remote`.
//! The client's kernel matches an error to a socket by the quoted tuple, so unless the quote shows
//! `client -> frontend:port` again, path MTU discovery through a Service never learns the smaller MTU
//! and a UDP client never hears "refused". The quoted packet's reply direction is a conntrack key: its
//! reply entry holds the original tuple. The quote and the outer header (the error goes to the client;
//! one the backend itself sent comes from the frontend) are rewritten with their checksums; the quoted
//! L4 checksum is left alone (it covers data the quote lacks, and no receiver checks it).
//!
//! Only the common layout is handled: outer and quoted IPv4 headers without options (constant offsets
//! keep direct packet access verifiable in a subprogram). Anything else passes unchanged.

use aya_ebpf::programs::TcContext;
use berth_common::{CT_F_REPLY, CtKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

use crate::{
    maps::CONNTRACK,
    nat::{csum_apply, diff},
    packet::ETH_HLEN,
};

/// Offsets of the handled layout: outer IPv4 (20 bytes), ICMP header (8), quoted IPv4 (20), the first
/// 8 bytes of the quoted L4 header (ports, or an echo's identifier).
const OUTER_IP: usize = ETH_HLEN;
const ICMP: usize = OUTER_IP + 20;
const QUOTED_IP: usize = ICMP + 8;
const QUOTED_L4: usize = QUOTED_IP + 20;
const END: usize = QUOTED_L4 + 8;

/// ICMP types that quote a packet and concern its flow.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// Echo request, as a quoted packet (a ping through the masquerade meeting a TTL or MTU limit).
const ICMP_ECHO_REQUEST: u8 = 8;
/// IPv4 version 4, header length 5 words.
const IPV4_NO_OPTIONS: u8 = 0x45;

/// If the packet is an ICMP error about a flow with conntrack entries, rewrites it for the flow's
/// original tuple and returns its new destination (the client, network order); 0 when it is none
/// (passed on unchanged). Not inlined: a BPF subprogram with its own stack frame.
#[inline(never)]
pub fn reverse(ctx: &TcContext) -> u32 {
    // Volatile reads: otherwise LLVM hoists the two loads into the callers and passes the packet
    // pointers as plain integer arguments, which the verifier refuses to compare.
    // SAFETY: reading two fields of the context.
    let (start, end) = unsafe {
        let skb = ctx.skb.skb;
        (
            core::ptr::read_volatile(&(*skb).data) as usize,
            core::ptr::read_volatile(&(*skb).data_end) as usize,
        )
    };
    if start + END > end {
        return 0;
    }
    // SAFETY: bounds checked above for every offset below END.
    unsafe {
        let ip = (start + OUTER_IP) as *mut u8;
        if *ip != IPV4_NO_OPTIONS || *ip.add(9) != PROTO_ICMP {
            return 0;
        }
        let icmp = (start + ICMP) as *mut u8;
        let kind = *icmp;
        if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
            return 0;
        }
        let quoted = (start + QUOTED_IP) as *mut u8;
        let proto = *quoted.add(9);
        if *quoted != IPV4_NO_OPTIONS {
            return 0;
        }
        let l4 = (start + QUOTED_L4) as *mut u16;
        // The quoted packet's "ports" as conntrack keys them: an echo request's identifier is its
        // source port, its destination port 0 (see `packet::Flow`).
        let echo = proto == PROTO_ICMP;
        let (sport, dport) = if proto == PROTO_TCP || proto == PROTO_UDP {
            (l4.read_unaligned(), l4.add(1).read_unaligned())
        } else if echo && *(l4 as *const u8) == ICMP_ECHO_REQUEST {
            (l4.add(2).read_unaligned(), 0)
        } else {
            return 0;
        };
        let saddr = (quoted.add(12) as *const u32).read_unaligned();
        let daddr = (quoted.add(16) as *const u32).read_unaligned();
        let reply_key = CtKey {
            saddr: daddr,
            daddr: saddr,
            sport: dport,
            dport: sport,
            proto,
            pad: [0; 3],
        };
        let Some(e) = CONNTRACK.get(&reply_key).copied() else {
            return 0;
        };
        if e.flags & CT_F_REPLY == 0 {
            return 0;
        }
        // The reply entry maps replies back to the original tuple: the quoted request becomes
        // `client:port -> frontend:port` (nat_daddr/nat_dport -> nat_saddr/nat_sport).
        let (new_saddr, new_daddr, new_sport, new_dport) =
            (e.nat_daddr, e.nat_saddr, e.nat_dport, e.nat_sport);

        // Quoted IPv4 header: addresses and its own checksum. Everything changed inside the ICMP
        // message goes into `icmp_diff` (the ICMP checksum covers no pseudo-header).
        let mut quoted_diff = 0u32;
        quoted_diff = diff(quoted_diff, saddr, new_saddr);
        quoted_diff = diff(quoted_diff, daddr, new_daddr);
        (quoted.add(12) as *mut u32).write_unaligned(new_saddr);
        (quoted.add(16) as *mut u32).write_unaligned(new_daddr);
        let old_csum = (quoted.add(10) as *const u16).read_unaligned();
        let new_csum = csum_apply(old_csum, quoted_diff);
        (quoted.add(10) as *mut u16).write_unaligned(new_csum);
        let mut icmp_diff = diff(quoted_diff, old_csum as u32, new_csum as u32);
        icmp_diff = diff(icmp_diff, sport as u32, new_sport as u32);
        if echo {
            l4.add(2).write_unaligned(new_sport);
        } else {
            icmp_diff = diff(icmp_diff, dport as u32, new_dport as u32);
            l4.write_unaligned(new_sport);
            l4.add(1).write_unaligned(new_dport);
        }
        let icmp_csum = (icmp.add(2) as *const u16).read_unaligned();
        (icmp.add(2) as *mut u16).write_unaligned(csum_apply(icmp_csum, icmp_diff));

        // Outer header: the error goes to whoever sent the quoted packet (the client, not its SNAT
        // address), and one the backend itself sent appears to come from the frontend.
        let outer_saddr = (ip.add(12) as *const u32).read_unaligned();
        let outer_daddr = (ip.add(16) as *const u32).read_unaligned();
        let to = if outer_daddr == saddr {
            new_saddr
        } else {
            outer_daddr
        };
        let from = if outer_saddr == daddr {
            new_daddr
        } else {
            outer_saddr
        };
        let outer_diff = diff(diff(0, outer_saddr, from), outer_daddr, to);
        (ip.add(12) as *mut u32).write_unaligned(from);
        (ip.add(16) as *mut u32).write_unaligned(to);
        let csum = (ip.add(10) as *const u16).read_unaligned();
        (ip.add(10) as *mut u16).write_unaligned(csum_apply(csum, outer_diff));
        to
    }
}
