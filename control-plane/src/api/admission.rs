//! The checks every write goes through, whatever its kind, and the kind's own rules around them:
//! metadata validation (labels, annotations, finalizers: kube-apiserver's `ValidateObjectMeta`), then
//! the kind's [`Strategy`](super::kinds::Strategy) (defaults, validation, immutable fields, values
//! handed out by [`allocator`]); reservations given back when an object goes or stops holding them,
//! and repaired at start.

use serde_json::Value;

use super::{
    allocator,
    kinds::{self, Problems, Write},
    names, resources,
    resources::Resource,
    status::ApiError,
};
use crate::store::Store;

/// The most bytes an object's annotations (keys and values) may hold, as kube-apiserver allows.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// What every object's metadata must be: label keys and values, annotation keys and their total
/// size, finalizer names (kube-apiserver's `ValidateObjectMeta`).
fn validate_metadata(obj: &Value) -> Problems {
    let mut p = Problems::default();
    let reasons = |why: Vec<String>| why.join(", ");
    for (key, value) in obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Err(why) = names::qualified_name(key) {
            p.add(
                "metadata.labels",
                format!("Invalid value: {key:?}: {}", reasons(why)),
            );
        }
        let value = value.as_str().unwrap_or_default();
        if let Err(why) = names::label_value(value) {
            p.add(
                format!("metadata.labels.{key}"),
                format!("Invalid value: {value:?}: {}", reasons(why)),
            );
        }
    }
    let mut annotation_bytes = 0;
    for (key, value) in obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Err(why) = names::qualified_name(&key.to_lowercase()) {
            p.add(
                "metadata.annotations",
                format!("Invalid value: {key:?}: {}", reasons(why)),
            );
        }
        annotation_bytes += key.len() + value.as_str().map_or(0, str::len);
    }
    if annotation_bytes > MAX_ANNOTATION_BYTES {
        p.add(
            "metadata.annotations",
            format!("Too long: must have at most {MAX_ANNOTATION_BYTES} bytes"),
        );
    }
    let finalizers = obj.pointer("/metadata/finalizers").and_then(Value::as_array);
    for (i, f) in finalizers.into_iter().flatten().enumerate() {
        let name = f.as_str().unwrap_or_default();
        if let Err(why) = names::finalizer(name) {
            p.add(
                format!("metadata.finalizers[{i}]"),
                format!("Invalid value: {name:?}: {}", reasons(why)),
            );
        }
    }
    p
}

/// Defaults, checks and reserves for a new object.
pub fn on_create(store: &Store, r: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    validate_metadata(obj).into_result(r.kind, obj)?;
    r.strategy.create(&write(store, r, obj), obj)
}

/// Keeps immutable fields, carries over what the server handed out, and checks an update.
pub fn on_update(store: &Store, r: &Resource, old: &Value, obj: &mut Value) -> Result<(), ApiError> {
    validate_metadata(obj).into_result(r.kind, obj)?;
    r.strategy.update(&write(store, r, obj), old, obj)
}

fn write<'a>(store: &'a Store, r: &'a Resource, obj: &Value) -> Write<'a> {
    Write {
        store,
        kind: r.kind,
        owner: kinds::owner(r.plural, r.namespaced, obj),
    }
}

/// Releases what a deleted object held.
pub fn release(store: &Store, r: &Resource, obj: &Value) {
    let who = kinds::owner(r.plural, r.namespaced, obj);
    for (pool, value) in r.strategy.held(obj) {
        allocator::release(store, pool, value, &who);
    }
}

/// After an update: gives back what the old object held and the new one does not.
pub fn release_dropped(store: &Store, r: &Resource, old: &Value, new: &Value) {
    let kept = r.strategy.held(new);
    let who = kinds::owner(r.plural, r.namespaced, new);
    for (pool, value) in r.strategy.held(old) {
        if !kept.iter().any(|(p, v)| p.name == pool.name && *v == value) {
            allocator::release(store, pool, value, &who);
        }
    }
}

/// At start: drops reservations no object holds (a crash between reserving and writing).
pub fn repair(store: &Store) {
    // A reservation's owner is the object's store path below `/registry/`: `plural/[ns/]name`.
    let holds = |pool: &allocator::Pool, owner: &str, value: &str| {
        let Some(r) = owner.split('/').next().and_then(resources::by_plural) else {
            return false;
        };
        store
            .get(&format!("/registry/{owner}"))
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .is_some_and(|obj| {
                r.strategy
                    .held(&obj)
                    .iter()
                    .any(|(p, v)| p.name == pool.name && (p.format)(*v) == value)
            })
    };
    let dropped: usize = [
        &allocator::CLUSTER_IPS,
        &allocator::NODE_PORTS,
        &allocator::POD_CIDRS,
    ]
    .into_iter()
    .map(|pool| allocator::repair(store, pool, |owner, value| holds(pool, owner, value)))
    .sum();
    if dropped > 0 {
        tracing::info!(dropped, "released reservations no object held");
    }
}
