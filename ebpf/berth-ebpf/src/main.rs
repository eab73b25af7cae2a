//! berth's eBPF data plane.
//!
//! One object, several programs, one file per program type (the aya convention):
//! - [`tc`]: per-packet Service load balancing at TC ingress of pod-facing interfaces and of the node's
//!   uplink (ClusterIP for traffic that bypasses sockets, NodePort, reverse NAT of replies).
//! - [`sock`]: socket-level load balancing at connect()/sendmsg() and the matching reverse translation
//!   at recvmsg()/getpeername(), so pod-to-Service traffic pays no per-packet NAT.
//!
//! The shared pieces: [`maps`] (every map, by the names in `berth_common::names`), [`packet`] (bounds-
//! checked parsing with direct packet access), [`select`] (backend choice: affinity, Maglev, random),
//! [`nat`] (checksum-correct header rewrites), [`reject`] (TCP reset / ICMP unreachable replies),
//! [`decap`] (VXLAN decapsulation for local pods), [`forward`] (next hop after translation), [`icmp_error`] (ICMP errors about translated flows, translated back), [`frag`] (later IP fragments follow their flow), [`nexthop`] (the FIB's answers cached per destination), [`local`] (delivery into this node's pods), [`masq`] (pod egress masquerade), [`snat`] (source ports of the node's address), [`overlay`]
//! (VXLAN encapsulation towards other nodes' pods).
#![no_std]
#![no_main]

mod decap;
mod forward;
mod frag;
mod icmp_error;
mod local;
mod maps;
mod masq;
mod nat;
mod nexthop;
mod overlay;
mod packet;
mod reject;
mod select;
mod snat;
mod sock;
mod tc;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves no panic path is reachable; this only satisfies the compiler.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
