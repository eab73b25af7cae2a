//! Pods: defaults as kube-apiserver and its admission plugins set them (pull policy, DNS policy,
//! the service account and its token volume, tolerations of not-ready and unreachable nodes), the
//! spec's validation, the few fields an update may change, QoS class, graceful deletion while the
//! node stops the containers, and `kubectl get pods` columns.

use std::sync::atomic::{AtomicI64, Ordering};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::{
    Column, Columns, Deletion, Problems, Strategy, Write, column, default, int, list, name_of, text, wide,
};
use crate::api::{
    names,
    patch::{OBJECT_META, Schema, keyed, keyed_also_by, nested},
    serviceaccounts,
    status::ApiError,
    typed::{self, FieldValidation},
};

/// How long pods tolerate a node that is not ready or unreachable before they are evicted, when
/// they do not say (kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`, 300). Set once at start.
static DEFAULT_TOLERATION_SECONDS: AtomicI64 = AtomicI64::new(300);

/// Sets the toleration pods get for not-ready and unreachable nodes.
pub fn set_default_toleration_seconds(seconds: i64) {
    DEFAULT_TOLERATION_SECONDS.store(seconds.max(0), Ordering::Relaxed);
}

/// The strategy of core/v1 Pods.
pub struct Pods;

/// The entry of the resource table.
pub const PODS: Pods = Pods;

/// The spec fields an update may change (kube's `ValidatePodUpdate`): images, deadlines, tolerations
/// and the grace period.
fn without_mutable_fields(spec: Option<&Value>) -> Value {
    let mut s = spec.cloned().unwrap_or(Value::Null);
    for list in ["containers", "initContainers"] {
        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                c.as_object_mut().map(|m| m.remove("image"));
            }
        }
    }
    if let Some(m) = s.as_object_mut() {
        for f in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
        ] {
            m.remove(f);
        }
    }
    s
}

impl Strategy for Pods {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<Pod>(obj, validation)
    }

    fn create(&self, w: &Write<'_>, obj: &mut Value) -> Result<(), ApiError> {
        default_pod(obj);
        if let Some(spec) = obj.get_mut("spec") {
            default_tolerations(spec);
        }
        if !is_mirror_pod(obj) {
            serviceaccounts::admit_pod(w.store, obj)?;
        }
        validate_pod_spec(obj.get("spec"), "spec").into_result(w.kind, obj)?;
        let qos = qos_class(obj.get("spec"));
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        Ok(())
    }

    fn update(&self, w: &Write<'_>, old: &Value, obj: &mut Value) -> Result<(), ApiError> {
        default_pod(obj);
        if without_mutable_fields(obj.get("spec")) != without_mutable_fields(old.get("spec")) {
            return Err(ApiError::invalid_all(
                w.kind,
                name_of(obj),
                vec![(
                    "spec".into(),
                    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds`".into(),
                )],
            ));
        }
        validate_pod_spec(obj.get("spec"), "spec").into_result(w.kind, obj)
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    /// A pod running on a node is marked and stays until the node has stopped its containers and
    /// confirms with a delete of grace period 0; a pod on no node, or one that has finished, goes.
    fn deletion(&self, obj: &Value, requested_grace: Option<i64>) -> Deletion {
        let on_node = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
            && !obj
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let grace = requested_grace.unwrap_or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
        });
        if on_node && grace > 0 {
            Deletion::Graceful(grace)
        } else {
            Deletion::Now
        }
    }

    fn deletion_complete(&self, obj: &Value) -> bool {
        obj.pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|g| g == 0)
    }

    fn merge_keys(&self) -> Schema {
        POD
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[
            column("Ready", "string"),
            column("Status", "string"),
            column("Restarts", "string"),
        ];
        const AFTER: &[Column] = &[wide("IP", "string"), wide("Node", "string")];
        Columns {
            before_age: BEFORE,
            after_age: AFTER,
        }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let total = list(obj, "/spec/containers").count();
        let ready = list(obj, "/status/containerStatuses")
            .filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true))
            .count();
        let restarts: i64 = list(obj, "/status/containerStatuses")
            .map(|s| int(s, "/restartCount"))
            .sum();
        vec![
            json!(format!("{ready}/{total}")),
            json!(pod_status(obj)),
            json!(restarts.to_string()),
        ]
    }

    fn cells_after_age(&self, obj: &Value) -> Vec<Value> {
        let or_none = |s: String| if s.is_empty() { "<none>".to_string() } else { s };
        vec![
            json!(or_none(text(obj, "/status/podIP"))),
            json!(or_none(text(obj, "/spec/nodeName"))),
        ]
    }
}

/// What `kubectl get pods` shows as STATUS.
fn pod_status(obj: &Value) -> String {
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    for s in list(obj, "/status/containerStatuses") {
        if let Some(reason) = s.pointer("/state/waiting/reason").and_then(Value::as_str) {
            return reason.into();
        }
        if let Some(reason) = s.pointer("/state/terminated/reason").and_then(Value::as_str) {
            return reason.into();
        }
    }
    let phase = text(obj, "/status/phase");
    if phase.is_empty() { "Pending".into() } else { phase }
}

// ---- Merge keys ----

/// core/v1 Container and EphemeralContainerCommon (same tags). `envFrom` and `resizePolicy` have no
/// strategy (replaced). Ports are one per port and protocol for server-side apply.
const CONTAINER: Schema = &[
    keyed_also_by("ports", "containerPort", &["protocol"], &[]),
    keyed("env", "name", &[]),
    keyed("volumeMounts", "mountPath", &[]),
    keyed("volumeDevices", "devicePath", &[]),
];

/// core/v1 PodSpec. `volumes` and `resourceClaims` are `merge,retainKeys`: their elements are
/// one-of unions, so kubectl sends `$retainKeys` in them (honoured wherever it appears, as in Go).
/// `tolerations` and `readinessGates` have no strategy (replaced). `topologySpreadConstraints` merges
/// by `topologyKey` alone; server-side apply tells them apart by `whenUnsatisfiable` too.
const POD_SPEC: Schema = &[
    keyed("volumes", "name", &[]),
    keyed("initContainers", "name", CONTAINER),
    keyed("containers", "name", CONTAINER),
    keyed("ephemeralContainers", "name", CONTAINER),
    keyed("imagePullSecrets", "name", &[]),
    keyed("hostAliases", "ip", &[]),
    keyed_also_by(
        "topologySpreadConstraints",
        "topologyKey",
        &["whenUnsatisfiable"],
        &[],
    ),
    keyed("schedulingGates", "name", &[]),
    keyed("resourceClaims", "name", &[]),
];

/// core/v1 PodStatus. `containerStatuses`, `initContainerStatuses` and `ephemeralContainerStatuses`
/// have no strategy (replaced).
const POD_STATUS: Schema = &[
    keyed("conditions", "type", &[]),
    keyed("podIPs", "ip", &[]),
    keyed("hostIPs", "ip", &[]),
    keyed("resourceClaimStatuses", "name", &[]),
];

/// core/v1 PodTemplateSpec, where workload controllers keep their pods' spec.
pub(super) const POD_TEMPLATE: Schema = &[nested("metadata", OBJECT_META), nested("spec", POD_SPEC)];

/// core/v1 Pod.
const POD: Schema = &[
    nested("metadata", OBJECT_META),
    nested("spec", POD_SPEC),
    nested("status", POD_STATUS),
];

// ---- Defaults and validation ----

/// Whether `pod` is a mirror pod: a node's copy of one of its static pods.
pub fn is_mirror_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
}

/// Defaults of a pod's spec. A mirror pod gets no service account: kube-apiserver's ServiceAccount
/// admission skips them (and NodeRestriction refuses one that names one).
fn default_pod(pod: &mut Value) {
    let mirror = is_mirror_pod(pod);
    if let Some(spec) = pod.get_mut("spec") {
        let named = spec.get("serviceAccountName").is_some();
        default_pod_spec(spec);
        if mirror
            && !named
            && let Some(map) = spec.as_object_mut()
        {
            map.remove("serviceAccountName");
        }
    }
}

pub(super) fn default_pod_spec(spec: &mut Value) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    default(spec, "serviceAccountName", json!("default"));
    default(spec, "priority", json!(0));
    default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                let tag = image
                    .rsplit('/')
                    .next()
                    .and_then(|last| last.split_once(':'))
                    .map(|(_, t)| t);
                let policy = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
                    "IfNotPresent"
                } else {
                    "Always"
                };
                default(c, "imagePullPolicy", json!(policy));
                default(c, "terminationMessagePath", json!("/dev/termination-log"));
                default(c, "terminationMessagePolicy", json!("File"));
                default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
    // As Kubernetes' SetDefaults_Volume: a volume that names no source is an emptyDir.
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in volumes {
            let has_source = v.as_object().is_some_and(|m| m.keys().any(|k| k != "name"));
            if !has_source && let Some(m) = v.as_object_mut() {
                m.insert("emptyDir".into(), json!({}));
            }
        }
    }
}

/// The DefaultTolerationSeconds admission plugin: a new pod stays this long on a node that stops
/// being ready or reachable (templates are left alone, as in Kubernetes).
fn default_tolerations(spec: &mut Value) {
    let tolerations = spec
        .as_object_mut()
        .map(|m| m.entry("tolerations").or_insert_with(|| json!([])));
    if let Some(Value::Array(ts)) = tolerations {
        for taint in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
            let has = ts.iter().any(|t| {
                t.get("key").and_then(Value::as_str) == Some(taint)
                    || (t.get("key").is_none() && t.get("operator").and_then(Value::as_str) == Some("Exists"))
            });
            if !has {
                let seconds = DEFAULT_TOLERATION_SECONDS.load(Ordering::Relaxed);
                ts.push(json!({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
            }
        }
    }
}

pub(super) fn validate_pod_spec(spec: Option<&Value>, at: &str) -> Problems {
    let mut p = Problems::default();
    let Some(spec) = spec else {
        p.add(at, "Required value");
        return p;
    };
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        p.add(format!("{at}.containers"), "Required value");
    }
    let mut seen = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = format!("{at}.{list}[{i}]");
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() {
                p.add(format!("{field}.name"), "Required value");
            } else if let Err(why) = names::validate_name(name, true) {
                p.add(
                    format!("{field}.name"),
                    format!("Invalid value: \"{name}\": {why}"),
                );
            } else if seen.contains(&name) {
                p.add(format!("{field}.name"), format!("Duplicate value: \"{name}\""));
            }
            seen.push(name);
            if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
                p.add(format!("{field}.image"), "Required value");
            }
        }
    }
    let restart = spec
        .get("restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !matches!(restart, "Always" | "OnFailure" | "Never") {
        p.add(
            format!("{at}.restartPolicy"),
            format!(
                "Unsupported value: \"{restart}\": supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
        );
    }
    p
}

/// The pod's QoS class from its containers' requests and limits.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let has = |c: &Value, what: &str| {
        c.pointer(&format!("/resources/{what}"))
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
    };
    if containers
        .iter()
        .all(|c| !has(c, "requests") && !has(c, "limits"))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let limits = c.pointer("/resources/limits");
        ["cpu", "memory"].iter().all(|res| {
            let limit = limits.and_then(|l| l.get(*res));
            let request = c.pointer(&format!("/resources/requests/{res}")).or(limit);
            limit.is_some() && request == limit
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(Some(&json!({"containers": [{"name": "a"}]}))),
            "BestEffort"
        );
        let limited = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(Some(&limited)), "Guaranteed");
        let requested = json!({"containers": [{"resources": {"requests": {"cpu": "100m"}}}]});
        assert_eq!(qos_class(Some(&requested)), "Burstable");
    }

    #[test]
    fn pod_defaults_and_pull_policy() {
        let mut spec = json!({"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "reg:5000/x:1.0"}]});
        default_pod_spec(&mut spec);
        default_tolerations(&mut spec);
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(2));
        assert_eq!(spec["restartPolicy"], "Always");
        let mut spec = json!({"containers": [], "volumes": [{"name": "bare"}, {"name": "h", "hostPath": {"path": "/x"}}]});
        default_pod_spec(&mut spec);
        assert_eq!(spec["volumes"][0], json!({"name": "bare", "emptyDir": {}}));
        assert!(spec["volumes"][1].get("emptyDir").is_none());
        let bad = validate_pod_spec(
            Some(&json!({"containers": [{"name": "A"}, {"name": "A", "image": "x"}]})),
            "spec",
        );
        let fields: Vec<&str> = bad.0.iter().map(|(f, _)| f.as_str()).collect();
        assert!(
            fields.contains(&"spec.containers[0].name") && fields.contains(&"spec.containers[0].image"),
            "{fields:?}"
        );
    }
}
