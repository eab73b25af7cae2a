//! The garbage collector: an object whose owners are all gone is deleted (in the background); an
//! owner deleted with `propagationPolicy: Foreground` keeps its `foregroundDeletion` finalizer until
//! its dependents are gone (they are deleted in the foreground too); one deleted with `Orphan` has
//! its dependents' references to it removed before its `orphan` finalizer is.

use serde_json::{Value, json};

use super::{
    Change, Controller, ControllerError, Ctx,
    cache::{Cache, owner_refs, str_at},
};
use crate::api::objects::{DeleteOptions, Part, Propagation, finalizers};

#[derive(Default)]
pub struct GarbageCollector;

/// Keys of owners being deleted with a finalizer the collector handles carry this prefix in the queue.
const OWNER: &str = "owner:";

fn handles(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers(obj)
            .iter()
            .any(|f| f == "foregroundDeletion" || f == "orphan")
}

impl Controller for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbagecollector"
    }

    fn observe(&mut self, change: &Change<'_>, cache: &Cache, keys: &mut Vec<String>) {
        match change.new {
            Some(obj) => {
                let refs_changed = change.old.is_none_or(|old| owner_refs(old) != owner_refs(obj));
                if refs_changed && !owner_refs(obj).is_empty() {
                    keys.push(change.key.to_string());
                }
                if handles(obj) {
                    keys.push(format!("{OWNER}{}", change.key));
                }
            }
            None => {
                let uid = change.old.map(|o| str_at(o, "/metadata/uid")).unwrap_or_default();
                keys.extend(cache.dependents.get(&uid).into_iter().flatten().cloned());
            }
        }
        // A dependent that changed may be what a foreground deletion waits for.
        for obj in [change.old, change.new].into_iter().flatten() {
            for o in owner_refs(obj) {
                if let Some(owner_key) = cache.uids.get(&o.uid) {
                    keys.push(format!("{OWNER}{owner_key}"));
                }
            }
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        match key.strip_prefix(OWNER) {
            Some(owner_key) => self.finish_owner(owner_key, ctx),
            None => self.check_dependent(key, ctx),
        }
    }
}

impl GarbageCollector {
    /// Deletes a dependent whose owners are gone; drops references to the ones that are.
    fn check_dependent(&self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some(obj) = super::read(ctx.store, key) else {
            return Ok(());
        };
        let Some((r, ns, name)) = super::parse_key(key) else {
            return Ok(());
        };
        let refs = owner_refs(&obj);
        if refs.is_empty() {
            return Ok(());
        }
        let exists = |uid: &str| {
            ctx.cache
                .uids
                .get(uid)
                .and_then(|k| super::read(ctx.store, k))
                .is_some_and(|o| str_at(&o, "/metadata/uid") == uid)
        };
        let alive: Vec<bool> = refs.iter().map(|o| exists(&o.uid)).collect();
        if alive.iter().all(|a| !a) {
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                super::delete(ctx.store, r.plural, ns, name, &DeleteOptions::default())?;
            }
        } else if alive.iter().any(|a| !a) {
            let kept: Vec<Value> = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .zip(&alive)
                .filter(|(_, a)| **a)
                .map(|(o, _)| o.clone())
                .collect();
            super::patch(
                ctx.store,
                r.plural,
                ns,
                name,
                &json!({"metadata": {"ownerReferences": kept}}),
                Part::Main,
            )?;
        }
        Ok(())
    }

    /// Works an owner's `foregroundDeletion` or `orphan` finalizer off.
    fn finish_owner(&self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some(owner) = super::read(ctx.store, key) else {
            return Ok(());
        };
        if !handles(&owner) {
            return Ok(());
        }
        let Some((r, ns, name)) = super::parse_key(key) else {
            return Ok(());
        };
        let uid = str_at(&owner, "/metadata/uid");
        let dependents: Vec<String> = ctx
            .cache
            .dependents
            .get(&uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let fins = finalizers(&owner);
        let mut remaining = fins.clone();
        if fins.iter().any(|f| f == "orphan") {
            for dep_key in &dependents {
                let Some(dep) = super::read(ctx.store, dep_key) else {
                    continue;
                };
                let Some((dr, dns, dname)) = super::parse_key(dep_key) else {
                    continue;
                };
                let kept: Vec<Value> = dep
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|o| o.get("uid").and_then(Value::as_str) != Some(uid.as_str()))
                    .cloned()
                    .collect();
                super::patch(
                    ctx.store,
                    dr.plural,
                    dns,
                    dname,
                    &json!({"metadata": {"ownerReferences": kept}}),
                    Part::Main,
                )?;
            }
            remaining.retain(|f| f != "orphan");
        } else if fins.iter().any(|f| f == "foregroundDeletion") {
            let mut blocking = 0;
            for dep_key in &dependents {
                let Some(dep) = super::read(ctx.store, dep_key) else {
                    continue;
                };
                let Some((dr, dns, dname)) = super::parse_key(dep_key) else {
                    continue;
                };
                let blocks = owner_refs(&dep)
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion);
                if blocks {
                    blocking += 1;
                }
                if dep.pointer("/metadata/deletionTimestamp").is_none() {
                    let opts = DeleteOptions {
                        propagation: Propagation::Foreground,
                        ..DeleteOptions::default()
                    };
                    super::delete(ctx.store, dr.plural, dns, dname, &opts)?;
                }
            }
            if blocking == 0 {
                remaining.retain(|f| f != "foregroundDeletion");
            }
        }
        if remaining != fins {
            let rv = str_at(&owner, "/metadata/resourceVersion");
            super::patch(
                ctx.store,
                r.plural,
                ns,
                name,
                &json!({"metadata": {"finalizers": remaining, "resourceVersion": rv}}),
                Part::Main,
            )?;
        }
        Ok(())
    }
}
