//! Keeps `BERTH_OVERLAY` (remote pod CIDR -> underlay address, VTEP MAC) and `BERTH_PEER_NODES` equal
//! to the overlay peers,
//! and creates the node's VXLAN device (which only receives: the eBPF programs encapsulate).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::maps::lpm_trie::Key;
use berth_common::{OVERLAY_VNI, OverlayPeer, ipv4_to_be, names};
use thiserror::Error;
use tracing::info;

use aya::maps::{HashMap, LpmTrie, MapData};

use super::{
    PinDir,
    maps::{MapsError, op_err, open_typed},
};
use crate::{
    net::{Peer, PodCidr},
    netlink::{self, NetlinkError},
};

/// VXLAN + outer UDP/IPv4/Ethernet headers.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Errors of setting up the VXLAN device.
#[derive(Debug, Error)]
pub enum VxlanError {
    /// A netlink request failed (the underlay missing, the device refused).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// The node's VXLAN device: its ifindex and MAC (the VTEP MAC other nodes address inner frames to).
#[derive(Clone, Copy, Debug)]
pub struct Vtep {
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// The device's MTU: pod interfaces get the same, so inner packets never need fragmenting.
    pub mtu: u32,
}

/// Creates (if missing) the node's VXLAN device `name` on `underlay`: VNI 1, UDP `port` (8472 unless
/// `--vxlan-port`), no learning, MTU the underlay's less 50 (set again on every start), with `mac` when
/// given; brings it up. It has no per-peer entries and only ever receives (the eBPF programs
/// encapsulate and send themselves, see `ebpf/berth-ebpf/src/overlay.rs`): it is the socket on that
/// port that decapsulates GSO aggregates. A device of another port, or a collect-metadata device left by
/// an older berth, is replaced.
pub fn ensure_vxlan(name: &str, underlay: &str, mac: Option<[u8; 6]>, port: u16) -> Result<Vtep, VxlanError> {
    let vtep = netlink::run(None, |nl| async move {
        let under = nl.require(underlay).await?;
        // The pod network's MTU follows the underlay's, as flannel's: its MTU less VXLAN's overhead, also
        // when the underlay's changed since the device was made.
        let mtu = under.mtu.saturating_sub(VXLAN_OVERHEAD).max(576);
        if let Some(existing) = nl.link(name).await?
            && existing.vxlan != Some((port, false))
        {
            nl.del_link(existing.index).await?;
            info!(device = name, "replacing a VXLAN device of another configuration");
        }
        let dev = match nl.link(name).await? {
            Some(dev) => dev,
            None => {
                nl.add_vxlan(name, OVERLAY_VNI, port, under.index, mtu, mac)
                    .await?;
                info!(device = name, underlay, mtu, port, "created the VXLAN device");
                nl.require(name).await?
            }
        };
        nl.set_link(dev.index, true, Some(mtu), None).await?;
        let mac = dev
            .mac
            .ok_or_else(|| NetlinkError::NoLink(format!("{name} (no MAC)")))?;
        Ok(Vtep {
            ifindex: dev.index,
            mac,
            mtu,
        })
    })?;
    Ok(vtep)
}

fn key(c: &PodCidr) -> Key<u32> {
    Key::new(c.prefix_len as u32, ipv4_to_be(c.network.octets()))
}

/// Keeps the overlay maps (which it alone opens) in step with the peers: `BERTH_OVERLAY` (pod CIDR ->
/// peer) and `BERTH_PEER_NODES` (the peers' underlay addresses, which the masquerade leaves alone).
pub struct OverlayProgrammer {
    map: LpmTrie<MapData, u32, OverlayPeer>,
    applied: BTreeMap<PodCidr, OverlayPeer>,
    nodes: HashMap<MapData, u32, u32>,
    applied_nodes: BTreeSet<u32>,
}

impl OverlayProgrammer {
    /// Opens the pinned map and reads back what it holds.
    pub fn restore(pins: &PinDir) -> Result<Self, MapsError> {
        let map: LpmTrie<MapData, u32, OverlayPeer> = open_typed(pins, names::OVERLAY)?;
        let mut applied = BTreeMap::new();
        for (k, v) in map.iter().flatten() {
            let network = Ipv4Addr::from(berth_common::be_to_ipv4(k.data()));
            applied.insert(
                PodCidr {
                    network,
                    prefix_len: k.prefix_len() as u8,
                },
                v,
            );
        }
        let nodes: HashMap<MapData, u32, u32> = open_typed(pins, names::PEER_NODES)?;
        let applied_nodes = nodes.keys().flatten().collect();
        Ok(OverlayProgrammer {
            map,
            applied,
            nodes,
            applied_nodes,
        })
    }

    /// Writes new and changed peers, then removes those that left. Returns (written, removed).
    pub fn apply(&mut self, peers: &[Peer]) -> Result<(usize, usize), MapsError> {
        let mut desired = BTreeMap::new();
        for p in peers {
            let v = OverlayPeer {
                underlay: ipv4_to_be(p.underlay.octets()),
                vtep_mac: p.vtep_mac,
                pad: [0; 2],
            };
            desired.insert(p.pod_cidr, v);
        }
        let mut written = 0;
        for (cidr, v) in &desired {
            if self.applied.get(cidr) != Some(v) {
                self.map
                    .insert(&key(cidr), v, 0)
                    .map_err(op_err("update", names::OVERLAY))?;
                written += 1;
            }
        }
        let gone: Vec<PodCidr> = self
            .applied
            .keys()
            .filter(|c| !desired.contains_key(c))
            .copied()
            .collect();
        for cidr in &gone {
            let _ = self.map.remove(&key(cidr));
        }
        self.applied = desired;
        let nodes: BTreeSet<u32> = peers.iter().map(|p| ipv4_to_be(p.underlay.octets())).collect();
        for addr in nodes.difference(&self.applied_nodes) {
            self.nodes
                .insert(addr, 1, 0)
                .map_err(op_err("update", names::PEER_NODES))?;
        }
        for addr in self.applied_nodes.difference(&nodes) {
            let _ = self.nodes.remove(addr);
        }
        self.applied_nodes = nodes;
        Ok((written, gone.len()))
    }
}

/// Lets the host itself reach other nodes' pods, as flannel does: the node's VXLAN device holds the
/// first address of the node's pod CIDR (`.0/32`, flannel's VTEP address, the source of such traffic,
/// reachable back through the overlay) and one route sends the cluster's pod network to the device.
/// The device resolves no neighbours (`arp off`): the egress program on it encapsulates every packet
/// and addresses the inner frame itself. The node's own pods keep their more specific /32 routes.
pub fn route_host_traffic(dev: &str, node: PodCidr, cluster: PodCidr) -> Result<(), VxlanError> {
    let vtep_addr = node.network;
    netlink::run(None, |nl| async move {
        let link = nl.require(dev).await?;
        nl.set_link(link.index, true, None, Some(false)).await?;
        nl.add_addr(link.index, vtep_addr, 32).await?;
        nl.replace_route(
            cluster.network,
            cluster.prefix_len,
            link.index,
            Some(vtep_addr),
            None,
        )
        .await
    })?;
    Ok(())
}
