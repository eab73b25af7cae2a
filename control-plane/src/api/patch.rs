//! PATCH bodies: JSON merge patch (RFC 7386) and strategic merge patch (SMP).
//!
//! Strategic merge patch is what `kubectl apply`, `kubectl patch` and most controllers send for
//! built-in kinds. It differs from a merge patch in how lists are treated: a list field whose Go type
//! carries `patchStrategy:"merge"` is merged, element by element, instead of being replaced. Which
//! fields those are is not in the JSON, so each kind's strategy carries a table copied from the
//! `patchStrategy`/`patchMergeKey` struct tags of k8s.io/api (checked against the tags compiled into
//! kubectl 1.33; see [`super::kinds::Strategy::merge_keys`]), built from the pieces here. The semantics follow k8s.io/apimachinery/pkg/util/strategicpatch as the API server
//! applies it (parallel lists merged, unmatched nulls ignored):
//!
//! - maps merge recursively and `null` deletes a key;
//! - lists are replaced unless the table says `merge`: lists of objects then merge by the merge key,
//!   lists of primitives take the union;
//! - `$patch: replace | delete | merge` in a map, `{"$patch": "replace"}` and
//!   `{"$patch": "delete", <key>: ...}` as list elements;
//! - `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>` and `$retainKeys`.
//!
//! Known, deliberate differences from the Go code, all for malformed or unusual patches: a map
//! deleted with `$patch: delete` is removed (Go leaves `{}`, which for map-typed fields serialises the
//! same); new subtrees are applied to an empty value rather than copied raw, so directives inside them
//! never leak into the stored object; `$patch: merge` is accepted as the explicit default (Go rejects
//! it); and `$setElementOrder` on a field without merge strategy is ignored (Go fails).

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::status::ApiError;

/// How a PATCH body is to be applied (its media type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`: [`merge`].
    Merge,
    /// `application/strategic-merge-patch+json`: [`strategic`].
    Strategic,
    /// `application/json-patch+json`: [`super::jsonpatch`].
    Json,
    /// `application/apply-patch+yaml`: server-side apply ([`super::apply`]), which needs the object's
    /// managed fields and is done by `objects::server_side_apply`; here (judging what a write would
    /// make, before it is made) it counts as a merge of the applied configuration.
    Apply,
}

/// Applies a patch of `patch_kind` to `target`, an object whose kind merges lists as `schema` says
/// (its strategy's [`merge_keys`](super::kinds::Strategy::merge_keys)).
pub fn apply(
    patch_kind: PatchKind,
    schema: Schema,
    target: &mut Value,
    patch: &Value,
) -> Result<(), ApiError> {
    match patch_kind {
        PatchKind::Merge | PatchKind::Apply => {
            merge(target, patch);
            Ok(())
        }
        PatchKind::Strategic => strategic(schema, target, patch),
        PatchKind::Json => super::jsonpatch::apply(target, patch),
    }
}

/// RFC 7386: objects merge recursively, `null` removes a member, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Applies a strategic merge patch to `target`, whose kind's merge-key table is `schema`.
///
/// Kinds without keyed lists still get the `ObjectMeta` rules ([`METADATA_ONLY`]), because every
/// object has metadata and the API server merges `finalizers` and `ownerReferences` for all of
/// them. Malformed patches and unknown directives are a 400, as from the API server.
pub fn strategic(schema: Schema, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let Value::Object(p) = patch else {
        return Err(ApiError::bad_request(
            "a strategic merge patch must be a JSON object",
        ));
    };
    patch_map(target, p, schema)
}

// ---------------------------------------------------------------------------------------------
// The merge-key tables' pieces.
// ---------------------------------------------------------------------------------------------

/// The fields of one API type that strategic merge patch needs to know about: merge lists, and the
/// fields leading to types that have some. Fields not listed are plain (maps merge, lists replace).
pub type Schema = &'static [Field];

/// One field, as its Go struct tag describes it.
pub struct Field {
    /// JSON name.
    name: &'static str,
    /// `patchStrategy:"merge"` (for list fields); `None` means the list is replaced.
    list: Option<ListMerge>,
    /// The field's type (for lists: the element type).
    fields: Schema,
}

/// How a list with `patchStrategy:"merge"` merges.
#[derive(Clone, Copy)]
pub enum ListMerge {
    /// Objects identified by the `patchMergeKey` member; for server-side apply, by it and the
    /// further `x-kubernetes-list-map-keys` listed (a Service's ports are one per port *and*
    /// protocol, where a strategic merge patch knows only the port).
    Keyed(&'static str, &'static [&'static str]),
    /// Primitives, merged as a set (no `patchMergeKey`).
    Set,
}

/// A struct-typed field that leads to merge lists.
pub(super) const fn nested(name: &'static str, fields: Schema) -> Field {
    Field {
        name,
        list: None,
        fields,
    }
}

/// `patchStrategy:"merge" patchMergeKey:"<key>"` on a list of objects.
pub(super) const fn keyed(name: &'static str, key: &'static str, fields: Schema) -> Field {
    keyed_also_by(name, key, &[], fields)
}

/// [`keyed`], where server-side apply tells elements apart by `more` keys as well.
pub(super) const fn keyed_also_by(
    name: &'static str,
    key: &'static str,
    more: &'static [&'static str],
    fields: Schema,
) -> Field {
    Field {
        name,
        list: Some(ListMerge::Keyed(key, more)),
        fields,
    }
}

/// `patchStrategy:"merge"` on a list of primitives.
pub(super) const fn set(name: &'static str) -> Field {
    Field {
        name,
        list: Some(ListMerge::Set),
        fields: &[],
    }
}

/// metav1.ObjectMeta. `managedFields` has no strategy (replaced).
pub(super) const OBJECT_META: Schema = &[set("finalizers"), keyed("ownerReferences", "uid", &[])];

/// Kinds with no merge lists outside their metadata: ConfigMap, Secret, Endpoints (subsets and their
/// addresses/ports are replaced), Event, EndpointSlice, Lease.
pub(super) const METADATA_ONLY: Schema = &[nested("metadata", OBJECT_META)];

/// The strategy and type of `name` within `schema` (a plain field when not listed).
pub(super) fn lookup(schema: Schema, name: &str) -> (Option<ListMerge>, Schema) {
    schema
        .iter()
        .find(|f| f.name == name)
        .map_or((None, &[]), |f| (f.list, f.fields))
}

// ---------------------------------------------------------------------------------------------
// Applying a patch.
// ---------------------------------------------------------------------------------------------

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";

/// The field a `<prefix>/<field>` directive key names; `None` when `key` is not that directive.
/// The prefix without a field is malformed, as in Go.
fn directive_field<'a>(key: &'a str, prefix: &str) -> Result<Option<&'a str>, ApiError> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    match rest.strip_prefix('/') {
        Some(field) if !field.is_empty() => Ok(Some(field)),
        _ => Err(ApiError::bad_request(format!(
            "invalid patch directive {key:?}: expected {prefix}/<field>"
        ))),
    }
}

fn unknown_directive(value: &Value) -> ApiError {
    ApiError::bad_request(format!("unknown $patch directive {value}"))
}

/// Merges the patch map `p` into `target`. `$patch: delete` leaves `target` null, which callers
/// turn into removing the key.
fn patch_map(target: &mut Value, p: &Map<String, Value>, schema: Schema) -> Result<(), ApiError> {
    match p.get(PATCH_DIRECTIVE) {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "replace" => *target = Value::Object(Map::new()),
        Some(Value::String(d)) if d == "delete" => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(unknown_directive(other)),
    }
    // A patch map over a missing value or one of another type replaces it.
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return Ok(());
    };
    retain_keys(t, p)?;
    // Ordered lists are merged first, with their order applied, and then skipped below.
    let mut ordered: Vec<&str> = Vec::new();
    for (k, v) in p {
        if let Some(field) = directive_field(k, SET_ELEMENT_ORDER)?
            && set_element_order(t, field, v, p.get(field), schema)?
        {
            ordered.push(field);
        }
    }
    for (k, v) in p {
        if k == PATCH_DIRECTIVE
            || k == RETAIN_KEYS
            || k.starts_with(SET_ELEMENT_ORDER)
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || ordered.contains(&k.as_str())
        {
            continue;
        }
        patch_field(t, k, v, schema)?;
    }
    // Deletions come last so that they also see elements the same patch merged in.
    for (k, v) in p {
        if let Some(field) = directive_field(k, DELETE_FROM_PRIMITIVE_LIST)? {
            let Value::Array(remove) = v else {
                return Err(ApiError::bad_request(format!("{k} must be a list")));
            };
            if let Some(Value::Array(current)) = t.get_mut(field) {
                let remove: HashSet<String> = remove.iter().map(identity_key).collect();
                current.retain(|e| !remove.contains(&identity_key(e)));
            }
        }
    }
    Ok(())
}

/// Applies one member of a patch map.
fn patch_field(t: &mut Map<String, Value>, k: &str, v: &Value, schema: Schema) -> Result<(), ApiError> {
    let (list, fields) = lookup(schema, k);
    match v {
        Value::Null => {
            t.remove(k);
        }
        Value::Object(pm) => {
            let slot = t.entry(k).or_insert(Value::Null);
            patch_map(slot, pm, fields)?;
            if slot.is_null() {
                t.remove(k);
            }
        }
        Value::Array(items) => {
            let current = match t.get_mut(k) {
                Some(Value::Array(a)) => std::mem::take(a),
                _ => Vec::new(),
            };
            let merged = merge_list(k, current, items, list, fields)?;
            t.insert(k.to_string(), Value::Array(merged));
        }
        other => {
            t.insert(k.to_string(), other.clone());
        }
    }
    Ok(())
}

/// A patch value as it stands on its own (applied to nothing), so that directives inside new
/// subtrees are carried out rather than stored.
fn fresh(v: &Value, fields: Schema) -> Result<Value, ApiError> {
    match v {
        Value::Object(pm) => {
            let mut out = Value::Null;
            patch_map(&mut out, pm, fields)?;
            Ok(out)
        }
        other => Ok(other.clone()),
    }
}

/// `$retainKeys`: the map keeps only the listed keys, and the patch may set no others. Honoured
/// wherever it appears (the Go code does not consult the `retainKeys` strategy when applying).
fn retain_keys(t: &mut Map<String, Value>, p: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(keys) = p.get(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(keys) = keys else {
        return Err(ApiError::bad_request("$retainKeys must be a list of field names"));
    };
    let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
    for (k, v) in p {
        let directive = k == PATCH_DIRECTIVE
            || k == RETAIN_KEYS
            || k.starts_with(SET_ELEMENT_ORDER)
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST);
        if !directive && !v.is_null() && !keep.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "the patch sets {k:?}, which is not in its $retainKeys list"
            )));
        }
    }
    t.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

/// Merges (or replaces) a list. `field` names it in errors.
fn merge_list(
    field: &str,
    current: Vec<Value>,
    patch: &[Value],
    list: Option<ListMerge>,
    fields: Schema,
) -> Result<Vec<Value>, ApiError> {
    // Directive elements: `replace` discards the current list, `delete` removes by merge key.
    let mut replace = false;
    let mut deletions: Vec<&Value> = Vec::new();
    let mut items: Vec<&Value> = Vec::new();
    for e in patch {
        match e.get(PATCH_DIRECTIVE) {
            None => items.push(e),
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(Value::String(d)) if d == "merge" => {}
            Some(Value::String(d)) if d == "delete" => match list {
                Some(ListMerge::Keyed(key, _)) => deletions.push(e.get(key).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "a $patch: delete element of {field} has no merge key {key:?}"
                    ))
                })?),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "$patch: delete needs a merge key, and {field} has none"
                    )));
                }
            },
            Some(other) => return Err(unknown_directive(other)),
        }
    }
    let list = match list {
        Some(l) if !replace => l,
        _ => {
            let mut out = Vec::with_capacity(items.len());
            for e in items {
                let v = fresh(e, fields)?;
                if !v.is_null() {
                    out.push(v);
                }
            }
            return Ok(out);
        }
    };
    let mut merged = current;
    let mut wanted: Vec<&Value> = Vec::with_capacity(items.len());
    // Elements are found by their identity through a hash index, not by scanning: a patch of n
    // elements against a list of m costs O(n + m), so a hostile list cannot make a request quadratic.
    match list {
        ListMerge::Keyed(key, _) => {
            if !deletions.is_empty() {
                let gone: HashSet<String> = deletions.iter().map(|d| identity_key(d)).collect();
                merged.retain(|e| !e.get(key).is_some_and(|v| gone.contains(&identity_key(v))));
            }
            let server_order = merged.clone();
            let mut index: HashMap<String, usize> = HashMap::with_capacity(merged.len());
            for (i, e) in merged.iter().enumerate() {
                if let Some(id) = e.get(key) {
                    index.entry(identity_key(id)).or_insert(i);
                }
            }
            for e in items {
                let Value::Object(em) = e else {
                    return Err(ApiError::bad_request(format!(
                        "elements of {field} must be objects"
                    )));
                };
                let id = em.get(key).ok_or_else(|| {
                    ApiError::bad_request(format!("an element of {field} has no merge key {key:?}"))
                })?;
                wanted.push(id);
                let id_key = identity_key(id);
                match index.get(&id_key).and_then(|&i| merged.get_mut(i)) {
                    Some(existing) => patch_map(existing, em, fields)?,
                    None => {
                        index.insert(id_key, merged.len());
                        merged.push(fresh(e, fields)?);
                    }
                }
            }
            Ok(order(merged, &wanted, &server_order, list))
        }
        ListMerge::Set => {
            let mut union: Vec<Value> = Vec::with_capacity(merged.len() + items.len());
            let mut seen: HashSet<String> = HashSet::with_capacity(merged.len() + items.len());
            for e in merged {
                if seen.insert(identity_key(&e)) {
                    union.push(e);
                }
            }
            let server_order = union.clone();
            for e in items {
                if e.is_object() || e.is_array() {
                    return Err(ApiError::bad_request(format!(
                        "elements of {field} must be primitives"
                    )));
                }
                wanted.push(e);
                if seen.insert(identity_key(e)) {
                    union.push(e.clone());
                }
            }
            Ok(order(union, &wanted, &server_order, list))
        }
    }
}

/// `$setElementOrder/<field>`: merges the field's patch list (if any) and then orders the result by
/// the directive. Returns false, leaving the field to ordinary processing, when the field is not a
/// merge list (the directive means nothing there).
fn set_element_order(
    t: &mut Map<String, Value>,
    field: &str,
    directive: &Value,
    patch_list: Option<&Value>,
    schema: Schema,
) -> Result<bool, ApiError> {
    let Value::Array(order_list) = directive else {
        return Err(ApiError::bad_request(format!(
            "$setElementOrder/{field} must be a list"
        )));
    };
    let (list, fields) = lookup(schema, field);
    let Some(list) = list else {
        return Ok(false);
    };
    let mut wanted = Vec::with_capacity(order_list.len());
    for o in order_list {
        wanted.push(identity(list, o).ok_or_else(|| {
            ApiError::bad_request(format!("an element of $setElementOrder/{field} has no merge key"))
        })?);
    }
    let patch_items = match patch_list {
        None => None,
        Some(Value::Array(items)) => Some(items),
        Some(_) => return Err(ApiError::bad_request(format!("{field} must be a list"))),
    };
    if let Some(items) = patch_items {
        check_order(field, items, &wanted, list)?;
    }
    let original = match t.get(field) {
        Some(Value::Array(a)) => Some(a.clone()),
        _ => None,
    };
    let merged = match (&original, patch_items) {
        (_, Some(items)) => merge_list(
            field,
            original.clone().unwrap_or_default(),
            items,
            Some(list),
            fields,
        )?,
        (Some(o), None) => o.clone(),
        (None, None) => return Ok(true),
    };
    let ordered = order(merged, &wanted, original.as_deref().unwrap_or(&[]), list);
    t.insert(field.to_string(), Value::Array(ordered));
    Ok(true)
}

/// The patch list must name its elements in the same relative order as `$setElementOrder`, and only
/// elements it names (directive elements aside); anything else is a malformed patch.
fn check_order(field: &str, items: &[Value], wanted: &[&Value], list: ListMerge) -> Result<(), ApiError> {
    let mut next = 0;
    for item in items.iter().filter(|i| i.get(PATCH_DIRECTIVE).is_none()) {
        let id = identity(list, item)
            .ok_or_else(|| ApiError::bad_request(format!("an element of {field} has no merge key")))?;
        loop {
            let Some(w) = wanted.get(next) else {
                return Err(ApiError::bad_request(format!(
                    "the order of {field} in the patch does not match $setElementOrder/{field}"
                )));
            };
            next += 1;
            if same(w, id) {
                break;
            }
        }
    }
    Ok(())
}

/// What identifies an element of a merge list: its merge key, or itself for primitives.
fn identity(list: ListMerge, e: &Value) -> Option<&Value> {
    match list {
        ListMerge::Keyed(key, _) => e.get(key),
        ListMerge::Set => Some(e),
    }
}

/// Orders a merged list the way the API server does: elements the patch names come in the
/// patch's order (`wanted`), elements only on the server keep their relative order, and the two
/// runs are interleaved by the server's original positions where both are known. A new element is
/// therefore placed before the server-only elements that follow it, which is why a patch that adds
/// an element without `$setElementOrder` puts it first (kubectl always sends `$setElementOrder`).
fn order(merged: Vec<Value>, wanted: &[&Value], server_order: &[Value], list: ListMerge) -> Vec<Value> {
    // First positions by identity, computed once (linear scans here made large lists quadratic).
    let mut server_positions: HashMap<String, usize> = HashMap::with_capacity(server_order.len());
    for (i, s) in server_order.iter().enumerate() {
        if let Some(id) = identity(list, s) {
            server_positions.entry(identity_key(id)).or_insert(i);
        }
    }
    let mut wanted_positions: HashMap<String, usize> = HashMap::with_capacity(wanted.len());
    for (i, w) in wanted.iter().enumerate() {
        wanted_positions.entry(identity_key(w)).or_insert(i);
    }
    let position = |positions: &HashMap<String, usize>, e: &Value| {
        identity(list, e).and_then(|id| positions.get(&identity_key(id)).copied())
    };
    let (from_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|e| position(&wanted_positions, e).is_some());
    let mut from_patch: Vec<(Option<usize>, usize, Value)> = from_patch
        .into_iter()
        .map(|e| {
            let s = position(&server_positions, &e);
            (s, position(&wanted_positions, &e).unwrap_or(usize::MAX), e)
        })
        .collect();
    let mut server_only: Vec<(Option<usize>, Value)> = server_only
        .into_iter()
        .map(|e| (position(&server_positions, &e), e))
        .collect();
    from_patch.sort_by_key(|(_, wanted, _)| *wanted);
    server_only.sort_by_key(|(server, _)| server.unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some((l, _)), Some((r, _, _))) => matches!((l, r), (Some(a), Some(b)) if a < b),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_left {
            left.next().map(|(_, e)| e)
        } else {
            right.next().map(|(_, _, e)| e)
        };
        out.extend(next);
    }
    out
}

/// A hashable form of an element's identity that is equal exactly when [`same`] says the values
/// are: numbers by their float64 value (as Go compares them), anything else by its JSON.
fn identity_key(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) => format!("#{f}"),
            None => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Equality of JSON values as Go's decoded `interface{}` values compare: all numbers are float64
/// there, so `80` and `80.0` are the same port.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// [`super::strategic`] for an object of `kind`, with its kind's merge keys.
    fn strategic(kind: &str, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
        let schema = crate::api::resources::by_kind(kind).map_or(METADATA_ONLY, |r| r.strategy.merge_keys());
        super::strategic(schema, target, patch)
    }

    fn apply(kind: &str, mut doc: Value, patch: Value) -> Value {
        strategic(kind, &mut doc, &patch).expect("patch applies");
        doc
    }

    fn deployment(containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": containers}
                }
            }
        })
    }

    #[test]
    fn merge_patch_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        merge(&mut doc, &json!({"c": ["x"]}));
        assert_eq!(doc, json!({"a": "z", "c": ["x"]}));
    }

    #[test]
    fn strategic_directives_on_maps() {
        let mut doc = json!({"data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "y"}}});
        strategic(
            "ConfigMap",
            &mut doc,
            &json!({"data": {"$patch": "replace", "c": "3"}, "metadata": {"labels": {"$patch": "delete"}}, "$setElementOrder/x": []}),
        )
        .expect("patch");
        assert_eq!(doc, json!({"data": {"c": "3"}, "metadata": {}}));
        assert!(strategic("ConfigMap", &mut doc, &json!({"data": {"$patch": "bogus"}})).is_err());
        assert!(strategic("ConfigMap", &mut doc, &json!({"data": {"$patch": 1}})).is_err());
        assert!(strategic("ConfigMap", &mut doc, &json!(["not", "an", "object"])).is_err());
        // `$patch: merge` is the default, spelled out.
        let doc = apply("ConfigMap", doc, json!({"data": {"$patch": "merge", "d": "4"}}));
        assert_eq!(doc, json!({"data": {"c": "3", "d": "4"}, "metadata": {}}));
    }

    #[test]
    fn container_merged_by_name_keeps_other_containers_and_fields() {
        let doc = deployment(json!([
            {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "busybox", "args": ["sleep", "1d"]}
        ]));
        let doc = apply(
            "Deployment",
            doc,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.26"}]}}}}),
        );
        assert_eq!(
            doc.pointer("/spec/template/spec/containers"),
            Some(&json!([
                {"name": "web", "image": "nginx:1.26", "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "busybox", "args": ["sleep", "1d"]}
            ]))
        );
        assert_eq!(doc.pointer("/spec/replicas"), Some(&json!(2)));
    }

    #[test]
    fn pod_spec_rules_apply_in_pods_too() {
        let pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let pod = apply(
            "Pod",
            pod,
            json!({"spec": {"containers": [{"name": "b", "image": "z"}]}}),
        );
        assert_eq!(
            pod.pointer("/spec/containers"),
            Some(&json!([{"name": "a", "image": "x"}, {"name": "b", "image": "z"}]))
        );
    }

    #[test]
    fn env_var_added_and_removed_with_patch_delete() {
        let pod = json!({"spec": {"containers": [{"name": "web", "env": [
            {"name": "A", "value": "1"}, {"name": "B", "value": "2"}
        ]}]}});
        let pod = apply(
            "Pod",
            pod,
            json!({"spec": {"containers": [{"name": "web",
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                "env": [{"name": "C", "value": "3"}, {"name": "B", "$patch": "delete"}]}]}}),
        );
        assert_eq!(
            pod.pointer("/spec/containers/0/env"),
            Some(&json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]))
        );
        // A delete element without the merge key is malformed.
        let mut bad = pod.clone();
        let err = strategic(
            "Pod",
            &mut bad,
            &json!({"spec": {"containers": [{"name": "web", "env": [{"$patch": "delete"}]}]}}),
        );
        assert!(err.is_err());
    }

    #[test]
    fn new_element_without_set_element_order_goes_first() {
        // What the API server does: patch-only elements precede the server's own.
        let pod = json!({"spec": {"containers": [{"name": "web", "env": [{"name": "A", "value": "1"}]}]}});
        let pod = apply(
            "Pod",
            pod,
            json!({"spec": {"containers": [{"name": "web", "env": [{"name": "Z", "value": "26"}]}]}}),
        );
        assert_eq!(
            pod.pointer("/spec/containers/0/env"),
            Some(&json!([{"name": "Z", "value": "26"}, {"name": "A", "value": "1"}]))
        );
    }

    #[test]
    fn ports_merged_by_container_port() {
        let pod = json!({"spec": {"containers": [{"name": "web", "ports": [
            {"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "https"}
        ]}]}});
        let pod = apply(
            "Pod",
            pod,
            json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 443, "protocol": "TCP"}]}]}}),
        );
        assert_eq!(
            pod.pointer("/spec/containers/0/ports"),
            Some(&json!([
                {"containerPort": 80, "name": "http"},
                {"containerPort": 443, "name": "https", "protocol": "TCP"}
            ]))
        );
    }

    #[test]
    fn service_ports_merged_by_port() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let svc = apply(
            "Service",
            svc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
        );
        assert_eq!(
            svc.pointer("/spec/ports"),
            Some(&json!([{"port": 80, "targetPort": 9090}, {"port": 443}]))
        );
    }

    #[test]
    fn set_element_order_reorders_and_merges() {
        let doc = deployment(json!([
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}, {"name": "c", "image": "c:1"}
        ]));
        let doc = apply(
            "Deployment",
            doc,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "d"}, {"name": "a"}],
                "containers": [{"name": "d", "image": "d:1"}, {"name": "a", "image": "a:2"}]
            }}}}),
        );
        // Named elements in the directive's order; `b`, on the server only, stays ahead of `c`,
        // which followed it on the server (the API server interleaves the same way).
        let names: Vec<&str> = doc
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["b", "c", "d", "a"]);
        assert_eq!(
            doc.pointer("/spec/template/spec/containers/3/image"),
            Some(&json!("a:2"))
        );

        // Reordering alone, with no patch list.
        let doc = apply(
            "Deployment",
            doc,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]
            }}}}),
        );
        let names: Vec<&str> = doc
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["a", "b", "c", "d"]);

        // A patch list in another order than the directive is malformed.
        let mut bad = doc.clone();
        let err = strategic(
            "Deployment",
            &mut bad,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "x"}, {"name": "a", "image": "y"}]
            }}}}),
        );
        assert!(err.is_err());
    }

    #[test]
    fn finalizers_union_and_delete_from_primitive_list() {
        let cm = json!({"metadata": {"name": "x", "finalizers": ["a", "b"]}});
        let cm = apply("ConfigMap", cm, json!({"metadata": {"finalizers": ["b", "c"]}}));
        assert_eq!(cm.pointer("/metadata/finalizers"), Some(&json!(["a", "b", "c"])));
        let cm = apply(
            "ConfigMap",
            cm,
            json!({"metadata": {
                "$setElementOrder/finalizers": ["a", "c"],
                "$deleteFromPrimitiveList/finalizers": ["b"]
            }}),
        );
        assert_eq!(cm.pointer("/metadata/finalizers"), Some(&json!(["a", "c"])));
        let mut bad = cm.clone();
        assert!(
            strategic(
                "ConfigMap",
                &mut bad,
                &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}})
            )
            .is_err()
        );
        assert!(
            strategic(
                "ConfigMap",
                &mut bad,
                &json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}})
            )
            .is_err()
        );
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let doc = json!({"metadata": {"ownerReferences": [{"uid": "1", "kind": "ReplicaSet", "name": "a"}]}});
        let doc = apply(
            "Pod",
            doc,
            json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}, {"uid": "2", "kind": "Job", "name": "b"}]}}),
        );
        assert_eq!(
            doc.pointer("/metadata/ownerReferences"),
            Some(&json!([
                {"uid": "1", "kind": "ReplicaSet", "name": "a", "controller": true},
                {"uid": "2", "kind": "Job", "name": "b"}
            ]))
        );
    }

    #[test]
    fn retain_keys_switches_deployment_strategy() {
        let doc = deployment(json!([{"name": "web", "image": "nginx"}]));
        // What kubectl sends when the manifest switches to Recreate.
        let doc = apply(
            "Deployment",
            doc,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
        );
        assert_eq!(doc.pointer("/spec/strategy"), Some(&json!({"type": "Recreate"})));
        // Setting a key the directive does not retain is malformed.
        let mut bad = doc.clone();
        let err = strategic(
            "Deployment",
            &mut bad,
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}}),
        );
        assert!(err.is_err());
    }

    #[test]
    fn retain_keys_in_volumes() {
        let pod = json!({"spec": {"volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "conf", "configMap": {"name": "c"}}
        ]}});
        let pod = apply(
            "Pod",
            pod,
            json!({"spec": {"volumes": [{"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/d"}}]}}),
        );
        assert_eq!(
            pod.pointer("/spec/volumes"),
            Some(&json!([
                {"name": "data", "hostPath": {"path": "/d"}},
                {"name": "conf", "configMap": {"name": "c"}}
            ]))
        );
    }

    #[test]
    fn list_without_merge_strategy_is_replaced() {
        let pod = json!({"spec": {
            "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}],
            "containers": [{"name": "web", "args": ["x", "y"]}]
        }});
        let pod = apply(
            "Pod",
            pod,
            json!({"spec": {
                "tolerations": [{"key": "c", "operator": "Exists"}],
                "containers": [{"name": "web", "args": ["z"]}]
            }}),
        );
        assert_eq!(
            pod.pointer("/spec/tolerations"),
            Some(&json!([{"key": "c", "operator": "Exists"}]))
        );
        assert_eq!(pod.pointer("/spec/containers/0/args"), Some(&json!(["z"])));
        // ServiceAccount imagePullSecrets, unlike PodSpec's, has no merge strategy.
        let sa = json!({"secrets": [{"name": "s1"}], "imagePullSecrets": [{"name": "p1"}]});
        let sa = apply(
            "ServiceAccount",
            sa,
            json!({"secrets": [{"name": "s2"}], "imagePullSecrets": [{"name": "p2"}]}),
        );
        assert_eq!(
            sa,
            json!({"secrets": [{"name": "s2"}, {"name": "s1"}], "imagePullSecrets": [{"name": "p2"}]})
        );
    }

    #[test]
    fn patch_replace_element_replaces_a_merge_list() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let pod = apply(
            "Pod",
            pod,
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "c"}]}}),
        );
        assert_eq!(
            pod.pointer("/spec/containers"),
            Some(&json!([{"name": "c", "image": "c"}]))
        );
        let mut bad = pod.clone();
        assert!(
            strategic(
                "Pod",
                &mut bad,
                &json!({"spec": {"containers": [{"$patch": "sideways"}]}})
            )
            .is_err()
        );
        assert!(
            strategic(
                "Pod",
                &mut bad,
                &json!({"spec": {"containers": [{"image": "no-name"}]}})
            )
            .is_err()
        );
    }

    #[test]
    fn node_status_merges_addresses_and_conditions_by_type() {
        let node = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}],
            "conditions": [{"type": "Ready", "status": "False"}]
        }});
        let node = apply(
            "Node",
            node,
            json!({"status": {
                "$setElementOrder/conditions": [{"type": "Ready"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]
            }}),
        );
        assert_eq!(
            node.pointer("/status/addresses"),
            Some(
                &json!([{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}])
            )
        );
        assert_eq!(
            node.pointer("/status/conditions"),
            Some(&json!([{"type": "Ready", "status": "True"}]))
        );
    }

    #[test]
    fn directives_inside_new_subtrees_are_applied_not_stored() {
        let pod = json!({"spec": {"containers": [{"name": "web"}]}});
        let pod = apply(
            "Pod",
            pod,
            json!({"spec": {"initContainers": [{"name": "init",
                "$setElementOrder/env": [{"name": "A"}],
                "env": [{"name": "A", "value": "1"}]}]}}),
        );
        assert_eq!(
            pod.pointer("/spec/initContainers"),
            Some(&json!([{"name": "init", "env": [{"name": "A", "value": "1"}]}]))
        );
    }

    #[test]
    fn kubectl_1_33_reapply_with_new_image() {
        let mut doc = deployment(json!([
            {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}],
             "imagePullPolicy": "IfNotPresent", "resources": {}}
        ]));
        doc["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}\n"});
        doc["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":true}\n"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [{"image": "nginx:1.26", "name": "web"}]
            }}}
        });
        let doc = apply("Deployment", doc, patch);
        assert_eq!(
            doc.pointer("/spec/template/spec/containers"),
            Some(&json!([
                {"name": "web", "image": "nginx:1.26", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                 "imagePullPolicy": "IfNotPresent", "resources": {}}
            ]))
        );
        assert_eq!(
            doc.pointer("/spec/template/spec/restartPolicy"),
            Some(&json!("Always"))
        );
        assert_eq!(
            doc.pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration"),
            Some(&json!("{\"new\":true}\n"))
        );
        assert_eq!(
            doc.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            Some(&json!("25%"))
        );
    }

    #[test]
    fn large_merge_lists_merge_in_linear_time() {
        // 20,000 server elements, a patch naming 10,000 of them in reverse and adding 5,000, plus a
        // primitive list: the old scans made this minutes of work; now it is milliseconds.
        let n = 20_000;
        let env: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("V{i}"), "value": "a"}))
            .collect();
        let doc = json!({"spec": {"containers": [{"name": "c", "env": env}]},
                         "metadata": {"finalizers": (0..n).map(|i| format!("f/{i}")).collect::<Vec<_>>()}});
        let patched: Vec<Value> = (0..10_000)
            .rev()
            .map(|i| json!({"name": format!("V{i}"), "value": "b"}))
            .chain((n..n + 5_000).map(|i| json!({"name": format!("V{i}")})))
            .collect();
        let patch = json!({"spec": {"containers": [{"name": "c", "env": patched}]},
                           "metadata": {"$deleteFromPrimitiveList/finalizers": (0..n / 2).map(|i| format!("f/{i}")).collect::<Vec<_>>()}});
        let started = std::time::Instant::now();
        let doc = apply("Pod", doc, patch);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let env = doc
            .pointer("/spec/containers/0/env")
            .and_then(Value::as_array)
            .expect("env");
        assert_eq!(env.len(), n + 5_000);
        assert_eq!(
            env[0],
            json!({"name": "V9999", "value": "b"}),
            "patch order first"
        );
        assert!(env.iter().filter(|e| e["value"] == "b").count() == 10_000);
        let finalizers = doc
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .expect("finalizers");
        assert_eq!(finalizers.len(), n / 2);
    }
}
