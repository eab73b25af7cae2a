//! Subresources beyond `status`: `scale` (Deployments and ReplicaSets, as `autoscaling/v1` Scale —
//! what `kubectl scale` patches), `binding` (the scheduler's answer: a pod gets its node) and
//! `eviction` (a delete that names itself, what `kubectl drain` sends).

use serde_json::{Value, json};

use super::{
    objects::{self, DeleteOptions, Part, PatchKind, Resource, WriteOptions},
    patch,
    status::ApiError,
    typed::FieldValidation,
};
use crate::store::Store;

/// The Scale view of a Deployment or ReplicaSet.
pub fn scale_of(_r: &Resource, obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let keep = ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"];
    let meta: serde_json::Map<String, Value> = meta
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": super::selector::selector_string(obj.pointer("/spec/selector")),
        },
    })
}

/// PUT (`patch` `None`) or PATCH of `.../scale`: sets `spec.replicas`, recorded as `manager`'s
/// through the `scale` subresource (so a later apply of other replicas conflicts with it).
pub fn scale_write(
    store: &Store,
    r: &'static Resource,
    namespace: Option<&str>,
    name: &str,
    body: &[u8],
    patch_kind: Option<PatchKind>,
    manager: Option<String>,
) -> Result<Value, ApiError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the Scale is not JSON: {e}")))?;
    let current = objects::get(store, r, namespace, name)?;
    let mut scale = scale_of(r, &current);
    match patch_kind {
        None => scale = doc.clone(),
        Some(kind) => patch::apply(kind, patch::METADATA_ONLY, &mut scale, &doc)?,
    }
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            name,
            "spec.replicas",
            &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let mut change = json!({"spec": {"replicas": replicas}});
    // A resourceVersion in a PUT (or a patch that names one) makes the write conditional.
    let pinned = match patch_kind {
        None => scale.pointer("/metadata/resourceVersion"),
        Some(_) => doc.pointer("/metadata/resourceVersion"),
    };
    if let Some(rv) = pinned {
        change["metadata"] = json!({"resourceVersion": rv});
    }
    let (written, _) = objects::patch(
        store,
        r,
        namespace,
        name,
        PatchKind::Merge,
        change.to_string().as_bytes(),
        WriteOptions {
            manager,
            ..FieldValidation::Strict.into()
        },
        Part::Scale,
    )?;
    Ok(scale_of(r, &written))
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// POST `pods/<name>/binding`: assigns the pod to the target node, once.
pub fn bind(
    store: &Store,
    r: &'static Resource,
    namespace: Option<&str>,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the Binding is not JSON: {e}")))?;
    let node = doc
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("Binding", name, "target.name", "Required value"))?;
    let key = objects::key(r, namespace, name);
    let kv = store
        .get(&key)
        .ok_or_else(|| ApiError::not_found(r.plural, name))?;
    let mut pod = objects::render(&kv)?;
    assign(&mut pod, name, node)?;
    objects::update_raw(store, r, &key, &pod, kv.mod_revision)?;
    Ok(success())
}

/// What a binding does to the pod `name`: names the node and sets `PodScheduled=True`; refused
/// (409) when the pod is being deleted or already has a node. The caller writes the pod.
pub fn assign(pod: &mut Value, name: &str, node: &str) -> Result<(), ApiError> {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"
            ),
        ));
    }
    if let Some(current) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""
            ),
        ));
    }
    pod["spec"]["nodeName"] = json!(node);
    set_condition(pod, "PodScheduled", "True", "");
    Ok(())
}

/// Sets (or adds) a pod condition.
pub fn set_condition(pod: &mut Value, kind: &str, status: &str, reason: &str) {
    if pod.get("status").is_none_or(Value::is_null) {
        pod["status"] = json!({});
    }
    let now = super::times::now_rfc3339();
    let mut condition =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if !reason.is_empty() {
        condition["reason"] = json!(reason);
    }
    let conditions = pod["status"]
        .as_object_mut()
        .map(|m| m.entry("conditions").or_insert_with(|| json!([])));
    if let Some(Value::Array(list)) = conditions {
        match list
            .iter_mut()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        {
            Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => {}
            Some(c) => *c = condition,
            None => list.push(condition),
        }
    }
}

/// POST `pods/<name>/eviction`: deletes the pod with the eviction's delete options (no
/// PodDisruptionBudgets are served, so nothing blocks it).
pub fn evict(
    store: &Store,
    r: &'static Resource,
    namespace: Option<&str>,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the Eviction is not JSON: {e}")))?;
    let opts = match doc.get("deleteOptions") {
        Some(o) => DeleteOptions::parse(o.to_string().as_bytes(), None, None)?,
        None => DeleteOptions::default(),
    };
    objects::delete(store, r, namespace, name, &opts)?;
    Ok(success())
}
