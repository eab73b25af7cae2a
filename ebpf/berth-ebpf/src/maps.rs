//! Every map of the data plane. All are pinned by name, so the agent finds them under its pin
//! directory after a restart and established flows keep their conntrack entries.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use berth_common::{
    AffinityKey, AffinityValue, Backend, CtEntry, CtKey, FrontendKey, FrontendValue, LocalEndpoint,
    MaglevTable, NextHop, NodeConfig, OverlayPeer, RevNat, Slot, SlotKey, SockFwdKey, SockFwdValue,
    SockRevKey, capacity, counter,
};

/// `BPF_F_NO_PREALLOC`: an element replaced by the agent is freed only after an RCU grace period, so a
/// program reading a frontend's header and then one of its slots through the lookup's pointer sees one
/// value, never a recycled element (preallocated elements are reused at once). Also allocates only
/// what is written: most of the capacity is headroom.
#[map(name = "BERTH_FRONTENDS")]
pub static FRONTENDS: HashMap<FrontendKey, FrontendValue> = HashMap::pinned(capacity::FRONTENDS, NO_PREALLOC);

/// Slots beyond each frontend's inline ones; `BPF_F_NO_PREALLOC` as for [`FRONTENDS`].
#[map(name = "BERTH_SLOTS")]
pub static SLOTS: HashMap<SlotKey, Slot> = HashMap::pinned(capacity::SLOTS, NO_PREALLOC);

/// `BPF_F_NO_PREALLOC` (linux/bpf.h): elements are allocated on update and freed after RCU.
const NO_PREALLOC: u32 = 1;

#[map(name = "BERTH_BACKENDS")]
pub static BACKENDS: HashMap<u32, Backend> = HashMap::pinned(capacity::BACKENDS, 0);

#[map(name = "BERTH_REVNAT")]
pub static REV_NAT: HashMap<u32, RevNat> = HashMap::pinned(capacity::REV_NAT, 0);

#[map(name = "BERTH_CT")]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(capacity::CONNTRACK, 0);

#[map(name = "BERTH_AFFINITY")]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> = LruHashMap::pinned(capacity::AFFINITY, 0);

/// `BPF_F_NO_PREALLOC`: Maglev tables are 4 KiB each and most Services do not use one.
#[map(name = "BERTH_MAGLEV")]
pub static MAGLEV: HashMap<u32, MaglevTable> = HashMap::pinned(capacity::MAGLEV, NO_PREALLOC);

#[map(name = "BERTH_SOCK_REV")]
pub static SOCK_REV: LruHashMap<SockRevKey, RevNat> = LruHashMap::pinned(capacity::SOCK_REV, 0);

#[map(name = "BERTH_SOCK_FWD")]
pub static SOCK_FWD: LruHashMap<SockFwdKey, SockFwdValue> = LruHashMap::pinned(capacity::SOCK_FWD, 0);

#[map(name = "BERTH_OVERLAY")]
pub static OVERLAY: LpmTrie<u32, OverlayPeer> = LpmTrie::pinned(capacity::OVERLAY, 0);

#[map(name = "BERTH_PEER_NODES")]
pub static PEER_NODES: HashMap<u32, u32> = HashMap::pinned(capacity::PEER_NODES, 0);

#[map(name = "BERTH_ENDPOINTS")]
pub static ENDPOINTS: HashMap<u32, LocalEndpoint> = HashMap::pinned(capacity::ENDPOINTS, 0);

#[map(name = "BERTH_NEXTHOP")]
pub static NEXTHOP: PerCpuArray<NextHop> = PerCpuArray::pinned(capacity::NEXTHOP, 0);

#[map(name = "BERTH_CONFIG")]
pub static CONFIG: Array<NodeConfig> = Array::pinned(1, 0);

#[map(name = "BERTH_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counter::COUNT, 0);

/// The two conntrack entries of a new flow, built here rather than on the stack: the programs share
/// 512 bytes of stack across their subprograms, and two entries take 112 of them. Per CPU, not pinned.
pub struct NewFlowEntries {
    pub reply: CtEntry,
    pub forward: CtEntry,
}

#[map(name = "BERTH_SCRATCH")]
static SCRATCH: PerCpuArray<NewFlowEntries> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's [`NewFlowEntries`], for the new-flow path of the program running now.
#[inline(always)]
pub fn new_flow_entries() -> Option<&'static mut NewFlowEntries> {
    // SAFETY: this CPU's slot; one program runs at a time on a CPU and takes it for its new flow only.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Adds one to a counter of `berth_common::counter`.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}
