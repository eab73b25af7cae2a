//! Namespaces: the namespace controller's `kubernetes` finalizer on every new namespace, which only
//! `namespaces/NAME/finalize` may change; a deleted namespace stays `Terminating` while its content
//! is deleted. (What goes with a namespace removed for good is the registry's business:
//! `objects::remove`.)

use k8s_openapi::api::core::v1::Namespace;
use serde_json::{Value, json};

use super::{Column, Columns, Deletion, Strategy, Write, column, text};
use crate::api::{
    patch::{OBJECT_META, Schema, keyed, nested},
    status::ApiError,
    typed::{self, FieldValidation},
};

/// The strategy of core/v1 Namespaces.
pub struct Namespaces;

/// The entry of the resource table.
pub const NAMESPACES: Namespaces = Namespaces;

/// A namespace's `spec.finalizers`: while any is left (`kubernetes`, until the namespace controller
/// has deleted its content), a deleted namespace stays, `Terminating`.
pub fn namespace_finalizers(ns: &Value) -> Vec<String> {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

impl Strategy for Namespaces {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<Namespace>(obj, validation)
    }

    fn create(&self, _w: &Write<'_>, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        if obj.pointer("/spec/finalizers").is_none() {
            obj["spec"]["finalizers"] = json!(["kubernetes"]);
        }
        obj["status"] = json!({"phase": "Active"});
        Ok(())
    }

    /// `spec.finalizers` changes only through `namespaces/NAME/finalize`, as in Kubernetes.
    fn update(&self, _w: &Write<'_>, old: &Value, obj: &mut Value) -> Result<(), ApiError> {
        let finalizers = old.pointer("/spec/finalizers").cloned();
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        match finalizers {
            Some(f) => obj["spec"]["finalizers"] = f,
            None => {
                obj["spec"].as_object_mut().map(|m| m.remove("finalizers"));
            }
        }
        Ok(())
    }

    fn deletion(&self, obj: &Value, _requested_grace: Option<i64>) -> Deletion {
        if namespace_finalizers(obj).is_empty() {
            Deletion::Now
        } else {
            Deletion::Finalizing
        }
    }

    fn mark_for_deletion(&self, obj: &mut Value) {
        if !obj.get("status").is_some_and(Value::is_object) {
            obj["status"] = json!({});
        }
        obj["status"]["phase"] = json!("Terminating");
    }

    fn deletion_complete(&self, obj: &Value) -> bool {
        namespace_finalizers(obj).is_empty()
    }

    /// `spec.finalizers` has no strategy (replaced); status conditions merge by `type`.
    fn merge_keys(&self) -> Schema {
        const NAMESPACE: Schema = &[
            nested("metadata", OBJECT_META),
            nested("status", &[keyed("conditions", "type", &[])]),
        ];
        NAMESPACE
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[column("Status", "string")];
        Columns {
            before_age: BEFORE,
            after_age: &[],
        }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(text(obj, "/status/phase"))]
    }
}
