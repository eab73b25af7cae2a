//! Map names, sizes and value layouts.

/// Names of the maps as they appear in the object file and under the pin directory.
pub mod names {
    /// Service frontends, each with its header and first backend slots: [`super::FrontendKey`] ->
    /// [`super::FrontendValue`]. A new flow of a Service with up to [`super::INLINE_SLOTS`] backends
    /// needs this one lookup.
    pub const FRONTENDS: &str = "BERTH_FRONTENDS";
    /// Backend slots beyond a frontend's first [`super::INLINE_SLOTS`]: [`super::SlotKey`] ->
    /// [`super::Slot`].
    pub const SLOTS: &str = "BERTH_SLOTS";
    /// Backends by id: `u32` -> [`super::Backend`].
    pub const BACKENDS: &str = "BERTH_BACKENDS";
    /// Reverse NAT: `u32` rev-NAT id -> [`super::RevNat`] (the frontend a reply must come from).
    pub const REV_NAT: &str = "BERTH_REVNAT";
    /// Connection tracking, LRU: [`super::CtKey`] -> [`super::CtEntry`].
    pub const CONNTRACK: &str = "BERTH_CT";
    /// Session affinity, LRU: [`super::AffinityKey`] -> [`super::AffinityValue`].
    pub const AFFINITY: &str = "BERTH_AFFINITY";
    /// Maglev lookup tables: `u32` rev-NAT id -> [`super::MaglevTable`].
    pub const MAGLEV: &str = "BERTH_MAGLEV";
    /// Socket-LB reverse translation, LRU: [`super::SockRevKey`] -> [`super::RevNat`].
    pub const SOCK_REV: &str = "BERTH_SOCK_REV";
    /// Socket-LB backend per (unconnected UDP socket, frontend), LRU: [`super::SockFwdKey`] ->
    /// [`super::SockFwdValue`], so successive datagrams of one socket reach one backend.
    pub const SOCK_FWD: &str = "BERTH_SOCK_FWD";
    /// Remote pod CIDRs, LPM trie: `u32` address (network order) with a prefix length ->
    /// [`super::OverlayPeer`] (where to send VXLAN for them).
    pub const OVERLAY: &str = "BERTH_OVERLAY";
    /// The overlay peers' underlay addresses, hash: `u32` address (network order) -> `u32` (1). Pod
    /// traffic to them is not masqueraded.
    pub const PEER_NODES: &str = "BERTH_PEER_NODES";
    /// Pods of this node, hash: `u32` pod address (network order) -> [`super::LocalEndpoint`] (where to
    /// deliver packets for it without walking the host stack).
    pub const ENDPOINTS: &str = "BERTH_ENDPOINTS";
    /// Node-wide settings, array of one: `u32` 0 -> [`super::NodeConfig`].
    pub const CONFIG: &str = "BERTH_CONFIG";
    /// Per-CPU counters for inspection: `u32` counter index -> `u64`.
    pub const COUNTERS: &str = "BERTH_COUNTERS";
    /// Next hops by destination, a per-CPU direct-mapped cache: slot [`super::nexthop_slot`] of an
    /// address -> [`super::NextHop`]. What a FIB lookup answered for a translated packet's destination
    /// or an overlay peer's underlay address, trusted for [`super::NEXTHOP_TTL_NS`]. Per CPU and
    /// direct-mapped: a lookup is an inlined array access, a miss costs an overwrite (never an
    /// allocation or eviction), so destinations that do not repeat make it no slower than no cache.
    pub const NEXTHOP: &str = "BERTH_NEXTHOP";
}

/// Default capacities. The agent may override them at load time (`EbpfLoader::map_max_entries`).
pub mod capacity {
    /// Frontends (a Service port's ClusterIP, each of its NodePort addresses...): 10,000 Services with
    /// several frontends each. Allocated as written (`BPF_F_NO_PREALLOC`), 232 bytes each.
    pub const FRONTENDS: u32 = 1 << 16;
    /// Backend slots beyond the first [`super::INLINE_SLOTS`] of each frontend (large Services only).
    pub const SLOTS: u32 = 1 << 17;
    /// Distinct backends.
    pub const BACKENDS: u32 = 1 << 18;
    /// Frontends (rev-NAT ids).
    pub const REV_NAT: u32 = 1 << 18;
    /// Conntrack entries (two per flow).
    pub const CONNTRACK: u32 = 1 << 18;
    /// Affinity entries.
    pub const AFFINITY: u32 = 1 << 16;
    /// Frontends using Maglev (tables are allocated on insert).
    pub const MAGLEV: u32 = 1 << 14;
    /// Sockets translated by the socket LB.
    pub const SOCK_REV: u32 = 1 << 17;
    /// Unconnected UDP sockets remembered by the socket LB.
    pub const SOCK_FWD: u32 = 1 << 16;
    /// Remote nodes' pod CIDRs.
    pub const OVERLAY: u32 = 1 << 12;
    /// Other nodes' underlay addresses (one per overlay peer).
    pub const PEER_NODES: u32 = 1 << 12;
    /// Pods on this node (a /24 holds 253; room for larger pod CIDRs).
    pub const ENDPOINTS: u32 = 1 << 12;
    /// Slots of the per-CPU next-hop cache (overlay peers and routed destinations), a power of two.
    pub const NEXTHOP: u32 = 1 << 11;
}

/// Size of a Maglev lookup table: a prime well above 100x the backends of a typical Service.
pub const MAGLEV_TABLE_SIZE: usize = 1021;

/// Backend slots held in a frontend's own value: a new flow to a Service with at most this many backends
/// (ready + terminating) costs one lookup. Slots beyond are in [`names::SLOTS`].
pub const INLINE_SLOTS: usize = 16;

/// Key of [`names::FRONTENDS`]: one frontend (address, port, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    /// Frontend address, network order (ClusterIP, or a node address for NodePort).
    pub addr: u32,
    /// Frontend port, network order.
    pub port: u16,
    /// [`crate::PROTO_TCP`] or [`crate::PROTO_UDP`].
    pub proto: u8,
    /// Always zero; keeps the key free of uninitialised bytes.
    pub pad: u8,
}

/// Service header flag: the frontend is a NodePort (reached from outside the node).
pub const SVC_F_NODEPORT: u16 = 1 << 0;
/// Service header flag: rewrite the client's source to the node address (externalTrafficPolicy Cluster).
pub const SVC_F_SNAT: u16 = 1 << 1;
/// Service header flag: pick backends with the frontend's Maglev table instead of at random.
pub const SVC_F_MAGLEV: u16 = 1 << 2;
/// Service header flag: sessionAffinity ClientIP (timeout in `affinity_timeout`).
pub const SVC_F_AFFINITY: u16 = 1 << 3;
/// Service header flag: externalTrafficPolicy Local with no local backend: drop, as kube-proxy does.
pub const SVC_F_LOCAL_DROP: u16 = 1 << 4;

/// What a frontend is: how many backends, how to pick one, how to translate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendHeader {
    /// Reverse-NAT id of the frontend: key of [`names::REV_NAT`], affinity and Maglev.
    pub rev_nat_id: u32,
    /// sessionAffinity ClientIP timeout in seconds.
    pub affinity_timeout: u32,
    /// Ready backends, in slots `1..=count`.
    pub count: u16,
    /// Terminating backends, in slots `count+1..=count+terminating`.
    pub terminating: u16,
    /// `SVC_F_*` flags.
    pub flags: u16,
    /// Always zero.
    pub pad: u16,
}

/// One backend slot: the backend's id and a copy of the backend itself (`BERTH_BACKENDS[backend_id]`),
/// so that a new flow needs no second lookup. An id's address never changes; its flags change only
/// together with a rewrite of every frontend using it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// Backend id.
    pub backend_id: u32,
    /// The backend.
    pub backend: Backend,
}

/// Value of [`names::FRONTENDS`]: the header and slots `1..=INLINE_SLOTS` (slot `s` at `slots[s - 1]`;
/// entries past `count + terminating` are zero). The value is replaced whole, so a packet sees the count
/// and the slots it covers from one write.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendValue {
    /// The header.
    pub header: FrontendHeader,
    /// The first backend slots.
    pub slots: [Slot; INLINE_SLOTS],
}

/// Key of [`names::SLOTS`]: a frontend's backend slot beyond [`INLINE_SLOTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SlotKey {
    /// The frontend.
    pub frontend: FrontendKey,
    /// Slot number, `INLINE_SLOTS + 1..=count + terminating`.
    pub slot: u32,
}

/// Backend flag: the backend runs on this node.
pub const BACKEND_F_LOCAL: u8 = 1 << 0;

/// Value of [`names::BACKENDS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Backend (pod) address, network order.
    pub addr: u32,
    /// Target port, network order.
    pub port: u16,
    /// Protocol.
    pub proto: u8,
    /// `BACKEND_F_*` flags.
    pub flags: u8,
}

/// Value of [`names::REV_NAT`] and [`names::SOCK_REV`]: the address a reply must appear to come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevNat {
    /// Frontend address, network order.
    pub addr: u32,
    /// Frontend port, network order.
    pub port: u16,
    /// Always zero.
    pub pad: u16,
}

/// Key of [`names::CONNTRACK`]: the exact 5-tuple of a packet as it arrives at the hook.
///
/// Each translated flow has two entries: the original direction (client -> frontend) and the reply
/// direction (backend -> client or SNAT address). Both carry the rewrite that turns a packet with that
/// tuple into what must go on, so the fast path is one lookup and one rewrite whatever the direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Source address, network order.
    pub saddr: u32,
    /// Destination address, network order.
    pub daddr: u32,
    /// Source port, network order.
    pub sport: u16,
    /// Destination port, network order.
    pub dport: u16,
    /// Protocol.
    pub proto: u8,
    /// Always zero.
    pub pad: [u8; 3],
}

/// Conntrack flag: this entry is the reply direction of a flow.
pub const CT_F_REPLY: u16 = 1 << 0;
/// Conntrack flag: a FIN was seen in this entry's direction. A flow is closing (short timeout) once
/// both of its entries carry it, or either carries [`CT_F_RST`].
pub const CT_F_CLOSING: u16 = 1 << 1;
/// Conntrack flag: the flow entered through a NodePort.
pub const CT_F_NODEPORT: u16 = 1 << 2;
/// Conntrack flag: the source is rewritten too (SNAT for NodePort, hairpin).
pub const CT_F_SNAT: u16 = 1 << 3;
/// Conntrack flag: a RST was seen; the flow is closing whatever the other direction did.
pub const CT_F_RST: u16 = 1 << 4;
/// Conntrack flag: the cached next hop is a local pod, reached with `bpf_redirect_peer` (straight into
/// the pod's namespace) rather than `bpf_redirect` to the interface.
pub const CT_F_NH_PEER: u16 = 1 << 5;
/// Conntrack flag: a masqueraded flow of a pod to outside the cluster (no Service: no backend, no
/// reverse-NAT id).
pub const CT_F_MASQ: u16 = 1 << 6;

impl CtKey {
    /// The key of the other entry of the same flow: every entry's rewrite, reversed, is its partner's
    /// tuple (forward: client->frontend rewritten to src->backend; reply: backend->src rewritten to
    /// frontend->client).
    #[inline(always)]
    pub fn partner(&self, e: &CtEntry) -> CtKey {
        CtKey {
            saddr: e.nat_daddr,
            daddr: e.nat_saddr,
            sport: e.nat_dport,
            dport: e.nat_sport,
            proto: self.proto,
            pad: [0; 3],
        }
    }
}

/// Value of [`names::CONNTRACK`]: the rewrite for packets with the key's tuple.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// New source address, network order.
    pub nat_saddr: u32,
    /// New destination address, network order.
    pub nat_daddr: u32,
    /// New source port, network order.
    pub nat_sport: u16,
    /// New destination port, network order.
    pub nat_dport: u16,
    /// Backend chosen for the flow (for garbage collection of removed backends).
    pub backend_id: u32,
    /// Frontend of the flow.
    pub rev_nat_id: u32,
    /// `CT_F_*` flags.
    pub flags: u16,
    /// Always zero.
    pub pad: u16,
    /// Last packet seen, `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE).
    pub last_seen_ns: u64,
    /// Next-hop cache: egress interface of the translated packet (0: not resolved yet).
    pub nh_ifindex: u32,
    /// Next-hop cache: source MAC to write.
    pub nh_smac: [u8; 6],
    /// Next-hop cache: destination MAC to write.
    pub nh_dmac: [u8; 6],
    /// When the next hop was last resolved by a FIB lookup; it is re-resolved after
    /// [`NEXTHOP_TTL_NS`], so route and neighbour changes take effect within that time.
    pub nh_checked_ns: u64,
}

impl CtEntry {
    /// Makes this the entry of a new flow, field by field (the programs build entries in place, in a
    /// per-CPU scratch map, to spare their stack): its rewrite (source, destination, source port,
    /// destination port), backend, frontend, flags and time; no next hop cached yet.
    #[inline(always)]
    pub fn set(
        &mut self,
        rewrite: (u32, u32, u16, u16),
        backend_id: u32,
        rev_nat_id: u32,
        flags: u16,
        now: u64,
    ) {
        (self.nat_saddr, self.nat_daddr, self.nat_sport, self.nat_dport) = rewrite;
        self.backend_id = backend_id;
        self.rev_nat_id = rev_nat_id;
        self.flags = flags;
        self.pad = 0;
        self.last_seen_ns = now;
        self.nh_ifindex = 0;
        self.nh_smac = [0; 6];
        self.nh_dmac = [0; 6];
        self.nh_checked_ns = 0;
    }
}

/// How long a cached next hop (in a conntrack entry or [`names::NEXTHOP`]) is trusted before a new FIB
/// lookup: route and neighbour changes take effect within this time.
pub const NEXTHOP_TTL_NS: u64 = 1_000_000_000;

/// Value of [`names::NEXTHOP`]: where packets for `addr` leave this node.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// The destination this slot holds, network order (0: empty).
    pub addr: u32,
    /// Egress interface.
    pub ifindex: u32,
    /// Source MAC to write.
    pub smac: [u8; 6],
    /// Destination MAC to write.
    pub dmac: [u8; 6],
    /// MTU of the route (the FIB's answer): larger packets are left to the stack, which fragments or
    /// answers "fragmentation needed".
    pub mtu: u16,
    /// Always zero.
    pub pad: u16,
    /// When the FIB answered, `bpf_ktime_get_coarse_ns()`.
    pub checked_ns: u64,
}

/// The slot of [`names::NEXTHOP`] that caches `addr` (network order): a multiplicative hash, so
/// addresses of one subnet spread over the slots.
#[inline(always)]
pub const fn nexthop_slot(addr: u32) -> u32 {
    addr.wrapping_mul(0x9e37_79b1) >> (32 - capacity::NEXTHOP.trailing_zeros())
}

/// Key of [`names::AFFINITY`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    /// Who the client is: its IPv4 address (network order) on the TC path, or
    /// `AFFINITY_NETNS_BIT | netns cookie` on the socket path, where the source address is not known yet
    /// at connect() time.
    pub client: u64,
    /// Frontend.
    pub rev_nat_id: u32,
    /// Always zero.
    pub pad: u32,
}

/// Marks an [`AffinityKey::client`] that is a network-namespace cookie rather than an address.
pub const AFFINITY_NETNS_BIT: u64 = 1 << 63;

/// Value of [`names::AFFINITY`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityValue {
    /// Backend the client sticks to.
    pub backend_id: u32,
    /// Always zero.
    pub pad: u32,
    /// Last use, `bpf_ktime_get_ns()`.
    pub last_used_ns: u64,
}

/// Value of [`names::MAGLEV`]: backend ids indexed by flow hash modulo [`MAGLEV_TABLE_SIZE`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MaglevTable {
    /// Backend ids.
    pub backends: [u32; MAGLEV_TABLE_SIZE],
}

/// Key of [`names::SOCK_REV`]: a socket translated at connect()/sendmsg() and the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockRevKey {
    /// `bpf_get_socket_cookie()` of the socket.
    pub cookie: u64,
    /// Backend address, network order.
    pub addr: u32,
    /// Backend port, network order.
    pub port: u16,
    /// Always zero.
    pub pad: u16,
}

/// Key of [`names::SOCK_FWD`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockFwdKey {
    /// `bpf_get_socket_cookie()` of the socket.
    pub cookie: u64,
    /// Frontend address, network order.
    pub addr: u32,
    /// Frontend port, network order.
    pub port: u16,
    /// Protocol.
    pub proto: u8,
    /// Always zero.
    pub pad: u8,
}

/// Value of [`names::SOCK_FWD`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockFwdValue {
    /// Backend chosen for the socket.
    pub backend_id: u32,
    /// Frontend (so the agent can forget choices of removed frontends and backends).
    pub rev_nat_id: u32,
    /// The backend.
    pub backend: Backend,
}

/// Value of [`names::CONFIG`]: node-wide settings the agent writes once at start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// Address used as the source of SNATed NodePort traffic, network order.
    pub snat_addr: u32,
    /// First port of the SNAT range, host order.
    pub snat_port_min: u16,
    /// Last port of the SNAT range, host order.
    pub snat_port_max: u16,
    /// ifindex of the node's VXLAN device (0: no overlay). The device only receives; the programs
    /// encapsulate themselves.
    pub vtep_ifindex: u32,
    /// MAC of that device: the source of inner frames.
    pub vtep_mac: [u8; 6],
    /// UDP port of the overlay's VXLAN, network order; 0 means flannel's default 8472 (what an agent
    /// from before `--vxlan-port` left in this formerly padding field).
    pub vxlan_port: u16,
    /// The cluster's pod network (10.244.0.0/16), network order; with `cluster_mask`. Packets from it
    /// are delivered to local pods straight from eBPF; packets from elsewhere (node addresses, outside)
    /// go through the host stack, so netfilter sees both directions of flows it may masquerade.
    pub cluster_net: u32,
    /// Netmask of `cluster_net`, network order (0: no cluster network known, no direct delivery of
    /// untranslated traffic).
    pub cluster_mask: u32,
    /// `CFG_F_*` flags.
    pub flags: u32,
}

/// Node flag: masquerade pod egress to outside the cluster's pod network in eBPF (to `snat_addr`,
/// ports from the SNAT range), as flannel's `--ip-masq` does with netfilter.
pub const CFG_F_MASQUERADE: u32 = 1 << 0;

/// Value of [`names::OVERLAY`]: how to reach one remote node's pods.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverlayPeer {
    /// The remote node's underlay address (VXLAN destination), network order.
    pub underlay: u32,
    /// The remote VTEP's MAC: destination of inner frames, as flannel addresses them.
    pub vtep_mac: [u8; 6],
    /// Always zero.
    pub pad: [u8; 2],
}

/// Value of [`names::ENDPOINTS`]: a pod on this node, reached through its veth pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// ifindex of the host side of the pod's veth pair (`bpf_redirect_peer` target).
    pub ifindex: u32,
    /// MAC of the pod's interface: destination of delivered frames.
    pub pod_mac: [u8; 6],
    /// MAC of the host side: source of delivered frames (the pod's gateway as the pod resolved it).
    pub host_mac: [u8; 6],
}

/// The VXLAN network identifier of the pod network (flannel's default).
pub const OVERLAY_VNI: u32 = 1;

/// Indices of [`names::COUNTERS`].
pub mod counter {
    /// Packets translated on an existing conntrack entry.
    pub const CT_HIT: u32 = 0;
    /// New flows load-balanced.
    pub const NEW_FLOW: u32 = 1;
    /// New flows refused (no backend): TCP reset sent or packet dropped.
    pub const REJECTED: u32 = 2;
    /// connect()/sendmsg() calls translated by the socket LB.
    pub const SOCK_TRANSLATED: u32 = 3;
    /// Packets the programs could not parse or rewrite (passed on unchanged).
    pub const ERRORS: u32 = 4;
    /// Untranslated packets delivered straight into a local pod's namespace.
    pub const LOCAL_DELIVERED: u32 = 5;
    /// Packets handed to the VXLAN device for a remote node's pod.
    pub const OVERLAY_ENCAP: u32 = 6;
    /// VXLAN packets for local pods decapsulated in eBPF at the uplink.
    pub const OVERLAY_DECAP: u32 = 7;
    /// Flows of pods to outside the cluster masqueraded in eBPF.
    pub const MASQUERADED: u32 = 8;
    /// Replies of host-network backends reverse-translated at TC egress.
    pub const HOST_REPLY: u32 = 9;
    /// ICMP errors about translated flows translated back for their client.
    pub const ICMP_ERRORS: u32 = 10;
    /// Of [`OVERLAY_DECAP`], GSO aggregates (several segments decapsulated at once).
    pub const OVERLAY_DECAP_GSO: u32 = 11;
    /// Number of counters.
    pub const COUNT: u32 = 12;
}

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    // SAFETY: all types are #[repr(C)], Copy, and consist of plain integers with explicit padding.
    unsafe impl aya::Pod for FrontendKey {}
    unsafe impl aya::Pod for FrontendValue {}
    unsafe impl aya::Pod for SlotKey {}
    unsafe impl aya::Pod for Slot {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for RevNat {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for AffinityKey {}
    unsafe impl aya::Pod for AffinityValue {}
    unsafe impl aya::Pod for MaglevTable {}
    unsafe impl aya::Pod for SockRevKey {}
    unsafe impl aya::Pod for SockFwdKey {}
    unsafe impl aya::Pod for SockFwdValue {}
    unsafe impl aya::Pod for NodeConfig {}
    unsafe impl aya::Pod for OverlayPeer {}
    unsafe impl aya::Pod for LocalEndpoint {}
    unsafe impl aya::Pod for NextHop {}
}

// Layout checks: a change here is a change of the pinned-map ABI and needs a migration.
const _: () = assert!(core::mem::size_of::<FrontendKey>() == 8);
const _: () = assert!(core::mem::size_of::<FrontendValue>() == 16 + 12 * INLINE_SLOTS);
const _: () = assert!(core::mem::size_of::<SlotKey>() == 12);
const _: () = assert!(core::mem::size_of::<Slot>() == 12);
const _: () = assert!(core::mem::size_of::<Backend>() == 8);
const _: () = assert!(core::mem::size_of::<RevNat>() == 8);
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<CtEntry>() == 56);
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 16);
const _: () = assert!(core::mem::size_of::<AffinityValue>() == 16);
const _: () = assert!(core::mem::size_of::<SockRevKey>() == 16);
const _: () = assert!(core::mem::size_of::<NodeConfig>() == 32);
const _: () = assert!(core::mem::size_of::<LocalEndpoint>() == 16);
const _: () = assert!(core::mem::size_of::<OverlayPeer>() == 12);
const _: () = assert!(core::mem::size_of::<SockFwdKey>() == 16);
const _: () = assert!(core::mem::size_of::<SockFwdValue>() == 16);
const _: () = assert!(core::mem::size_of::<NextHop>() == 32);

/// The VXLAN port a [`NodeConfig`] names, network order (`vxlan_port`, or 8472 when unset).
#[inline(always)]
pub fn vxlan_port_be(cfg: &NodeConfig) -> u16 {
    if cfg.vxlan_port == 0 {
        DEFAULT_VXLAN_PORT.to_be()
    } else {
        cfg.vxlan_port
    }
}

/// flannel's VXLAN port, the default of `--vxlan-port`.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
