//! The scheduler and the controllers, in the control-plane process: one thread follows the store's
//! event stream in revision order, keeps [`cache::Cache`] in step with it, hands each change to every
//! controller (which names the keys it must reconcile), and then reconciles the queued keys. Writes go
//! through the same object layer as API requests (validation, defaults, resourceVersion checks), so a
//! controller cannot write what a client could not.
//!
//! Why one thread: controllers are level-triggered and idempotent; one ordered loop means a
//! controller always reconciles against a cache that has caught up with every write before it
//! (its own included), and needs no locks. The API server keeps the other core.

pub mod aggregation;
pub mod bootstrap;
pub mod cache;
pub mod certificates;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod leader;
pub mod legacytokens;
pub mod namespace;
pub mod nodelifecycle;
pub mod quantity;
pub mod replicaset;
pub mod rootca;
pub mod scheduler;
pub mod serviceaccount;

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use thiserror::Error;
use tracing::{debug, warn};

use crate::{
    api::{
        ApiError,
        objects::{self, DeleteOptions, Part, PatchKind},
        resources::{self, Resource},
        typed::FieldValidation,
    },
    store::{EventKind, Store, StoreError},
};
use cache::Cache;

/// Errors of a reconcile; the key is retried later.
#[derive(Debug, Error)]
pub enum ControllerError {
    /// A write or read through the API layer failed (a conflict, a validation error).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A service-account token could not be signed.
    #[error("signing a service-account token: {0}")]
    Signing(#[source] crate::jwt::JwtError),
}

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a node may go without renewing its Lease (or posting status) before it is marked
    /// NotReady (kube-controller-manager's `--node-monitor-grace-period`, 40 s).
    pub node_monitor_grace: Duration,
    /// How often periodic checks run (node heartbeats, eviction deadlines, retries).
    pub tick: Duration,
    /// The CA key that signs node client certificates (`None`: certificate requests wait).
    pub ca_key_pem: Option<String>,
    /// The cluster CA certificate, published in every namespace as `kube-root-ca.crt` (`None`: not
    /// published).
    pub ca_pem: Option<String>,
    /// Signs the tokens of `kubernetes.io/service-account-token` Secrets (`None`: they stay empty).
    pub token_signer: Option<std::sync::Arc<crate::jwt::Signer>>,
    /// Elect a leader among control planes sharing the store under this identity (`None`: this
    /// process is the only one and always leads).
    pub leader_identity: Option<String>,
    /// How long a leader's Lease holds without renewal.
    pub lease_duration: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_monitor_grace: Duration::from_secs(40),
            tick: Duration::from_secs(1),
            ca_key_pem: None,
            ca_pem: None,
            token_signer: None,
            leader_identity: None,
            lease_duration: Duration::from_secs(15),
        }
    }
}

/// One change, as controllers see it.
pub struct Change<'a> {
    pub key: &'a str,
    /// The plural in the key (`pods`, `nodes`...).
    pub plural: &'a str,
    pub old: Option<&'a Value>,
    pub new: Option<&'a Value>,
    /// For pods: the old and new summaries, made once per event for every controller.
    pub old_pod: Option<&'a cache::PodInfo>,
    pub new_pod: Option<&'a cache::PodInfo>,
}

/// What a reconcile works with.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub cache: &'a mut Cache,
    pub config: &'a Config,
}

/// A controller: says which keys a change concerns, and brings one key's objects where they should
/// be.
pub trait Controller: Send {
    fn name(&self) -> &'static str;
    /// Appends to `keys` what must be reconciled because of `change` (the cache already has it).
    fn observe(&mut self, change: &Change<'_>, cache: &Cache, keys: &mut Vec<String>);
    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError>;
    /// Writes what `reconcile` staged to commit together (the scheduler's bindings), after the
    /// round's keys; returns keys to retry.
    fn flush(&mut self, _ctx: &mut Ctx<'_>) -> Vec<String> {
        Vec::new()
    }
    /// Periodic work: keys to reconcile now.
    fn tick(&mut self, _cache: &Cache, _config: &Config) -> Vec<String> {
        Vec::new()
    }
}

/// Every controller, in the order they run in a round.
pub fn all() -> Vec<Box<dyn Controller>> {
    vec![
        Box::new(gc::GarbageCollector),
        Box::new(nodelifecycle::NodeLifecycle::default()),
        Box::new(deployment::DeploymentController),
        Box::new(replicaset::ReplicaSetController),
        Box::new(daemonset::DaemonSetController::default()),
        Box::new(scheduler::Scheduler::default()),
        Box::new(endpoints::EndpointsController::default()),
        Box::new(serviceaccount::ServiceAccountController),
        Box::new(rootca::RootCaPublisher),
        Box::new(legacytokens::LegacyTokenController),
        Box::new(certificates::CertificateController::default()),
        Box::new(namespace::NamespaceController::default()),
        Box::new(bootstrap::BootstrapController::default()),
        Box::new(aggregation::AggregationController),
    ]
}

/// Runs the controllers over `store` until `stop` is set.
pub struct Manager {
    store: Arc<Store>,
    config: Config,
    controllers: Vec<Box<dyn Controller>>,
    queues: Vec<BTreeSet<String>>,
    /// Keys to retry: (when, controller index, key).
    retries: Vec<(Instant, usize, String)>,
    cache: Cache,
    position: u64,
}

impl Manager {
    pub fn new(store: Arc<Store>, config: Config) -> Manager {
        let controllers = all();
        let queues = controllers.iter().map(|_| BTreeSet::new()).collect();
        Manager {
            store,
            config,
            controllers,
            queues,
            retries: Vec::new(),
            cache: Cache::default(),
            position: 0,
        }
    }

    /// Starts the loop on its own thread.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("controllers".into())
            .spawn(move || self.run(&stop))
    }

    fn run(mut self, stop: &AtomicBool) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "controllers: no runtime to wait on");
                return;
            }
        };
        let mut changed = self.store.subscribe();
        let mut elector = self
            .config
            .leader_identity
            .as_deref()
            .map(|id| leader::Elector::new(id, self.config.lease_duration));
        let mut leading = elector.is_none();
        if leading {
            self.resync();
        }
        let mut next_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if let Some(e) = elector.as_mut() {
                let now_leading = e.leading(&self.store);
                if now_leading && !leading {
                    // Whatever happened while another control plane led: start from the state.
                    self.queues.iter_mut().for_each(BTreeSet::clear);
                    self.retries.clear();
                    self.controllers = all();
                    self.resync();
                }
                leading = now_leading;
                if !leading {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            }
            changed.borrow_and_update();
            self.catch_up();
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + self.config.tick;
            }
            let worked = self.round();
            if !worked && self.position >= self.store.revision() {
                let mut wait = next_tick.saturating_duration_since(Instant::now());
                if elector.is_some() {
                    wait = wait.min(Duration::from_millis(500));
                }
                let _ = runtime.block_on(async { tokio::time::timeout(wait, changed.changed()).await });
            }
        }
    }

    /// Rebuilds the cache from the current state and queues every object for every controller.
    fn resync(&mut self) {
        let Ok(page) = self.store.list("/registry/", None, None, 0) else {
            return;
        };
        self.cache = Cache::default();
        let items = || {
            page.items
                .iter()
                .filter(|kv| !kv.key.starts_with("/registry/allocations/"))
                .filter_map(|kv| Some((&kv.key, objects::render(kv).ok()?)))
        };
        // The whole cache first, so every controller's first look sees every object; each object is
        // decoded twice rather than all of them held decoded at once (10,000 pods: 100 MB).
        for (key, obj) in items() {
            self.cache.apply(key, Some(&obj));
        }
        for (key, obj) in items() {
            self.dispatch(key, None, Some(&obj));
        }
        self.position = page.revision;
    }

    /// Applies every event after `position` to the cache and the controllers' queues.
    fn catch_up(&mut self) {
        loop {
            match self.store.events_after("/registry/", self.position, 4096) {
                Ok((events, next)) => {
                    for e in &events {
                        if e.kv.key.starts_with("/registry/allocations/") {
                            continue;
                        }
                        let old = e.prev.as_ref().and_then(|kv| objects::render(kv).ok());
                        let new = match e.kind {
                            EventKind::Put => objects::render(&e.kv).ok(),
                            EventKind::Delete => None,
                        };
                        self.cache.apply(&e.kv.key, new.as_ref());
                        self.dispatch(&e.kv.key, old.as_ref(), new.as_ref());
                    }
                    let done = next >= self.store.revision() || next == self.position;
                    self.position = next;
                    if done {
                        return;
                    }
                }
                Err(StoreError::Compacted { .. }) => {
                    warn!("controllers fell behind a compaction: resyncing");
                    self.resync();
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "controllers: reading events");
                    return;
                }
            }
        }
    }

    fn dispatch(&mut self, key: &str, old: Option<&Value>, new: Option<&Value>) {
        let plural = cache::plural_of(key);
        let is_pod = plural == "pods";
        let old_pod = old
            .filter(|_| is_pod)
            .map(|o| cache::PodInfo::from_object(key, o));
        let change = Change {
            key,
            plural,
            old,
            new,
            old_pod: old_pod.as_ref(),
            // The cache has just summarised the new state.
            new_pod: if is_pod && new.is_some() {
                self.cache.pods.get(key)
            } else {
                None
            },
        };
        let mut keys = Vec::new();
        for (i, c) in self.controllers.iter_mut().enumerate() {
            keys.clear();
            c.observe(&change, &self.cache, &mut keys);
            self.queues[i].extend(keys.drain(..));
        }
    }

    fn tick(&mut self) {
        for (i, c) in self.controllers.iter_mut().enumerate() {
            let keys = c.tick(&self.cache, &self.config);
            self.queues[i].extend(keys);
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.retries.drain(..).partition(|(at, _, _)| *at <= now);
        self.retries = later;
        for (_, i, key) in due {
            self.queues[i].insert(key);
        }
    }

    /// Reconciles every queued key once; whether there was anything to do.
    fn round(&mut self) -> bool {
        let mut worked = false;
        for i in 0..self.controllers.len() {
            let keys = std::mem::take(&mut self.queues[i]);
            for key in keys {
                worked = true;
                let mut ctx = Ctx {
                    store: &self.store,
                    cache: &mut self.cache,
                    config: &self.config,
                };
                if let Err(e) = self.controllers[i].reconcile(&key, &mut ctx) {
                    debug!(controller = self.controllers[i].name(), %key, error = %e, "reconcile failed; retrying");
                    self.retries
                        .push((Instant::now() + Duration::from_millis(500), i, key));
                }
            }
            let mut ctx = Ctx {
                store: &self.store,
                cache: &mut self.cache,
                config: &self.config,
            };
            for key in self.controllers[i].flush(&mut ctx) {
                self.retries
                    .push((Instant::now() + Duration::from_millis(500), i, key));
            }
            // Catch up between controllers, so the next one sees what this one wrote.
            self.catch_up();
        }
        worked
    }
}

// ---- Helpers the controllers share ----

/// (resource, namespace, name) of a store key.
pub fn parse_key(key: &str) -> Option<(&'static Resource, Option<&str>, &str)> {
    let rest = key.strip_prefix("/registry/")?;
    let mut parts = rest.splitn(3, '/');
    let plural = parts.next()?;
    let r = resources::by_plural(plural)?;
    if r.namespaced {
        Some((r, Some(parts.next()?), parts.next()?))
    } else {
        Some((r, None, parts.next()?))
    }
}

fn resource(plural: &str) -> Result<&'static Resource, ControllerError> {
    resources::by_plural(plural)
        .ok_or_else(|| ApiError::new(500, "InternalError", format!("no resource {plural}")).into())
}

/// The current object at `key`, if any.
pub fn read(store: &Store, key: &str) -> Option<Value> {
    store.get(key).and_then(|kv| objects::render(&kv).ok())
}

/// Objects of `plural` in `namespace`.
pub fn list(store: &Store, plural: &str, namespace: Option<&str>) -> Result<Vec<Value>, ControllerError> {
    let r = resource(plural)?;
    let page = store.list(&objects::prefix(r, namespace), None, None, 0)?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| objects::render(kv).ok())
        .collect())
}

/// Creates an object.
pub fn create(
    store: &Store,
    plural: &str,
    namespace: Option<&str>,
    obj: &Value,
) -> Result<Value, ControllerError> {
    let r = resource(plural)?;
    let (v, _) = objects::create(
        store,
        r,
        namespace,
        obj.to_string().as_bytes(),
        FieldValidation::Strict,
    )?;
    Ok(v)
}

/// Merge-patches an object (or its status).
pub fn patch(
    store: &Store,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
    change: &Value,
    part: Part,
) -> Result<Value, ControllerError> {
    let r = resource(plural)?;
    let (v, _) = objects::patch(
        store,
        r,
        namespace,
        name,
        PatchKind::Merge,
        change.to_string().as_bytes(),
        FieldValidation::Strict,
        part,
    )?;
    Ok(v)
}

/// Deletes an object (gone already counts as deleted).
pub fn delete(
    store: &Store,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<(), ControllerError> {
    let r = resource(plural)?;
    match objects::delete(store, r, namespace, name, opts) {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// An owner reference to `obj` as its controller.
pub fn controller_ref(api_version: &str, kind: &str, obj: &Value) -> Value {
    serde_json::json!({
        "apiVersion": api_version,
        "kind": kind,
        "name": cache::str_at(obj, "/metadata/name"),
        "uid": cache::str_at(obj, "/metadata/uid"),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// A stable short hash of a JSON value, in the alphabet Kubernetes uses for generated names (no
/// vowels, so no words), as `pod-template-hash` and `controller-revision-hash` labels carry it.
pub fn template_hash(v: &Value) -> String {
    const ALPHABET: &[u8] = objects::NAME_ALPHABET;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = String::new();
    for _ in 0..10 {
        out.push(char::from(ALPHABET[(h % ALPHABET.len() as u64) as usize]));
        h /= ALPHABET.len() as u64;
    }
    out
}

/// Sets the condition `kind` in a `conditions` list, keeping its transition time when its status did
/// not change (`update_time`: the condition type has `lastUpdateTime`, as Deployments' do); whether
/// anything changed.
pub fn set_condition(
    conditions: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    update_time: bool,
) -> bool {
    let now = crate::api::times::now_rfc3339();
    let finish = |mut c: Value| {
        if !update_time && let Some(m) = c.as_object_mut() {
            m.remove("lastUpdateTime");
        }
        c
    };
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(c)
            if c.get("status").and_then(Value::as_str) == Some(status)
                && c.get("reason").and_then(Value::as_str) == Some(reason) =>
        {
            false
        }
        Some(c) => {
            let same_status = c.get("status").and_then(Value::as_str) == Some(status);
            let transition = if same_status {
                c.get("lastTransitionTime")
                    .cloned()
                    .unwrap_or(Value::String(now.clone()))
            } else {
                Value::String(now.clone())
            };
            *c = finish(
                serde_json::json!({"type": kind, "status": status, "reason": reason, "message": message, "lastUpdateTime": now, "lastTransitionTime": transition}),
            );
            true
        }
        None => {
            conditions.push(finish(serde_json::json!({"type": kind, "status": status, "reason": reason, "message": message, "lastUpdateTime": now, "lastTransitionTime": now})));
            true
        }
    }
}

#[cfg(test)]
mod tests;
