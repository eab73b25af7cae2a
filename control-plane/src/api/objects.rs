//! The resources served so far and their create / read / list / replace / delete over the store, as
//! JSON objects: the store keeps each object's JSON without `resourceVersion`, which is the key's
//! modify revision and is put back on every read.

use serde_json::{Map, Value, json};

use super::{
    patch,
    status::ApiError,
    typed::{self, FieldValidation},
};
use crate::store::{KeyValue, Store};

/// A served resource type.
#[derive(Debug)]
pub struct Resource {
    /// Plural, as in URLs.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Names must be DNS-1123 labels (else subdomains).
    pub label_names: bool,
}

/// The core/v1 resources served so far.
pub const CORE_V1: &[Resource] = &[
    Resource {
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        label_names: true,
    },
    Resource {
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        label_names: false,
    },
    Resource {
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        label_names: false,
    },
];

/// Looks a resource up by its plural.
pub fn resource(plural: &str) -> Option<&'static Resource> {
    CORE_V1.iter().find(|r| r.plural == plural)
}

fn key(r: &Resource, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if r.namespaced => format!("/registry/{}/{ns}/{name}", r.plural),
        _ => format!("/registry/{}/{name}", r.plural),
    }
}

/// The store prefix of `r`'s objects (in `namespace`, or all).
pub fn prefix(r: &Resource, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if r.namespaced => format!("/registry/{}/{ns}/", r.plural),
        _ => format!("/registry/{}/", r.plural),
    }
}

/// Checks a DNS-1123 label (`label == true`, at most 63) or subdomain (at most 253) name.
pub fn validate_name(name: &str, label: bool) -> Result<(), String> {
    let max = if label { 63 } else { 253 };
    if name.is_empty() || name.len() > max {
        return Err(format!("must be between 1 and {max} characters"));
    }
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    let ok = if label {
        part_ok(name)
    } else {
        name.split('.').all(part_ok)
    };
    if ok {
        Ok(())
    } else if label {
        Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".into())
    } else {
        Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into())
    }
}

/// The object as clients see it: the stored JSON with `metadata.resourceVersion`.
pub fn render(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::new(500, "InternalError", format!("stored object {}: {e}", kv.key)))?;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    }
    Ok(obj)
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn new_uid() -> String {
    let mut b = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// Parses a request body into an object of `r`'s kind, checking apiVersion, kind, name and namespace.
fn parse_object(r: &Resource, namespace: Option<&str>, body: &[u8]) -> Result<(Value, String), ApiError> {
    let mut obj: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not a JSON object: {e}")))?;
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the request body is not a JSON object"));
    };
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind {k:?} does not match the resource {} (kind {})",
                r.plural, r.kind
            )));
        }
        None => {
            map.insert("kind".into(), json!(r.kind));
        }
    }
    match map.get("apiVersion").and_then(Value::as_str) {
        Some("v1") => {}
        Some(v) => return Err(ApiError::bad_request(format!("apiVersion {v:?} is not v1"))),
        None => {
            map.insert("apiVersion".into(), json!("v1"));
        }
    }
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    if meta.get("name").and_then(Value::as_str).is_none_or(str::is_empty)
        && let Some(generate) = meta.get("generateName").and_then(Value::as_str)
    {
        let suffix: String = new_uid()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(5)
            .collect();
        meta.insert("name".into(), json!(format!("{generate}{suffix}")));
    }
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(ApiError::invalid(
            r.kind,
            "",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    }
    if let Err(why) = validate_name(&name, r.label_names) {
        return Err(ApiError::invalid(
            r.kind,
            &name,
            "metadata.name",
            &format!("Invalid value: \"{name}\": {why}"),
        ));
    }
    if r.namespaced {
        let ns = namespace.unwrap_or_default();
        match meta.get("namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({given}) does not match the namespace sent on the request ({ns})"
                )));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok((obj, name))
}

fn store_bytes(obj: &Value) -> Vec<u8> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}

fn namespace_exists(store: &Store, namespace: &str) -> Result<(), ApiError> {
    match resource("namespaces") {
        Some(ns) if store.get(&key(ns, None, namespace)).is_some() => Ok(()),
        _ => Err(ApiError::not_found("namespaces", namespace)),
    }
}

/// A written object and the warnings to send with it.
pub type Written = (Value, Vec<String>);

/// POST to a collection.
pub fn create(
    store: &Store,
    r: &Resource,
    namespace: Option<&str>,
    body: &[u8],
    validation: FieldValidation,
) -> Result<Written, ApiError> {
    let (mut obj, name) = parse_object(r, namespace, body)?;
    if let Some(ns) = namespace.filter(|_| r.namespaced) {
        namespace_exists(store, ns)?;
    }
    let meta = obj
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    if r.kind == "Namespace" {
        obj["status"] = json!({"phase": "Active"});
    }
    let (obj, warnings) = typed::normalize(r.kind, obj, validation)?;
    let kv = store
        .create(&key(r, namespace, &name), store_bytes(&obj))
        .map_err(|e| ApiError::from_store(e, r.plural, &name))?;
    Ok((render(&kv)?, warnings))
}

/// GET of one object.
pub fn get(store: &Store, r: &Resource, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
    let kv = store
        .get(&key(r, namespace, name))
        .ok_or_else(|| ApiError::not_found(r.plural, name))?;
    render(&kv)
}

/// GET of a collection (`namespace` `None` on a namespaced resource: every namespace).
pub fn list(
    store: &Store,
    r: &Resource,
    namespace: Option<&str>,
    selector: &super::selector::Selectors,
) -> Result<Value, ApiError> {
    let page = store
        .list(&prefix(r, namespace), None, None, 0)
        .map_err(|e| ApiError::from_store(e, r.plural, ""))?;
    let mut items = Vec::with_capacity(page.items.len());
    for kv in &page.items {
        let obj = render(kv)?;
        if selector.matches(&obj) {
            items.push(obj);
        }
    }
    Ok(json!({
        "kind": format!("{}List", r.kind),
        "apiVersion": "v1",
        "metadata": {"resourceVersion": page.revision.to_string()},
        "items": items,
    }))
}

/// PUT of one object: compare-and-swap on the given resourceVersion (unconditional without one).
pub fn replace(
    store: &Store,
    r: &Resource,
    namespace: Option<&str>,
    name: &str,
    body: &[u8],
    validation: FieldValidation,
) -> Result<Written, ApiError> {
    let (obj, body_name) = parse_object(r, namespace, body)?;
    write_over(store, r, namespace, name, obj, &body_name, validation)
}

/// Writes `obj` (already parsed) over the stored object `name`, keeping the fields the server owns;
/// compare-and-swap on the resourceVersion `obj` carries, if any.
fn write_over(
    store: &Store,
    r: &Resource,
    namespace: Option<&str>,
    name: &str,
    mut obj: Value,
    body_name: &str,
    validation: FieldValidation,
) -> Result<Written, ApiError> {
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let k = key(r, namespace, name);
    let old = store.get(&k).ok_or_else(|| ApiError::not_found(r.plural, name))?;
    let old_obj = render(&old)?;
    let expected = match obj.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "metadata.resourceVersion {v:?} is not a resource version"
            ))
        })?),
        _ => None,
    };
    // Fields the server owns are kept from the stored object.
    for field in ["uid", "creationTimestamp"] {
        if let (Some(meta), Some(v)) = (
            obj.get_mut("metadata").and_then(Value::as_object_mut),
            old_obj.pointer(&format!("/metadata/{field}")),
        ) {
            meta.insert(field.into(), v.clone());
        }
    }
    let (obj, warnings) = typed::normalize(r.kind, obj, validation)?;
    let kv = store
        .update(&k, store_bytes(&obj), expected)
        .map_err(|e| ApiError::from_store(e, r.plural, name))?;
    Ok((render(&kv)?, warnings))
}

/// How a PATCH body is to be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Strategic,
}

/// PATCH of one object: applied to the current object and written with compare-and-swap on its
/// revision (or on the resourceVersion the patch names), retried when another write came between.
pub fn patch(
    store: &Store,
    r: &Resource,
    namespace: Option<&str>,
    name: &str,
    kind: PatchKind,
    body: &[u8],
    validation: FieldValidation,
) -> Result<Written, ApiError> {
    let patch_doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
    let pinned = patch_doc.pointer("/metadata/resourceVersion").is_some();
    let mut attempts = 0;
    loop {
        let current = get(store, r, namespace, name)?;
        let revision = current.pointer("/metadata/resourceVersion").cloned();
        let mut obj = current;
        match kind {
            PatchKind::Merge => patch::merge(&mut obj, &patch_doc),
            PatchKind::Strategic => patch::strategic(&mut obj, &patch_doc)?,
        }
        if !pinned
            && let (Some(meta), Some(rv)) = (obj.get_mut("metadata").and_then(Value::as_object_mut), revision)
        {
            meta.insert("resourceVersion".into(), rv);
        }
        let body = serde_json::to_vec(&obj).unwrap_or_default();
        let (parsed, body_name) = parse_object(r, namespace, &body)?;
        match write_over(store, r, namespace, name, parsed, &body_name, validation) {
            Err(e) if e.reason == "Conflict" && !pinned && attempts < 5 => attempts += 1,
            other => return other,
        }
    }
}

/// DELETE of one object; deleting a namespace deletes what is in it.
pub fn delete(store: &Store, r: &Resource, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
    let kv = store
        .delete(&key(r, namespace, name), None)
        .map_err(|e| ApiError::from_store(e, r.plural, name))?;
    if r.kind == "Namespace" {
        for inner in CORE_V1.iter().filter(|x| x.namespaced) {
            let page = store
                .list(&prefix(inner, Some(name)), None, None, 0)
                .map_err(|e| ApiError::from_store(e, inner.plural, ""))?;
            for item in page.items {
                let _ = store.delete(&item.key, None);
            }
        }
    }
    render(&kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_1123() {
        assert!(validate_name("web-1", true).is_ok());
        assert!(validate_name("a.b-c", false).is_ok());
        assert!(validate_name("a.b", true).is_err());
        assert!(validate_name("Web", false).is_err());
        assert!(validate_name("-a", false).is_err());
        assert!(validate_name(&"a".repeat(64), true).is_err());
        assert!(validate_name("", false).is_err());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
