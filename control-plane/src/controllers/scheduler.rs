//! The scheduler: binds each pending pod (no node, `schedulerName: default-scheduler`) to a ready
//! node that passes the filters kube-scheduler applies first — schedulable, taints tolerated
//! (`NoSchedule`, `NoExecute`), `nodeSelector` and required node affinity matched, CPU, memory and
//! pod count within allocatable — and scores best: fewest replicas of the same controller there
//! (spreading), then least requested. A pod nothing fits gets `PodScheduled=False` with the reasons
//! and waits for a node or a freed place.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{
    Change, Controller, ControllerError, Ctx,
    cache::{Cache, NodeInfo, PodInfo, Taint, Usage, str_at},
};
use crate::api::{
    objects::{self, Part},
    selector::Expression,
    subresources,
};

#[derive(Default)]
pub struct Scheduler {
    /// Pods nothing fitted, retried when nodes change or pods go.
    waiting: BTreeSet<String>,
    /// Rotates among equally good nodes.
    turn: usize,
    /// Bindings decided this round, written together by [`Controller::flush`]: (pod key, the bound
    /// pod, the revision it was read at).
    staged: Vec<(String, Vec<u8>, u64)>,
    /// Pods whose binding a commit failed to write, for the next flush to hand back for retry.
    failed: Vec<String>,
}

/// Bindings written in one commit at most: a long queue is bound in steps, so the first pods start
/// while the rest are still being placed.
const BATCH: usize = 256;

fn pending(pod: &PodInfo) -> bool {
    pod.node.is_empty()
        && !pod.deleting
        && pod.active()
        && (pod.scheduler.is_empty() || pod.scheduler == "default-scheduler")
}

/// Whether a toleration list tolerates a taint.
pub fn tolerates(tolerations: &[Value], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let key = t.get("key").and_then(Value::as_str).unwrap_or_default();
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
        let exists = t.get("operator").and_then(Value::as_str) == Some("Exists");
        let value = t.get("value").and_then(Value::as_str).unwrap_or_default();
        (effect.is_empty() || effect == taint.effect)
            && ((key.is_empty() && exists) || (key == taint.key && (exists || value == taint.value)))
    })
}

/// Whether a node matches a `nodeSelectorTerm` (`matchExpressions` on labels, `matchFields` on
/// `metadata.name`).
fn term_matches(term: &Value, node: &NodeInfo) -> bool {
    Expression::all_in(term, "matchExpressions")
        .all(|e| e.matches(node.labels.get(e.key).map(String::as_str), true))
        && Expression::all_in(term, "matchFields")
            .all(|e| e.matches((e.key == "metadata.name").then_some(node.name.as_str()), true))
}

/// What a pod asks of its node, looked up once per pod rather than once per node considered.
struct Needs<'a> {
    tolerations: &'a [Value],
    node_selector: Option<&'a serde_json::Map<String, Value>>,
    affinity_terms: Option<&'a Vec<Value>>,
}

impl<'a> Needs<'a> {
    fn of(pod: &'a Value) -> Needs<'a> {
        Needs {
            tolerations: pod
                .pointer("/spec/tolerations")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice),
            node_selector: pod.pointer("/spec/nodeSelector").and_then(Value::as_object),
            affinity_terms: pod
                .pointer(
                    "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
                )
                .and_then(Value::as_array),
        }
    }
}

/// Why a node does not fit a pod (`None`: it fits).
fn unfit(needs: &Needs<'_>, info: &PodInfo, node: &NodeInfo, used: Usage) -> Option<&'static str> {
    let tolerations = needs.tolerations;
    if !node.ready {
        return Some("node(s) were not ready");
    }
    if node.unschedulable
        && !tolerates(
            tolerations,
            &Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                value: String::new(),
                effect: "NoSchedule".into(),
            },
        )
    {
        return Some("node(s) were unschedulable");
    }
    if node
        .taints
        .iter()
        .any(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerates(tolerations, t))
    {
        return Some("node(s) had untolerated taint(s)");
    }
    let selector_ok = needs.node_selector.is_none_or(|sel| {
        sel.iter()
            .all(|(k, v)| node.labels.get(k).map(String::as_str) == v.as_str())
    });
    let affinity_ok = needs
        .affinity_terms
        .is_none_or(|terms| terms.iter().any(|t| term_matches(t, node)));
    if !selector_ok || !affinity_ok {
        return Some("node(s) didn't match Pod's node affinity/selector");
    }
    if used.pods + 1 > node.pods {
        return Some("Too many pods");
    }
    if used.cpu_milli + info.cpu_milli > node.cpu_milli {
        return Some("Insufficient cpu");
    }
    if used.memory_milli + info.memory_milli > node.memory_milli {
        return Some("Insufficient memory");
    }
    None
}

impl Controller for Scheduler {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn observe(&mut self, change: &Change<'_>, cache: &Cache, keys: &mut Vec<String>) {
        match change.plural {
            "pods" => match cache.pods.get(change.key) {
                Some(p) if pending(p) => keys.push(change.key.to_string()),
                Some(_) => {
                    self.waiting.remove(change.key);
                }
                None => {
                    self.waiting.remove(change.key);
                    // A place freed up.
                    keys.extend(self.waiting.iter().cloned());
                }
            },
            "nodes" => keys.extend(self.waiting.iter().cloned()),
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some(info) = ctx.cache.pods.get(key).cloned() else {
            self.waiting.remove(key);
            return Ok(());
        };
        if !pending(&info) {
            self.waiting.remove(key);
            return Ok(());
        }
        let Some(stored) = ctx.store.get(key) else {
            return Ok(());
        };
        let pod = objects::render(&stored)?;
        let needs = Needs::of(&pod);
        let mut best: Option<((i32, i128, i128), &NodeInfo)> = None;
        let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
        let nodes: Vec<&NodeInfo> = ctx.cache.nodes.values().collect();
        // Pods of the same controller per node, for spreading.
        let siblings = info.controller_uid().and_then(|o| ctx.cache.spread.get(o));
        let n = nodes.len().max(1);
        self.turn = self.turn.wrapping_add(1);
        for i in 0..nodes.len() {
            let node = nodes[(i + self.turn) % n];
            let used = ctx.cache.usage.get(&node.name).copied().unwrap_or_default();
            if let Some(why) = unfit(&needs, &info, node, used) {
                *reasons.entry(why).or_default() += 1;
                continue;
            }
            let same_owner = siblings
                .and_then(|per_node| per_node.get(&node.name))
                .copied()
                .unwrap_or(0);
            // Least requested: the larger share of CPU or memory in use after placing the pod,
            // in millionths.
            let share = |used: i128, want: i128, total: i128| {
                if total <= 0 {
                    0
                } else {
                    (used + want) * 1_000_000 / total
                }
            };
            let load = share(used.cpu_milli, info.cpu_milli, node.cpu_milli).max(share(
                used.memory_milli,
                info.memory_milli,
                node.memory_milli,
            ));
            let score = (same_owner, load, used.pods);
            if best.as_ref().is_none_or(|(b, _)| score < *b) {
                best = Some((score, node));
            }
        }
        let ns = info.namespace.clone();
        let name = info.name.clone();
        match best {
            Some((_, node)) => {
                let node_name = node.name.clone();
                let mut bound = pod.clone();
                match subresources::assign(&mut bound, &name, &node_name) {
                    Ok(()) => {
                        self.staged.push((
                            key.to_string(),
                            objects::store_bytes(&bound),
                            stored.mod_revision,
                        ));
                        ctx.cache.assume_bound(key, &node_name);
                        self.waiting.remove(key);
                        if self.staged.len() >= BATCH {
                            let failed = self.flush(ctx);
                            self.failed.extend(failed);
                        }
                        Ok(())
                    }
                    // Being deleted, or bound meanwhile: nothing left to do.
                    Err(e) if e.code == 409 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            None => {
                let total = ctx.cache.nodes.len();
                let detail: Vec<String> = reasons
                    .iter()
                    .map(|(why, count)| format!("{count} {why}"))
                    .collect();
                let message = if detail.is_empty() {
                    format!("0/{total} nodes are available: no nodes registered.")
                } else {
                    format!("0/{total} nodes are available: {}.", detail.join(", "))
                };
                crate::metrics::global().schedule_attempt("unschedulable");
                self.waiting.insert(key.to_string());
                let already = pod
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/message") == message);
                if !already {
                    let mut conditions = pod
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    conditions.retain(|c| str_at(c, "/type") != "PodScheduled");
                    conditions.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastProbeTime": null, "lastTransitionTime": crate::api::times::now_rfc3339()}));
                    super::patch(
                        ctx.store,
                        "pods",
                        Some(&ns),
                        &name,
                        &json!({"status": {"conditions": conditions}}),
                        Part::Status,
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Writes the round's bindings in one commit. A pod changed since it was read (conflict) or gone
    /// is left to the event that changed it: the cache takes that event over the assumed binding and
    /// queues the pod again if it still waits. If the commit failed, nothing was bound: the cache
    /// forgets the assumptions and the pods are retried.
    fn flush(&mut self, ctx: &mut Ctx<'_>) -> Vec<String> {
        if self.staged.is_empty() {
            return std::mem::take(&mut self.failed);
        }
        let staged = std::mem::take(&mut self.staged);
        let keys: Vec<String> = staged.iter().map(|(k, _, _)| k.clone()).collect();
        let writes = staged
            .into_iter()
            .map(|(key, value, revision)| (key, value, Some(revision)))
            .collect();
        match ctx.store.update_many(writes) {
            Ok(results) => {
                for _ in results.iter().filter(|r| r.is_ok()) {
                    crate::metrics::global().schedule_attempt("scheduled");
                }
                std::mem::take(&mut self.failed)
            }
            Err(e) => {
                tracing::warn!(error = %e, pods = keys.len(), "scheduler: writing bindings failed; retrying");
                for _ in &keys {
                    crate::metrics::global().schedule_attempt("error");
                }
                for key in &keys {
                    let current = super::read(ctx.store, key);
                    ctx.cache.apply(key, current.as_ref());
                }
                let mut retry = std::mem::take(&mut self.failed);
                retry.extend(keys);
                retry
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_selector_terms_match_labels_numerically_and_the_name_by_field() {
        let node = NodeInfo {
            name: "n1".into(),
            uid: String::new(),
            labels: [
                ("zone".to_string(), "a".to_string()),
                ("cores".to_string(), "8".to_string()),
            ]
            .into(),
            taints: Vec::new(),
            ready: true,
            unschedulable: false,
            cpu_milli: 0,
            memory_milli: 0,
            pods: 0,
        };
        let term = |t: Value| term_matches(&t, &node);
        assert!(term(
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]})
        ));
        assert!(term(
            json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]})
        ));
        assert!(!term(
            json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]})
        ));
        assert!(term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})
        ));
        assert!(!term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]})
        ));
        assert!(!term(json!({
            "matchExpressions": [{"key": "zone", "operator": "Exists"}],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]
        })));
    }

    #[test]
    fn tolerations_match_taints() {
        let taint = Taint {
            key: "node-role.kubernetes.io/control-plane".into(),
            value: String::new(),
            effect: "NoSchedule".into(),
        };
        assert!(!tolerates(&[], &taint));
        assert!(tolerates(
            &[
                json!({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"})
            ],
            &taint
        ));
        assert!(tolerates(&[json!({"operator": "Exists"})], &taint));
        assert!(!tolerates(
            &[json!({"key": "other", "operator": "Exists"})],
            &taint
        ));
    }
}
