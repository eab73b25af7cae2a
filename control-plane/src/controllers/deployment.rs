//! Deployments: one ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`), rolled
//! from the old to the new within `maxSurge` / `maxUnavailable` (or all at once with `Recreate`),
//! old ReplicaSets kept up to `revisionHistoryLimit`, and the status `kubectl rollout status` reads
//! (`observedGeneration`, `updatedReplicas`, `availableReplicas`, conditions).

use serde_json::{Value, json};

use super::{Change, Controller, ControllerError, Ctx, cache::Cache, cache::str_at};
use crate::api::objects::{DeleteOptions, Part};

pub struct DeploymentController;

const HASH_LABEL: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";

/// `maxSurge` / `maxUnavailable`: an absolute number or a percentage of `replicas` (surge rounds
/// up, unavailability rounds down, as Kubernetes does).
fn resolve(v: Option<&Value>, replicas: i64, round_up: bool, default_percent: i64) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => {
                if round_up {
                    (p * replicas + 99) / 100
                } else {
                    p * replicas / 100
                }
            }
            None => s.parse().unwrap_or(0),
        },
        _ => {
            if round_up {
                (default_percent * replicas + 99) / 100
            } else {
                default_percent * replicas / 100
            }
        }
    }
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn revision_of(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Sets an RS's replicas (and the deployment's revision annotation on the new one).
fn scale(ctx: &Ctx<'_>, rs: &Value, replicas: i64) -> Result<(), ControllerError> {
    if int(rs, "/spec/replicas") == replicas {
        return Ok(());
    }
    let ns = str_at(rs, "/metadata/namespace");
    let name = str_at(rs, "/metadata/name");
    super::patch(
        ctx.store,
        "replicasets",
        Some(&ns),
        &name,
        &json!({"spec": {"replicas": replicas}}),
        Part::Main,
    )?;
    Ok(())
}

impl Controller for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        match change.plural {
            "deployments" => keys.push(change.key.to_string()),
            "replicasets" => {
                for obj in [change.old, change.new].into_iter().flatten() {
                    for o in super::cache::owner_refs(obj) {
                        if o.controller && o.kind == "Deployment" {
                            keys.push(format!(
                                "/registry/deployments/{}/{}",
                                str_at(obj, "/metadata/namespace"),
                                o.name
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some(d) = super::read(ctx.store, key) else {
            return Ok(());
        };
        if d.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(());
        }
        let ns = str_at(&d, "/metadata/namespace");
        let name = str_at(&d, "/metadata/name");
        let uid = str_at(&d, "/metadata/uid");
        let desired = d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0);
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = super::template_hash(&template);
        let mut owned: Vec<Value> = super::list(ctx.store, "replicasets", Some(&ns))?
            .into_iter()
            .filter(|rs| {
                super::cache::owner_refs(rs)
                    .iter()
                    .any(|o| o.controller && o.uid == uid)
            })
            .collect();
        owned.sort_by_key(|rs| str_at(rs, "/metadata/creationTimestamp"));
        let is_new = |rs: &Value| {
            rs.pointer("/metadata/labels")
                .and_then(|l| l.get(HASH_LABEL))
                .and_then(Value::as_str)
                == Some(hash.as_str())
        };
        let old: Vec<&Value> = owned.iter().filter(|rs| !is_new(rs)).collect();
        let new = owned.iter().find(|rs| is_new(rs));
        let recreate = d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate");
        let surge = if recreate {
            0
        } else {
            resolve(
                d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
                desired,
                true,
                25,
            )
        };
        let mut unavailable = if recreate {
            desired
        } else {
            resolve(
                d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
                desired,
                false,
                25,
            )
        };
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        let old_spec: i64 = old.iter().map(|rs| int(rs, "/spec/replicas")).sum();
        let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);

        if !paused {
            match new {
                None => {
                    // The first ReplicaSet takes every replica; a rollout starts within the surge.
                    let replicas = if recreate {
                        if old_spec > 0 || self.old_pods_left(ctx, &old) {
                            None
                        } else {
                            Some(desired)
                        }
                    } else if old_spec == 0 {
                        Some(desired)
                    } else {
                        Some((desired + surge - old_spec).clamp(0, desired))
                    };
                    if recreate {
                        for rs in &old {
                            scale(ctx, rs, 0)?;
                        }
                    }
                    if let Some(replicas) = replicas {
                        self.create_new(ctx, &d, &template, &hash, replicas, &old)?;
                    }
                }
                Some(new) => {
                    if recreate {
                        for rs in &old {
                            scale(ctx, rs, 0)?;
                        }
                        if old_spec == 0 && !self.old_pods_left(ctx, &old) {
                            scale(ctx, new, desired)?;
                        }
                    } else {
                        self.roll(ctx, new, &old, desired, surge, unavailable)?;
                    }
                }
            }
            self.prune_history(ctx, &d, &old)?;
        }
        // Status from what the ReplicaSets report.
        let owned: Vec<Value> = super::list(ctx.store, "replicasets", Some(&ns))?
            .into_iter()
            .filter(|rs| {
                super::cache::owner_refs(rs)
                    .iter()
                    .any(|o| o.controller && o.uid == uid)
            })
            .collect();
        let sum = |p: &str| owned.iter().map(|rs| int(rs, p)).sum::<i64>();
        let new = owned.iter().find(|rs| is_new(rs));
        let updated = new.map_or(0, |rs| int(rs, "/status/replicas"));
        let (replicas, ready, available) = (
            sum("/status/replicas"),
            sum("/status/readyReplicas"),
            sum("/status/availableReplicas"),
        );
        let mut conditions: Vec<Value> = d
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let min_available = desired - unavailable;
        if available >= min_available {
            super::set_condition(
                &mut conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                true,
            );
        } else {
            super::set_condition(
                &mut conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                true,
            );
        }
        let new_name = new.map(|rs| str_at(rs, "/metadata/name")).unwrap_or_default();
        let complete = updated == desired && replicas == desired && available >= desired && new.is_some();
        if complete {
            super::set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                true,
            );
        } else {
            super::set_condition(
                &mut conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{new_name}\" is progressing."),
                true,
            );
        }
        let status = json!({
            "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": (desired - available).max(0),
            "conditions": conditions,
        });
        let current = d.get("status").cloned().unwrap_or(json!({}));
        let differs = [
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ]
        .iter()
        .any(|f| current.get(*f).and_then(Value::as_i64).unwrap_or(0) != status[*f].as_i64().unwrap_or(0))
            || current.get("conditions") != status.get("conditions");
        if differs {
            super::patch(
                ctx.store,
                "deployments",
                Some(&ns),
                &name,
                &json!({"status": status}),
                Part::Status,
            )?;
        }
        Ok(())
    }
}

impl DeploymentController {
    fn old_pods_left(&self, ctx: &Ctx<'_>, old: &[&Value]) -> bool {
        old.iter().any(|rs| {
            ctx.cache
                .pods_controlled_by(&str_at(rs, "/metadata/uid"))
                .iter()
                .any(|p| p.active())
        })
    }

    fn create_new(
        &self,
        ctx: &Ctx<'_>,
        d: &Value,
        template: &Value,
        hash: &str,
        replicas: i64,
        old: &[&Value],
    ) -> Result<(), ControllerError> {
        let ns = str_at(d, "/metadata/namespace");
        let name = str_at(d, "/metadata/name");
        let mut template = template.clone();
        template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let revision = old.iter().map(|rs| revision_of(rs)).max().unwrap_or(0) + 1;
        let labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
        let rs = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{name}-{hash}"),
                "namespace": ns,
                "labels": labels,
                "annotations": {REVISION: revision.to_string()},
                "ownerReferences": [super::controller_ref("apps/v1", "Deployment", d)],
            },
            "spec": {"replicas": replicas, "selector": selector, "template": template},
        });
        match super::create(ctx.store, "replicasets", Some(&ns), &rs) {
            Err(ControllerError::Api(e)) if e.reason == "AlreadyExists" => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// One step of a rolling update: grow the new ReplicaSet within the surge, shrink the old ones
    /// as far as availability allows.
    fn roll(
        &self,
        ctx: &Ctx<'_>,
        new: &Value,
        old: &[&Value],
        desired: i64,
        surge: i64,
        unavailable: i64,
    ) -> Result<(), ControllerError> {
        let new_spec = int(new, "/spec/replicas");
        let old_spec: i64 = old.iter().map(|rs| int(rs, "/spec/replicas")).sum();
        let total = new_spec + old_spec;
        let new_target = if new_spec > desired {
            desired
        } else {
            (new_spec + (desired + surge - total).max(0)).min(desired)
        };
        scale(ctx, new, new_target)?;
        // Bring the new one's revision forward (a rollback reuses an old ReplicaSet).
        let newest_old = old.iter().map(|rs| revision_of(rs)).max().unwrap_or(0);
        if revision_of(new) <= newest_old {
            let ns = str_at(new, "/metadata/namespace");
            let name = str_at(new, "/metadata/name");
            super::patch(
                ctx.store,
                "replicasets",
                Some(&ns),
                &name,
                &json!({"metadata": {"annotations": {REVISION: (newest_old + 1).to_string()}}}),
                Part::Main,
            )?;
        }
        if old_spec == 0 {
            return Ok(());
        }
        let all = new_target + old_spec;
        let min_available = desired - unavailable;
        let new_unavailable = (new_target - int(new, "/status/availableReplicas")).max(0);
        let max_cleanup = all - min_available - new_unavailable;
        if max_cleanup <= 0 {
            return Ok(());
        }
        // First the old replicas that are not available anyway (they cost no availability).
        let mut specs: Vec<i64> = old.iter().map(|rs| int(rs, "/spec/replicas")).collect();
        let mut cleaned = 0;
        for (rs, spec) in old.iter().zip(specs.iter_mut()) {
            let unhealthy = (*spec - int(rs, "/status/availableReplicas")).max(0);
            let cut = unhealthy.min(max_cleanup - cleaned);
            if cut > 0 {
                *spec -= cut;
                cleaned += cut;
                scale(ctx, rs, *spec)?;
            }
        }
        // Then available ones, as far as the minimum availability allows.
        let available: i64 = int(new, "/status/availableReplicas")
            + old
                .iter()
                .map(|rs| int(rs, "/status/availableReplicas"))
                .sum::<i64>();
        let max_scaled_down = available - min_available;
        let mut scaled = 0;
        for (rs, spec) in old.iter().zip(specs.iter_mut()) {
            let cut = (*spec).min(max_scaled_down - scaled);
            if cut > 0 {
                *spec -= cut;
                scaled += cut;
                scale(ctx, rs, *spec)?;
            }
        }
        Ok(())
    }

    /// Deletes the oldest scaled-down ReplicaSets beyond `revisionHistoryLimit`.
    fn prune_history(&self, ctx: &Ctx<'_>, d: &Value, old: &[&Value]) -> Result<(), ControllerError> {
        let limit = d
            .pointer("/spec/revisionHistoryLimit")
            .and_then(Value::as_i64)
            .unwrap_or(10)
            .max(0) as usize;
        let idle: Vec<&&Value> = old
            .iter()
            .filter(|rs| int(rs, "/spec/replicas") == 0 && int(rs, "/status/replicas") == 0)
            .collect();
        if idle.len() <= limit {
            return Ok(());
        }
        for rs in idle.iter().take(idle.len() - limit) {
            let ns = str_at(rs, "/metadata/namespace");
            let name = str_at(rs, "/metadata/name");
            super::delete(
                ctx.store,
                "replicasets",
                Some(&ns),
                &name,
                &DeleteOptions::default(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailability_down() {
        assert_eq!(resolve(Some(&json!("25%")), 10, true, 25), 3);
        assert_eq!(resolve(Some(&json!("25%")), 10, false, 25), 2);
        assert_eq!(resolve(Some(&json!(1)), 10, false, 25), 1);
        assert_eq!(resolve(None, 4, true, 25), 1);
    }
}
