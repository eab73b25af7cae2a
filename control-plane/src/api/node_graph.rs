//! Which Secrets and ConfigMaps the pods bound to each node use: the part of Kubernetes' Node
//! authorizer graph berth needs. A node may `get` a Secret or ConfigMap only if a pod bound to it
//! uses it; answering that by reading every pod of the namespace cost 36 ms per request at 3,000
//! pods. The graph is kept from the store's pod events instead (caught up on each question), so a
//! question is a hash lookup.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::store::{EventKind, KeyValue, Store};

const PODS: &str = "/registry/pods/";

/// (node, kind, namespace, name).
type Use = (String, &'static str, String, String);

#[derive(Default)]
struct Graph {
    /// The store revision the graph reflects (0: not built).
    position: u64,
    /// What each pod contributes, by its key.
    pods: HashMap<String, Vec<Use>>,
    /// How many pods on the node use the object.
    edges: HashMap<Use, usize>,
}

/// The graph, shared by every request.
#[derive(Default)]
pub struct NodeGraph(Mutex<Graph>);

impl NodeGraph {
    /// Whether a pod bound to `node` uses the Secret or ConfigMap (`kind`: `secrets`, `configmaps`)
    /// `name` in `namespace`.
    pub fn uses(&self, store: &Store, node: &str, namespace: &str, kind: &str, name: &str) -> bool {
        let Ok(mut graph) = self.0.lock() else {
            return false;
        };
        graph.catch_up(store);
        let kind: &'static str = match kind {
            "secrets" => "secrets",
            "configmaps" => "configmaps",
            _ => return false,
        };
        graph
            .edges
            .contains_key(&(node.to_string(), kind, namespace.to_string(), name.to_string()))
    }
}

impl Graph {
    fn catch_up(&mut self, store: &Store) {
        if self.position == 0 {
            self.rebuild(store);
            return;
        }
        let mut position = self.position;
        let caught_up = store.catch_up(PODS, &mut position, |e| match e.kind {
            EventKind::Put => self.put(&e.kv),
            EventKind::Delete => self.remove(&e.kv.key),
        });
        self.position = position;
        // Fell behind a compaction: start over from the pods as they are.
        if caught_up.is_err() {
            self.rebuild(store);
        }
    }

    fn rebuild(&mut self, store: &Store) {
        self.pods.clear();
        self.edges.clear();
        let Ok(page) = store.list(PODS, None, None, 0) else {
            return;
        };
        for kv in &page.items {
            self.put(kv);
        }
        self.position = page.revision.max(1);
    }

    fn put(&mut self, kv: &KeyValue) {
        self.remove(&kv.key);
        let Ok(pod) = serde_json::from_slice::<Value>(&kv.value) else {
            return;
        };
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let namespace = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if node.is_empty() {
            return;
        }
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let mut uses = Vec::new();
        for kind in ["secrets", "configmaps"] {
            for name in super::auth::references(spec, kind) {
                let edge = (node.to_string(), kind, namespace.to_string(), name);
                if !uses.contains(&edge) {
                    uses.push(edge);
                }
            }
        }
        for edge in &uses {
            *self.edges.entry(edge.clone()).or_default() += 1;
        }
        self.pods.insert(kv.key.clone(), uses);
    }

    fn remove(&mut self, key: &str) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        for edge in old {
            if let Some(n) = self.edges.get_mut(&edge) {
                *n -= 1;
                if *n == 0 {
                    self.edges.remove(&edge);
                }
            }
        }
    }
}
