//! Service load balancing, independent of how it is stored: what the maps must say
//! ([`desired`], from Services and EndpointSlices), how Maglev tables are built ([`maglev`]).

pub mod desired;
pub mod maglev;

pub use desired::{
    BackendAddr, DesiredState, Frontend, FrontendKind, FrontendSpec, LbAlgorithm, NodeInfo, Protocol,
};
