//! Deployments, ReplicaSets and DaemonSets: a pod template under a selector. Their defaults (the
//! template's pod defaults included), validation (the selector must match the template's labels and
//! may not change), generation tracking, merge keys and `kubectl get` columns.

use std::marker::PhantomData;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{
    Column, Columns, Problems, Strategy, Write, column, default, immutable, int, list,
    pods::{POD_TEMPLATE, default_pod_spec, validate_pod_spec},
    text, wide,
};
use crate::api::{
    patch::{OBJECT_META, Schema, keyed, nested},
    selector::{self, selector_string},
    status::ApiError,
    typed::{self, FieldValidation},
};

/// The strategy of one workload kind, of Kubernetes type `T`.
pub struct Workload<T> {
    /// Defaults of the kind's own spec fields (the pod template's are common).
    defaults: fn(&mut Value),
    /// Its status columns, between NAME and AGE.
    status_columns: &'static [Column],
    /// Their cells.
    status_cells: fn(&Value) -> Vec<Value>,
    ty: PhantomData<fn() -> T>,
}

/// apps/v1 Deployments.
pub const DEPLOYMENTS: Workload<Deployment> = Workload {
    defaults: deployment_defaults,
    status_columns: &[
        column("Ready", "string"),
        column("Up-to-date", "integer"),
        column("Available", "integer"),
    ],
    status_cells: |obj| {
        vec![
            json!(format!(
                "{}/{}",
                int(obj, "/status/readyReplicas"),
                int(obj, "/spec/replicas")
            )),
            json!(int(obj, "/status/updatedReplicas")),
            json!(int(obj, "/status/availableReplicas")),
        ]
    },
    ty: PhantomData,
};

/// apps/v1 ReplicaSets.
pub const REPLICA_SETS: Workload<ReplicaSet> = Workload {
    defaults: |spec| default(spec, "replicas", json!(1)),
    status_columns: &[
        column("Desired", "integer"),
        column("Current", "integer"),
        column("Ready", "integer"),
    ],
    status_cells: |obj| {
        vec![
            json!(int(obj, "/spec/replicas")),
            json!(int(obj, "/status/replicas")),
            json!(int(obj, "/status/readyReplicas")),
        ]
    },
    ty: PhantomData,
};

/// apps/v1 DaemonSets.
pub const DAEMON_SETS: Workload<DaemonSet> = Workload {
    defaults: |spec| {
        default(
            spec,
            "updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
        );
        default(spec, "revisionHistoryLimit", json!(10));
    },
    status_columns: &[
        column("Desired", "integer"),
        column("Current", "integer"),
        column("Ready", "integer"),
        column("Up-to-date", "integer"),
        column("Available", "integer"),
    ],
    status_cells: |obj| {
        vec![
            json!(int(obj, "/status/desiredNumberScheduled")),
            json!(int(obj, "/status/currentNumberScheduled")),
            json!(int(obj, "/status/numberReady")),
            json!(int(obj, "/status/updatedNumberScheduled")),
            json!(int(obj, "/status/numberAvailable")),
        ]
    },
    ty: PhantomData,
};

fn deployment_defaults(spec: &mut Value) {
    default(spec, "replicas", json!(1));
    default(
        spec,
        "strategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
    );
    if spec.pointer("/strategy/type").and_then(Value::as_str) == Some("RollingUpdate")
        && let Some(strategy) = spec.get_mut("strategy")
    {
        default(strategy, "rollingUpdate", json!({}));
        if let Some(ru) = strategy.get_mut("rollingUpdate") {
            default(ru, "maxSurge", json!("25%"));
            default(ru, "maxUnavailable", json!("25%"));
        }
    }
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
}

impl<T> Workload<T> {
    fn apply_defaults(&self, obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec") else {
            return;
        };
        (self.defaults)(spec);
        if let Some(pod_spec) = spec.pointer_mut("/template/spec") {
            default_pod_spec(pod_spec);
        }
    }
}

impl<T: DeserializeOwned + Serialize> Strategy for Workload<T> {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<T>(obj, validation)
    }

    fn create(&self, w: &Write<'_>, obj: &mut Value) -> Result<(), ApiError> {
        self.apply_defaults(obj);
        validate_workload(obj).into_result(w.kind, obj)
    }

    fn update(&self, w: &Write<'_>, old: &Value, obj: &mut Value) -> Result<(), ApiError> {
        self.apply_defaults(obj);
        if old.pointer("/spec/selector") != obj.pointer("/spec/selector") {
            return Err(immutable(w.kind, obj, "spec.selector"));
        }
        validate_workload(obj).into_result(w.kind, obj)
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    /// The pod template, and status conditions by `type`. Deployment `spec.strategy` is
    /// `patchStrategy:"retainKeys"` (kubectl sends `$retainKeys` when the strategy type changes);
    /// DaemonSet `updateStrategy` has no tag; `selector.matchExpressions` has no strategy (replaced).
    fn merge_keys(&self) -> Schema {
        const WORKLOAD: Schema = &[
            nested("metadata", OBJECT_META),
            nested("spec", &[nested("template", POD_TEMPLATE)]),
            nested("status", &[keyed("conditions", "type", &[])]),
        ];
        WORKLOAD
    }

    fn columns(&self) -> Columns {
        const AFTER: &[Column] = &[
            wide("Containers", "string"),
            wide("Images", "string"),
            wide("Selector", "string"),
        ];
        Columns {
            before_age: self.status_columns,
            after_age: AFTER,
        }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        (self.status_cells)(obj)
    }

    fn cells_after_age(&self, obj: &Value) -> Vec<Value> {
        let containers: Vec<&Value> = list(obj, "/spec/template/spec/containers").collect();
        let joined = |field: &str| {
            containers
                .iter()
                .map(|c| text(c, field))
                .collect::<Vec<_>>()
                .join(",")
        };
        vec![
            json!(joined("/name")),
            json!(joined("/image")),
            json!(selector_string(obj.pointer("/spec/selector"))),
        ]
    }
}

fn validate_workload(obj: &Value) -> Problems {
    let mut p = Problems::default();
    let Some(spec) = obj.get("spec") else {
        p.add("spec", "Required value");
        return p;
    };
    if spec
        .get("replicas")
        .and_then(Value::as_i64)
        .is_some_and(|n| n < 0)
    {
        p.add(
            "spec.replicas",
            "Invalid value: must be greater than or equal to 0",
        );
    }
    let selector = spec.get("selector");
    let empty = selector.is_none_or(|s| {
        s.get("matchLabels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
            && s.get("matchExpressions")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
    });
    if empty {
        p.add("spec.selector", "Required value");
    } else if let Some(sel) = selector {
        let labels = spec
            .pointer("/template/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        if !selector::matches_label_selector(sel, &labels) {
            p.add(
                "spec.template.metadata.labels",
                format!("Invalid value: {labels}: `selector` does not match template `labels`"),
            );
        }
    }
    p.extend(validate_pod_spec(
        spec.pointer("/template/spec"),
        "spec.template.spec",
    ));
    p
}
