//! The pod network between nodes (flannel-compatible VXLAN), independent of how it is programmed:
//! which remote pod CIDRs exist and how to reach them ([`desired`]), and what this node publishes about
//! itself so others can reach it ([`publish`]).

pub mod desired;
pub mod publish;

pub use berth_datapath::net::{Peer, PodCidr};
pub use desired::peers;
