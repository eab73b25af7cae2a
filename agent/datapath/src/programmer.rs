//! Keeps the Service maps equal to a [`DesiredState`] with updates that no packet can observe half done.
//!
//! Order of writes (the invariant of ARCHITECTURE.md, "Update ordering"):
//! 1. new backends into `BERTH_BACKENDS`;
//! 2. per changed frontend: its outer backend slots (beyond the [`INLINE_SLOTS`] its value holds), its
//!    reverse-NAT entry and Maglev table, then its value (header with the new count, and the inline
//!    slots) in one write, then the outer slots beyond the new count are deleted;
//! 3. removed frontends: the value first (no new flows), then outer slots, reverse NAT and Maglev table;
//! 4. backends no longer referenced, and the affinity and UDP conntrack entries that point at them.
//!
//! On start the programmer reads back what the pinned maps hold ([`ServiceProgrammer::restore`]) and
//! from then on writes only differences, so an agent restart rewrites nothing that is already right and
//! flushes nothing.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
};

use berth_common::{
    BACKEND_F_LOCAL, Backend, FrontendHeader, FrontendKey, FrontendValue, INLINE_SLOTS, MAGLEV_TABLE_SIZE,
    MaglevTable, PROTO_UDP, RevNat, SVC_F_AFFINITY, SVC_F_LOCAL_DROP, SVC_F_MAGLEV, SVC_F_NODEPORT,
    SVC_F_SNAT, Slot, SlotKey, be_to_ipv4, be_to_port, ipv4_to_be, port_to_be,
};
use tracing::{debug, info, warn};

use super::maps::{MapsError, ServiceMapOps, ServiceMaps};
use crate::{
    maglev,
    service::{
        BackendAddr, Departure, DesiredState, Frontend, FrontendKind, FrontendSpec, LbAlgorithm, Protocol,
    },
};

/// Identity of a backend in `BERTH_BACKENDS`: one id per (address, port, protocol), shared by every
/// frontend that uses it.
type BackendIdentity = (Ipv4Addr, u16, Protocol);

/// What was written for one frontend.
#[derive(Clone, Debug)]
struct Applied {
    rev_nat_id: u32,
    spec: FrontendSpec,
    /// Number of backend slots written (ready + terminating), inline and outer.
    slots: u32,
}

/// Counts of what one [`ServiceProgrammer::apply`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub frontends_written: usize,
    pub frontends_removed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
}

/// Owns the Service maps and the bookkeeping of what they hold. Generic over the map operations so that
/// tests can check the update ordering on a recording; production uses the pinned maps.
pub struct ServiceProgrammer<M: ServiceMapOps = ServiceMaps> {
    maps: M,
    frontends: HashMap<Frontend, Applied>,
    backend_ids: HashMap<BackendIdentity, (u32, bool)>,
    /// How many recorded frontend slots use each backend: a backend whose count drops to zero (or
    /// that was never used) becomes a candidate for removal, so an apply that changes one frontend
    /// looks at its backends only, not at every backend of every frontend.
    backend_refs: HashMap<BackendIdentity, u32>,
    /// Backends that may have no user left, checked at the end of the next apply with removals.
    maybe_unused: HashSet<BackendIdentity>,
    free_backend_ids: Vec<u32>,
    next_backend_id: u32,
    free_rev_nat_ids: Vec<u32>,
    next_rev_nat_id: u32,
    /// Pause after each backend and outer-slot write (zero in production): widens the window in which a wrong
    /// write order would be visible, so the update-ordering test can fail if the order breaks.
    slot_write_delay: std::time::Duration,
    /// Backends that left UDP frontends since [`take_departures`](Self::take_departures) was last called.
    departures: Vec<Departure>,
}

fn same_programming(a: &FrontendSpec, b: &FrontendSpec) -> bool {
    // The service name is not stored in the maps; everything else is.
    a.kind == b.kind
        && a.ready == b.ready
        && a.terminating == b.terminating
        && a.affinity_timeout == b.affinity_timeout
        && a.snat == b.snat
        && a.local_drop == b.local_drop
        && (a.algorithm == b.algorithm || a.ready.is_empty())
}

fn frontend_key(fe: &Frontend) -> FrontendKey {
    FrontendKey {
        addr: ipv4_to_be(fe.addr.octets()),
        port: port_to_be(fe.port),
        proto: fe.proto.number(),
        pad: 0,
    }
}

/// The `BERTH_SLOTS` key of outer slot `slot` (> [`INLINE_SLOTS`]) of `fe`.
fn slot_key(fe: &Frontend, slot: u32) -> SlotKey {
    SlotKey {
        frontend: frontend_key(fe),
        slot,
    }
}

/// Slot numbers (1-based) held outside the frontend's value when it has `slots` slots.
fn outer_slots(slots: u32) -> std::ops::RangeInclusive<u32> {
    INLINE_SLOTS as u32 + 1..=slots
}

fn header(spec: &FrontendSpec, rev_nat_id: u32) -> FrontendHeader {
    let mut flags = 0;
    if spec.kind == FrontendKind::NodePort {
        flags |= SVC_F_NODEPORT;
    }
    if spec.snat {
        flags |= SVC_F_SNAT;
    }
    if spec.local_drop {
        flags |= SVC_F_LOCAL_DROP;
    }
    if spec.affinity_timeout.is_some() {
        flags |= SVC_F_AFFINITY;
    }
    if spec.algorithm == LbAlgorithm::Maglev && !spec.ready.is_empty() {
        flags |= SVC_F_MAGLEV;
    }
    FrontendHeader {
        rev_nat_id,
        affinity_timeout: spec.affinity_timeout.unwrap_or(0),
        count: u16::try_from(spec.ready.len()).unwrap_or(u16::MAX),
        terminating: u16::try_from(spec.terminating.len()).unwrap_or(u16::MAX),
        flags,
        pad: 0,
    }
}

/// The map form of a backend.
fn backend_value(b: &BackendAddr) -> Backend {
    Backend {
        addr: ipv4_to_be(b.addr.octets()),
        port: port_to_be(b.port),
        proto: b.proto.number(),
        flags: if b.local { BACKEND_F_LOCAL } else { 0 },
    }
}

fn identity(b: &BackendAddr) -> BackendIdentity {
    (b.addr, b.port, b.proto)
}

impl<M: ServiceMapOps> ServiceProgrammer<M> {
    /// Takes over the maps and reads back what they hold, so the next [`apply`](Self::apply) writes only
    /// the differences.
    pub fn restore(maps: M) -> Result<Self, MapsError> {
        let backends: HashMap<u32, Backend> = maps.backends()?.into_iter().collect();
        let headers = maps.frontends()?;
        let mut outer: HashMap<FrontendKey, BTreeMap<u32, u32>> = HashMap::new();
        for (k, v) in maps.slots()? {
            outer.entry(k.frontend).or_default().insert(k.slot, v.backend_id);
        }
        let mut me = ServiceProgrammer {
            maps,
            frontends: HashMap::new(),
            backend_ids: HashMap::new(),
            backend_refs: HashMap::new(),
            maybe_unused: HashSet::new(),
            free_backend_ids: Vec::new(),
            next_backend_id: backends.keys().max().map_or(1, |m| m + 1),
            free_rev_nat_ids: Vec::new(),
            slot_write_delay: std::time::Duration::ZERO,
            departures: Vec::new(),
            next_rev_nat_id: headers
                .iter()
                .map(|(_, v)| v.header.rev_nat_id)
                .max()
                .map_or(1, |m| m + 1),
        };
        let to_addr = |id: &u32| -> Option<BackendAddr> {
            let b = backends.get(id)?;
            Some(BackendAddr {
                addr: Ipv4Addr::from(be_to_ipv4(b.addr)),
                port: be_to_port(b.port),
                proto: Protocol::from_number(b.proto)?,
                local: b.flags & BACKEND_F_LOCAL != 0,
            })
        };
        for (id, b) in &backends {
            if let Some(addr) = to_addr(id) {
                me.backend_ids
                    .insert(identity(&addr), (*id, b.flags & BACKEND_F_LOCAL != 0));
            }
        }
        for (k, value) in headers {
            let Some(proto) = Protocol::from_number(k.proto) else {
                continue;
            };
            let fe = Frontend {
                addr: Ipv4Addr::from(be_to_ipv4(k.addr)),
                port: be_to_port(k.port),
                proto,
            };
            let v_outer = outer.remove(&k).unwrap_or_default();
            let v = value.header;
            let total = v.count as usize + v.terminating as usize;
            // Slot s is inline up to INLINE_SLOTS, then in BERTH_SLOTS; a missing one ends the list.
            let ids: Vec<u32> = (1..=total as u32)
                .map_while(|slot| match (slot as usize).checked_sub(1) {
                    Some(i) if i < INLINE_SLOTS => {
                        let id = value.slots[i].backend_id;
                        (id != 0).then_some(id)
                    }
                    _ => v_outer.get(&slot).copied(),
                })
                .collect();
            let count = v.count as usize;
            let total = total.min(ids.len());
            let ready: Vec<BackendAddr> = ids[..count.min(total)].iter().filter_map(to_addr).collect();
            let terminating: Vec<BackendAddr> =
                ids[count.min(total)..total].iter().filter_map(to_addr).collect();
            let spec = FrontendSpec {
                service: String::new(),
                kind: if v.flags & SVC_F_NODEPORT != 0 {
                    FrontendKind::NodePort
                } else {
                    FrontendKind::ClusterIp
                },
                ready,
                terminating,
                affinity_timeout: (v.flags & SVC_F_AFFINITY != 0).then_some(v.affinity_timeout),
                snat: v.flags & SVC_F_SNAT != 0,
                local_drop: v.flags & SVC_F_LOCAL_DROP != 0,
                algorithm: if v.flags & SVC_F_MAGLEV != 0 {
                    LbAlgorithm::Maglev
                } else {
                    LbAlgorithm::Random
                },
            };
            // Outer slots past the count (a crash between writes) are counted, so they are deleted.
            let slot_count = (total.min(INLINE_SLOTS) as u32).max(v_outer.keys().max().copied().unwrap_or(0));
            me.reference(&spec, true);
            me.frontends.insert(
                fe,
                Applied {
                    rev_nat_id: v.rev_nat_id,
                    spec,
                    slots: slot_count,
                },
            );
        }
        // A backend no restored frontend uses (a crash between writes) goes at the next apply.
        me.maybe_unused = me.backend_ids.keys().copied().collect();
        // Outer slots without a frontend (a crash between writes): deleted now.
        for (frontend, orphan) in outer {
            for slot in orphan.keys() {
                me.maps.del_slot(&SlotKey {
                    frontend,
                    slot: *slot,
                });
            }
        }
        let used: HashSet<u32> = me.frontends.values().map(|a| a.rev_nat_id).collect();
        me.free_rev_nat_ids = (1..me.next_rev_nat_id).filter(|id| !used.contains(id)).collect();
        // Affinity entries of frontends that no longer exist must go before their ids are reused.
        let orphaned: HashSet<u32> = me.free_rev_nat_ids.iter().copied().collect();
        me.forget(&orphaned, &HashSet::new(), &HashSet::new());
        let used: HashSet<u32> = backends.keys().copied().collect();
        me.free_backend_ids = (1..me.next_backend_id).filter(|id| !used.contains(id)).collect();
        info!(
            frontends = me.frontends.len(),
            backends = me.backend_ids.len(),
            "restored Service state from pinned maps"
        );
        Ok(me)
    }

    /// Sets a pause after every backend and outer-slot write (testing aid, see the field's doc).
    pub fn set_slot_write_delay(&mut self, delay: std::time::Duration) {
        self.slot_write_delay = delay;
    }

    /// The maps, for conntrack garbage collection.
    pub fn maps(&mut self) -> &mut M {
        &mut self.maps
    }

    /// Number of frontends programmed.
    pub fn frontend_count(&self) -> usize {
        self.frontends.len()
    }

    fn backend_id(&mut self, b: &BackendAddr, added: &mut usize) -> Result<u32, MapsError> {
        if let Some((id, local)) = self.backend_ids.get(&identity(b)).copied() {
            if local == b.local {
                return Ok(id);
            }
            // Same address, locality changed (pod moved): rewrite the flags in place.
            self.write_backend(id, b)?;
            self.backend_ids.insert(identity(b), (id, b.local));
            return Ok(id);
        }
        let id = match self.free_backend_ids.pop() {
            Some(id) => id,
            None => {
                self.next_backend_id += 1;
                self.next_backend_id - 1
            }
        };
        self.write_backend(id, b)?;
        self.backend_ids.insert(identity(b), (id, b.local));
        // Unused until a frontend that refers to it is recorded (its write may yet fail).
        self.maybe_unused.insert(identity(b));
        *added += 1;
        Ok(id)
    }

    /// Counts the backends of `spec` as used (`add`) or no longer used by one more frontend.
    fn reference(&mut self, spec: &FrontendSpec, add: bool) {
        for b in spec.ready.iter().chain(&spec.terminating) {
            let k = identity(b);
            if add {
                *self.backend_refs.entry(k).or_default() += 1;
            } else if let Some(n) = self.backend_refs.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.backend_refs.remove(&k);
                    self.maybe_unused.insert(k);
                }
            }
        }
    }

    fn write_backend(&mut self, id: u32, b: &BackendAddr) -> Result<(), MapsError> {
        let value = backend_value(b);
        self.maps.put_backend(id, value)?;
        self.pause_after_write();
        Ok(())
    }

    /// The testing pause after a write that must precede a frontend's value (see the field).
    fn pause_after_write(&self) {
        if !self.slot_write_delay.is_zero() {
            std::thread::sleep(self.slot_write_delay);
        }
    }

    fn write_frontend(
        &mut self,
        fe: &Frontend,
        spec: &FrontendSpec,
        stats: &mut ApplyStats,
    ) -> Result<(), MapsError> {
        let previous = self.frontends.get(fe).cloned();
        let rev_nat_id = match &previous {
            Some(p) => p.rev_nat_id,
            None => match self.free_rev_nat_ids.pop() {
                Some(id) => id,
                None => {
                    self.next_rev_nat_id += 1;
                    self.next_rev_nat_id - 1
                }
            },
        };
        let mut ids = Vec::with_capacity(spec.ready.len() + spec.terminating.len());
        for b in spec.ready.iter().chain(&spec.terminating) {
            ids.push(self.backend_id(b, &mut stats.backends_added)?);
        }
        let hdr = header(spec, rev_nat_id);
        let mut value = FrontendValue {
            header: hdr,
            ..Default::default()
        };
        // 1. backend slots: the outer ones written now, the inline ones go with the header.
        let backends = spec.ready.iter().chain(&spec.terminating);
        for (i, (id, b)) in ids.iter().zip(backends).enumerate() {
            let slot = Slot {
                backend_id: *id,
                backend: backend_value(b),
            };
            match value.slots.get_mut(i) {
                Some(inline) => *inline = slot,
                None => {
                    self.maps.put_slot(slot_key(fe, i as u32 + 1), slot)?;
                    self.pause_after_write();
                }
            }
        }
        // 2. reverse NAT and Maglev table
        let rev = RevNat {
            addr: ipv4_to_be(fe.addr.octets()),
            port: port_to_be(fe.port),
            pad: 0,
        };
        self.maps.put_rev_nat(rev_nat_id, rev)?;
        if hdr.flags & SVC_F_MAGLEV != 0 {
            let names_: Vec<String> = spec
                .ready
                .iter()
                .map(|b| format!("{}:{}/{}", b.addr, b.port, b.proto))
                .collect();
            if let Some(entries) = maglev::table(&names_, &ids[..spec.ready.len()]) {
                let mut table = MaglevTable {
                    backends: [0; MAGLEV_TABLE_SIZE],
                };
                table.backends.copy_from_slice(&entries);
                self.maps.put_maglev(rev_nat_id, &table)?;
            }
        }
        // 3. the value (header and inline slots) last: from here on packets see the new count.
        self.maps.put_frontend(frontend_key(fe), &value)?;
        // 4. stale outer slots after.
        let new_slots = ids.len() as u32;
        if let Some(p) = &previous {
            for slot in outer_slots(p.slots) {
                if slot > new_slots {
                    self.maps.del_slot(&slot_key(fe, slot));
                }
            }
            if hdr.flags & SVC_F_MAGLEV == 0 && p.spec.algorithm == LbAlgorithm::Maglev {
                self.maps.del_maglev(rev_nat_id);
            }
        }
        self.reference(spec, true);
        if let Some(old) = self.frontends.insert(
            *fe,
            Applied {
                rev_nat_id,
                spec: spec.clone(),
                slots: new_slots,
            },
        ) {
            self.reference(&old.spec, false);
        }
        stats.frontends_written += 1;
        Ok(())
    }

    /// Deletes a frontend from the maps, its value (header) first. Its rev-NAT id is returned, not freed: it is
    /// reused only after the affinity entries keyed by it are gone.
    fn remove_frontend(&mut self, fe: &Frontend) -> Option<u32> {
        let applied = self.frontends.remove(fe)?;
        self.reference(&applied.spec, false);
        self.maps.del_frontend(&frontend_key(fe));
        for slot in outer_slots(applied.slots) {
            self.maps.del_slot(&slot_key(fe, slot));
        }
        self.maps.del_rev_nat(applied.rev_nat_id);
        self.maps.del_maglev(applied.rev_nat_id);
        Some(applied.rev_nat_id)
    }

    /// (rev-NAT id, backend id) of every backend that leaves the ready set of `fe` if `spec` replaces
    /// what is applied: affinity to them must end (kube-proxy sends no new flows to such a backend).
    fn leaving(&self, fe: &Frontend, spec: &FrontendSpec) -> Vec<(u32, u32)> {
        let Some(applied) = self.frontends.get(fe) else {
            return Vec::new();
        };
        let staying: HashSet<BackendIdentity> = spec.ready.iter().map(identity).collect();
        applied
            .spec
            .ready
            .iter()
            .map(identity)
            .filter(|b| !staying.contains(b))
            .filter_map(|b| self.backend_ids.get(&b).map(|(id, _)| (applied.rev_nat_id, *id)))
            .collect()
    }

    /// Records the backends of UDP frontend `fe` that `spec` (`None`: the frontend goes) no longer lists
    /// at all, ready or terminating: the socket LB's connected sockets to them must end.
    fn note_departures(&mut self, fe: &Frontend, spec: Option<&FrontendSpec>) {
        if fe.proto != Protocol::Udp {
            return;
        }
        let Some(applied) = self.frontends.get(fe) else {
            return;
        };
        let staying: HashSet<BackendIdentity> = spec
            .map(|s| s.ready.iter().chain(&s.terminating).map(identity).collect())
            .unwrap_or_default();
        let frontend = std::net::SocketAddrV4::new(fe.addr, fe.port);
        self.departures.extend(
            applied
                .spec
                .ready
                .iter()
                .chain(&applied.spec.terminating)
                .filter(|b| !staying.contains(&identity(b)))
                .map(|b| Departure {
                    frontend,
                    backend: std::net::SocketAddrV4::new(b.addr, b.port),
                }),
        );
    }

    /// The backends that left UDP frontends since the last call (see [`Departure`]).
    pub fn take_departures(&mut self) -> Vec<Departure> {
        std::mem::take(&mut self.departures)
    }

    /// Brings the maps to `desired`. Safe to call with the same state again (writes nothing).
    ///
    /// With `removals` false nothing is deleted (frontends or backends missing from `desired` stay):
    /// used while part of the desired state is unknown. A frontend that cannot be written (map full)
    /// does not stop the others; the first error is returned after everything else was applied, and
    /// the caller retries.
    pub fn apply(&mut self, desired: &DesiredState, removals: bool) -> Result<ApplyStats, MapsError> {
        let mut stats = ApplyStats::default();
        let mut first_error = None;
        // 1. Removed frontends first: they free room in the maps for what is added.
        let mut removed_frontends = HashSet::new();
        if removals {
            let gone: Vec<Frontend> = self
                .frontends
                .keys()
                .filter(|fe| !desired.frontends.contains_key(fe))
                .copied()
                .collect();
            for fe in &gone {
                self.note_departures(fe, None);
                removed_frontends.extend(self.remove_frontend(fe));
                stats.frontends_removed += 1;
            }
        }
        // 2. New and changed frontends.
        let mut left = HashSet::new();
        for (fe, spec) in &desired.frontends {
            if self
                .frontends
                .get(fe)
                .is_some_and(|a| same_programming(&a.spec, spec))
            {
                if let Some(a) = self.frontends.get_mut(fe) {
                    a.spec.service = spec.service.clone();
                }
                continue;
            }
            left.extend(self.leaving(fe, spec));
            self.note_departures(fe, Some(spec));
            if let Err(e) = self.write_frontend(fe, spec, &mut stats) {
                warn!(frontend = ?fe, service = %spec.service, error = %e, "cannot program frontend");
                first_error.get_or_insert(e);
            }
        }
        // 3. Backends no longer referenced by any frontend.
        let mut removed_backends = HashSet::new();
        if removals {
            for k in std::mem::take(&mut self.maybe_unused) {
                if self.backend_refs.contains_key(&k) {
                    continue;
                }
                if let Some((id, _)) = self.backend_ids.remove(&k) {
                    self.maps.del_backend(id);
                    removed_backends.insert(id);
                    stats.backends_removed += 1;
                }
            }
        }
        // 4. State that points at what went away, then the ids become reusable.
        self.forget(&removed_frontends, &left, &removed_backends);
        self.free_rev_nat_ids.extend(removed_frontends);
        self.free_backend_ids.extend(removed_backends);
        if stats != ApplyStats::default() {
            debug!(?stats, "Service maps updated");
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// Drops affinity entries and remembered socket-LB choices of removed frontends, of backends that left a frontend's ready set, and
    /// of removed backends; and UDP conntrack entries of removed backends (TCP flows keep their entries
    /// so open connections finish, as with kube-proxy). LRU entries may vanish mid-walk: skipped.
    fn forget(&mut self, frontends: &HashSet<u32>, left: &HashSet<(u32, u32)>, backends: &HashSet<u32>) {
        if !frontends.is_empty() || !left.is_empty() || !backends.is_empty() {
            self.maps.del_affinity_where(&|k, v| {
                frontends.contains(&k.rev_nat_id)
                    || backends.contains(&v.backend_id)
                    || left.contains(&(k.rev_nat_id, v.backend_id))
            });
            self.maps.del_sock_fwd_where(&|_, v| {
                frontends.contains(&v.rev_nat_id)
                    || backends.contains(&v.backend_id)
                    || left.contains(&(v.rev_nat_id, v.backend_id))
            });
        }
        if !backends.is_empty() {
            self.maps
                .del_conntrack_where(&|k, v| k.proto == PROTO_UDP && backends.contains(&v.backend_id));
        }
    }
}

#[cfg(test)]
mod tests {
    //! The update-ordering invariant, checked without root over an in-memory recording of the maps (as
    //! Cilium's LB tests use a mock map): after every single write the recording checks what a packet
    //! could see at that instant.

    use std::collections::{BTreeMap, BTreeSet};

    use berth_common::{AffinityKey, AffinityValue, CtEntry, CtKey, SockFwdKey, SockFwdValue};

    use super::*;

    /// The maps in memory, every operation logged, the invariant checked after each.
    #[derive(Default)]
    struct Recording {
        frontends: BTreeMap<FrontendKey, FrontendValue>,
        slots: BTreeMap<(FrontendKey, u32), Slot>,
        backends: BTreeMap<u32, Backend>,
        rev_nat: BTreeMap<u32, RevNat>,
        maglev: BTreeSet<u32>,
        ops: Vec<String>,
        violations: Vec<String>,
    }

    impl Recording {
        fn record(&mut self, op: String) {
            self.ops.push(op);
            // What a packet could see now: every slot a header counts written (inline or outer), each
            // pointing at a written backend, its reverse NAT and (with Maglev) its table present.
            for (k, v) in &self.frontends {
                let hdr = v.header;
                let n = u32::from(hdr.count) + u32::from(hdr.terminating);
                for slot in 1..=n {
                    let s = match v.slots.get(slot as usize - 1) {
                        Some(s) => Some(*s).filter(|s| s.backend_id != 0),
                        None => self.slots.get(&(*k, slot)).copied(),
                    };
                    match s {
                        None => self.violations.push(format!(
                            "after {:?}: slot {slot} of {k:?} missing",
                            self.ops.last()
                        )),
                        Some(s) if !self.backends.contains_key(&s.backend_id) => {
                            self.violations.push(format!(
                                "after {:?}: slot {slot} of {k:?} points at missing backend {}",
                                self.ops.last(),
                                s.backend_id
                            ))
                        }
                        Some(_) => {}
                    }
                }
                if n > 0 && !self.rev_nat.contains_key(&hdr.rev_nat_id) {
                    self.violations
                        .push(format!("after {:?}: no reverse NAT for {k:?}", self.ops.last()));
                }
                if hdr.flags & SVC_F_MAGLEV != 0 && !self.maglev.contains(&hdr.rev_nat_id) {
                    self.violations
                        .push(format!("after {:?}: no Maglev table for {k:?}", self.ops.last()));
                }
            }
        }
    }

    impl ServiceMapOps for Recording {
        fn frontends(&self) -> Result<Vec<(FrontendKey, FrontendValue)>, MapsError> {
            Ok(self.frontends.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn slots(&self) -> Result<Vec<(SlotKey, Slot)>, MapsError> {
            Ok(self
                .slots
                .iter()
                .map(|((frontend, slot), v)| {
                    (
                        SlotKey {
                            frontend: *frontend,
                            slot: *slot,
                        },
                        *v,
                    )
                })
                .collect())
        }
        fn put_frontend(&mut self, k: FrontendKey, v: &FrontendValue) -> Result<(), MapsError> {
            self.frontends.insert(k, *v);
            self.record("put frontend".into());
            Ok(())
        }
        fn del_frontend(&mut self, k: &FrontendKey) {
            self.frontends.remove(k);
            self.record("del frontend".into());
        }
        fn put_slot(&mut self, k: SlotKey, v: Slot) -> Result<(), MapsError> {
            self.slots.insert((k.frontend, k.slot), v);
            self.record(format!("put slot {}", k.slot));
            Ok(())
        }
        fn del_slot(&mut self, k: &SlotKey) {
            self.slots.remove(&(k.frontend, k.slot));
            self.record(format!("del slot {}", k.slot));
        }
        fn backends(&self) -> Result<Vec<(u32, Backend)>, MapsError> {
            Ok(self.backends.iter().map(|(k, v)| (*k, *v)).collect())
        }
        fn put_backend(&mut self, id: u32, v: Backend) -> Result<(), MapsError> {
            self.backends.insert(id, v);
            self.record(format!("put backend {id}"));
            Ok(())
        }
        fn del_backend(&mut self, id: u32) {
            self.backends.remove(&id);
            self.record(format!("del backend {id}"));
        }
        fn put_rev_nat(&mut self, id: u32, v: RevNat) -> Result<(), MapsError> {
            self.rev_nat.insert(id, v);
            self.record(format!("put revnat {id}"));
            Ok(())
        }
        fn del_rev_nat(&mut self, id: u32) {
            self.rev_nat.remove(&id);
            self.record(format!("del revnat {id}"));
        }
        fn put_maglev(&mut self, id: u32, _: &MaglevTable) -> Result<(), MapsError> {
            self.maglev.insert(id);
            self.record(format!("put maglev {id}"));
            Ok(())
        }
        fn del_maglev(&mut self, id: u32) {
            self.maglev.remove(&id);
            self.record(format!("del maglev {id}"));
        }
        fn del_affinity_where(&mut self, _: &dyn Fn(&AffinityKey, &AffinityValue) -> bool) {}
        fn del_sock_fwd_where(&mut self, _: &dyn Fn(&SockFwdKey, &SockFwdValue) -> bool) {}
        fn del_conntrack_where(&mut self, _: &dyn Fn(&CtKey, &CtEntry) -> bool) {}
    }

    fn frontend(last: u8) -> Frontend {
        Frontend {
            addr: Ipv4Addr::new(10, 96, 0, last),
            port: 80,
            proto: Protocol::Tcp,
        }
    }

    fn spec(backends: &[u8], terminating: &[u8], algorithm: LbAlgorithm) -> FrontendSpec {
        let b = |last: &u8| BackendAddr {
            addr: Ipv4Addr::new(10, 244, 0, *last),
            port: 8080,
            proto: Protocol::Tcp,
            local: false,
        };
        FrontendSpec {
            service: "default/web".into(),
            kind: FrontendKind::ClusterIp,
            ready: backends.iter().map(b).collect(),
            terminating: terminating.iter().map(b).collect(),
            affinity_timeout: None,
            snat: false,
            local_drop: false,
            algorithm,
        }
    }

    fn state(entries: &[(u8, FrontendSpec)]) -> DesiredState {
        DesiredState {
            frontends: entries.iter().map(|(f, s)| (frontend(*f), s.clone())).collect(),
        }
    }

    #[test]
    fn no_write_ever_exposes_a_half_updated_frontend() {
        let mut p = ServiceProgrammer::restore(Recording::default()).expect("restore");
        // Frontend 3 crosses the inline/outer boundary (INLINE_SLOTS = 16) both ways.
        let many = |from: u8, n: u8| (from..from + n).collect::<Vec<u8>>();
        let steps = [
            state(&[
                (1, spec(&[1, 2, 3], &[], LbAlgorithm::Random)),
                (2, spec(&[4, 5], &[], LbAlgorithm::Maglev)),
                (3, spec(&many(100, 20), &[], LbAlgorithm::Random)),
            ]),
            state(&[
                (1, spec(&[1, 2, 3], &[], LbAlgorithm::Random)),
                (2, spec(&[4, 5], &[], LbAlgorithm::Maglev)),
                (3, spec(&many(100, 10), &many(110, 8), LbAlgorithm::Maglev)),
            ]),
            state(&[
                (1, spec(&[1, 2, 3], &[], LbAlgorithm::Random)),
                (2, spec(&[4, 5], &[], LbAlgorithm::Maglev)),
                (3, spec(&many(120, 5), &[], LbAlgorithm::Random)),
            ]),
            state(&[
                (1, spec(&[1, 2, 3], &[], LbAlgorithm::Random)),
                (2, spec(&[4, 5], &[], LbAlgorithm::Maglev)),
                (3, spec(&many(130, 30), &[], LbAlgorithm::Random)),
            ]),
            // Shrink, grow, replace every backend, add terminating ones.
            state(&[
                (1, spec(&[2], &[3], LbAlgorithm::Random)),
                (2, spec(&[4, 5, 6, 7, 8], &[], LbAlgorithm::Maglev)),
            ]),
            state(&[
                (1, spec(&[9, 10], &[], LbAlgorithm::Maglev)),
                (2, spec(&[11], &[], LbAlgorithm::Random)),
            ]),
            // A frontend removed, one with no backends at all.
            state(&[(2, spec(&[], &[], LbAlgorithm::Random))]),
            state(&[]),
        ];
        for desired in &steps {
            p.apply(desired, true).expect("apply");
        }
        let rec = p.maps();
        assert!(
            rec.violations.is_empty(),
            "{:#?}\nops: {:#?}",
            rec.violations,
            rec.ops
        );
        assert!(
            rec.frontends.is_empty()
                && rec.slots.is_empty()
                && rec.backends.is_empty()
                && rec.rev_nat.is_empty()
                && rec.maglev.is_empty()
        );
    }

    #[test]
    fn udp_backends_that_leave_are_reported_once_tcp_ones_never() {
        let udp = |spec: FrontendSpec| FrontendSpec {
            ready: spec
                .ready
                .iter()
                .map(|b| BackendAddr {
                    proto: Protocol::Udp,
                    ..*b
                })
                .collect(),
            terminating: spec
                .terminating
                .iter()
                .map(|b| BackendAddr {
                    proto: Protocol::Udp,
                    ..*b
                })
                .collect(),
            ..spec
        };
        let dns = Frontend {
            proto: Protocol::Udp,
            ..frontend(10)
        };
        let with = |dns_spec: Option<FrontendSpec>, web: &[u8]| {
            let mut d = state(&[(1, spec(web, &[], LbAlgorithm::Random))]);
            if let Some(s) = dns_spec {
                d.frontends.insert(dns, udp(s));
            }
            d
        };
        let departure = |last: u8| Departure {
            frontend: std::net::SocketAddrV4::new(dns.addr, dns.port),
            backend: std::net::SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, last), 8080),
        };
        let mut p = ServiceProgrammer::restore(Recording::default()).expect("restore");
        p.apply(
            &with(Some(spec(&[1, 2, 3], &[], LbAlgorithm::Random)), &[1, 2]),
            true,
        )
        .expect("apply");
        assert!(p.take_departures().is_empty());
        // 1 goes, 2 turns terminating (still serving: its sockets stay), TCP backend 2 goes.
        p.apply(&with(Some(spec(&[3], &[2], LbAlgorithm::Random)), &[1]), true)
            .expect("apply");
        assert_eq!(p.take_departures(), vec![departure(1)]);
        assert!(p.take_departures().is_empty());
        // The frontend goes: every backend it had leaves it.
        p.apply(&with(None, &[1]), true).expect("apply");
        let mut gone = p.take_departures();
        gone.sort_by_key(|d| d.backend);
        assert_eq!(gone, vec![departure(2), departure(3)]);
    }

    #[test]
    fn the_header_is_written_last_and_removed_first() {
        let mut p = ServiceProgrammer::restore(Recording::default()).expect("restore");
        let backends: Vec<u8> = (1..=18).collect();
        p.apply(&state(&[(1, spec(&backends, &[], LbAlgorithm::Random))]), true)
            .expect("apply");
        let ops = std::mem::take(&mut p.maps().ops);
        let header = ops
            .iter()
            .position(|o| o == "put frontend")
            .expect("header written");
        assert_eq!(header, ops.len() - 1, "header last: {ops:?}");
        assert!(
            ops[..18].iter().all(|o| o.starts_with("put backend")),
            "backends first: {ops:?}"
        );
        let outer: Vec<&String> = ops.iter().filter(|o| o.starts_with("put slot")).collect();
        assert_eq!(
            outer,
            ["put slot 17", "put slot 18"],
            "only slots past the inline ones: {ops:?}"
        );
        p.apply(&state(&[]), true).expect("apply");
        let ops = std::mem::take(&mut p.maps().ops);
        assert_eq!(
            ops.first().map(String::as_str),
            Some("del frontend"),
            "header first: {ops:?}"
        );
        let last_slot = ops
            .iter()
            .rposition(|o| o.starts_with("del slot"))
            .expect("slots");
        let first_backend = ops
            .iter()
            .position(|o| o.starts_with("del backend"))
            .expect("backends");
        assert!(
            last_slot < first_backend,
            "backends deleted after the slots: {ops:?}"
        );
    }

    #[test]
    fn a_restart_rewrites_nothing_that_is_already_right() {
        let many: Vec<u8> = (10..40).collect();
        let desired = state(&[
            (1, spec(&[1, 2], &[3], LbAlgorithm::Maglev)),
            (2, spec(&[4], &[], LbAlgorithm::Random)),
            (3, spec(&many[..20], &many[20..], LbAlgorithm::Random)),
        ]);
        let mut p = ServiceProgrammer::restore(Recording::default()).expect("restore");
        p.apply(&desired, true).expect("apply");
        let mut maps = std::mem::take(p.maps());
        maps.ops.clear();
        let mut restarted = ServiceProgrammer::restore(maps).expect("restore");
        let stats = restarted.apply(&desired, true).expect("apply");
        assert_eq!(stats, ApplyStats::default());
        assert!(restarted.maps().ops.is_empty(), "{:?}", restarted.maps().ops);
    }
}
