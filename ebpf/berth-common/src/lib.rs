//! The contract between berth's eBPF programs and the agent: names, layouts and flags of every map.
//!
//! Every struct is `#[repr(C)]`, padded explicitly (the verifier rejects reads of uninitialised stack
//! padding, and userspace must hash keys byte for byte the way the kernel does), and sized to a multiple
//! of 4 bytes. Addresses and ports are stored in **network byte order**, exactly as they sit in the packet,
//! so the data path never swaps bytes; the agent converts with [`ipv4_to_be`] / [`port_to_be`].
//!
//! Layout invariants (see ARCHITECTURE.md, "Service maps"):
//! - `FRONTENDS[frontend]` holds the frontend's header (number of ready backends `count`, number of
//!   terminating backends kept after them `terminating`, flags, reverse-NAT id) and its first
//!   [`INLINE_SLOTS`] backend slots; `SLOTS[frontend, slot]` the slots beyond.
//! - Slots `1..=count` hold ready backends; slots `count+1..=count+terminating` terminating ones, used
//!   for new flows only when `count == 0`.
//! - Writers write the outer slots first, the frontend's value (header and inline slots, one write)
//!   last, and delete stale outer slots after: a packet never sees a count that points at slots not yet
//!   written.
#![no_std]

pub mod maps;

pub use maps::*;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Converts an IPv4 address (as octets) to the network-byte-order `u32` used in map keys.
#[inline(always)]
pub const fn ipv4_to_be(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// Converts a network-byte-order `u32` from a map back to octets.
#[inline(always)]
pub const fn be_to_ipv4(addr: u32) -> [u8; 4] {
    addr.to_ne_bytes()
}

/// Converts a host-order port to the network-byte-order `u16` used in map keys.
#[inline(always)]
pub const fn port_to_be(port: u16) -> u16 {
    port.to_be()
}

/// Converts a network-byte-order port from a map to host order.
#[inline(always)]
pub const fn be_to_port(port: u16) -> u16 {
    u16::from_be(port)
}
