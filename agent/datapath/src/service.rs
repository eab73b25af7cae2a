//! What the Service maps must hold, in the data plane's own terms: frontends (address, port, protocol)
//! and, for each, its backends and how to choose among them. Built by the agent from Services and
//! EndpointSlices; programmed into the maps by [`crate::programmer`].

use std::{collections::BTreeMap, net::Ipv4Addr};

/// Transport protocol of a frontend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => berth_common::PROTO_TCP,
            Protocol::Udp => berth_common::PROTO_UDP,
        }
    }

    /// From an IP protocol number.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            berth_common::PROTO_TCP => Some(Protocol::Tcp),
            berth_common::PROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// From a Kubernetes protocol name (`TCP` when absent); `None` for protocols berth does not
    /// balance (SCTP).
    pub fn from_name(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None, // SCTP is not load-balanced by berth yet.
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// Backend selection for new flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LbAlgorithm {
    /// Uniformly random among ready backends (kube-proxy's behaviour).
    #[default]
    Random,
    /// Maglev consistent hashing of the flow tuple: the same flow maps to the same backend on every
    /// node, and a backend change moves few flows.
    Maglev,
}

/// A frontend: where clients send (address, port, protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
}

/// A backend endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendAddr {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: Protocol,
    /// The endpoint runs on this node.
    pub local: bool,
}

/// How a frontend is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendKind {
    /// The Service's ClusterIP.
    ClusterIp,
    /// A node address and the Service's nodePort (or an external IP), reached from outside the node.
    NodePort,
}

/// What one frontend must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendSpec {
    /// `namespace/name:port-name`, for logs and `lb list`.
    pub service: String,
    pub kind: FrontendKind,
    /// Ready backends, in a stable order.
    pub ready: Vec<BackendAddr>,
    /// Serving-and-terminating backends, for new flows only when `ready` is empty.
    pub terminating: Vec<BackendAddr>,
    /// sessionAffinity ClientIP timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Rewrite the client's source to the node (externalTrafficPolicy Cluster on NodePort).
    pub snat: bool,
    /// Traffic policy Local and no local endpoint: drop instead of rejecting, as kube-proxy does.
    pub local_drop: bool,
    pub algorithm: LbAlgorithm,
}

/// A backend that left a UDP frontend (gone from its Service's endpoints, or the frontend removed):
/// the connected sockets the socket LB translated through the pair must end (see `udp_sockets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Departure {
    pub frontend: std::net::SocketAddrV4,
    pub backend: std::net::SocketAddrV4,
}

/// Every frontend the maps must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub frontends: BTreeMap<Frontend, FrontendSpec>,
}
