//! Hollow nodes, as kubemark has them: Nodes that register, renew their Leases and "run" the pods
//! bound to them (status `Running`, `Ready`, an address from the node's podCIDR) without containers,
//! and confirm deletions. They let the scheduler and controllers be tested and benchmarked with
//! hundreds of nodes on one machine (`berth-control-plane --hollow-nodes N`). Real nodes are berth
//! agents.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::{
    api::{
        ApiError,
        objects::{self, DeleteOptions, Part, PatchKind},
        resources,
        typed::FieldValidation,
    },
    store::{EventKind, Store},
};

/// How often a hollow node renews its Lease (kubelet: every 10 s; a quarter of the 40 s grace).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);

/// A set of hollow nodes.
pub struct HollowNodes {
    store: Arc<Store>,
    names: Vec<String>,
    /// Nodes told to go silent (no Lease renewals, pods left as they are).
    silent: Arc<Mutex<BTreeSet<String>>>,
    /// Pod start latency: how long after binding a pod is reported running.
    pub start_delay: Duration,
    /// How often Leases are renewed.
    pub lease_renew: Duration,
}

fn res(plural: &str) -> Result<&'static resources::Resource, ApiError> {
    resources::by_plural(plural).ok_or_else(|| ApiError::new(500, "InternalError", format!("no {plural}")))
}

impl HollowNodes {
    /// Registers `count` nodes named `<prefix>-<i>`.
    pub fn register(store: Arc<Store>, prefix: &str, count: usize) -> Result<HollowNodes, ApiError> {
        let mut names = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("{prefix}-{i}");
            let node = json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "node.berth.dev/hollow": "true"}},
                "spec": {},
                "status": {
                    "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                    "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "hollow node is posting ready status", "lastHeartbeatTime": crate::api::times::now_rfc3339(), "lastTransitionTime": crate::api::times::now_rfc3339()}],
                    "addresses": [{"type": "InternalIP", "address": format!("10.255.{}.{}", i / 250, i % 250 + 1)}, {"type": "Hostname", "address": name}],
                    "nodeInfo": {"kubeletVersion": "v1.33.0-berth-hollow", "kubeProxyVersion": "", "architecture": "amd64", "operatingSystem": "linux", "bootID": "", "containerRuntimeVersion": "hollow", "kernelVersion": "", "machineID": "", "osImage": "", "systemUUID": ""}
                }
            });
            match objects::create(
                &store,
                res("nodes")?,
                None,
                node.to_string().as_bytes(),
                FieldValidation::Strict,
            ) {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
            names.push(name);
        }
        let nodes = HollowNodes {
            store,
            names,
            silent: Arc::default(),
            start_delay: Duration::ZERO,
            lease_renew: LEASE_RENEW,
        };
        nodes.renew_leases()?;
        Ok(nodes)
    }

    /// The node names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A handle that silences nodes (as if they lost power) and wakes them again.
    pub fn silencer(&self) -> Arc<Mutex<BTreeSet<String>>> {
        Arc::clone(&self.silent)
    }

    fn renew_leases(&self) -> Result<(), ApiError> {
        let leases = res("leases")?;
        let silent = self.silent.lock().map(|s| s.clone()).unwrap_or_default();
        let now = crate::api::times::now_micro_rfc3339();
        for name in self.names.iter().filter(|n| !silent.contains(*n)) {
            self.post_ready(name)?;
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}
            });
            match objects::patch(
                &self.store,
                leases,
                Some("kube-node-lease"),
                name,
                PatchKind::Merge,
                json!({"spec": {"renewTime": now}}).to_string().as_bytes(),
                FieldValidation::Strict,
                Part::Main,
            ) {
                Ok(_) => {}
                Err(e) if e.code == 404 => {
                    objects::create(
                        &self.store,
                        leases,
                        Some("kube-node-lease"),
                        lease.to_string().as_bytes(),
                        FieldValidation::Strict,
                    )?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Posts `Ready=True` if the node's status says otherwise (after it was silent), as kubelet does.
    fn post_ready(&self, name: &str) -> Result<(), ApiError> {
        let Some(node) = self
            .store
            .get(&format!("/registry/nodes/{name}"))
            .and_then(|kv| objects::render(&kv).ok())
        else {
            return Ok(());
        };
        let mut conditions: Vec<Value> = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ready = conditions.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Ready")
                && c.get("status").and_then(Value::as_str) == Some("True")
        });
        if ready {
            return Ok(());
        }
        let now = crate::api::times::now_rfc3339();
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("Ready"));
        conditions.push(json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "hollow node is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}));
        objects::patch(
            &self.store,
            res("nodes")?,
            None,
            name,
            PatchKind::Merge,
            json!({"status": {"conditions": conditions}})
                .to_string()
                .as_bytes(),
            FieldValidation::Strict,
            Part::Status,
        )?;
        Ok(())
    }

    /// Runs the nodes on their own thread until `stop` is set.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("hollow-nodes".into())
            .spawn(move || self.run(&stop))
    }

    fn run(self, stop: &AtomicBool) {
        let mine: BTreeSet<String> = self.names.iter().cloned().collect();
        let mut position = self.store.revision();
        let mut next_renewal = Instant::now() + self.lease_renew;
        let mut addresses: HashMap<String, u32> = HashMap::new();
        let mut to_start: Vec<(Instant, String)> = Vec::new();
        // Pods bound before this started.
        if let Ok(page) = self.store.list("/registry/pods/", None, None, 0) {
            for kv in &page.items {
                to_start.push((Instant::now(), kv.key.clone()));
            }
        }
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_renewal {
                if let Err(e) = self.renew_leases() {
                    warn!(error = %e, "hollow nodes: renewing leases");
                }
                next_renewal = Instant::now() + self.lease_renew;
            }
            match self.store.events_after("/registry/pods/", position, 4096) {
                Ok((events, next)) => {
                    for e in events {
                        if e.kind == EventKind::Put {
                            to_start.push((Instant::now() + self.start_delay, e.kv.key.clone()));
                        }
                    }
                    position = next;
                }
                Err(_) => position = self.store.revision(),
            }
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = to_start.drain(..).partition(|(at, _)| *at <= now);
            to_start = later;
            let silent = self.silent.lock().map(|s| s.clone()).unwrap_or_default();
            let mut seen = BTreeSet::new();
            for (_, key) in due {
                if !seen.insert(key.clone()) {
                    continue;
                }
                if let Err(e) = self.tend(&key, &mine, &silent, &mut addresses) {
                    debug!(%key, error = %e, "hollow nodes: tending a pod");
                }
            }
            if position >= self.store.revision() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts a pod bound to one of these nodes, or confirms its deletion.
    fn tend(
        &self,
        key: &str,
        mine: &BTreeSet<String>,
        silent: &BTreeSet<String>,
        addresses: &mut HashMap<String, u32>,
    ) -> Result<(), ApiError> {
        let Some(kv) = self.store.get(key) else {
            return Ok(());
        };
        let pod = objects::render(&kv)?;
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !mine.contains(node) || silent.contains(node) {
            return Ok(());
        }
        let pods = res("pods")?;
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            let now = DeleteOptions {
                grace_period_seconds: Some(0),
                ..DeleteOptions::default()
            };
            return match objects::delete(&self.store, pods, Some(ns), name, &now) {
                Err(e) if e.code != 404 => Err(e),
                _ => Ok(()),
            };
        }
        if pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running") {
            return Ok(());
        }
        let cidr = self
            .store
            .get(&format!("/registry/nodes/{node}"))
            .and_then(|kv| objects::render(&kv).ok())
            .and_then(|n| {
                n.pointer("/spec/podCIDR")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "10.244.255.0/24".into());
        let base = cidr.split('/').next().unwrap_or("10.244.255.0");
        let counter = addresses.entry(node.to_string()).or_insert(1);
        *counter = if *counter >= 254 { 2 } else { *counter + 1 };
        let ip = format!(
            "{}.{}",
            base.rsplit_once('.').map_or("10.244.255", |(a, _)| a),
            counter
        );
        let now = crate::api::times::now_rfc3339();
        let statuses: Vec<Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                json!({"name": c.get("name"), "image": c.get("image"), "imageID": "", "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}})
            })
            .collect();
        let mut conditions: Vec<Value> = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| {
            !matches!(
                c.get("type").and_then(Value::as_str),
                Some("Ready" | "ContainersReady" | "Initialized")
            )
        });
        for kind in ["Initialized", "ContainersReady", "Ready"] {
            conditions.push(
                json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": now}),
            );
        }
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "",
            "startTime": now,
            "conditions": conditions,
            "containerStatuses": statuses,
        }});
        objects::patch(
            &self.store,
            pods,
            Some(ns),
            name,
            PatchKind::Merge,
            status.to_string().as_bytes(),
            FieldValidation::Ignore,
            Part::Status,
        )?;
        Ok(())
    }
}
