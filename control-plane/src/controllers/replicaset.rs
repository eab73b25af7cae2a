//! ReplicaSets: keeps `spec.replicas` pods of the template running (creating the missing, deleting
//! the surplus: unscheduled, then pending, then not ready, then the newest first, as
//! kube-controller-manager chooses), and reports replicas, ready and available counts.

use serde_json::{Value, json};

use super::{Change, Controller, ControllerError, Ctx, cache::Cache, cache::PodInfo};
use crate::api::objects::{DeleteOptions, Part};

/// At most this many pods are created or deleted per ReplicaSet per round, so one large ReplicaSet
/// does not starve the others.
const BURST: usize = 500;

pub struct ReplicaSetController;

fn rs_key_of(pod: &PodInfo) -> Option<String> {
    pod.owners
        .iter()
        .find(|o| o.controller && o.kind == "ReplicaSet")
        .map(|o| format!("/registry/replicasets/{}/{}", pod.namespace, o.name))
}

/// Pod template -> pod body owned by `owner`.
pub fn pod_from_template(template: &Value, namespace: &str, generate_name: &str, owner: Value) -> Value {
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    meta["generateName"] = json!(generate_name);
    meta["namespace"] = json!(namespace);
    meta["ownerReferences"] = json!([owner]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
        m.remove("creationTimestamp");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// Which surplus pods go first: not on a node, pending, not ready, newest.
fn deletion_rank(p: &PodInfo) -> (bool, bool, bool, std::cmp::Reverse<String>) {
    (
        !p.node.is_empty(),
        p.phase != "Pending",
        p.ready,
        std::cmp::Reverse(p.created.clone()),
    )
}

impl Controller for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        match change.plural {
            "replicasets" => keys.push(change.key.to_string()),
            "pods" => keys.extend(
                [change.old_pod, change.new_pod]
                    .into_iter()
                    .flatten()
                    .filter_map(rs_key_of),
            ),
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some(rs) = super::read(ctx.store, key) else {
            return Ok(());
        };
        let uid = super::cache::str_at(&rs, "/metadata/uid");
        let ns = super::cache::str_at(&rs, "/metadata/namespace");
        let name = super::cache::str_at(&rs, "/metadata/name");
        let want = rs
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        let pods: Vec<PodInfo> = ctx.cache.pods_controlled_by(&uid).into_iter().cloned().collect();
        let mut active: Vec<&PodInfo> = pods.iter().filter(|p| p.active() && !p.deleting).collect();
        let deleting = rs.pointer("/metadata/deletionTimestamp").is_some();
        if !deleting && active.len() < want {
            let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
            let owner = super::controller_ref("apps/v1", "ReplicaSet", &rs);
            let body = pod_from_template(&template, &ns, &format!("{name}-"), owner);
            for _ in 0..(want - active.len()).min(BURST) {
                super::create(ctx.store, "pods", Some(&ns), &body)?;
            }
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            for p in active.iter().take((active.len() - want).min(BURST)) {
                super::delete(ctx.store, "pods", Some(&ns), &p.name, &DeleteOptions::default())?;
            }
        }
        let counted: Vec<&PodInfo> = pods.iter().filter(|p| p.active() && !p.deleting).collect();
        let ready = counted.iter().filter(|p| p.ready).count();
        let status = json!({
            "replicas": counted.len(),
            "fullyLabeledReplicas": counted.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        });
        let current = rs.get("status").cloned().unwrap_or(json!({}));
        let differs = [
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "observedGeneration",
        ]
        .iter()
        .any(|f| current.get(*f).and_then(Value::as_i64).unwrap_or(0) != status[*f].as_i64().unwrap_or(0));
        if differs {
            super::patch(
                ctx.store,
                "replicasets",
                Some(&ns),
                &name,
                &json!({"status": status}),
                Part::Status,
            )?;
        }
        Ok(())
    }
}
