//! DaemonSets: one pod of the template on every node it fits (the node matches the template's
//! `nodeSelector` and its taints are tolerated; DaemonSet pods tolerate the node-condition taints,
//! as Kubernetes adds for them), none elsewhere; a template change rolls over the nodes at most
//! `maxUnavailable` at a time. Pods are created bound to their node (`spec.nodeName`), the way
//! DaemonSets placed pods before Kubernetes 1.12, which keeps the scheduler out of it.

use serde_json::{Value, json};

use super::{
    Change, Controller, ControllerError, Ctx,
    cache::{Cache, NodeInfo, PodInfo, str_at},
    scheduler,
};
use crate::api::objects::{DeleteOptions, Part};

#[derive(Default)]
pub struct DaemonSetController {
    /// Keys of the DaemonSets there are, to revisit them all when a node changes.
    known: std::collections::BTreeSet<String>,
}

const HASH_LABEL: &str = "controller-revision-hash";

/// The tolerations Kubernetes adds to DaemonSet pods.
fn daemon_tolerations() -> Vec<Value> {
    let mut t: Vec<Value> = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
        .iter()
        .map(|k| json!({"key": k, "operator": "Exists", "effect": "NoExecute"}))
        .collect();
    for k in [
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
        "node.kubernetes.io/network-unavailable",
    ] {
        t.push(json!({"key": k, "operator": "Exists", "effect": "NoSchedule"}));
    }
    t
}

fn fits(template: &Value, tolerations: &[Value], node: &NodeInfo) -> bool {
    let selector_ok = template
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|sel| {
            sel.iter()
                .all(|(k, v)| node.labels.get(k).map(String::as_str) == v.as_str())
        });
    selector_ok
        && node.taints.iter().all(|t| {
            !(t.effect == "NoSchedule" || t.effect == "NoExecute") || scheduler::tolerates(tolerations, t)
        })
}

fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

impl Controller for DaemonSetController {
    fn name(&self) -> &'static str {
        "daemonset"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        match change.plural {
            "daemonsets" => {
                if change.new.is_some() {
                    self.known.insert(change.key.to_string());
                } else {
                    self.known.remove(change.key);
                }
                keys.push(change.key.to_string());
            }
            "pods" => {
                for p in [change.old_pod, change.new_pod].into_iter().flatten() {
                    if let Some(o) = p.owners.iter().find(|o| o.controller && o.kind == "DaemonSet") {
                        keys.push(format!("/registry/daemonsets/{}/{}", p.namespace, o.name));
                    }
                }
            }
            "nodes" => {
                let relevant = match (change.old, change.new) {
                    (Some(o), Some(n)) => {
                        o.get("spec") != n.get("spec")
                            || o.pointer("/metadata/labels") != n.pointer("/metadata/labels")
                    }
                    _ => true,
                };
                if relevant {
                    // Every DaemonSet may now belong on it, or not.
                    keys.extend(self.known.iter().cloned());
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some(ds) = super::read(ctx.store, key) else {
            return Ok(());
        };
        if ds.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(());
        }
        let ns = str_at(&ds, "/metadata/namespace");
        let name = str_at(&ds, "/metadata/name");
        let uid = str_at(&ds, "/metadata/uid");
        let mut template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = super::template_hash(&template);
        template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut tolerations: Vec<Value> = template
            .pointer("/spec/tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for t in daemon_tolerations() {
            if !tolerations
                .iter()
                .any(|x| x.get("key") == t.get("key") && x.get("effect") == t.get("effect"))
            {
                tolerations.push(t);
            }
        }
        template["spec"]["tolerations"] = json!(tolerations);
        let pods: Vec<PodInfo> = ctx
            .cache
            .pods_controlled_by(&uid)
            .into_iter()
            .filter(|p| p.active())
            .cloned()
            .collect();
        let nodes: Vec<NodeInfo> = ctx.cache.nodes.values().cloned().collect();
        let max_unavailable = match ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable") {
            Some(Value::String(s)) => s
                .strip_suffix('%')
                .and_then(|p| p.parse::<usize>().ok())
                .map_or(1, |p| (p * nodes.len() / 100).max(1)),
            Some(v) => v.as_u64().unwrap_or(1).max(1) as usize,
            None => 1,
        };
        let on_delete = ds.pointer("/spec/updateStrategy/type").and_then(Value::as_str) == Some("OnDelete");
        let owner = super::controller_ref("apps/v1", "DaemonSet", &ds);
        let mut unavailable = pods.iter().filter(|p| !p.ready || p.deleting).count();
        let (mut desired, mut current, mut ready, mut updated, mut misscheduled) =
            (0usize, 0usize, 0usize, 0usize, 0usize);
        for node in &nodes {
            let here: Vec<&PodInfo> = pods.iter().filter(|p| p.node == node.name).collect();
            if !fits(&template, &tolerations, node) {
                misscheduled += here.len();
                for p in here.iter().filter(|p| !p.deleting) {
                    super::delete(ctx.store, "pods", Some(&ns), &p.name, &DeleteOptions::default())?;
                }
                continue;
            }
            desired += 1;
            let live: Vec<&&PodInfo> = here.iter().filter(|p| !p.deleting).collect();
            if !here.is_empty() {
                current += 1;
            }
            if live.iter().any(|p| p.ready) {
                ready += 1;
            }
            let fresh = live.iter().any(|p| p.labels.get(HASH_LABEL) == Some(&hash));
            if fresh {
                updated += 1;
            }
            if here.is_empty() {
                let mut body =
                    super::replicaset::pod_from_template(&template, &ns, &format!("{name}-"), owner.clone());
                body["spec"]["nodeName"] = json!(node.name);
                super::create(ctx.store, "pods", Some(&ns), &body)?;
            } else if !fresh && !on_delete && unavailable < max_unavailable {
                // Roll this node: its old pod goes, the next round creates the new one.
                for p in live {
                    super::delete(ctx.store, "pods", Some(&ns), &p.name, &DeleteOptions::default())?;
                    if p.ready {
                        unavailable += 1;
                    }
                }
            }
        }
        let status = json!({
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": current,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": desired.saturating_sub(ready),
            "updatedNumberScheduled": updated,
            "numberMisscheduled": misscheduled,
            "observedGeneration": ds.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        });
        let current_status = ds.get("status").cloned().unwrap_or(json!({}));
        let differs = status
            .as_object()
            .into_iter()
            .flatten()
            .any(|(k, v)| int(&current_status, &format!("/{k}")) != v.as_i64().unwrap_or(0));
        if differs {
            super::patch(
                ctx.store,
                "daemonsets",
                Some(&ns),
                &name,
                &json!({"status": status}),
                Part::Status,
            )?;
        }
        Ok(())
    }
}
