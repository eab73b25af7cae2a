//! Services: defaults (type, affinity, IP families, traffic policies, target ports), validation,
//! the ClusterIP and NodePorts handed out ([`allocator`]) and kept across updates, merge keys and
//! `kubectl get services` columns.

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use super::{
    Column, Columns, Problems, Strategy, Write, column, default, immutable, joined, list, name_of, text, wide,
};
use crate::api::{
    allocator::{self, Pool},
    patch::{OBJECT_META, Schema, keyed, keyed_also_by, nested},
    status::ApiError,
    typed::{self, FieldValidation},
};

/// The strategy of core/v1 Services.
pub struct Services;

/// The entry of the resource table.
pub const SERVICES: Services = Services;

impl Strategy for Services {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<Service>(obj, validation)
    }

    fn create(&self, w: &Write<'_>, obj: &mut Value) -> Result<(), ApiError> {
        default_service(obj);
        validate_service(obj).into_result(w.kind, obj)?;
        allocate_service(w, obj, None).map_err(|e| e.about(w.kind, name_of(obj)))
    }

    fn update(&self, w: &Write<'_>, old: &Value, obj: &mut Value) -> Result<(), ApiError> {
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
        // kube-apiserver drops a health-check port the Service no longer needs (unless the client
        // sets a new one, which validation refuses), and keeps the one a client left out.
        let old_check = old.pointer("/spec/healthCheckNodePort").cloned();
        let check = obj.pointer("/spec/healthCheckNodePort").cloned();
        if !needs_health_check(obj) && check == old_check {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("healthCheckNodePort");
            }
        } else if needs_health_check(obj)
            && check.is_none()
            && let Some(port) = old_check
        {
            obj["spec"]["healthCheckNodePort"] = port;
        }
        let old_ip = old.pointer("/spec/clusterIP");
        if old_ip.is_some() && obj.pointer("/spec/clusterIP") != old_ip {
            return Err(immutable(w.kind, obj, "spec.clusterIPs[0]"));
        }
        validate_service(obj).into_result(w.kind, obj)?;
        allocate_service(w, obj, Some(old)).map_err(|e| e.about(w.kind, name_of(obj)))
    }

    /// Its ClusterIP, NodePorts and health-check node port.
    fn held(&self, obj: &Value) -> Vec<(&'static Pool, u32)> {
        let mut out = Vec::new();
        if let Some(ip) = obj
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(allocator::CLUSTER_IPS.parse)
        {
            out.push((&allocator::CLUSTER_IPS, ip));
        }
        for port in list(obj, "/spec/ports") {
            if let Some(np) = port.get("nodePort").and_then(Value::as_u64) {
                out.push((&allocator::NODE_PORTS, np as u32));
            }
        }
        if let Some(check) = obj.pointer("/spec/healthCheckNodePort").and_then(Value::as_u64) {
            out.push((&allocator::NODE_PORTS, check as u32));
        }
        out
    }

    /// ServiceSpec `ports` merge by `port` (alone, so TCP and UDP on one port number collide in a
    /// strategic merge patch, as in Kubernetes; server-side apply keys them by port and protocol);
    /// ServiceStatus `conditions` by `type`.
    fn merge_keys(&self) -> Schema {
        const SERVICE: Schema = &[
            nested("metadata", OBJECT_META),
            nested("spec", &[keyed_also_by("ports", "port", &["protocol"], &[])]),
            nested("status", &[keyed("conditions", "type", &[])]),
        ];
        SERVICE
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[
            column("Type", "string"),
            column("Cluster-IP", "string"),
            column("External-IP", "string"),
            column("Port(s)", "string"),
        ];
        const AFTER: &[Column] = &[wide("Selector", "string")];
        Columns {
            before_age: BEFORE,
            after_age: AFTER,
        }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let external = joined(
            list(obj, "/status/loadBalancer/ingress")
                .map(|i| text(i, "/ip"))
                .chain(list(obj, "/spec/externalIPs").map(|v| text(v, ""))),
            if text(obj, "/spec/type") == "LoadBalancer" {
                "<pending>"
            } else {
                "<none>"
            },
        );
        let ports = joined(
            list(obj, "/spec/ports").map(|p| {
                let port = text(p, "/port");
                let proto = text(p, "/protocol");
                match p.get("nodePort") {
                    Some(np) => format!("{port}:{np}/{proto}"),
                    None => format!("{port}/{proto}"),
                }
            }),
            "<none>",
        );
        vec![
            json!(text(obj, "/spec/type")),
            json!(text(obj, "/spec/clusterIP")),
            json!(external),
            json!(ports),
        ]
    }

    fn cells_after_age(&self, obj: &Value) -> Vec<Value> {
        vec![json!(joined(
            obj.pointer("/spec/selector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())),
            "<none>",
        ))]
    }
}

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

/// Whether the Service has a health-check node port: a LoadBalancer whose external traffic goes only
/// to local endpoints, which cloud load balancers ask every node about.
fn needs_health_check(obj: &Value) -> bool {
    obj.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
        && obj.pointer("/spec/externalTrafficPolicy").and_then(Value::as_str) == Some("Local")
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
    if let Some(check) = spec.get("healthCheckNodePort")
        && !needs_health_check(obj)
    {
        p.add(
            "spec.healthCheckNodePort",
            format!("Invalid value: {check}: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"),
        );
    }
    p
}

fn allocate_service(w: &Write<'_>, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let (store, who) = (w.store, w.owner.as_str());
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
            allocator::reserve(store, &allocator::CLUSTER_IPS, value, who, "spec.clusterIPs[0]")?;
            obj["spec"]["clusterIPs"] = json!([ip]);
        }
        _ => {
            let value = allocator::allocate(store, &allocator::CLUSTER_IPS, who, "spec.clusterIPs")?;
            let ip = (allocator::CLUSTER_IPS.format)(value);
            obj["spec"]["clusterIP"] = json!(ip);
            obj["spec"]["clusterIPs"] = json!([ip]);
        }
    }
    if needs_health_check(obj) {
        let field = "spec.healthCheckNodePort";
        match obj.pointer("/spec/healthCheckNodePort").and_then(Value::as_u64) {
            Some(port) => allocator::reserve(store, &allocator::NODE_PORTS, port as u32, who, field)?,
            None => {
                let port = allocator::allocate(store, &allocator::NODE_PORTS, who, field)?;
                obj["spec"]["healthCheckNodePort"] = json!(port);
            }
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
            Some(np) => allocator::reserve(store, &allocator::NODE_PORTS, np as u32, who, &field)?,
            None => {
                let np = allocator::allocate(store, &allocator::NODE_PORTS, who, &field)?;
                port["nodePort"] = json!(np);
            }
        }
    }
    Ok(())
}
