//! Deleting a namespace, as kube-controller-manager's namespace controller does it: a deleted
//! namespace is `Terminating` (it keeps its `kubernetes` spec finalizer, and the API refuses new
//! objects in it) while this controller deletes everything in it with ordinary deletes (pods on
//! nodes get their grace period, objects with finalizers wait for them). Its conditions say what is
//! left; once nothing is, the `kubernetes` finalizer is removed (`namespaces/NAME/finalize`) and the
//! namespace goes. The content is left alone for the first [`CONTENT_DELAY_SECONDS`], so that
//! `kubectl delete -f` of a manifest deletes the objects it names itself.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Change, Controller, ControllerError, Ctx, cache::Cache, cache::str_at};
use crate::api::{
    kinds,
    objects::{self, DeleteOptions, Part},
    resources::RESOURCES,
};

/// The finalizer this controller owns.
const FINALIZER: &str = "kubernetes";

/// How long a deleted namespace's content is left alone: `kubectl delete -f` of a manifest that
/// holds the namespace and its objects deletes the namespace first and then each object, and should
/// find them there (deleted by kubectl, not NotFound) rather than race this controller.
const CONTENT_DELAY_SECONDS: i64 = 5;

#[derive(Default)]
pub struct NamespaceController {
    /// Namespaces being emptied: looked at again when something in them is deleted, and every tick
    /// (a pod's grace period ends without an event in the namespace's other objects).
    terminating: BTreeSet<String>,
}

/// What is left in a namespace: instances per resource, and how many of those wait on finalizers.
#[derive(Default)]
struct Remaining {
    instances: BTreeMap<&'static str, usize>,
    finalizers: BTreeMap<String, usize>,
}

impl Controller for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        if change.plural == "namespaces" {
            if change
                .new
                .is_some_and(|ns| ns.pointer("/metadata/deletionTimestamp").is_some())
            {
                keys.push(change.key.to_string());
            }
            return;
        }
        // Something in a terminating namespace went: maybe the last thing.
        if change.new.is_none()
            && let Some((_, Some(ns), _)) = super::parse_key(change.key)
            && self.terminating.contains(ns)
        {
            keys.push(format!("/registry/namespaces/{ns}"));
        }
    }

    fn tick(&mut self, _cache: &Cache, _config: &super::Config) -> Vec<String> {
        self.terminating
            .iter()
            .map(|ns| format!("/registry/namespaces/{ns}"))
            .collect()
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some(ns) = super::read(ctx.store, key) else {
            self.forget(key);
            return Ok(());
        };
        let name = str_at(&ns, "/metadata/name");
        if ns.pointer("/metadata/deletionTimestamp").is_none()
            || !kinds::namespace_finalizers(&ns).iter().any(|f| f == FINALIZER)
        {
            self.terminating.remove(&name);
            return Ok(());
        }
        self.terminating.insert(name.clone());
        let since = crate::api::times::epoch_seconds(&str_at(&ns, "/metadata/deletionTimestamp"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if since.is_some_and(|t| now < t + CONTENT_DELAY_SECONDS) {
            return Ok(()); // the tick comes back
        }
        let remaining = delete_content(ctx, &name)?;
        let mut conditions = conditions(&remaining);
        keep_transition_times(ns.pointer("/status/conditions"), &mut conditions);
        if ns.pointer("/status/conditions") != Some(&conditions) {
            super::patch(
                ctx.store,
                "namespaces",
                None,
                &name,
                &json!({"status": {"phase": "Terminating", "conditions": conditions}}),
                Part::Status,
            )?;
        }
        if remaining.instances.is_empty() {
            let left: Vec<String> = kinds::namespace_finalizers(&ns)
                .into_iter()
                .filter(|f| f != FINALIZER)
                .collect();
            super::patch(
                ctx.store,
                "namespaces",
                None,
                &name,
                &json!({"spec": {"finalizers": left}}),
                Part::Finalize,
            )?;
            self.terminating.remove(&name);
            tracing::info!(namespace = %name, "namespace emptied and finalized");
        }
        Ok(())
    }
}

impl NamespaceController {
    fn forget(&mut self, key: &str) {
        if let Some(name) = key.strip_prefix("/registry/namespaces/") {
            self.terminating.remove(name);
        }
    }
}

/// Deletes every object in `namespace` not already being deleted, and says what is still there.
fn delete_content(ctx: &mut Ctx<'_>, namespace: &str) -> Result<Remaining, ControllerError> {
    let mut remaining = Remaining::default();
    for r in RESOURCES.iter().filter(|r| r.namespaced) {
        for obj in super::list(ctx.store, r.plural, Some(namespace))? {
            *remaining.instances.entry(r.plural).or_default() += 1;
            for f in objects::finalizers(&obj) {
                *remaining.finalizers.entry(f).or_default() += 1;
            }
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                let name = str_at(&obj, "/metadata/name");
                super::delete(
                    ctx.store,
                    r.plural,
                    Some(namespace),
                    &name,
                    &DeleteOptions::default(),
                )?;
            }
        }
    }
    // Deleted now and gone at once: no longer remaining.
    for r in RESOURCES.iter().filter(|r| r.namespaced) {
        if remaining.instances.contains_key(r.plural) {
            let left = super::list(ctx.store, r.plural, Some(namespace))?.len();
            if left == 0 {
                remaining.instances.remove(r.plural);
            } else {
                remaining.instances.insert(r.plural, left);
            }
        }
    }
    if remaining.instances.is_empty() {
        remaining.finalizers.clear();
    }
    Ok(remaining)
}

/// The namespace's conditions, as kube-controller-manager words them.
fn conditions(remaining: &Remaining) -> Value {
    let now = crate::api::times::now_rfc3339();
    let condition = |kind: &str, status: bool, reason: &str, message: String| json!({"type": kind, "status": if status { "True" } else { "False" }, "lastTransitionTime": now, "reason": reason, "message": message});
    let content = if remaining.instances.is_empty() {
        condition(
            "NamespaceContentRemaining",
            false,
            "ContentRemoved",
            "All content successfully removed".into(),
        )
    } else {
        let what: Vec<String> = remaining
            .instances
            .iter()
            .map(|(plural, n)| format!("{plural}. has {n} resource instances"))
            .collect();
        condition(
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", what.join(", ")),
        )
    };
    let finalizers = if remaining.finalizers.is_empty() {
        condition(
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        let what: Vec<String> = remaining
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        condition(
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                what.join(", ")
            ),
        )
    };
    json!([
        condition(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into()
        ),
        condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into()
        ),
        condition(
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into()
        ),
        content,
        finalizers,
    ])
}

/// A condition that has not changed keeps the time it last changed (and the namespace is not
/// rewritten every tick).
fn keep_transition_times(old: Option<&Value>, new: &mut Value) {
    let old = old.and_then(Value::as_array).cloned().unwrap_or_default();
    for c in new.as_array_mut().into_iter().flatten() {
        let same = old.iter().find(|o| {
            ["type", "status", "reason", "message"]
                .iter()
                .all(|f| o.get(*f) == c.get(*f))
        });
        if let Some(time) = same.and_then(|o| o.get("lastTransitionTime")) {
            c["lastTransitionTime"] = time.clone();
        }
    }
}
