//! berth's node agent.
//!
//! - [`lb`]: what the Service maps must hold, from Services and EndpointSlices (pure logic).
//! - [`datapath`]: the eBPF object, its pinned maps and links, and the programmer that keeps the maps
//!   equal to the desired state.
//! - [`manifests`]: the standalone source of Services and EndpointSlices (a directory of YAML).
//! - [`agent`]: the main loop tying them together.
//! - [`inspect`]: `lb list` / `ct list` from the pins.
//! - [`netns`]: entering a named network namespace, listing interfaces.
//! - [`overlay`]: the pod network between nodes: peers from Node objects (flannel-compatible), and
//!   the Node object this node publishes.
//! - [`podnet`]: pod addressing: durable address allocation, veth pairs into pod namespaces.
//! - [`masquerade`]: pod egress to outside the cluster leaves with the node's address (nftables).
//! - [`cmd`]: running `ip` and `nft`.

pub mod agent;
pub mod cmd;
pub mod datapath;
pub mod inspect;
pub mod lb;
pub mod manifests;
pub mod masquerade;
pub mod netns;
pub mod overlay;
pub mod podnet;
