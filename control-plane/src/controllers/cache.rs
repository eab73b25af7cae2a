//! What the controllers know of the cluster between reads: compact summaries of pods and nodes,
//! the resources nodes have committed, and the ownership graph (owner uid -> dependents) the garbage
//! collector walks. Kept in step with the store's event stream, in revision order, so a controller
//! reading it sees the cluster as of the last event applied. Other objects (workloads, Services) are
//! few and are read from the store when needed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::quantity;

/// An owner reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub uid: String,
    pub kind: String,
    pub name: String,
    pub controller: bool,
    pub block_owner_deletion: bool,
}

/// The owner references of an object.
pub fn owner_refs(obj: &Value) -> Vec<OwnerRef> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|o| OwnerRef {
            uid: str_at(o, "/uid"),
            kind: str_at(o, "/kind"),
            name: str_at(o, "/name"),
            controller: o.get("controller").and_then(Value::as_bool) == Some(true),
            block_owner_deletion: o.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true),
        })
        .collect()
}

/// The string at `pointer`, or empty.
pub fn str_at(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A pod, as controllers and the scheduler need it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub node: String,
    pub scheduler: String,
    pub phase: String,
    pub ip: String,
    pub ready: bool,
    pub deleting: bool,
    pub owners: Vec<OwnerRef>,
    /// Requested CPU (millicores) and memory (thousandths of a byte), summed over containers.
    pub cpu_milli: i128,
    pub memory_milli: i128,
    pub created: String,
}

impl PodInfo {
    pub fn from_object(key: &str, obj: &Value) -> PodInfo {
        let mut cpu = 0;
        let mut memory = 0;
        for c in obj
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = |what: &str| {
                c.pointer(&format!("/resources/requests/{what}"))
                    .or_else(|| c.pointer(&format!("/resources/limits/{what}")))
                    .and_then(Value::as_str)
                    .and_then(quantity::milli)
                    .unwrap_or(0)
            };
            cpu += req("cpu");
            memory += req("memory");
        }
        let ready = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            });
        PodInfo {
            key: key.to_string(),
            namespace: str_at(obj, "/metadata/namespace"),
            name: str_at(obj, "/metadata/name"),
            uid: str_at(obj, "/metadata/uid"),
            labels: labels_of(obj),
            node: str_at(obj, "/spec/nodeName"),
            scheduler: str_at(obj, "/spec/schedulerName"),
            phase: str_at(obj, "/status/phase"),
            ip: str_at(obj, "/status/podIP"),
            ready,
            deleting: obj.pointer("/metadata/deletionTimestamp").is_some(),
            owners: owner_refs(obj),
            cpu_milli: cpu,
            memory_milli: memory,
            created: str_at(obj, "/metadata/creationTimestamp"),
        }
    }

    /// Not finished: counts against its node and its controller's replicas.
    pub fn active(&self) -> bool {
        self.phase != "Succeeded" && self.phase != "Failed"
    }

    /// The uid of its controlling owner, if any.
    pub fn controller_uid(&self) -> Option<&str> {
        self.owners.iter().find(|o| o.controller).map(|o| o.uid.as_str())
    }
}

/// The labels of an object.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// A node, as the scheduler and the DaemonSet controller need it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub ready: bool,
    pub unschedulable: bool,
    pub cpu_milli: i128,
    pub memory_milli: i128,
    pub pods: i128,
}

impl NodeInfo {
    pub fn from_object(obj: &Value) -> NodeInfo {
        let alloc = |what: &str, default: i128| {
            obj.pointer(&format!("/status/allocatable/{what}"))
                .or_else(|| obj.pointer(&format!("/status/capacity/{what}")))
                .and_then(Value::as_str)
                .and_then(quantity::milli)
                .unwrap_or(default)
        };
        let ready = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            });
        NodeInfo {
            name: str_at(obj, "/metadata/name"),
            uid: str_at(obj, "/metadata/uid"),
            labels: labels_of(obj),
            taints: obj
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|t| Taint {
                    key: str_at(t, "/key"),
                    value: str_at(t, "/value"),
                    effect: str_at(t, "/effect"),
                })
                .collect(),
            ready,
            unschedulable: obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true),
            // A node that reports nothing takes kubelet's default of 110 pods and no CPU or memory
            // limit the scheduler could check.
            cpu_milli: alloc("cpu", i128::MAX / 4),
            memory_milli: alloc("memory", i128::MAX / 4),
            pods: alloc("pods", 110_000) / 1000,
        }
    }
}

/// What the pods on a node request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_milli: i128,
    pub memory_milli: i128,
    pub pods: i128,
}

/// The controllers' view of the cluster.
#[derive(Default)]
pub struct Cache {
    pub pods: HashMap<String, PodInfo>,
    /// Pod keys by namespace.
    pub pods_by_namespace: HashMap<String, BTreeSet<String>>,
    /// Pod keys by node.
    pub pods_by_node: HashMap<String, BTreeSet<String>>,
    pub nodes: BTreeMap<String, NodeInfo>,
    pub usage: HashMap<String, Usage>,
    /// Every object's key by uid, and back.
    pub uids: HashMap<String, String>,
    uid_of: HashMap<String, String>,
    /// Active pods per (controller uid, node): the scheduler spreads replicas with it.
    /// (Keyed by uid, then node, so the scheduler looks a controller up once per pod.)
    pub spread: HashMap<String, HashMap<String, i32>>,
    /// Dependents' keys by owner uid.
    pub dependents: HashMap<String, BTreeSet<String>>,
    /// Owner uids by dependent key (to update `dependents` when references change).
    owners: HashMap<String, Vec<String>>,
}

/// The plural in a store key (`/registry/<plural>/...`).
pub fn plural_of(key: &str) -> &str {
    key.strip_prefix("/registry/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
}

impl Cache {
    /// Applies one change (`new` `None`: the object is gone).
    pub fn apply(&mut self, key: &str, new: Option<&Value>) {
        let plural = plural_of(key);
        // Ownership and uids, for every kind.
        if let Some(old) = self.owners.remove(key) {
            for uid in old {
                if let Some(set) = self.dependents.get_mut(&uid) {
                    set.remove(key);
                    if set.is_empty() {
                        self.dependents.remove(&uid);
                    }
                }
            }
        }
        if let Some(old_uid) = self.uid_of.remove(key) {
            self.uids.remove(&old_uid);
        }
        if let Some(obj) = new {
            let uid = str_at(obj, "/metadata/uid");
            if !uid.is_empty() {
                self.uids.insert(uid.clone(), key.to_string());
                self.uid_of.insert(key.to_string(), uid);
            }
            let refs: Vec<String> = owner_refs(obj).into_iter().map(|o| o.uid).collect();
            for uid in &refs {
                self.dependents
                    .entry(uid.clone())
                    .or_default()
                    .insert(key.to_string());
            }
            if !refs.is_empty() {
                self.owners.insert(key.to_string(), refs);
            }
        }
        match plural {
            "pods" => self.apply_pod(key, new.map(|o| PodInfo::from_object(key, o))),
            "nodes" => {
                let name = key.rsplit('/').next().unwrap_or_default().to_string();
                match new {
                    Some(obj) => {
                        self.nodes.insert(name, NodeInfo::from_object(obj));
                    }
                    None => {
                        self.nodes.remove(&name);
                    }
                }
            }
            _ => {}
        }
    }

    fn apply_pod(&mut self, key: &str, new: Option<PodInfo>) {
        if let Some(old) = self.pods.remove(key) {
            self.account(&old, -1);
            if let Some(set) = self.pods_by_namespace.get_mut(&old.namespace) {
                set.remove(key);
            }
            if let Some(set) = self.pods_by_node.get_mut(&old.node) {
                set.remove(key);
            }
        }
        if let Some(pod) = new {
            self.account(&pod, 1);
            self.pods_by_namespace
                .entry(pod.namespace.clone())
                .or_default()
                .insert(key.to_string());
            if !pod.node.is_empty() {
                self.pods_by_node
                    .entry(pod.node.clone())
                    .or_default()
                    .insert(key.to_string());
            }
            self.pods.insert(key.to_string(), pod);
        }
    }

    /// Adds (`sign` 1) or removes (-1) what a pod takes of its node.
    fn account(&mut self, pod: &PodInfo, sign: i128) {
        if pod.node.is_empty() || !pod.active() {
            return;
        }
        let u = self.usage.entry(pod.node.clone()).or_default();
        u.cpu_milli += sign * pod.cpu_milli;
        u.memory_milli += sign * pod.memory_milli;
        u.pods += sign;
        if let Some(owner) = pod.controller_uid() {
            let per_node = self.spread.entry(owner.to_string()).or_default();
            let n = per_node.entry(pod.node.clone()).or_default();
            *n += sign as i32;
            if *n <= 0 {
                per_node.remove(&pod.node);
                if per_node.is_empty() {
                    self.spread.remove(owner);
                }
            }
        }
    }

    /// Records a binding the scheduler just made, before its event arrives, so the next decision
    /// sees the node's new usage.
    pub fn assume_bound(&mut self, key: &str, node: &str) {
        let Some(mut pod) = self.pods.get(key).cloned() else {
            return;
        };
        pod.node = node.to_string();
        self.apply_pod(key, Some(pod));
    }

    /// The pods of a namespace.
    pub fn pods_in(&self, namespace: &str) -> impl Iterator<Item = &PodInfo> {
        self.pods_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
    }

    /// The pods whose controller is `uid`.
    pub fn pods_controlled_by(&self, uid: &str) -> Vec<&PodInfo> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| p.controller_uid() == Some(uid))
            .collect()
    }
}
