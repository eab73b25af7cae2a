//! Nodes: the podCIDR handed out ([`allocator`], as kube-controller-manager's node IPAM does) and
//! kept across updates, merge keys and `kubectl get nodes` columns.

use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

use super::{Column, Columns, Strategy, Write, column, joined, list, name_of, text};
use crate::api::{
    allocator::{self, Pool},
    patch::{OBJECT_META, Schema, keyed, nested, set},
    status::ApiError,
    typed::{self, FieldValidation},
};

/// The strategy of core/v1 Nodes.
pub struct Nodes;

/// The entry of the resource table.
pub const NODES: Nodes = Nodes;

impl Strategy for Nodes {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<Node>(obj, validation)
    }

    fn create(&self, w: &Write<'_>, obj: &mut Value) -> Result<(), ApiError> {
        allocate_pod_cidr(w, obj, None).map_err(|e| e.about(w.kind, name_of(obj)))
    }

    fn update(&self, w: &Write<'_>, old: &Value, obj: &mut Value) -> Result<(), ApiError> {
        allocate_pod_cidr(w, obj, Some(old)).map_err(|e| e.about(w.kind, name_of(obj)))
    }

    /// A node registers with its status (addresses, capacity, conditions).
    fn status_on_create(&self) -> bool {
        true
    }

    /// Its podCIDR, when it is one of the pool's.
    fn held(&self, obj: &Value) -> Vec<(&'static Pool, u32)> {
        obj.pointer("/spec/podCIDR")
            .and_then(Value::as_str)
            .and_then(allocator::POD_CIDRS.parse)
            .map(|v| (&allocator::POD_CIDRS, v))
            .into_iter()
            .collect()
    }

    /// NodeSpec `podCIDRs` merge as a set, `taints` have no strategy (replaced); NodeStatus
    /// `addresses` and `conditions` merge by `type`.
    fn merge_keys(&self) -> Schema {
        const NODE: Schema = &[
            nested("metadata", OBJECT_META),
            nested("spec", &[set("podCIDRs")]),
            nested(
                "status",
                &[keyed("addresses", "type", &[]), keyed("conditions", "type", &[])],
            ),
        ];
        NODE
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[column("Status", "string"), column("Roles", "string")];
        const AFTER: &[Column] = &[column("Version", "string")];
        Columns {
            before_age: BEFORE,
            after_age: AFTER,
        }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let ready = list(obj, "/status/conditions")
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
            .map(|c| text(c, "/status"));
        let mut status = match ready.as_deref() {
            Some("True") => "Ready".to_string(),
            _ => "NotReady".to_string(),
        };
        if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
            status.push_str(",SchedulingDisabled");
        }
        let roles = joined(
            obj.pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(str::to_string)),
            "<none>",
        );
        vec![json!(status), json!(roles)]
    }

    fn cells_after_age(&self, obj: &Value) -> Vec<Value> {
        vec![json!(text(obj, "/status/nodeInfo/kubeletVersion"))]
    }
}

fn allocate_pod_cidr(w: &Write<'_>, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let (store, who) = (w.store, w.owner.as_str());
    if obj.get("spec").is_none_or(Value::is_null) {
        obj["spec"] = json!({});
    }
    let old_cidr = old.and_then(|o| o.pointer("/spec/podCIDR")).cloned();
    match (obj.pointer("/spec/podCIDR").and_then(Value::as_str), &old_cidr) {
        (None | Some(""), Some(c)) => {
            obj["spec"]["podCIDR"] = c.clone();
            obj["spec"]["podCIDRs"] = json!([c]);
            return Ok(());
        }
        (Some(new), Some(c)) if Some(new) != c.as_str() => {
            return Err(ApiError::invalid_field(
                "spec.podCIDRs",
                "Forbidden: node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        (Some(_), Some(_)) => return Ok(()),
        _ => {}
    }
    match obj.pointer("/spec/podCIDR").and_then(Value::as_str) {
        Some(cidr) if !cidr.is_empty() => {
            // A podCIDR outside the pool (another cluster CIDR) is the node's own business.
            if let Some(v) = (allocator::POD_CIDRS.parse)(cidr) {
                allocator::reserve(store, &allocator::POD_CIDRS, v, who, "spec.podCIDR")?;
            }
            let cidr = cidr.to_string();
            obj["spec"]["podCIDRs"] = json!([cidr]);
        }
        _ => match allocator::allocate(store, &allocator::POD_CIDRS, who, "spec.podCIDR") {
            Ok(v) => {
                let cidr = (allocator::POD_CIDRS.format)(v);
                obj["spec"]["podCIDR"] = json!(cidr);
                obj["spec"]["podCIDRs"] = json!([cidr]);
            }
            // As kube-controller-manager's node IPAM: the node registers anyway (its pods get no
            // addresses until a range is free), and takes a range at a later update once one is.
            Err(e) if e.code == 422 => {
                tracing::warn!(node = %who, "CIDRNotAvailable: every /24 of the pod network is taken; the node registers without a podCIDR");
            }
            Err(e) => return Err(e),
        },
    }
    Ok(())
}
