//! berth's node agent.
//!
//! - [`lb`]: what the Service maps must hold, from Services and EndpointSlices (pure logic).
//! - [`datapath`]: the eBPF object, its pinned maps and links, and the programmer that keeps the maps
//!   equal to the desired state.
//! - [`manifests`]: the standalone source of Services and EndpointSlices (a directory of YAML).
//! - [`agent`]: the main loop tying them together.
//! - [`inspect`]: `lb list` / `ct list` from the pins.
//! - [`netns`]: entering a named network namespace, listing interfaces.
//! - [`overlay`]: the pod network between nodes: peers from Node objects (flannel-compatible).

pub mod agent;
pub mod datapath;
pub mod inspect;
pub mod lb;
pub mod manifests;
pub mod netns;
pub mod overlay;
