//! Server-side apply (`kubectl apply --server-side`: PATCH with `application/apply-patch+yaml`),
//! with field ownership recorded in `metadata.managedFields` as kube-apiserver's structured-merge-diff
//! records it (`fieldsType: FieldsV1`).
//!
//! An apply names the fields its manager wants to own, with their values. The server:
//! - merges them into the live object (maps by key; lists by their merge key where the strategic
//!   merge table has one, as sets for lists of primitives with `merge`, atomically otherwise; the
//!   object is created if it does not exist);
//! - refuses (409, one cause per field) to change a field another manager owns, unless `force=true`,
//!   which moves the field to the applier; equal values are shared without conflict;
//! - removes the fields this manager applied last time and no longer applies, unless another manager
//!   also owns them;
//! - records the applied set as this manager's `Apply` entry.
//!
//! Other writes by a named manager (`fieldManager`, else the client's User-Agent up to its first `/`,
//! as kube-apiserver names them: `kubectl-edit`, `kubectl-client-side-apply`...) are recorded as that
//! manager's `Update` entry ([`record_update`]): the fields it changed become its own and nobody
//! else's, so a later apply of another value conflicts with it. The server's own controllers write
//! without a manager and are not recorded.
//!
//! Simplification, about which list elements count as the same: list-map keys are the strategic
//! merge key alone (Kubernetes keys Service ports by port and protocol, container ports by port and
//! protocol).

use serde_json::{Map, Value, json};

use super::{
    patch::{self, ListMerge, Schema},
    status::ApiError,
    times::now_rfc3339,
};

/// A FieldsV1 set: `f:<field>`, `k:<key object>`, `v:<value>` and `.` members, `{}` at the leaves.
type FieldSet = Map<String, Value>;

/// One owned field: the FieldsV1 path elements from the object's root.
type FieldPath = Vec<String>;

/// Metadata fields no manager owns (identity and what the server sets).
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The fields `obj` (an applied configuration, of a kind whose lists merge as `schema` says) sets.
pub fn fields_of(schema: Schema, obj: &Value) -> FieldSet {
    fields_in(schema, obj, None)
}

/// The fields `obj` sets in the part a write through `subresource` changes: the status for
/// `status`, everything else for the object itself (and `scale`, which changes its replicas).
fn fields_in(schema: Schema, obj: &Value, subresource: Option<&str>) -> FieldSet {
    let status_only = subresource == Some("status");
    let mut out = FieldSet::new();
    for (k, v) in obj.as_object().into_iter().flatten() {
        if status_only != (k == "status") {
            continue;
        }
        let (list, fields) = patch::lookup(schema, k);
        let member = match k.as_str() {
            "apiVersion" | "kind" => continue,
            "metadata" => {
                let mut meta = v.clone();
                if let Some(m) = meta.as_object_mut() {
                    m.retain(|k, _| !SERVER_METADATA.contains(&k.as_str()));
                    if m.is_empty() {
                        continue;
                    }
                }
                value_fields(&meta, list, fields)
            }
            _ => value_fields(v, list, fields),
        };
        out.insert(format!("f:{k}"), Value::Object(member));
    }
    out
}

/// The fields of one value: its members for a map, its elements for a keyed or set list, nothing
/// below it for anything else (a leaf).
fn value_fields(v: &Value, list: Option<ListMerge>, fields: Schema) -> FieldSet {
    let mut out = FieldSet::new();
    match (v, list) {
        (Value::Object(m), _) => {
            for (k, child) in m {
                let (list, fields) = patch::lookup(fields, k);
                out.insert(format!("f:{k}"), Value::Object(value_fields(child, list, fields)));
            }
        }
        (Value::Array(items), Some(ListMerge::Keyed(key, more))) => {
            for item in items {
                let mut element = FieldSet::new();
                element.insert(".".into(), json!({}));
                element.extend(value_fields(item, None, fields));
                out.insert(element_key(key, more, item), Value::Object(element));
            }
        }
        (Value::Array(items), Some(ListMerge::Set)) => {
            for item in items {
                out.insert(format!("v:{item}"), json!({}));
            }
        }
        _ => {}
    }
    out
}

/// `k:{"<key>":<value>,...}` for a keyed list's element: its list-map keys, in order.
fn element_key(key: &str, more: &[&str], item: &Value) -> String {
    let mut k = Map::new();
    k.insert(key.to_string(), item.get(key).cloned().unwrap_or(Value::Null));
    for field in more {
        if let Some(v) = key_value(item, field) {
            k.insert(field.to_string(), v);
        }
    }
    format!("k:{}", Value::Object(k))
}

/// An element's list-map key `field`, or its default when absent (a port's protocol is `TCP`:
/// kube-apiserver's OpenAPI gives the default, so an applied port without one is the TCP port).
fn key_value(item: &Value, field: &str) -> Option<Value> {
    item.get(field).cloned().or_else(|| match field {
        "protocol" => Some(json!("TCP")),
        _ => None,
    })
}

/// Whether two elements of a keyed list are the same element.
fn same_element(a: &Value, b: &Value, key: &str, more: &[&str]) -> bool {
    a.get(key) == b.get(key) && more.iter().all(|f| key_value(a, f) == key_value(b, f))
}

/// Every leaf of `set` (a member with nothing below it, or a list element's `.`).
fn leaves(set: &FieldSet) -> Vec<FieldPath> {
    fn walk(set: &FieldSet, at: &mut FieldPath, out: &mut Vec<FieldPath>) {
        for (k, v) in set {
            at.push(k.clone());
            match v.as_object() {
                Some(m) if !m.is_empty() => walk(m, at, out),
                _ => out.push(at.clone()),
            }
            at.pop();
        }
    }
    let mut out = Vec::new();
    walk(set, &mut Vec::new(), &mut out);
    out
}

/// Whether `set` holds `path`. A list element's `k:` key matches one that holds a subset of its keys
/// or a superset: entries recorded before an element was keyed by all its list-map keys
/// (`k:{"port":53}` then, `k:{"port":53,"protocol":"UDP"}` now) still name the same element.
fn contains(set: &FieldSet, path: &[String]) -> bool {
    let mut at = set;
    for (i, p) in path.iter().enumerate() {
        match matching_key(at, p).and_then(|k| at.get(&k)) {
            None => return false,
            Some(v) if i + 1 == path.len() => return v.is_object(),
            Some(v) => match v.as_object() {
                Some(m) => at = m,
                None => return false,
            },
        }
    }
    true
}

/// The member of `set` that `element` names: itself, or a `k:` key naming the same element.
fn matching_key(set: &FieldSet, element: &str) -> Option<String> {
    if set.contains_key(element) {
        return Some(element.to_string());
    }
    let wanted = element_keys(element)?;
    set.keys()
        .find(|k| element_keys(k).is_some_and(|keys| same_keys(&keys, &wanted)))
        .cloned()
}

/// The key members of a `k:{...}` path element.
fn element_keys(element: &str) -> Option<Map<String, Value>> {
    serde_json::from_str(element.strip_prefix("k:")?).ok()
}

/// Whether two element keys agree on every member both have (one holds the other).
fn same_keys(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small.iter().all(|(k, v)| large.get(k) == Some(v))
}

fn remove_path(set: &mut FieldSet, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(first) = matching_key(set, first) else {
        return;
    };
    if rest.is_empty() {
        set.remove(&first);
        return;
    }
    if let Some(Value::Object(child)) = set.get_mut(&first) {
        remove_path(child, rest);
        if child.is_empty() {
            set.remove(&first);
        }
    }
}

/// The list element of `items` a `k:` or `v:` path element names.
fn element_index(items: &[Value], element: &str) -> Option<usize> {
    if let Some(key) = element.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        items
            .iter()
            .position(|item| key.iter().all(|(k, v)| key_value(item, k).as_ref() == Some(v)))
    } else {
        let value: Value = serde_json::from_str(element.strip_prefix("v:")?).ok()?;
        items.iter().position(|item| *item == value)
    }
}

/// The value at `path` in `obj`, if there is one.
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = obj;
    for p in path {
        at = match p.as_str() {
            "." => at,
            f if f.starts_with("f:") => at.get(&f[2..])?,
            element => {
                let items = at.as_array()?;
                &items[element_index(items, element)?]
            }
        };
    }
    Some(at)
}

/// Whether `path` changed from `a` to `b`. A list element (`.../k:{...}/.`) changes when it comes
/// or goes; a change inside it is its fields' (as structured-merge-diff compares).
fn differs(a: &Value, b: &Value, path: &[String]) -> bool {
    if path.last().is_some_and(|p| p == ".") {
        value_at(a, path).is_some() != value_at(b, path).is_some()
    } else {
        value_at(a, path) != value_at(b, path)
    }
}

/// Removes what `path` names from `obj` (a member, or a list element).
fn remove_at(obj: &mut Value, path: &[String]) {
    let path = match path.split_last() {
        Some((last, parent)) if last == "." => parent,
        _ => path,
    };
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut at = obj;
    for p in parent {
        let next = match p.as_str() {
            f if f.starts_with("f:") => at.get_mut(&f[2..]),
            element => match at.as_array_mut() {
                Some(items) => element_index(items, element).map(move |i| &mut items[i]),
                None => None,
            },
        };
        match next {
            Some(n) => at = n,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(m) = at.as_object_mut() {
            m.remove(field);
        }
    } else if let Some(items) = at.as_array_mut()
        && let Some(i) = element_index(items, last)
    {
        items.remove(i);
    }
}

/// Merges `applied` into `live`: maps member by member, keyed lists element by element, set lists
/// as a union, everything else replaced.
fn merge_into(live: &mut Value, applied: &Value, list: Option<ListMerge>, fields: Schema) {
    match (live, applied, list) {
        (Value::Object(l), Value::Object(a), _) => {
            for (k, v) in a {
                let (list, fields) = patch::lookup(fields, k);
                match l.get_mut(k) {
                    Some(existing) => merge_into(existing, v, list, fields),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a), Some(ListMerge::Keyed(key, more))) => {
            for item in a {
                match l.iter_mut().find(|e| same_element(e, item, key, more)) {
                    Some(existing) => merge_into(existing, item, None, fields),
                    None => l.push(item.clone()),
                }
            }
        }
        (Value::Array(l), Value::Array(a), Some(ListMerge::Set)) => {
            for item in a {
                if !l.contains(item) {
                    l.push(item.clone());
                }
            }
        }
        (live, applied, _) => *live = applied.clone(),
    }
}

/// `.spec.replicas`, `.spec.containers[name="web"].image`: a path as kube-apiserver prints it in a
/// conflict.
fn display(path: &[String]) -> String {
    let mut out = String::new();
    for p in path {
        if let Some(f) = p.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = p.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = p.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

/// The options of an apply request.
#[derive(Clone, Debug)]
pub struct ApplyOptions<'a> {
    /// `fieldManager` (required).
    pub manager: &'a str,
    /// `force=true`: take the fields other managers own.
    pub force: bool,
    /// `status` for an apply to `.../status` (which changes only the status), `None` for the object.
    pub subresource: Option<&'a str>,
}

fn managed_entries(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn entry_set(entry: &Value) -> FieldSet {
    entry
        .get("fieldsV1")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Whether `entry` is `manager`'s entry for `operation` (`Apply` or `Update`) through `subresource`
/// (managers are told apart by all three, as in Kubernetes).
fn is_entry(entry: &Value, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
    entry.get("manager").and_then(Value::as_str) == Some(manager)
        && entry.get("operation").and_then(Value::as_str) == Some(operation)
        && entry.get("subresource").and_then(Value::as_str) == subresource
}

fn is_ours(entry: &Value, opts: &ApplyOptions<'_>) -> bool {
    is_entry(entry, opts.manager, "Apply", opts.subresource)
}

/// The configuration a new object is created from: the applied one with this manager's entry.
pub fn for_create(schema: Schema, api_version: &str, applied: &Value, opts: &ApplyOptions<'_>) -> Value {
    let mut obj = applied.clone();
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    obj["metadata"]["managedFields"] = json!([entry_of(
        "Apply",
        opts.manager,
        None,
        api_version,
        fields_of(schema, applied)
    )]);
    obj
}

fn entry_of(
    operation: &str,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    set: FieldSet,
) -> Value {
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": set,
    });
    if let Some(sub) = subresource {
        entry["subresource"] = json!(sub);
    }
    entry
}

/// Applies `applied` to `live` for `opts.manager`: the object to write, or the 409 naming every
/// field another manager owns with another value.
pub fn apply(
    schema: Schema,
    api_version: &str,
    live: &Value,
    applied: &Value,
    opts: &ApplyOptions<'_>,
) -> Result<Value, ApiError> {
    let mut applied = applied.clone();
    if let Some(m) = applied.as_object_mut() {
        if opts.subresource == Some("status") {
            // An apply to the status subresource writes the status alone.
            m.retain(|k, _| k == "status");
        } else {
            // The main resource's apply does not write status (its subresource does).
            m.remove("status");
        }
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| !SERVER_METADATA.contains(&k.as_str()));
        }
    }
    let new_set = fields_in(schema, &applied, opts.subresource);
    let mut merged = live.clone();
    merge_into(&mut merged, &applied, None, schema);

    let mut entries = managed_entries(live);
    let mut conflicts: Vec<Conflict> = Vec::new();
    let mut taken: Vec<(usize, FieldPath)> = Vec::new();
    let new_leaves = leaves(&new_set);
    for (i, e) in entries.iter().enumerate() {
        // Managers are told apart by name, operation and subresource: this applier's own entry
        // never conflicts, its name's `Update` or status entries do, as in Kubernetes.
        if is_ours(e, opts) {
            continue;
        }
        let theirs = entry_set(e);
        for path in new_leaves.iter().filter(|p| contains(&theirs, p)) {
            if differs(live, &merged, path) {
                conflicts.push(Conflict {
                    field: display(path),
                    manager: describe_manager(e),
                    identity: manager_identity(e),
                });
                taken.push((i, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !opts.force {
        let mut e = ApiError::new(409, "Conflict", conflict_message(&conflicts));
        e.causes = conflicts
            .into_iter()
            .map(|c| (c.field, format!("conflict with {}", c.manager)))
            .collect();
        return Err(e);
    }
    for (i, path) in &taken {
        if let Some(Value::Object(set)) = entries[*i].get_mut("fieldsV1") {
            remove_path(set, path);
        }
    }
    // What this manager applied before and applies no more goes, unless someone else owns it.
    let previous = entries
        .iter()
        .find(|e| is_ours(e, opts))
        .map(entry_set)
        .unwrap_or_default();
    for path in leaves(&previous) {
        if contains(&new_set, &path) {
            continue;
        }
        let shared = entries
            .iter()
            .filter(|e| !is_ours(e, opts))
            .any(|e| contains(&entry_set(e), &path));
        if !shared {
            remove_at(&mut merged, &path);
        }
    }
    entries.retain(|e| !is_ours(e, opts) && !entry_set(e).is_empty());
    entries.push(entry_of(
        "Apply",
        opts.manager,
        opts.subresource,
        api_version,
        new_set,
    ));
    merged["metadata"]["managedFields"] = Value::Array(entries);
    Ok(merged)
}

/// A manager as kube-apiserver names it in a conflict: `"name"`, `with subresource "status"` when
/// it wrote through one, and `using apps/v1` for an `Update` (an applier's version is not part of
/// who it is).
fn describe_manager(entry: &Value) -> String {
    let text = |field: &str| entry.get(field).and_then(Value::as_str).unwrap_or_default();
    let mut who = format!("{:?}", text("manager"));
    if !text("subresource").is_empty() {
        who.push_str(&format!(" with subresource {:?}", text("subresource")));
    }
    if text("operation") == "Update" {
        who.push_str(&format!(" using {}", text("apiVersion")));
    }
    who
}

/// One field another manager holds with another value.
struct Conflict {
    /// As kube-apiserver prints a path (`.spec.replicas`).
    field: String,
    /// As kube-apiserver names a manager ([`describe_manager`]).
    manager: String,
    /// What managers are sorted by in a message.
    identity: ManagerIdentity,
}

/// A manager as kube-apiserver tells managers apart and sorts them (its encoded identifier): name,
/// operation, the API version of an `Update`, subresource.
type ManagerIdentity = (String, String, String, String);

fn manager_identity(entry: &Value) -> ManagerIdentity {
    let text = |field: &str| {
        entry
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let version = if text("operation") == "Apply" {
        String::new()
    } else {
        text("apiVersion")
    };
    (text("manager"), text("operation"), version, text("subresource"))
}

/// The message of a failed apply, as kube-apiserver words it: the one conflict, or the fields
/// grouped by manager.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager, c.field
        );
    }
    let mut managers: Vec<(&ManagerIdentity, &str)> = conflicts
        .iter()
        .map(|c| (&c.identity, c.manager.as_str()))
        .collect();
    managers.sort_unstable();
    managers.dedup();
    let mut lines = Vec::new();
    for (identity, manager) in managers {
        lines.push(format!("conflicts with {manager}:"));
        for c in conflicts.iter().filter(|c| &c.identity == identity) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Records a create (`old` `None`) or update of `new` by `manager`, through `subresource` (`status`,
/// `scale`) or of the object itself (`None`): the fields it set or changed in that part move to its
/// `Update` entry, the fields it removed leave every entry. `managedFields` the client sent that
/// differ from the stored ones are taken as they are (`[]` resets them, as in Kubernetes).
pub fn record_update(
    schema: Schema,
    api_version: &str,
    manager: &str,
    subresource: Option<&str>,
    old: Option<&Value>,
    new: &mut Value,
) {
    let sent = new.pointer("/metadata/managedFields").cloned();
    let stored = old.and_then(|o| o.pointer("/metadata/managedFields")).cloned();
    if sent.is_some() && sent != stored {
        return;
    }
    let mut entries = stored.and_then(|v| v.as_array().cloned()).unwrap_or_default();
    let new_set = fields_in(schema, new, subresource);
    let changed: Vec<FieldPath> = leaves(&new_set)
        .into_iter()
        .filter(|p| old.is_none_or(|o| differs(o, new, p)))
        .collect();
    let removed: Vec<FieldPath> = old
        .map(|o| leaves(&fields_in(schema, o, subresource)))
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !contains(&new_set, p))
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    for e in &mut entries {
        if let Some(Value::Object(set)) = e.get_mut("fieldsV1") {
            for p in changed.iter().chain(&removed) {
                remove_path(set, p);
            }
        }
    }
    let ours = |e: &Value| is_entry(e, manager, "Update", subresource);
    let mut set = entries
        .iter()
        .find(|e| ours(e))
        .map(entry_set)
        .unwrap_or_default();
    for p in &changed {
        insert_path(&mut set, p);
    }
    entries.retain(|e| !ours(e) && !entry_set(e).is_empty());
    if !set.is_empty() {
        entries.push(entry_of("Update", manager, subresource, api_version, set));
    }
    if entries.is_empty() {
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    } else {
        new["metadata"]["managedFields"] = Value::Array(entries);
    }
}

fn insert_path(set: &mut FieldSet, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let child = set.entry(first.clone()).or_insert_with(|| json!({}));
    if let Value::Object(m) = child {
        insert_path(m, rest);
    }
}

/// The manager a write is recorded for: `fieldManager`, else the User-Agent up to its first `/`
/// (at most 128 characters), as kube-apiserver derives it.
pub fn manager_of(field_manager: Option<&str>, user_agent: Option<&str>) -> Option<String> {
    field_manager
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .or_else(|| {
            let ua = user_agent?.split('/').next()?.trim();
            (!ua.is_empty()).then(|| ua.chars().take(128).collect())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(kind: &str) -> Schema {
        crate::api::resources::by_kind(kind).map_or(patch::METADATA_ONLY, |r| r.strategy.merge_keys())
    }

    fn fields_of(kind: &str, obj: &Value) -> FieldSet {
        super::fields_of(keys(kind), obj)
    }

    fn apply(
        kind: &str,
        version: &str,
        live: &Value,
        applied: &Value,
        o: &ApplyOptions<'_>,
    ) -> Result<Value, ApiError> {
        super::apply(keys(kind), version, live, applied, o)
    }

    fn record_update(
        kind: &str,
        version: &str,
        manager: &str,
        sub: Option<&str>,
        old: Option<&Value>,
        new: &mut Value,
    ) {
        super::record_update(keys(kind), version, manager, sub, old, new)
    }

    fn opts(manager: &str, force: bool) -> ApplyOptions<'_> {
        ApplyOptions {
            manager,
            force,
            subresource: None,
        }
    }

    #[test]
    fn fields_sets_follow_the_kubernetes_format() {
        let set = fields_of(
            "Deployment",
            &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i", "args": ["a"]}]}}}}),
        );
        assert_eq!(
            Value::Object(set),
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                       "k:{\"name\":\"c\"}": {".": {}, "f:name": {}, "f:image": {}, "f:args": {}}}}}}})
        );
    }

    #[test]
    fn managers_conflict_share_equal_values_and_remove_what_they_stop_applying() {
        let live = json!({"metadata": {"name": "cfg"}});
        let a1 = json!({"metadata": {"name": "cfg"}, "data": {"x": "1", "y": "2"}});
        let after_a = apply("ConfigMap", "v1", &live, &a1, &opts("a", false)).expect("a applies");
        assert_eq!(after_a["data"], json!({"x": "1", "y": "2"}));
        // b sets x to the same value: shared, no conflict; y to another value: conflict.
        let b = json!({"metadata": {"name": "cfg"}, "data": {"x": "1"}});
        let after_b = apply("ConfigMap", "v1", &after_a, &b, &opts("b", false)).expect("same value");
        let b2 = json!({"metadata": {"name": "cfg"}, "data": {"y": "3"}});
        let e = apply("ConfigMap", "v1", &after_b, &b2, &opts("b", false)).expect_err("conflict");
        assert_eq!(e.code, 409);
        assert!(
            e.message.contains("conflict with \"a\": .data.y"),
            "{}",
            e.message
        );
        // Forced: b takes y.
        let forced = apply("ConfigMap", "v1", &after_b, &b2, &opts("b", true)).expect("forced");
        assert_eq!(forced["data"]["y"], "3");
        // b's last apply named y only, so x is a's alone. a stops applying x and y: x goes, y stays
        // (b took it).
        let a2 = json!({"metadata": {"name": "cfg"}, "data": {"z": "9"}});
        let after = apply("ConfigMap", "v1", &forced, &a2, &opts("a", false)).expect("a again");
        assert_eq!(after["data"], json!({"y": "3", "z": "9"}));
        // b stops applying everything: y goes, z stays.
        let b3 = json!({"metadata": {"name": "cfg"}});
        let last = apply("ConfigMap", "v1", &after, &b3, &opts("b", false)).expect("b empty");
        assert_eq!(last["data"], json!({"z": "9"}));
        let managers: Vec<&str> = last["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        assert_eq!(managers, ["a", "b"]);
    }

    #[test]
    fn updates_take_the_fields_they_change_and_then_conflict_with_an_apply() {
        let live = json!({"metadata": {"name": "cfg"}});
        let applied = json!({"metadata": {"name": "cfg"}, "data": {"x": "1", "y": "2"}});
        let mut obj = apply("ConfigMap", "v1", &live, &applied, &opts("kubectl", false)).expect("apply");
        // kubectl edit changes y and removes nothing: y is kubectl-edit's now.
        let old = obj.clone();
        obj["data"]["y"] = json!("5");
        record_update("ConfigMap", "v1", "kubectl-edit", None, Some(&old), &mut obj);
        let entries = obj["metadata"]["managedFields"].to_string();
        assert!(
            entries.contains(r#""manager":"kubectl-edit","operation":"Update""#),
            "{entries}"
        );
        let e = apply("ConfigMap", "v1", &obj, &applied, &opts("kubectl", false)).expect_err("conflict");
        assert!(
            e.message
                .contains(r#"conflict with "kubectl-edit" using v1: .data.y"#),
            "{}",
            e.message
        );
        // An update that changes nothing records nothing.
        let before = obj.clone();
        record_update("ConfigMap", "v1", "other", None, Some(&before), &mut obj);
        assert_eq!(obj, before);
        assert_eq!(
            manager_of(None, Some("kubectl-edit/v1.33.0 (linux/amd64)")).as_deref(),
            Some("kubectl-edit")
        );
        assert_eq!(
            manager_of(Some("helm"), Some("kubectl/v1")).as_deref(),
            Some("helm")
        );
        assert_eq!(manager_of(None, None), None);
    }

    #[test]
    fn keyed_list_elements_are_merged_and_removed_one_by_one() {
        let live = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let mine = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let first = apply("Pod", "v1", &live, &mine, &opts("me", false)).expect("apply");
        assert_eq!(first["spec"]["containers"].as_array().map(Vec::len), Some(2));
        let fewer = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let second = apply("Pod", "v1", &first, &fewer, &opts("me", false)).expect("apply");
        assert_eq!(second["spec"]["containers"], json!([{"name": "a", "image": "x"}]));
    }

    #[test]
    fn entries_keyed_before_all_list_map_keys_still_name_their_elements() {
        // A Service applied when ports were keyed by port alone; the same manifest applied again
        // keeps both ports (the old paths name the same elements as the new ones).
        let live = json!({"metadata": {"name": "dns", "managedFields": [{
            "manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:ports": {
                "k:{\"port\":53}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}}}}}}]},
            "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}});
        let applied = json!({"metadata": {"name": "dns"},
            "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}});
        let after = apply("Service", "v1", &live, &applied, &opts("kubectl", false)).expect("apply");
        assert_eq!(after["spec"]["ports"], applied["spec"]["ports"]);
    }
}
