//! Create / read / list / replace / patch / delete of objects over the store, as JSON: the store keeps
//! each object's JSON without `resourceVersion`, which is the key's modify revision and is put back on
//! every read. This is the generic registry: every kind is written the same way, and where kinds
//! differ (defaults, validation, allocated addresses and ports, how a deletion waits) the resource's
//! [`Strategy`](super::kinds::Strategy) decides, through [`super::admission`] for writes; finalizers
//! and the deletion protocol are here, because every kind has them.

use serde_json::{Map, Value, json};

use super::{
    admission, kinds::Deletion, limits, patch, status::ApiError, times::now_rfc3339, typed::FieldValidation,
};
use crate::store::{KeyValue, Store};

pub use super::resources::{Resource, by_plural as resource};

/// The store key of one object.
pub fn key(r: &Resource, namespace: Option<&str>, name: &str) -> String {
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

pub use super::names::{NAME_ALPHABET, new_uid, random_bytes, random_suffix, validate_name};

/// The object as clients see it: the stored JSON with `metadata.resourceVersion`.
pub fn render(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::new(500, "InternalError", format!("stored object {}: {e}", kv.key)))?;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    }
    Ok(obj)
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
    let api_version = r.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "apiVersion {v:?} does not match the resource {} ({api_version})",
                r.plural
            )));
        }
        None => {
            map.insert("apiVersion".into(), json!(api_version));
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
        let suffix = random_suffix();
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
    if let Err(why) = super::names::validate_object_name(r, &name) {
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

/// The bytes stored for `obj` (its resourceVersion is the store's revision, not part of the value).
pub fn store_bytes(obj: &Value) -> Vec<u8> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}

/// New objects go only into namespaces that exist and are not being deleted (kube-apiserver's
/// NamespaceLifecycle admission): what the namespace controller is clearing out must not refill.
fn namespace_accepts(store: &Store, r: &Resource, namespace: &str, name: &str) -> Result<(), ApiError> {
    let found = resource("namespaces").and_then(|ns| store.get(&key(ns, None, namespace)));
    let Some(kv) = found else {
        return Err(ApiError::not_found("namespaces", namespace));
    };
    if render(&kv)?.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                r.plural
            ),
        ));
    }
    Ok(())
}

/// A written object and the warnings to send with it.
pub type Written = (Value, Vec<String>);

/// Which part of an object a write changes: the object (its status kept as stored, for kinds with a
/// `status` subresource) or only its status (`.../status`, the rest kept as stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
    /// A namespace's `spec.finalizers` (`namespaces/NAME/finalize`), the rest kept as stored.
    Finalize,
    /// The object's replicas through `.../scale`: written as the object is, recorded in
    /// `managedFields` as the `scale` subresource's.
    Scale,
    /// A CertificateSigningRequest's approval conditions (`.../approval`): written as a status is.
    Approval,
}

impl Part {
    /// Whether the write changes the object itself (not only its status or finalizers).
    fn is_main(self) -> bool {
        matches!(self, Part::Main | Part::Scale)
    }

    /// The subresource `managedFields` records the write under (`None`: the object's own).
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Part::Main => None,
            Part::Status => Some("status"),
            Part::Finalize => Some("finalize"),
            Part::Scale => Some("scale"),
            Part::Approval => Some("approval"),
        }
    }
}

/// How a write is made: its field validation, and whether it is a dry run (`dryRun=All`: every
/// check and default of the write, nothing stored, anything admission reserved given back). Field
/// validation alone converts into it, so the server's own writers pass just that.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub validation: FieldValidation,
    pub dry_run: bool,
    /// Who writes, for `managedFields` (`None`: the server's own writers, not recorded).
    pub manager: Option<String>,
    /// A server-side apply, which wrote `managedFields` itself (the only write through a
    /// subresource whose `managedFields` are taken from the request).
    pub applied: bool,
}

impl From<FieldValidation> for WriteOptions {
    fn from(validation: FieldValidation) -> Self {
        WriteOptions {
            validation,
            dry_run: false,
            manager: None,
            applied: false,
        }
    }
}

/// POST to a collection.
pub fn create(
    store: &Store,
    r: &'static Resource,
    namespace: Option<&str>,
    body: &[u8],
    options: impl Into<WriteOptions>,
) -> Result<Written, ApiError> {
    let options = options.into();
    let validation = options.validation;
    let (mut obj, name) = parse_object(r, namespace, body)?;
    if let Some(ns) = namespace.filter(|_| r.namespaced) {
        namespace_accepts(store, r, ns, &name)?;
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
    for owned_by_server in ["deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        meta.remove(owned_by_server);
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    if r.tracks_generation() {
        meta.insert("generation".into(), json!(1));
    }
    // Status is the controllers' and nodes' to write (a node registers with its status).
    if r.has_status()
        && !r.strategy.status_on_create()
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    let (mut obj, warnings) = r.strategy.decode(obj, validation)?;
    admission::on_create(store, r, &mut obj)?;
    if let Some(manager) = &options.manager {
        super::apply::record_update(
            r.strategy.merge_keys(),
            &r.api_version(),
            manager,
            None,
            None,
            &mut obj,
        );
    }
    let bytes = store_bytes(&obj);
    if let Err(e) = limits::check_stored(&bytes) {
        admission::release(store, r, &obj);
        return Err(e);
    }
    if options.dry_run {
        admission::release(store, r, &obj);
        if store.get(&key(r, namespace, &name)).is_some() {
            return Err(ApiError::from_store(
                crate::store::StoreError::AlreadyExists {
                    key: key(r, namespace, &name),
                },
                r.plural,
                &name,
            ));
        }
        return Ok((obj, warnings));
    }
    match store.create(&key(r, namespace, &name), bytes) {
        Ok(kv) => Ok((render(&kv)?, warnings)),
        Err(e) => {
            admission::release(store, r, &obj);
            Err(ApiError::from_store(e, r.plural, &name))
        }
    }
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
    list_with(store, r, namespace, selector, &ListOptions::default())
}

/// Which snapshot of a collection a list reads, and which page of it (the `resourceVersion`,
/// `resourceVersionMatch`, `limit` and `continue` query parameters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read the collection as it was at this revision (`resourceVersionMatch=Exact`, or the snapshot
    /// a continue token carries); `None`: as it is now.
    pub at: Option<u64>,
    /// The state read must be at least this recent (a plain `resourceVersion`).
    pub not_older_than: Option<u64>,
    /// At most this many items (0: all); a longer collection is continued with `metadata.continue`.
    pub limit: usize,
    /// Start after this key (from a continue token).
    pub start_after: Option<String>,
}

/// A continue token: the snapshot and the last key a page examined, as kube-apiserver encodes it
/// (base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"<key after the prefix>"}`).
pub fn encode_continue(revision: u64, prefix: &str, last_key: &str) -> String {
    use base64::Engine;
    let start = last_key.strip_prefix(prefix).unwrap_or(last_key);
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": format!("{start}\u{0}")});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

/// Reads a continue token back into (snapshot revision, key to start after).
pub fn decode_continue(token: &str, prefix: &str) -> Result<(u64, String), ApiError> {
    use base64::Engine;
    let invalid = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| invalid("not base64"))?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|_| invalid("not JSON"))?;
    if doc.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(invalid(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let revision = doc
        .get("rv")
        .and_then(Value::as_u64)
        .filter(|rv| *rv > 0)
        .ok_or_else(|| invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let start = doc
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("encoded start key empty"))?;
    let start = start.strip_suffix('\u{0}').unwrap_or(start);
    if start.is_empty() || start.contains("..") || start.starts_with('/') {
        return Err(invalid("the start key is not a key in this collection"));
    }
    Ok((revision, format!("{prefix}{start}")))
}

/// Where a list stopped: the snapshot it read and, if it stopped at its limit, the continue token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListEnd {
    pub revision: u64,
    pub continue_token: Option<String>,
}

impl ListEnd {
    /// The list's `metadata`.
    pub fn metadata(&self) -> Value {
        let mut metadata = json!({"resourceVersion": self.revision.to_string()});
        if let Some(token) = &self.continue_token {
            metadata["continue"] = json!(token);
        }
        metadata
    }
}

/// LIST of a collection under `options`, as one `<Kind>List` object. Every item is in memory at
/// once: for answers, [`list_json`] writes them out one at a time instead.
pub fn list_with(
    store: &Store,
    r: &Resource,
    namespace: Option<&str>,
    selector: &super::selector::Selectors,
    options: &ListOptions,
) -> Result<Value, ApiError> {
    let mut items = Vec::new();
    let end = list_each(store, r, namespace, selector, options, &mut |obj| {
        items.push(obj);
        Ok(())
    })?;
    Ok(json!({
        "kind": format!("{}List", r.kind),
        "apiVersion": r.api_version(),
        "metadata": end.metadata(),
        "items": items,
    }))
}

/// LIST of a collection under `options`, written as the JSON answer item by item: one object is
/// decoded at a time, so a list of 10,000 pods costs its text, not 10,000 decoded objects.
pub fn list_json(
    store: &Store,
    r: &Resource,
    namespace: Option<&str>,
    selector: &super::selector::Selectors,
    options: &ListOptions,
) -> Result<Vec<u8>, ApiError> {
    let mut out = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"items\":[",
        r.kind,
        r.api_version()
    )
    .into_bytes();
    let mut first = true;
    let end = list_each(store, r, namespace, selector, options, &mut |obj| {
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, &obj)
            .map_err(|e| ApiError::new(500, "InternalError", format!("encoding a list: {e}")))
    })?;
    // Members of a JSON object are unordered: the metadata, known at the end, goes last.
    out.extend_from_slice(b"],\"metadata\":");
    out.extend_from_slice(end.metadata().to_string().as_bytes());
    out.push(b'}');
    Ok(out)
}

/// Calls `visit` with each object of the collection that `selector` picks, a page at a time when a
/// limit is given (reading on until the page is full, as kube-apiserver does with selectors).
pub fn list_each(
    store: &Store,
    r: &Resource,
    namespace: Option<&str>,
    selector: &super::selector::Selectors,
    options: &ListOptions,
    visit: &mut dyn FnMut(Value) -> Result<(), ApiError>,
) -> Result<ListEnd, ApiError> {
    let prefix = prefix(r, namespace);
    let current = store.revision();
    if let Some(wanted) = options.not_older_than
        && wanted > current
    {
        return Err(ApiError::from_store(
            crate::store::StoreError::FutureRevision {
                requested: wanted,
                current,
            },
            r.plural,
            "",
        ));
    }
    // The first page fixes the snapshot (now, unless the options name one); later pages read it.
    let mut at = options.at;
    let mut matched = 0;
    let mut start_after = options.start_after.clone();
    loop {
        let want = if options.limit == 0 {
            0
        } else {
            options.limit - matched
        };
        let page = store
            .list(&prefix, at, start_after.as_deref(), want)
            .map_err(|e| match e {
                crate::store::StoreError::Compacted { .. } if options.start_after.is_some() => ApiError::new(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                e => ApiError::from_store(e, r.plural, ""),
            })?;
        for kv in &page.items {
            if !selector.may_match_stored(&kv.value) {
                continue;
            }
            let obj = render(kv)?;
            if selector.matches(&obj) {
                matched += 1;
                visit(obj)?;
            }
        }
        at = Some(page.revision);
        let last = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            return Ok(ListEnd {
                revision: page.revision,
                continue_token: None,
            });
        }
        if options.limit != 0 && matched >= options.limit {
            return Ok(ListEnd {
                revision: page.revision,
                continue_token: last.map(|k| encode_continue(page.revision, &prefix, &k)),
            });
        }
        start_after = last;
    }
}

/// PUT of one object (or of its status): compare-and-swap on the given resourceVersion
/// (unconditional without one).
pub fn replace(
    store: &Store,
    r: &'static Resource,
    namespace: Option<&str>,
    name: &str,
    body: &[u8],
    options: impl Into<WriteOptions>,
    part: Part,
) -> Result<Written, ApiError> {
    let (obj, body_name) = parse_object(r, namespace, body)?;
    write_over(store, r, namespace, name, obj, &body_name, options.into(), part)
}

/// The object without what is not spec: metadata and status.
fn spec_of(obj: &Value) -> Value {
    let mut spec = obj.clone();
    if let Some(map) = spec.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    spec
}

/// Writes `obj` (already parsed) over the stored object `name`, keeping the fields the server owns;
/// compare-and-swap on the resourceVersion `obj` carries, if any.
#[allow(clippy::too_many_arguments)]
fn write_over(
    store: &Store,
    r: &'static Resource,
    namespace: Option<&str>,
    name: &str,
    mut obj: Value,
    body_name: &str,
    options: WriteOptions,
    part: Part,
) -> Result<Written, ApiError> {
    let validation = options.validation;
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
    if matches!(part, Part::Status | Part::Approval) {
        // Only the status changes; everything else stays as stored, but for the managed fields a
        // status apply computed.
        let status = obj.get("status").cloned();
        let managed = obj
            .pointer("/metadata/managedFields")
            .cloned()
            .filter(|_| options.applied);
        obj = old_obj.clone();
        match status {
            Some(s) => obj["status"] = s,
            None => {
                if let Some(map) = obj.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        if let Some(managed) = managed {
            obj["metadata"]["managedFields"] = managed;
        }
    } else if part == Part::Finalize {
        let finalizers = obj.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
        obj = old_obj.clone();
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        obj["spec"]["finalizers"] = finalizers;
    } else {
        // Fields the server owns are kept from the stored object.
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
                continue;
            };
            match old_obj.pointer(&format!("/metadata/{field}")) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        if r.has_status()
            && let Some(map) = obj.as_object_mut()
        {
            match old_obj.get("status") {
                Some(s) => map.insert("status".into(), s.clone()),
                None => map.remove("status"),
            };
        }
    }
    let (mut obj, warnings) = r.strategy.decode(obj, validation)?;
    if part.is_main() {
        admission::on_update(store, r, &old_obj, &mut obj)?;
    }
    if let Some(manager) = &options.manager {
        super::apply::record_update(
            r.strategy.merge_keys(),
            &r.api_version(),
            manager,
            part.subresource(),
            Some(&old_obj),
            &mut obj,
        );
    }
    if part.is_main() && r.tracks_generation() && spec_of(&obj) != spec_of(&old_obj) {
        let generation = old_obj
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        obj["metadata"]["generation"] = json!(generation + 1);
    }
    // What admission reserved for this write (a Service's new ports) goes back if it fails.
    let bytes = store_bytes(&obj);
    if options.dry_run {
        if part.is_main() {
            admission::release_dropped(store, r, &obj, &old_obj);
        }
        if let Some(rv) = expected.filter(|rv| *rv != old.mod_revision) {
            return Err(ApiError::from_store(
                crate::store::StoreError::Conflict {
                    key: k.clone(),
                    expected: rv,
                    actual: old.mod_revision,
                },
                r.plural,
                name,
            ));
        }
        limits::check_stored(&bytes)?;
        obj["metadata"]["resourceVersion"] = json!(old.mod_revision.to_string());
        return Ok((obj, warnings));
    }
    let written = limits::check_stored(&bytes).and_then(|()| {
        store
            .update(&k, bytes, expected)
            .map_err(|e| ApiError::from_store(e, r.plural, name))
    });
    let kv = match written {
        Ok(kv) => kv,
        Err(e) => {
            if part.is_main() {
                admission::release_dropped(store, r, &obj, &old_obj);
            }
            return Err(e);
        }
    };
    let written = render(&kv)?;
    if part.is_main() {
        admission::release_dropped(store, r, &old_obj, &written);
    }
    if deletion_complete(r, &written) {
        remove(store, r, &kv.key, kv.mod_revision, &written)?;
    }
    Ok((written, warnings))
}

/// Writes `obj` as it is over the stored object at `key` if that is still at `revision`: for the
/// server's own changes (binding a pod) that client writes may not make.
pub fn update_raw(
    store: &Store,
    r: &Resource,
    key: &str,
    obj: &Value,
    revision: u64,
) -> Result<Value, ApiError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kv = store
        .update(key, store_bytes(obj), Some(revision))
        .map_err(|e| ApiError::from_store(e, r.plural, name))?;
    render(&kv)
}

pub use super::patch::PatchKind;

/// PATCH of one object (or its status): applied to the current object and written with
/// compare-and-swap on its revision (or on the resourceVersion the patch names), retried when another
/// write came between.
#[allow(clippy::too_many_arguments)]
pub fn patch(
    store: &Store,
    r: &'static Resource,
    namespace: Option<&str>,
    name: &str,
    kind: PatchKind,
    body: &[u8],
    options: impl Into<WriteOptions>,
    part: Part,
) -> Result<Written, ApiError> {
    let options = options.into();
    let patch_doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
    let pinned = patch_doc.pointer("/metadata/resourceVersion").is_some();
    let mut attempts = 0;
    loop {
        let mut obj = get(store, r, namespace, name)?;
        // A patch that names a resourceVersion is checked against it; otherwise against the read.
        let revision = obj
            .pointer("/metadata/resourceVersion")
            .cloned()
            .filter(|_| !pinned);
        patch::apply(kind, r.strategy.merge_keys(), &mut obj, &patch_doc)?;
        match write_back(store, r, namespace, name, obj, revision, options.clone(), part) {
            Err(e) if e.reason == "Conflict" && !pinned && attempts < 5 => attempts += 1,
            other => return other,
        }
    }
}

/// Writes `obj`, made from the stored object read at `revision` (`None`: the revision `obj` names
/// itself), over it: through the same checks as a PUT, compare-and-swap on that revision.
#[allow(clippy::too_many_arguments)]
fn write_back(
    store: &Store,
    r: &'static Resource,
    namespace: Option<&str>,
    name: &str,
    mut obj: Value,
    revision: Option<Value>,
    options: WriteOptions,
    part: Part,
) -> Result<Written, ApiError> {
    if let (Some(meta), Some(rv)) = (obj.get_mut("metadata").and_then(Value::as_object_mut), revision) {
        meta.insert("resourceVersion".into(), rv);
    }
    let body = serde_json::to_vec(&obj).unwrap_or_default();
    let (parsed, body_name) = parse_object(r, namespace, &body)?;
    write_over(store, r, namespace, name, parsed, &body_name, options, part)
}

/// Server-side apply of `body` (the applied configuration, as JSON) to the object `name`, creating it
/// when it does not exist: (HTTP code, what was written).
pub fn server_side_apply(
    store: &Store,
    r: &'static Resource,
    namespace: Option<&str>,
    name: &str,
    body: &[u8],
    opts: &super::apply::ApplyOptions<'_>,
    options: WriteOptions,
) -> Result<(u16, Written), ApiError> {
    // The apply keeps managedFields itself.
    let options = WriteOptions {
        manager: None,
        applied: true,
        ..options
    };
    let mut applied: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the applied configuration is not an object: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration is not an object",
        ));
    }
    let (api_version, kind) = (
        applied
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        applied.get("kind").and_then(Value::as_str).unwrap_or_default(),
    );
    if api_version != r.api_version() || kind != r.kind {
        return Err(ApiError::bad_request(format!(
            "the applied configuration must have apiVersion {:?} and kind {:?} (got {api_version:?}, {kind:?})",
            r.api_version(),
            r.kind
        )));
    }
    match applied.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        Some(_) => {}
        None => applied["metadata"]["name"] = json!(name),
    }
    let mut attempts = 0;
    loop {
        let written = match get(store, r, namespace, name) {
            // A status is applied to an object that exists.
            Err(e) if e.code == 404 && opts.subresource.is_none() => {
                let obj = super::apply::for_create(r.strategy.merge_keys(), &r.api_version(), &applied, opts);
                let bytes = serde_json::to_vec(&obj).unwrap_or_default();
                create(store, r, namespace, &bytes, options.clone()).map(|w| (201, w))
            }
            Err(e) => return Err(e),
            Ok(current) => {
                let revision = current.pointer("/metadata/resourceVersion").cloned();
                let obj = super::apply::apply(
                    r.strategy.merge_keys(),
                    &r.api_version(),
                    &current,
                    &applied,
                    opts,
                )?;
                write_back(
                    store,
                    r,
                    namespace,
                    name,
                    obj,
                    revision,
                    options.clone(),
                    if opts.subresource == Some("status") {
                        Part::Status
                    } else {
                        Part::Main
                    },
                )
                .map(|w| (200, w))
            }
        };
        match written {
            // Another writer got there between the read and the write: apply again to what it made.
            Err(e) if matches!(e.reason, "Conflict" | "AlreadyExists") && attempts < 5 => attempts += 1,
            other => return other,
        }
    }
}

/// How dependents of a deleted object are treated (`propagationPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// The object goes now; the garbage collector deletes its dependents afterwards (the default).
    Background,
    /// The object stays (with the `foregroundDeletion` finalizer) until its blocking dependents are
    /// gone.
    Foreground,
    /// The dependents lose their owner reference and stay.
    Orphan,
}

/// The options of a DELETE (`DeleteOptions` body and query parameters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Propagation,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    /// `dryRun=All`: the preconditions are checked and the object answered, nothing deleted.
    pub dry_run: bool,
}

impl Default for DeleteOptions {
    fn default() -> Self {
        DeleteOptions {
            grace_period_seconds: None,
            propagation: Propagation::Background,
            precondition_uid: None,
            precondition_resource_version: None,
            dry_run: false,
        }
    }
}

impl DeleteOptions {
    /// Reads the options from a DELETE's body (a `DeleteOptions` object, possibly empty) and its
    /// `gracePeriodSeconds` / `propagationPolicy` query parameters.
    pub fn parse(body: &[u8], grace: Option<&str>, propagation: Option<&str>) -> Result<Self, ApiError> {
        let doc: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("the DeleteOptions are not JSON: {e}")))?
        };
        let grace =
            match (doc.get("gracePeriodSeconds"), grace) {
                (Some(v), _) => Some(
                    v.as_i64()
                        .ok_or_else(|| ApiError::bad_request("gracePeriodSeconds must be an integer"))?,
                ),
                (None, Some(q)) => Some(q.parse().map_err(|_| {
                    ApiError::bad_request(format!("gracePeriodSeconds {q:?} is not an integer"))
                })?),
                (None, None) => None,
            };
        let orphan = doc.get("orphanDependents").and_then(Value::as_bool);
        let policy = doc
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .or(propagation);
        let propagation = match (policy, orphan) {
            (Some("Background"), _) | (None, None | Some(false)) => Propagation::Background,
            (Some("Foreground"), _) => Propagation::Foreground,
            (Some("Orphan"), _) | (None, Some(true)) => Propagation::Orphan,
            (Some(other), _) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy {other:?} is not one of Background, Foreground, Orphan"
                )));
            }
        };
        let pre = |f: &str| {
            doc.pointer(&format!("/preconditions/{f}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(DeleteOptions {
            grace_period_seconds: grace,
            propagation,
            precondition_uid: pre("uid"),
            precondition_resource_version: pre("resourceVersion"),
            // kubectl sends a delete's dry run in the body (`"dryRun": ["All"]`).
            dry_run: doc
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|v| v == "All")),
        })
    }
}

/// The finalizers of an object.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Whether an object marked for deletion may go now: no finalizers left, and for a pod on a node,
/// its node has confirmed the containers stopped (a delete with grace period 0).
fn deletion_complete(r: &Resource, obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && finalizers(obj).is_empty()
        && r.strategy.deletion_complete(obj)
}

/// Removes an object from the store for good (compare-and-swap on `revision`), releasing what it
/// held. A namespace is normally empty by then (the namespace controller emptied it while it was
/// `Terminating`); whatever is still in it (its `kubernetes` finalizer was removed by hand, or the
/// controllers do not run) goes with it rather than lingering unseen.
fn remove(store: &Store, r: &Resource, k: &str, revision: u64, obj: &Value) -> Result<KeyValue, ApiError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kv = store
        .delete(k, Some(revision))
        .map_err(|e| ApiError::from_store(e, r.plural, name))?;
    admission::release(store, r, obj);
    if r.kind == "Namespace" {
        for inner in super::resources::RESOURCES.iter().filter(|x| x.namespaced) {
            let page = store
                .list(&prefix(inner, Some(name)), None, None, 0)
                .map_err(|e| ApiError::from_store(e, inner.plural, ""))?;
            for item in page.items {
                if let (Ok(inner_obj), Ok(_)) = (render(&item), store.delete(&item.key, None)) {
                    admission::release(store, inner, &inner_obj);
                }
            }
        }
    }
    Ok(kv)
}

/// DELETE of one object. Objects with finalizers, foreground deletions and pods running on a node
/// are marked (`deletionTimestamp`) and answered with the marked object; the rest go now.
pub fn delete(
    store: &Store,
    r: &Resource,
    namespace: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let k = key(r, namespace, name);
    let mut attempts = 0;
    loop {
        let kv = store.get(&k).ok_or_else(|| ApiError::not_found(r.plural, name))?;
        let obj = render(&kv)?;
        let conflict = |what: &str| {
            ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what}",
                    r.plural
                ),
            )
        };
        if let Some(uid) = &opts.precondition_uid
            && obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
        {
            return Err(conflict(&format!("UID in precondition: {uid}")));
        }
        if let Some(rv) = &opts.precondition_resource_version
            && *rv != kv.mod_revision.to_string()
        {
            return Err(conflict(&format!("ResourceVersion in precondition: {rv}")));
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let marked = obj.pointer("/metadata/deletionTimestamp").is_some();
        let mut fins = finalizers(&obj);
        match opts.propagation {
            Propagation::Foreground if !fins.iter().any(|f| f == "foregroundDeletion") => {
                fins.push("foregroundDeletion".into());
            }
            Propagation::Orphan if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
            _ => {}
        }
        let deletion = r.strategy.deletion(&obj, opts.grace_period_seconds);
        if fins.is_empty() && deletion == Deletion::Now {
            return match remove(store, r, &k, kv.mod_revision, &obj) {
                Ok(_) => Ok(obj),
                Err(e) if e.reason == "Conflict" && attempts < 5 => {
                    attempts += 1;
                    continue;
                }
                Err(e) => Err(e),
            };
        }
        let mut next = obj.clone();
        next["metadata"]["finalizers"] = json!(fins);
        if fins.is_empty() {
            next["metadata"].as_object_mut().map(|m| m.remove("finalizers"));
        }
        let current_grace = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if !marked {
            next["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        }
        r.strategy.mark_for_deletion(&mut next);
        // Set when the object is marked; then a shorter grace period may replace a longer one (0 is
        // the node confirming a pod's containers stopped).
        let grace = match deletion {
            Deletion::Graceful(g) => g,
            Deletion::Now | Deletion::Finalizing => 0,
        };
        if !marked || current_grace.is_some() {
            next["metadata"]["deletionGracePeriodSeconds"] =
                json!(current_grace.map_or(grace, |c| c.min(grace)));
        }
        if next == obj {
            return Ok(obj);
        }
        match store.update(&k, store_bytes(&next), Some(kv.mod_revision)) {
            Ok(written) => {
                let rendered = render(&written)?;
                if deletion_complete(r, &rendered) {
                    match remove(store, r, &k, written.mod_revision, &rendered) {
                        Ok(_) => return Ok(rendered),
                        Err(e) if e.reason == "Conflict" && attempts < 5 => {
                            attempts += 1;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                return Ok(rendered);
            }
            Err(crate::store::StoreError::Conflict { .. }) if attempts < 5 => attempts += 1,
            Err(e) => return Err(ApiError::from_store(e, r.plural, name)),
        }
    }
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
}
