//! Bounds-checked parsing of Ethernet / IPv4 / TCP / UDP / ICMP echo with direct packet access.
//!
//! Direct access (pointer + comparison against `data_end`) costs a fraction of `bpf_skb_load_bytes`
//! per field; everything the load balancer needs is read once here into a [`Flow`].

use aya_ebpf::programs::TcContext;
use berth_common::{CtKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();

/// ICMP echo request and reply types.
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

/// Where a packet stands in IP fragmentation (see [`Flow::fragment`]).
pub const NOT_FRAGMENT: u8 = 0;
pub const FIRST_FRAGMENT: u8 = 1;
pub const LATER_FRAGMENT: u8 = 2;
/// Bits of the IPv4 flags/fragment-offset field: more fragments, and the offset.
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET: u16 = 0x1fff;

/// TCP flag bits as they sit in byte 13 of the TCP header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// What the load balancer reads from one packet. Addresses and ports in network order. An ICMP echo's
/// identifier stands in for ports the way conntrack treats it: an echo request carries it as its
/// source port (destination port 0), an echo reply as its destination port, so a request's reversed
/// tuple is its reply's.
#[derive(Clone, Copy, Default)]
pub struct Flow {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// [`NOT_FRAGMENT`], [`FIRST_FRAGMENT`] or [`LATER_FRAGMENT`] (no L4 header: ports from `frag`).
    pub fragment: u8,
    /// IPv4 header length in bytes.
    pub ihl: u32,
    /// Offset of the L4 header from the start of the frame. A later fragment has none: there it is
    /// the offset of the IPv4 header's last 8 bytes, so bounds checks of "L4 header + 8" stay within
    /// the packet and nothing past the IPv4 header is taken for ports.
    pub l4_off: u32,
}

impl Flow {
    /// The conntrack key of this packet's tuple.
    #[inline(always)]
    pub fn key(&self) -> CtKey {
        CtKey {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            pad: [0; 3],
        }
    }

    /// The conntrack key of the opposite direction.
    #[inline(always)]
    pub fn reverse_key(&self) -> CtKey {
        CtKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            pad: [0; 3],
        }
    }

    /// Offset of the L4 checksum field.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> u32 {
        if self.proto == PROTO_TCP {
            self.l4_off + 16
        } else if self.proto == PROTO_ICMP {
            self.l4_off + 2
        } else {
            self.l4_off + 6
        }
    }
}

#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

/// Parses an IPv4 TCP, UDP or ICMP echo packet; `None` for anything else (ARP, IPv6, other ICMP, later
/// fragments: `frag` and `icmp_error` look at those).
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Option<Flow> {
    // SAFETY: every read is preceded by a bounds check against data_end in `ptr_at`.
    unsafe {
        let ethertype = *ptr_at::<u16>(ctx, 12)?;
        if ethertype != ETH_P_IP_BE {
            return None;
        }
        let ip = ptr_at::<[u8; 20]>(ctx, ETH_HLEN)?;
        let ver_ihl = (*ip)[0];
        if ver_ihl >> 4 != 4 {
            return None;
        }
        let ihl = ((ver_ihl & 0x0f) as u32) * 4;
        if ihl < 20 {
            return None;
        }
        // Fragment offset non-zero: no L4 header in this packet (see `frag`).
        let frag = u16::from_be_bytes([(*ip)[6], (*ip)[7]]);
        if frag & IP_OFFSET != 0 {
            return None;
        }
        let proto = (*ip)[9];
        if proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP {
            return None;
        }
        let saddr = *(ip as *const u8).add(12).cast::<u32>();
        let daddr = *(ip as *const u8).add(16).cast::<u32>();
        let l4_off = ETH_HLEN as u32 + ihl;
        let (sport, dport, tcp_flags) = if proto == PROTO_TCP {
            let tcp = ptr_at::<[u8; 20]>(ctx, l4_off as usize)?;
            let ports = tcp as *const u16;
            (*ports, *ports.add(1), (*tcp)[13])
        } else if proto == PROTO_ICMP {
            let icmp = ptr_at::<[u16; 4]>(ctx, l4_off as usize)?;
            let id = (*icmp)[2];
            match (*(icmp as *const u8), *(icmp as *const u8).add(1)) {
                (ICMP_ECHO_REQUEST, 0) => (id, 0, 0),
                (ICMP_ECHO_REPLY, 0) => (0, id, 0),
                _ => return None,
            }
        } else {
            let udp = ptr_at::<[u16; 4]>(ctx, l4_off as usize)?;
            ((*udp)[0], (*udp)[1], 0)
        };
        Some(Flow {
            saddr,
            daddr,
            sport,
            dport,
            proto,
            tcp_flags,
            fragment: if frag & IP_MF != 0 {
                FIRST_FRAGMENT
            } else {
                NOT_FRAGMENT
            },
            ihl,
            l4_off,
        })
    }
}

/// Source and destination (network order) of any IPv4 packet, ICMP and fragments included, for traffic
/// [`parse`] does not take.
#[inline(always)]
pub fn ipv4_addrs(ctx: &TcContext) -> Option<(u32, u32)> {
    let start = ctx.data();
    if start + ETH_HLEN + 20 > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked above.
    unsafe {
        if *((start + 12) as *const u16) != 0x0800u16.to_be() {
            return None;
        }
        let ip = start + ETH_HLEN;
        Some((
            ((ip + 12) as *const u32).read_unaligned(),
            ((ip + 16) as *const u32).read_unaligned(),
        ))
    }
}
