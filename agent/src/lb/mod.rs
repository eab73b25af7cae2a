//! Service load balancing from Kubernetes objects: what the Service maps must hold ([`desired`], from
//! Services and EndpointSlices, with kube-proxy's semantics), in the data plane's terms
//! ([`berth_datapath::service`]).

pub mod desired;
pub mod health_checks;
pub mod incremental;

pub use berth_datapath::service::{
    BackendAddr, DesiredState, Frontend, FrontendKind, FrontendSpec, LbAlgorithm, Protocol,
};
pub use desired::NodeInfo;
