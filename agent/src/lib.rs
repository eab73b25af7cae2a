//! berth's node agent: ties the sources of cluster state to the data plane ([`berth_datapath`]).
//!
//! - [`source`]: where objects come from (kube-rs watchers against an API server, or a manifests
//!   directory), behind one interface: watcher events into reflector stores.
//! - [`lb`]: what the Service maps must hold, from Services and EndpointSlices (pure logic).
//! - [`overlay`]: overlay peers from Node objects (flannel-compatible), and the Node object this node
//!   publishes.
//! - [`subsystems`]: one task per part of the data plane, each owning its maps.
//! - [`agent`]: start-up, and the tasks tied together.

pub mod agent;
pub mod api_client;
pub mod events;
pub mod join;
pub mod kubelet_api;
pub mod lb;
pub mod model;
pub mod node;
pub mod overlay;
pub mod pods;
pub mod source;
pub mod subsystems;
