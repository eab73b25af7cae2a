//! What is particular to each kind, in one place per kind: kube-apiserver's registry "strategy".
//!
//! The generic object registry ([`super::objects`]) creates, updates, patches and deletes any kind
//! the same way; where kinds differ it asks the kind's [`Strategy`], which every entry of the
//! resource table ([`super::resources::RESOURCES`]) carries: the Kubernetes type its objects go
//! through, defaults and validation (every invalid field reported, 422 `Invalid`), immutable fields,
//! the values it takes from the cluster's pools ([`super::allocator`]), how a deletion waits,
//! strategic-merge-patch keys ([`super::patch`]) and `kubectl get` columns ([`super::table`]).
//!
//! One file per kind (or family of kinds sharing a type, like the workloads); a kind with no rules
//! of its own uses [`Plain`].

mod certificates;
mod config;
mod endpoints;
mod events;
mod leases;
mod namespaces;
mod nodes;
mod pods;
mod rbac;
mod serviceaccounts;
mod services;
mod workloads;

use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

pub use certificates::CERTIFICATE_SIGNING_REQUESTS;
pub use config::{CONFIG_MAPS, SECRETS};
pub use endpoints::{ENDPOINT_SLICES, ENDPOINTS};
pub use events::EVENTS;
pub use leases::LEASES;
pub use namespaces::{NAMESPACES, namespace_finalizers};
pub use nodes::NODES;
pub use pods::{PODS, is_mirror_pod, set_default_toleration_seconds};
pub use rbac::{CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, ROLE_BINDINGS, ROLES};
pub use serviceaccounts::SERVICE_ACCOUNTS;
pub use services::SERVICES;
pub use workloads::{DAEMON_SETS, DEPLOYMENTS, REPLICA_SETS};

use super::{
    allocator::Pool,
    patch::{self, Schema},
    status::ApiError,
    typed::{self, FieldValidation},
};
use crate::store::Store;

/// The rules of one kind. Every method but [`Strategy::decode`] has the default of a kind without
/// rules of its own.
pub trait Strategy: Sync {
    /// `obj` through the kind's Kubernetes type (fields of the wrong type refused, unknown ones
    /// handled as `validation` says), and the warnings to send.
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError>;

    /// Defaults, validation and reservations of a new object (its metadata already checked).
    fn create(&self, _w: &Write<'_>, _obj: &mut Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// The same for a replacement of `old`: immutable fields, values handed out kept.
    fn update(&self, _w: &Write<'_>, _old: &Value, _obj: &mut Value) -> Result<(), ApiError> {
        Ok(())
    }

    /// The pooled values `obj` holds (a Service's ClusterIP and NodePorts, a Node's podCIDR): given
    /// back when it goes or stops using them, and the reservations [`super::admission::repair`] keeps.
    fn held(&self, _obj: &Value) -> Vec<(&'static Pool, u32)> {
        Vec::new()
    }

    /// Whether a create keeps the status it is sent (a node registers with its status); for other
    /// kinds with a status subresource, status is the controllers' to write.
    fn status_on_create(&self) -> bool {
        false
    }

    /// Whether `metadata.generation` counts changes of the spec (workload controllers compare it
    /// with `status.observedGeneration`).
    fn tracks_generation(&self) -> bool {
        false
    }

    /// Whether a DELETE only marks `obj` while something else finishes (a pod's node stopping its
    /// containers, a namespace being emptied), and how: the grace period a pod gets, `None` when
    /// it may go at once.
    fn deletion(&self, _obj: &Value, _requested_grace: Option<i64>) -> Deletion {
        Deletion::Now
    }

    /// What marking `obj` for deletion changes besides its metadata (a namespace's phase).
    fn mark_for_deletion(&self, _obj: &mut Value) {}

    /// Whether an object marked for deletion, with no finalizers left, may go now.
    fn deletion_complete(&self, _obj: &Value) -> bool {
        true
    }

    /// The fields whose lists strategic merge patch merges (kubectl's `patchMergeKey`s).
    fn merge_keys(&self) -> Schema {
        patch::METADATA_ONLY
    }

    /// `kubectl get` columns between NAME and AGE, and those after AGE (mostly `-o wide` ones).
    fn columns(&self) -> Columns {
        Columns::NONE
    }

    /// The cells of [`Strategy::columns`]' first list for `obj`.
    fn cells(&self, _obj: &Value) -> Vec<Value> {
        Vec::new()
    }

    /// The cells of [`Strategy::columns`]' second list.
    fn cells_after_age(&self, _obj: &Value) -> Vec<Value> {
        Vec::new()
    }
}

/// What a strategy knows of the write at hand.
pub struct Write<'a> {
    /// Where reservations are taken and other objects looked up.
    pub store: &'a Store,
    /// The object's kind, for messages.
    pub kind: &'a str,
    /// Who holds the object's reservations: its store path below `/registry/` (see [`owner`]).
    pub owner: String,
}

/// How a DELETE goes for one object (see [`Strategy::deletion`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Removed at once (unless finalizers hold it).
    Now,
    /// Marked with this grace period; the node confirms with a delete of grace 0.
    Graceful(i64),
    /// Marked `Terminating` until a controller finishes (a namespace's spec finalizers).
    Finalizing,
}

/// One column of a `kubectl get` table.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    /// OpenAPI type: `string` or `integer`.
    pub ty: &'static str,
    /// 0: always shown; 1: with `-o wide`.
    pub priority: u8,
}

/// A column always shown.
pub const fn column(name: &'static str, ty: &'static str) -> Column {
    Column {
        name,
        ty,
        priority: 0,
    }
}

/// A column shown with `-o wide`.
pub const fn wide(name: &'static str, ty: &'static str) -> Column {
    Column {
        name,
        ty,
        priority: 1,
    }
}

/// A kind's columns around AGE.
#[derive(Debug)]
pub struct Columns {
    pub before_age: &'static [Column],
    pub after_age: &'static [Column],
}

impl Columns {
    /// NAME and AGE only.
    pub const NONE: Columns = Columns {
        before_age: &[],
        after_age: &[],
    };
}

/// A kind with no rules of its own, going through the Kubernetes type `T`.
pub struct Plain<T>(PhantomData<fn() -> T>);

impl<T> Plain<T> {
    pub const fn new() -> Self {
        Plain(PhantomData)
    }
}

impl<T> Default for Plain<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: DeserializeOwned + Serialize> Strategy for Plain<T> {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<T>(obj, validation)
    }
}

/// Kinds that are answered and never stored (access and token reviews): nothing decodes into them
/// through the registry.
pub struct NotStored;

impl Strategy for NotStored {
    fn decode(&self, _obj: Value, _validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "this kind is answered, never stored".to_string(),
        ))
    }
}

/// The strategy of kinds answered and never stored.
pub const NOT_STORED: NotStored = NotStored;

// ---- Helpers shared by the kinds ----

/// The value at `pointer` as text (strings unquoted; empty when absent or null).
pub fn text(obj: &Value, pointer: &str) -> String {
    match obj.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// The integer at `pointer`, or 0.
pub fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The elements of the array at `pointer` (none when it is not one).
pub fn list<'a>(obj: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Values joined by commas as kubectl shows them: `none` for no value, at most three and a count.
pub fn joined(values: impl Iterator<Item = String>, none: &str) -> String {
    let all: Vec<String> = values.collect();
    if all.is_empty() {
        none.to_string()
    } else if all.len() > 3 {
        format!("{} + {} more...", all[..3].join(","), all.len() - 3)
    } else {
        all.join(",")
    }
}

/// Collected validation failures: (field path, message).
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<(String, String)>);

impl Problems {
    pub(super) fn add(&mut self, field: impl Into<String>, why: impl Into<String>) {
        self.0.push((field.into(), why.into()));
    }

    /// Adds every problem of `other`.
    pub(super) fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// `Ok` when there are none, else one 422 naming them all.
    pub(super) fn into_result(self, kind: &str, obj: &Value) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid_all(kind, name_of(obj), self.0))
    }
}

/// `metadata.name`, or empty.
pub(super) fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Who holds a reservation: the object's store path below `/registry/` (`plural/[ns/]name`).
pub fn owner(plural: &str, namespaced: bool, obj: &Value) -> String {
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if namespaced => format!("{plural}/{ns}/{}", name_of(obj)),
        _ => format!("{plural}/{}", name_of(obj)),
    }
}

/// Sets `obj[field]` to `value` when it is absent or null.
pub(super) fn default(obj: &mut Value, field: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(field).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// The 422 of a field that may not change.
pub(super) fn immutable(kind: &str, obj: &Value, field: &str) -> ApiError {
    ApiError::invalid_all(
        kind,
        name_of(obj),
        vec![(field.into(), "Invalid value: field is immutable".into())],
    )
}
