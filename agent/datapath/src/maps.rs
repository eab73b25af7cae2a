//! Typed handles on the pinned maps, opened by path: the running agent and the `lb list` inspection
//! command use the same code, and neither needs the other.
//!
//! Each programmer opens the maps it owns and no others: [`ServiceMaps`] for the Service load balancer
//! (and its conntrack garbage collection), the overlay and local-endpoint programmers their one map
//! each, [`write_node_config`] the node-wide settings once at start. [`LbMaps`] opens everything, for
//! inspection only.

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray};
use berth_common::{
    AffinityKey, AffinityValue, Backend, CtEntry, CtKey, FrontendKey, FrontendValue, LocalEndpoint,
    MaglevTable, NodeConfig, OverlayPeer, RevNat, Slot, SlotKey, SockFwdKey, SockFwdValue, SockRevKey, names,
};
use thiserror::Error;

use super::PinDir;

/// Errors of opening or using the maps.
#[derive(Debug, Error)]
pub enum MapsError {
    /// A pinned map is missing or of the wrong type (agent never started on this node, or a different
    /// berth version pinned it).
    #[error("map {name} at {path}: {source}")]
    Open {
        name: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: MapError,
    },
    /// A map operation failed.
    #[error("{op} on {name}: {source}")]
    Op {
        op: &'static str,
        name: &'static str,
        #[source]
        source: MapError,
    },
}

fn open(pins: &PinDir, name: &'static str) -> Result<Map, MapsError> {
    let path = pins.map(name);
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Open {
        name,
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| MapsError::Open { name, path, source })
}

macro_rules! typed {
    ($pins:expr, $name:expr) => {{
        let map = open($pins, $name)?;
        map.try_into().map_err(|source| MapsError::Open {
            name: $name,
            path: $pins.map($name),
            source,
        })?
    }};
}

/// The maps of the Service load balancer, owned by [`crate::programmer::ServiceProgrammer`].
pub struct ServiceMaps {
    pub frontends: HashMap<MapData, FrontendKey, FrontendValue>,
    pub slots: HashMap<MapData, SlotKey, Slot>,
    pub backends: HashMap<MapData, u32, Backend>,
    pub rev_nat: HashMap<MapData, u32, RevNat>,
    pub conntrack: HashMap<MapData, CtKey, CtEntry>,
    pub affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    pub maglev: HashMap<MapData, u32, MaglevTable>,
    pub sock_rev: HashMap<MapData, SockRevKey, RevNat>,
    pub sock_fwd: HashMap<MapData, SockFwdKey, SockFwdValue>,
}

impl ServiceMaps {
    /// Opens the Service load balancer's maps pinned under `pins`.
    pub fn open(pins: &PinDir) -> Result<Self, MapsError> {
        Ok(ServiceMaps {
            frontends: typed!(pins, names::FRONTENDS),
            slots: typed!(pins, names::SLOTS),
            backends: typed!(pins, names::BACKENDS),
            rev_nat: typed!(pins, names::REV_NAT),
            conntrack: typed!(pins, names::CONNTRACK),
            affinity: typed!(pins, names::AFFINITY),
            maglev: typed!(pins, names::MAGLEV),
            sock_rev: typed!(pins, names::SOCK_REV),
            sock_fwd: typed!(pins, names::SOCK_FWD),
        })
    }
}

/// Opens one map pinned under `pins` with its key and value types.
pub fn open_typed<T>(pins: &PinDir, name: &'static str) -> Result<T, MapsError>
where
    T: TryFrom<Map, Error = MapError>,
{
    Ok(typed!(pins, name))
}

/// Writes the node-wide settings (SNAT address and port range, VXLAN device, cluster network).
pub fn write_node_config(pins: &PinDir, cfg: NodeConfig) -> Result<(), MapsError> {
    let mut config: Array<MapData, NodeConfig> = open_typed(pins, names::CONFIG)?;
    config.set(0, cfg, 0).map_err(op_err("update", names::CONFIG))
}

/// Every map of the data plane, for inspection: the Service load balancer's and the rest.
pub struct LbMaps {
    pub lb: ServiceMaps,
    pub overlay: LpmTrie<MapData, u32, OverlayPeer>,
    pub endpoints: HashMap<MapData, u32, LocalEndpoint>,
    pub config: Array<MapData, NodeConfig>,
    pub counters: PerCpuArray<MapData, u64>,
}

impl LbMaps {
    /// Opens the maps pinned under `pins`.
    pub fn open(pins: &PinDir) -> Result<Self, MapsError> {
        Ok(LbMaps {
            lb: ServiceMaps::open(pins)?,
            overlay: typed!(pins, names::OVERLAY),
            endpoints: typed!(pins, names::ENDPOINTS),
            config: typed!(pins, names::CONFIG),
            counters: typed!(pins, names::COUNTERS),
        })
    }

    /// Sum of a counter over all CPUs.
    pub fn counter(&self, index: u32) -> u64 {
        self.counters.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
}

/// Shorthand for wrapping a map error with the operation and map name.
pub fn op_err(op: &'static str, name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Op { op, name, source }
}

/// What the Service programmer does to its maps, and nothing else: the pinned maps ([`ServiceMaps`]) in
/// production, an in-memory recording in tests, where the update-ordering invariant (ARCHITECTURE.md)
/// is checked after every single write without root.
pub trait ServiceMapOps {
    /// Every entry of `BERTH_FRONTENDS`.
    fn frontends(&self) -> Result<Vec<(FrontendKey, FrontendValue)>, MapsError>;
    /// Every entry of `BERTH_SLOTS`.
    fn slots(&self) -> Result<Vec<(SlotKey, Slot)>, MapsError>;
    /// Every entry of `BERTH_BACKENDS`.
    fn backends(&self) -> Result<Vec<(u32, Backend)>, MapsError>;
    fn put_frontend(&mut self, key: FrontendKey, value: &FrontendValue) -> Result<(), MapsError>;
    /// Deletes a `BERTH_FRONTENDS` entry (absent is fine).
    fn del_frontend(&mut self, key: &FrontendKey);
    fn put_slot(&mut self, key: SlotKey, value: Slot) -> Result<(), MapsError>;
    /// Deletes a `BERTH_SLOTS` entry (absent is fine).
    fn del_slot(&mut self, key: &SlotKey);
    fn put_backend(&mut self, id: u32, value: Backend) -> Result<(), MapsError>;
    fn del_backend(&mut self, id: u32);
    fn put_rev_nat(&mut self, id: u32, value: RevNat) -> Result<(), MapsError>;
    fn del_rev_nat(&mut self, id: u32);
    fn put_maglev(&mut self, id: u32, table: &MaglevTable) -> Result<(), MapsError>;
    fn del_maglev(&mut self, id: u32);
    /// Deletes the affinity entries `stale` picks (entries may vanish meanwhile: LRU).
    fn del_affinity_where(&mut self, stale: &dyn Fn(&AffinityKey, &AffinityValue) -> bool);
    /// Deletes the remembered socket-LB choices `stale` picks.
    fn del_sock_fwd_where(&mut self, stale: &dyn Fn(&SockFwdKey, &SockFwdValue) -> bool);
    /// Deletes the conntrack entries `stale` picks.
    fn del_conntrack_where(&mut self, stale: &dyn Fn(&CtKey, &CtEntry) -> bool);
}

/// Collects the keys of `map` that `stale` picks, then deletes them (an entry refreshed or gone meanwhile
/// is simply skipped).
fn delete_where<K: aya::Pod, V: aya::Pod>(map: &mut HashMap<MapData, K, V>, stale: &dyn Fn(&K, &V) -> bool) {
    let keys: Vec<K> = map
        .iter()
        .flatten()
        .filter(|(k, v)| stale(k, v))
        .map(|(k, _)| k)
        .collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

impl ServiceMapOps for ServiceMaps {
    fn frontends(&self) -> Result<Vec<(FrontendKey, FrontendValue)>, MapsError> {
        self.frontends
            .iter()
            .map(|r| r.map_err(op_err("iterate", names::FRONTENDS)))
            .collect()
    }

    fn slots(&self) -> Result<Vec<(SlotKey, Slot)>, MapsError> {
        self.slots
            .iter()
            .map(|r| r.map_err(op_err("iterate", names::SLOTS)))
            .collect()
    }

    fn backends(&self) -> Result<Vec<(u32, Backend)>, MapsError> {
        self.backends
            .iter()
            .map(|r| r.map_err(op_err("iterate", names::BACKENDS)))
            .collect()
    }

    fn put_frontend(&mut self, key: FrontendKey, value: &FrontendValue) -> Result<(), MapsError> {
        self.frontends
            .insert(key, value, 0)
            .map_err(op_err("update", names::FRONTENDS))
    }

    fn del_frontend(&mut self, key: &FrontendKey) {
        let _ = self.frontends.remove(key);
    }

    fn put_slot(&mut self, key: SlotKey, value: Slot) -> Result<(), MapsError> {
        self.slots
            .insert(key, value, 0)
            .map_err(op_err("update", names::SLOTS))
    }

    fn del_slot(&mut self, key: &SlotKey) {
        let _ = self.slots.remove(key);
    }

    fn put_backend(&mut self, id: u32, value: Backend) -> Result<(), MapsError> {
        self.backends
            .insert(id, value, 0)
            .map_err(op_err("update", names::BACKENDS))
    }

    fn del_backend(&mut self, id: u32) {
        let _ = self.backends.remove(&id);
    }

    fn put_rev_nat(&mut self, id: u32, value: RevNat) -> Result<(), MapsError> {
        self.rev_nat
            .insert(id, value, 0)
            .map_err(op_err("update", names::REV_NAT))
    }

    fn del_rev_nat(&mut self, id: u32) {
        let _ = self.rev_nat.remove(&id);
    }

    fn put_maglev(&mut self, id: u32, table: &MaglevTable) -> Result<(), MapsError> {
        self.maglev
            .insert(id, table, 0)
            .map_err(op_err("update", names::MAGLEV))
    }

    fn del_maglev(&mut self, id: u32) {
        let _ = self.maglev.remove(&id);
    }

    fn del_affinity_where(&mut self, stale: &dyn Fn(&AffinityKey, &AffinityValue) -> bool) {
        delete_where(&mut self.affinity, stale);
    }

    fn del_sock_fwd_where(&mut self, stale: &dyn Fn(&SockFwdKey, &SockFwdValue) -> bool) {
        delete_where(&mut self.sock_fwd, stale);
    }

    fn del_conntrack_where(&mut self, stale: &dyn Fn(&CtKey, &CtEntry) -> bool) {
        delete_where(&mut self.conntrack, stale);
    }
}
