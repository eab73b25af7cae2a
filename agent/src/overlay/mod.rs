//! The pod network between nodes (flannel-compatible VXLAN), independent of how it is programmed:
//! which remote pod CIDRs exist and how to reach them ([`desired`]).
//!
//! Status: the desired-state logic (from Node objects and flannel's annotations) exists and is tested;
//! the eBPF encapsulation path and the VXLAN device come with the overlay issue.

pub mod desired;

pub use desired::{Peer, PodCidr, peers};
