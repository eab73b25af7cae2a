//! What is particular to a kind when it is written: defaults as the real API server sets them,
//! validation with its rules and messages (every invalid field reported, 422 `Invalid`), immutable
//! fields, and the values the cluster hands out ([`allocator`]: a Service's ClusterIP and NodePorts, a
//! Node's podCIDR), reserved before the object is written and released when it goes.

use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value, json};

use super::{allocator, names, resources::Resource, selector, status::ApiError};
use crate::store::Store;

/// How long pods tolerate a node that is not ready or unreachable before they are evicted, when
/// they do not say (kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`, 300). Set once at start.
static DEFAULT_TOLERATION_SECONDS: AtomicI64 = AtomicI64::new(300);

/// Sets the toleration pods get for not-ready and unreachable nodes.
pub fn set_default_toleration_seconds(seconds: i64) {
    DEFAULT_TOLERATION_SECONDS.store(seconds.max(0), Ordering::Relaxed);
}

/// Collected validation failures: (field path, message).
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, why: impl Into<String>) {
        self.0.push((field.into(), why.into()));
    }

    fn into_result(self, kind: &str, obj: &Value) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid_all(kind, name_of(obj), self.0))
    }
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn owner(r: &Resource, obj: &Value) -> String {
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if r.namespaced => format!("{}/{ns}/{}", r.plural, name_of(obj)),
        _ => format!("{}/{}", r.plural, name_of(obj)),
    }
}

/// Sets `obj[field]` to `value` when it is absent or null.
fn default(obj: &mut Value, field: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(field).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// A Secret's `stringData` folded into `data` (base64), as kube-apiserver stores Secrets: a write-only
/// convenience field, never stored or returned, whose keys win over `data`'s.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(strings) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let Some(strings) = strings.as_object() else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in strings {
        let text = v.as_str().unwrap_or_default();
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// The most bytes an object's annotations (keys and values) may hold, as kube-apiserver allows.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// What every object's metadata must be: label keys and values, annotation keys and their total
/// size, finalizer names (kube-apiserver's `ValidateObjectMeta`).
fn validate_metadata(obj: &Value) -> Problems {
    let mut p = Problems::default();
    let reasons = |why: Vec<String>| why.join(", ");
    for (key, value) in obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Err(why) = names::qualified_name(key) {
            p.add(
                "metadata.labels",
                format!("Invalid value: {key:?}: {}", reasons(why)),
            );
        }
        let value = value.as_str().unwrap_or_default();
        if let Err(why) = names::label_value(value) {
            p.add(
                format!("metadata.labels.{key}"),
                format!("Invalid value: {value:?}: {}", reasons(why)),
            );
        }
    }
    let mut annotation_bytes = 0;
    for (key, value) in obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Err(why) = names::qualified_name(&key.to_lowercase()) {
            p.add(
                "metadata.annotations",
                format!("Invalid value: {key:?}: {}", reasons(why)),
            );
        }
        annotation_bytes += key.len() + value.as_str().map_or(0, str::len);
    }
    if annotation_bytes > MAX_ANNOTATION_BYTES {
        p.add(
            "metadata.annotations",
            format!("Too long: must have at most {MAX_ANNOTATION_BYTES} bytes"),
        );
    }
    let finalizers = obj.pointer("/metadata/finalizers").and_then(Value::as_array);
    for (i, f) in finalizers.into_iter().flatten().enumerate() {
        let name = f.as_str().unwrap_or_default();
        if let Err(why) = names::finalizer(name) {
            p.add(
                format!("metadata.finalizers[{i}]"),
                format!("Invalid value: {name:?}: {}", reasons(why)),
            );
        }
    }
    p
}

/// Defaults, checks and reserves for a new object.
pub fn on_create(store: &Store, r: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    if r.kind == "Secret" {
        fold_string_data(obj);
    }
    validate_metadata(obj).into_result(r.kind, obj)?;
    validate_data(r.kind, obj).into_result(r.kind, obj)?;
    match r.kind {
        "Namespace" => {
            // The namespace controller's finalizer: a deleted namespace stays until it is empty.
            if !obj.get("spec").is_some_and(Value::is_object) {
                obj["spec"] = json!({});
            }
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            obj["status"] = json!({"phase": "Active"});
            Ok(())
        }
        "Pod" => {
            default_pod(obj);
            if let Some(spec) = obj.get_mut("spec") {
                default_tolerations(spec);
            }
            super::serviceaccounts::admit_pod(store, obj)?;
            validate_pod_spec(obj.get("spec"), "spec").into_result(r.kind, obj)?;
            let qos = qos_class(obj.get("spec"));
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
            Ok(())
        }
        "Service" => {
            default_service(obj);
            validate_service(obj).into_result(r.kind, obj)?;
            allocate_service(store, r, obj, None).map_err(|e| e.about(r.kind, name_of(obj)))
        }
        "Node" => allocate_pod_cidr(store, r, obj, None).map_err(|e| e.about(r.kind, name_of(obj))),
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            default_workload(r.kind, obj);
            validate_workload(obj).into_result(r.kind, obj)
        }
        "EndpointSlice" => {
            let mut p = Problems::default();
            if !matches!(
                obj.get("addressType").and_then(Value::as_str),
                Some("IPv4" | "IPv6" | "FQDN")
            ) {
                p.add(
                    "addressType",
                    "Unsupported value: must be one of IPv4, IPv6, FQDN",
                );
            }
            p.into_result(r.kind, obj)
        }
        _ => Ok(()),
    }
}

/// Keeps immutable fields, carries over what the server handed out, and checks an update.
pub fn on_update(store: &Store, r: &Resource, old: &Value, obj: &mut Value) -> Result<(), ApiError> {
    if r.kind == "Secret" {
        fold_string_data(obj);
    }
    validate_metadata(obj).into_result(r.kind, obj)?;
    validate_data(r.kind, obj).into_result(r.kind, obj)?;
    match r.kind {
        "Namespace" => {
            // Changed only through `namespaces/NAME/finalize`, as in Kubernetes.
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
        "Pod" => {
            default_pod(obj);
            let mutable_only = |spec: Option<&Value>| {
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
            };
            if mutable_only(obj.get("spec")) != mutable_only(old.get("spec")) {
                return Err(ApiError::invalid_all(
                    r.kind,
                    name_of(obj),
                    vec![(
                        "spec".into(),
                        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds`".into(),
                    )],
                ));
            }
            validate_pod_spec(obj.get("spec"), "spec").into_result(r.kind, obj)
        }
        "Service" => {
            default_service(obj);
            // A client that leaves the handed-out values out (kubectl apply does) keeps them.
            if obj
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
                && let Some(ip) = old.pointer("/spec/clusterIP")
            {
                obj["spec"]["clusterIP"] = ip.clone();
                if let Some(ips) = old.pointer("/spec/clusterIPs") {
                    obj["spec"]["clusterIPs"] = ips.clone();
                }
            }
            let old_ip = old.pointer("/spec/clusterIP");
            if old_ip.is_some() && obj.pointer("/spec/clusterIP") != old_ip {
                return Err(ApiError::invalid_all(
                    r.kind,
                    name_of(obj),
                    vec![(
                        "spec.clusterIPs[0]".into(),
                        "Invalid value: field is immutable".into(),
                    )],
                ));
            }
            validate_service(obj).into_result(r.kind, obj)?;
            allocate_service(store, r, obj, Some(old)).map_err(|e| e.about(r.kind, name_of(obj)))
        }
        "Node" => allocate_pod_cidr(store, r, obj, Some(old)).map_err(|e| e.about(r.kind, name_of(obj))),
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            default_workload(r.kind, obj);
            if old.pointer("/spec/selector") != obj.pointer("/spec/selector") {
                return Err(ApiError::invalid_all(
                    r.kind,
                    name_of(obj),
                    vec![("spec.selector".into(), "Invalid value: field is immutable".into())],
                ));
            }
            validate_workload(obj).into_result(r.kind, obj)
        }
        _ => Ok(()),
    }
}

/// Releases what a deleted object held. Also called after an update, with the values the object
/// no longer uses (see [`release_dropped`]).
pub fn release(store: &Store, r: &Resource, obj: &Value) {
    let who = owner(r, obj);
    match r.kind {
        "Service" => {
            for (pool, value) in service_values(obj) {
                allocator::release(store, pool, value, &who);
            }
        }
        "Node" => {
            if let Some(v) = pod_cidr_of(obj) {
                allocator::release(store, &allocator::POD_CIDRS, v, &who);
            }
        }
        _ => {}
    }
}

/// After an update: gives back what the old object held and the new one does not.
pub fn release_dropped(store: &Store, r: &Resource, old: &Value, new: &Value) {
    if r.kind != "Service" {
        return;
    }
    let kept = service_values(new);
    let who = owner(r, new);
    for (pool, value) in service_values(old) {
        if !kept.iter().any(|(p, v)| p.name == pool.name && *v == value) {
            allocator::release(store, pool, value, &who);
        }
    }
}

/// At start: drops reservations no object holds (a crash between reserving and writing).
pub fn repair(store: &Store) {
    let holds = |owner: &str, value: &str, read: &dyn Fn(&Value) -> Vec<String>| {
        store
            .get(&format!("/registry/{owner}"))
            .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .is_some_and(|obj| read(&obj).iter().any(|v| v == value))
    };
    let service_ips = |o: &Value| {
        service_values(o)
            .into_iter()
            .filter(|(p, _)| p.name == allocator::CLUSTER_IPS.name)
            .map(|(p, v)| (p.format)(v))
            .collect()
    };
    let service_ports = |o: &Value| {
        service_values(o)
            .into_iter()
            .filter(|(p, _)| p.name == allocator::NODE_PORTS.name)
            .map(|(p, v)| (p.format)(v))
            .collect()
    };
    let cidrs = |o: &Value| {
        o.pointer("/spec/podCIDR")
            .and_then(Value::as_str)
            .map(|s| vec![s.to_string()])
            .unwrap_or_default()
    };
    let dropped = allocator::repair(store, &allocator::CLUSTER_IPS, |o, v| holds(o, v, &service_ips))
        + allocator::repair(store, &allocator::NODE_PORTS, |o, v| holds(o, v, &service_ports))
        + allocator::repair(store, &allocator::POD_CIDRS, |o, v| holds(o, v, &cidrs));
    if dropped > 0 {
        tracing::info!(dropped, "released reservations no object held");
    }
}

// ---- ConfigMaps and Secrets ----

/// Most bytes a ConfigMap's or Secret's data may hold, keys included (kube-apiserver's 1 MiB).
const MAX_DATA_BYTES: usize = 1024 * 1024;

/// A key as kube-apiserver's `IsConfigMapKey` accepts it: the name of a file in a volume.
fn config_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.len() > 253 {
        return Err("must be between 1 and 253 characters");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name', or 'KEY_NAME', or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        );
    }
    if key == "." {
        return Err("must not be '.'");
    }
    if key.starts_with("..") {
        return Err("must not start with '..'");
    }
    Ok(())
}

/// The keys and size of a ConfigMap's `data`/`binaryData` or a Secret's `data`.
fn validate_data(kind: &str, obj: &Value) -> Problems {
    let mut p = Problems::default();
    let fields: &[&str] = match kind {
        "ConfigMap" => &["data", "binaryData"],
        "Secret" => &["data"],
        _ => return p,
    };
    let mut total = 0usize;
    let mut seen = std::collections::HashSet::new();
    for field in fields {
        for (key, value) in obj.get(*field).and_then(Value::as_object).into_iter().flatten() {
            if let Err(why) = config_key(key) {
                p.add(
                    format!("{field}[{key}]"),
                    format!("Invalid value: {key:?}: {why}"),
                );
            }
            if !seen.insert(key.as_str()) {
                p.add(
                    format!("{field}[{key}]"),
                    "Invalid value: duplicate of key present in data",
                );
            }
            let len = value.as_str().map_or(0, str::len);
            // binaryData and Secret data are base64: what they hold is three quarters of it.
            let bytes = if *field == "data" && kind == "ConfigMap" {
                len
            } else {
                len / 4 * 3
            };
            total += key.len() + bytes;
        }
    }
    if total > MAX_DATA_BYTES {
        p.add(
            "data",
            format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
        );
    }
    // A token Secret names its account (the tokens controller fills in the rest).
    if kind == "Secret"
        && obj.get("type").and_then(Value::as_str) == Some(super::serviceaccounts::LEGACY_TOKEN_TYPE)
        && obj
            .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        p.add(
            "metadata.annotations[kubernetes.io/service-account.name]",
            "Required value",
        );
    }
    p
}

// ---- Pods ----

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

fn default_pod_spec(spec: &mut Value) {
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

fn validate_pod_spec(spec: Option<&Value>, at: &str) -> Problems {
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

// ---- Services ----

fn default_service(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec") else {
        return;
    };
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if ty != "ExternalName" {
        default(spec, "ipFamilies", json!(["IPv4"]));
        default(spec, "ipFamilyPolicy", json!("SingleStack"));
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            default(p, "protocol", json!("TCP"));
            let port = p.get("port").cloned().unwrap_or(Value::Null);
            default(p, "targetPort", port);
        }
    }
}

fn validate_service(obj: &Value) -> Problems {
    let mut p = Problems::default();
    let Some(spec) = obj.get("spec") else {
        p.add("spec", "Required value");
        return p;
    };
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    if !matches!(ty, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        p.add(
            "spec.type",
            format!("Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        );
    }
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        p.add("spec.ports", "Required value");
    }
    let mut names = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&number) {
            p.add(
                format!("spec.ports[{i}].port"),
                format!("Invalid value: {number}: must be between 1 and 65535, inclusive"),
            );
        }
        let name = port.get("name").and_then(Value::as_str).unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            p.add(format!("spec.ports[{i}].name"), "Required value");
        } else if names.contains(&name) {
            p.add(
                format!("spec.ports[{i}].name"),
                format!("Duplicate value: \"{name}\""),
            );
        }
        names.push(name);
        let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
            p.add(
                format!("spec.ports[{i}].protocol"),
                format!("Unsupported value: \"{protocol}\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
            );
        }
        if port.get("nodePort").is_some() && !(ty == "NodePort" || ty == "LoadBalancer") {
            p.add(
                format!("spec.ports[{i}].nodePort"),
                "Forbidden: may not be used when `type` is 'ClusterIP'",
            );
        }
    }
    p
}

/// The pooled values a Service holds: its ClusterIP and NodePorts.
fn service_values(obj: &Value) -> Vec<(&'static allocator::Pool, u32)> {
    let mut out = Vec::new();
    if let Some(ip) = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(allocator::CLUSTER_IPS.parse)
    {
        out.push((&allocator::CLUSTER_IPS, ip));
    }
    for port in obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(np) = port.get("nodePort").and_then(Value::as_u64) {
            out.push((&allocator::NODE_PORTS, np as u32));
        }
    }
    out
}

fn allocate_service(
    store: &Store,
    r: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let who = owner(r, obj);
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    match obj.pointer("/spec/clusterIP").and_then(Value::as_str) {
        Some("None") => {
            obj["spec"]["clusterIPs"] = json!(["None"]);
        }
        Some(ip) if !ip.is_empty() => {
            let value = (allocator::CLUSTER_IPS.parse)(ip).ok_or_else(|| {
                ApiError::invalid_field(
                    "spec.clusterIPs[0]",
                    &format!("Invalid value: \"{ip}\": must be a valid IP address"),
                )
            })?;
            allocator::reserve(store, &allocator::CLUSTER_IPS, value, &who, "spec.clusterIPs[0]")?;
            obj["spec"]["clusterIPs"] = json!([ip]);
        }
        _ => {
            let value = allocator::allocate(store, &allocator::CLUSTER_IPS, &who, "spec.clusterIPs")?;
            let ip = (allocator::CLUSTER_IPS.format)(value);
            obj["spec"]["clusterIP"] = json!(ip);
            obj["spec"]["clusterIPs"] = json!([ip]);
        }
    }
    let wants_node_ports = ty == "NodePort" || ty == "LoadBalancer";
    let old_ports: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (i, port) in ports.iter_mut().enumerate() {
        if !wants_node_ports {
            port.as_object_mut().map(|m| m.remove("nodePort"));
            continue;
        }
        let field = format!("spec.ports[{i}].nodePort");
        if port.get("nodePort").is_none() {
            // An update keeps the port it had for the same port and protocol.
            let same = old_ports
                .iter()
                .find(|o| o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol"));
            if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                port["nodePort"] = np.clone();
            }
        }
        match port.get("nodePort").and_then(Value::as_u64) {
            Some(np) => allocator::reserve(store, &allocator::NODE_PORTS, np as u32, &who, &field)?,
            None => {
                let np = allocator::allocate(store, &allocator::NODE_PORTS, &who, &field)?;
                port["nodePort"] = json!(np);
            }
        }
    }
    Ok(())
}

// ---- Nodes ----

fn pod_cidr_of(obj: &Value) -> Option<u32> {
    obj.pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .and_then(allocator::POD_CIDRS.parse)
}

fn allocate_pod_cidr(
    store: &Store,
    r: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let who = owner(r, obj);
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
                allocator::reserve(store, &allocator::POD_CIDRS, v, &who, "spec.podCIDR")?;
            }
            let cidr = cidr.to_string();
            obj["spec"]["podCIDRs"] = json!([cidr]);
        }
        _ => match allocator::allocate(store, &allocator::POD_CIDRS, &who, "spec.podCIDR") {
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

// ---- Workloads ----

fn default_workload(kind: &str, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec") else {
        return;
    };
    match kind {
        "Deployment" => {
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
        "ReplicaSet" => default(spec, "replicas", json!(1)),
        "DaemonSet" => {
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default(spec, "revisionHistoryLimit", json!(10));
        }
        _ => {}
    }
    if let Some(pod_spec) = spec.pointer_mut("/template/spec") {
        default_pod_spec(pod_spec);
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
    for (f, w) in validate_pod_spec(spec.pointer("/template/spec"), "spec.template.spec").0 {
        p.add(f, w);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_is_stored_as_data() {
        let mut secret =
            json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "two", "c": "three"}});
        fold_string_data(&mut secret);
        assert_eq!(
            secret,
            json!({"data": {"a": "eA==", "b": "dHdv", "c": "dGhyZWU="}})
        );
    }

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
