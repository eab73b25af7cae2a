//! The desired state kept up to date one Service at a time: with 10,000 Services a change of one
//! EndpointSlice must not recompute every frontend (that took 80 ms; this takes well under one).
//!
//! Changes are found by comparing the stores' snapshots with the previous ones by object identity:
//! the reflector store replaces an object's `Arc` whenever the object changes, so an `Arc` not seen
//! before is a new or changed object, and one no longer present is gone. The previous snapshot's `Arc`s
//! are held, so an address is never reused while it is remembered. Only the Services whose Service or
//! EndpointSlices changed are recomputed ([`super::desired::service_frontends`], the same function a
//! full computation uses).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::model::{EndpointSlice, Service};

use super::desired::{Skipped, merge, service_frontends, service_key, slice_service};
use crate::lb::{DesiredState, Frontend, FrontendSpec, NodeInfo};

/// (namespace, name).
type Key = (String, String);

fn ptr<K>(a: &Arc<K>) -> usize {
    Arc::as_ptr(a) as usize
}

/// What changed between two snapshots: objects new or changed, and objects gone.
fn diff<K>(previous: &mut HashMap<usize, Arc<K>>, snapshot: Vec<Arc<K>>) -> (Vec<Arc<K>>, Vec<Arc<K>>) {
    let current: HashMap<usize, Arc<K>> = snapshot.into_iter().map(|a| (ptr(&a), a)).collect();
    let changed = current
        .iter()
        .filter(|(p, _)| !previous.contains_key(p))
        .map(|(_, a)| Arc::clone(a))
        .collect();
    let gone = previous
        .iter()
        .filter(|(p, _)| !current.contains_key(p))
        .map(|(_, a)| Arc::clone(a))
        .collect();
    *previous = current;
    (changed, gone)
}

/// One Service's share of the state: the Service (if it exists), its EndpointSlices, and the frontends
/// it holds in the desired state. One entry per Service rather than an index per relation: with 10,000
/// Services each index cost about a megabyte of keys.
#[derive(Default)]
struct ServiceEntry {
    service: Option<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
    /// The frontends as last computed and held, to withdraw them when the Service changes.
    frontends: Vec<Frontend>,
}

/// The Services' desired frontends, kept in step with snapshots of the two stores.
#[derive(Default)]
pub struct IncrementalState {
    seen_services: HashMap<usize, Arc<Service>>,
    seen_slices: HashMap<usize, Arc<EndpointSlice>>,
    /// By Service (namespace, name). An EndpointSlice is filed under the Service its label names; the
    /// label may change, so a slice that goes is looked for under the owner of its old version.
    entries: HashMap<Key, ServiceEntry>,
    desired: DesiredState,
}

impl IncrementalState {
    /// The desired state as of the last [`update`](Self::update).
    pub fn desired(&self) -> &DesiredState {
        &self.desired
    }

    /// Brings the desired state up to the snapshots; returns how many Services were recomputed and
    /// what could not be programmed among them.
    pub fn update(
        &mut self,
        services: Vec<Arc<Service>>,
        slices: Vec<Arc<EndpointSlice>>,
        node: &NodeInfo,
    ) -> (usize, Vec<Skipped>) {
        let mut dirty: HashSet<Key> = HashSet::new();
        let (changed, gone) = diff(&mut self.seen_services, services);
        for svc in gone {
            let key = service_key(&svc);
            // Gone unless a newer version of it is filed below.
            if let Some(entry) = self.entries.get_mut(&key)
                && entry.service.as_ref().is_some_and(|s| Arc::ptr_eq(s, &svc))
            {
                entry.service = None;
                dirty.insert(key);
            }
        }
        for svc in changed {
            let key = service_key(&svc);
            self.entries.entry(key.clone()).or_default().service = Some(svc);
            dirty.insert(key);
        }
        let (changed, gone) = diff(&mut self.seen_slices, slices);
        for slice in gone {
            if let Some(owner) = slice_service(&slice)
                && let Some(entry) = self.entries.get_mut(&owner)
            {
                let before = entry.slices.len();
                entry.slices.retain(|s| !Arc::ptr_eq(s, &slice));
                if entry.slices.len() != before {
                    dirty.insert(owner);
                }
            }
        }
        for slice in changed {
            if let Some(owner) = slice_service(&slice) {
                let entry = self.entries.entry(owner.clone()).or_default();
                entry.slices.retain(|s| s.metadata.name != slice.metadata.name);
                entry.slices.push(slice);
                dirty.insert(owner);
            }
        }
        let mut skipped = Vec::new();
        for key in &dirty {
            let Some(entry) = self.entries.get_mut(key) else {
                continue;
            };
            for fe in std::mem::take(&mut entry.frontends) {
                let owned = self
                    .desired
                    .frontends
                    .get(&fe)
                    .is_some_and(|spec| spec_owner(spec) == *key);
                if owned {
                    self.desired.frontends.remove(&fe);
                }
            }
            let Some(svc) = &entry.service else {
                if entry.slices.is_empty() {
                    self.entries.remove(key);
                }
                continue;
            };
            let computed = service_frontends(svc, entry.slices.iter().map(AsRef::as_ref), node, &mut skipped);
            let before = skipped.len();
            let names: Vec<Frontend> = computed.iter().map(|(fe, _)| *fe).collect();
            merge(&mut self.desired, computed, &mut skipped);
            entry.frontends = if skipped.len() == before {
                names
            } else {
                // Keep only the frontends this Service actually holds.
                names
                    .into_iter()
                    .filter(|fe| {
                        self.desired
                            .frontends
                            .get(fe)
                            .is_some_and(|spec| spec_owner(spec) == *key)
                    })
                    .collect()
            };
        }
        (dirty.len(), skipped)
    }
}

/// The Service a frontend spec was computed for (`namespace/name[:port]`).
fn spec_owner(spec: &FrontendSpec) -> Key {
    let id = spec.service.split(':').next().unwrap_or_default();
    let (ns, name) = id.split_once('/').unwrap_or(("default", id));
    (ns.to_string(), name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::desired::compute;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_norway::from_str(yaml).expect("test YAML parses")
    }

    fn svc(name: &str, ip: &str) -> Arc<Service> {
        Arc::new(parse(&format!(
            "metadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}"
        )))
    }

    fn slice(name: &str, service: &str, addrs: &[&str]) -> Arc<EndpointSlice> {
        let eps: Vec<String> = addrs.iter().map(|a| format!("{{addresses: [{a}]}}")).collect();
        Arc::new(parse(&format!(
            "metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]",
            eps.join(", ")
        )))
    }

    fn full(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> DesiredState {
        compute(
            services.iter().map(AsRef::as_ref),
            slices.iter().map(AsRef::as_ref),
            &NodeInfo::default(),
        )
        .0
    }

    #[test]
    fn incremental_updates_match_a_full_computation() {
        let node = NodeInfo::default();
        let mut inc = IncrementalState::default();
        let (a, b) = (svc("a", "10.96.0.10"), svc("b", "10.96.0.11"));
        let mut slices = vec![
            slice("a-1", "a", &["10.244.0.2"]),
            slice("b-1", "b", &["10.244.0.3"]),
        ];
        let services = vec![a.clone(), b.clone()];
        let (n, _) = inc.update(services.clone(), slices.clone(), &node);
        assert_eq!(n, 2);
        assert_eq!(inc.desired(), &full(&services, &slices));

        // One slice changes: only its Service is recomputed.
        slices[0] = slice("a-1", "a", &["10.244.0.2", "10.244.0.4"]);
        let (n, _) = inc.update(services.clone(), slices.clone(), &node);
        assert_eq!(n, 1);
        assert_eq!(inc.desired(), &full(&services, &slices));

        // A second slice for the same Service, then a slice moved to the other Service.
        slices.push(slice("a-2", "a", &["10.244.0.5"]));
        inc.update(services.clone(), slices.clone(), &node);
        assert_eq!(inc.desired(), &full(&services, &slices));
        slices[2] = slice("a-2", "b", &["10.244.0.5"]);
        let (n, _) = inc.update(services.clone(), slices.clone(), &node);
        assert_eq!(n, 2, "both the old and the new owner");
        assert_eq!(inc.desired(), &full(&services, &slices));

        // A Service deleted, its slices still there; then a Service with a new ClusterIP.
        let services = vec![b.clone()];
        inc.update(services.clone(), slices.clone(), &node);
        assert_eq!(inc.desired(), &full(&services, &slices));
        let services = vec![svc("b", "10.96.0.12")];
        inc.update(services.clone(), slices.clone(), &node);
        assert_eq!(inc.desired(), &full(&services, &slices));
        assert!(
            inc.desired()
                .frontends
                .keys()
                .all(|fe| fe.addr.to_string() == "10.96.0.12")
        );

        // Nothing changed: nothing recomputed.
        let (n, _) = inc.update(services.clone(), slices.clone(), &node);
        assert_eq!(n, 0);
    }
}
