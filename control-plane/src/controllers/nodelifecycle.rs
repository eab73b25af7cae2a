//! Node lifecycle: a node is alive while it renews its Lease in `kube-node-lease` (or posts its
//! status). One silent for longer than the grace period gets `Ready=Unknown` and the
//! `node.kubernetes.io/unreachable` taints (`NoSchedule`, `NoExecute`); its pods are then evicted
//! once their toleration of that taint runs out (`tolerationSeconds`, 300 by default — see
//! `--default-toleration-seconds`), so their controllers replace them elsewhere. A node that comes
//! back loses the taints. Pods bound to a node that no longer exists are deleted too.
//!
//! Liveness is judged by when this process saw a renewal, not by the timestamps written in it, so
//! clocks that disagree between machines do not matter (kube-controller-manager does the same).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    Change, Config, Controller, ControllerError, Ctx,
    cache::{Cache, str_at},
};
use crate::api::objects::{DeleteOptions, Part};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

#[derive(Default)]
pub struct NodeLifecycle {
    /// When each node was last heard from.
    heard: HashMap<String, Instant>,
    /// Since when each node has carried the unreachable `NoExecute` taint (as seen here).
    tainted: HashMap<String, Instant>,
    /// Since when pods have named each missing node.
    missing: HashMap<String, Instant>,
}

fn ready_status(node: &Value) -> String {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| str_at(c, "/type") == "Ready")
        .map(|c| str_at(c, "/status"))
        .unwrap_or_default()
}

fn has_unreachable_taint(node: &Value) -> bool {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|t| str_at(t, "/key") == UNREACHABLE)
}

impl Controller for NodeLifecycle {
    fn name(&self) -> &'static str {
        "nodelifecycle"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        let now = Instant::now();
        match change.plural {
            "leases" if change.key.starts_with("/registry/leases/kube-node-lease/") => {
                let renewed = match (change.old, change.new) {
                    (Some(o), Some(n)) => o.pointer("/spec/renewTime") != n.pointer("/spec/renewTime"),
                    (None, Some(_)) => true,
                    _ => false,
                };
                if renewed && let Some(node) = change.key.rsplit('/').next() {
                    self.heard.insert(node.to_string(), now);
                    keys.push(format!("/registry/nodes/{node}"));
                }
            }
            "nodes" => {
                let Some(name) = change.key.rsplit('/').next() else {
                    return;
                };
                match change.new {
                    Some(new) => {
                        // A status the node itself posted (not one this controller wrote) is a heartbeat.
                        let posted = change
                            .old
                            .is_none_or(|old| old.get("status") != new.get("status"))
                            && ready_status(new) != "Unknown";
                        if posted || !self.heard.contains_key(name) {
                            self.heard.insert(name.to_string(), now);
                        }
                        keys.push(change.key.to_string());
                    }
                    None => {
                        self.heard.remove(name);
                        self.tainted.remove(name);
                    }
                }
            }
            _ => {}
        }
    }

    fn tick(&mut self, cache: &Cache, config: &Config) -> Vec<String> {
        let now = Instant::now();
        let mut keys: Vec<String> = cache
            .nodes
            .keys()
            .filter(|n| {
                self.heard
                    .get(*n)
                    .is_none_or(|t| now.duration_since(*t) > config.node_monitor_grace)
                    || self.tainted.contains_key(*n)
            })
            .map(|n| format!("/registry/nodes/{n}"))
            .collect();
        // Pods on nodes that do not exist.
        for (node, pods) in &cache.pods_by_node {
            if pods.is_empty() || cache.nodes.contains_key(node) {
                self.missing.remove(node);
                continue;
            }
            let since = *self.missing.entry(node.clone()).or_insert(now);
            if now.duration_since(since) > config.node_monitor_grace {
                keys.extend(pods.iter().map(|p| format!("orphan:{p}")));
            }
        }
        keys
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        if let Some(pod_key) = key.strip_prefix("orphan:") {
            let Some((_, ns, name)) = super::parse_key(pod_key) else {
                return Ok(());
            };
            let force = DeleteOptions {
                grace_period_seconds: Some(0),
                ..DeleteOptions::default()
            };
            return super::delete(ctx.store, "pods", ns, name, &force);
        }
        let Some(node) = super::read(ctx.store, key) else {
            return Ok(());
        };
        let name = str_at(&node, "/metadata/name");
        let now = Instant::now();
        let silent = self.heard.entry(name.clone()).or_insert(now).elapsed() > ctx.config.node_monitor_grace;
        let tainted = has_unreachable_taint(&node);
        if silent {
            if ready_status(&node) != "Unknown" {
                let mut conditions: Vec<Value> = node
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                conditions.retain(|c| str_at(c, "/type") != "Ready");
                let stamp = crate::api::times::now_rfc3339();
                conditions.push(json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}));
                super::patch(
                    ctx.store,
                    "nodes",
                    None,
                    &name,
                    &json!({"status": {"conditions": conditions}}),
                    Part::Status,
                )?;
            }
            if !tainted {
                let mut taints: Vec<Value> = node
                    .pointer("/spec/taints")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let stamp = crate::api::times::now_rfc3339();
                taints.push(json!({"key": UNREACHABLE, "effect": "NoSchedule"}));
                taints.push(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": stamp}));
                super::patch(
                    ctx.store,
                    "nodes",
                    None,
                    &name,
                    &json!({"spec": {"taints": taints}}),
                    Part::Main,
                )?;
                tracing::info!(node = %name, "node stopped renewing its lease: NotReady, tainted unreachable");
            }
            let since = *self.tainted.entry(name.clone()).or_insert(now);
            self.evict(ctx, &name, since.elapsed())?;
        } else if tainted {
            let taints: Vec<Value> = node
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|t| str_at(t, "/key") != UNREACHABLE)
                .cloned()
                .collect();
            super::patch(
                ctx.store,
                "nodes",
                None,
                &name,
                &json!({"spec": {"taints": taints}}),
                Part::Main,
            )?;
            self.tainted.remove(&name);
            tracing::info!(node = %name, "node is back: unreachable taints removed");
        } else {
            self.tainted.remove(&name);
        }
        Ok(())
    }
}

impl NodeLifecycle {
    /// Deletes the pods on an unreachable node whose toleration of it has run out.
    fn evict(&self, ctx: &Ctx<'_>, node: &str, tainted_for: Duration) -> Result<(), ControllerError> {
        let keys: Vec<String> = ctx
            .cache
            .pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for key in keys {
            let Some(pod) = super::read(ctx.store, &key) else {
                continue;
            };
            let toleration = pod
                .pointer("/spec/tolerations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|t| {
                    (str_at(t, "/key") == UNREACHABLE
                        || (str_at(t, "/key").is_empty() && str_at(t, "/operator") == "Exists"))
                        && matches!(str_at(t, "/effect").as_str(), "" | "NoExecute")
                })
                .cloned();
            let evict = match toleration {
                None => true,
                Some(t) => t
                    .get("tolerationSeconds")
                    .and_then(Value::as_i64)
                    .is_some_and(|s| tainted_for >= Duration::from_secs(s.max(0) as u64)),
            };
            if evict {
                let Some((_, ns, name)) = super::parse_key(&key) else {
                    continue;
                };
                // The node cannot confirm a graceful stop: the pod goes now, so it is replaced now.
                let force = DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..DeleteOptions::default()
                };
                super::delete(ctx.store, "pods", ns, name, &force)?;
                tracing::info!(pod = %key, %node, "evicted from an unreachable node");
            }
        }
        Ok(())
    }
}
