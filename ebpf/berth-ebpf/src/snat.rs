//! Source ports for translations that rewrite the source to the node's address (NodePort with
//! externalTrafficPolicy Cluster, pod egress masquerade): a random port of the SNAT range whose reply
//! tuple is free, claimed by inserting the flow's reply entry there (`BPF_NOEXIST`), so two flows never
//! share one.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use berth_common::{CtEntry, CtKey, NodeConfig};

use crate::maps::CONNTRACK;

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;
/// Attempts at finding a free port before giving up on a flow.
const ATTEMPTS: u32 = 8;

/// Inserts `reply` under `reply_key` with its destination port (the node's side) set to a free port of
/// the SNAT range; `false` when none of the attempts found one (the caller drops the packet: the
/// client retries).
#[inline(always)]
pub fn claim_port(cfg: &NodeConfig, reply_key: &mut CtKey, reply: &CtEntry) -> bool {
    let span = (cfg.snat_port_max.saturating_sub(cfg.snat_port_min) as u32) + 1;
    for _ in 0..ATTEMPTS {
        // SAFETY: helper without arguments.
        let port = cfg.snat_port_min as u32 + unsafe { bpf_get_prandom_u32() } % span;
        reply_key.dport = (port as u16).to_be();
        if CONNTRACK.insert(&*reply_key, reply, BPF_NOEXIST).is_ok() {
            return true;
        }
    }
    false
}
