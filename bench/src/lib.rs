//! berth's benchmarks. Each prints a table and writes it (Markdown) under `bench/results/`.
//!
//! - [`prog_cost`]: per-packet cost of the TC program under `BPF_PROG_TEST_RUN` at 1 to 100,000
//!   Services, for established flows, new flows and packets that are not for a Service.
//! - [`floor`]: the machine's own floors the per-packet costs are read against (the test-run harness
//!   around an empty program, the latency of a load that misses every cache).
//! - [`compare`]: berth against kube-proxy's iptables and nftables modes on the same namespaces and
//!   servers: new-connection rate, request latency, time to program all Services.
//! - [`overlay`]: berth's eBPF overlay against flannel-style kernel VXLAN and plain routing between two
//!   nodes, and berth on one node against veth + host routing: throughput, round trips, connection rate.
//! - [`agent_sync`]: the agent following the API at 10,000 Services x 10 endpoints: initial sync, time
//!   from an EndpointSlice update to the map, resident memory.
//! - [`control_plane`]: scheduling throughput with 100 and 1,000 hollow nodes, API latency (p50/p99)
//!   and resident memory of the control plane holding 10,000 pods.
//! - [`headline`]: the README's headline table, generated from the recorded results.
//! - [`pods`]: the pod runtime on one node: startup latency of 100 pods (create to Running, broken
//!   down), the agent's and the shims' memory with them running, the idle agent's CPU.

pub mod agent_sync;
pub mod compare;
pub mod control_plane;
pub mod floor;
pub mod headline;
pub mod hostile;
pub mod kube_proxy;
pub mod overlay;
pub mod packets;
pub mod pods;
pub mod prog_cost;
pub mod report;
pub mod services;
