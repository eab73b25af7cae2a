//! `kubectl get` output: when a client asks for `application/json;as=Table;v=v1;g=meta.k8s.io`, lists,
//! gets and watch events answer with a `meta.k8s.io/v1` Table — columns chosen per kind as the real
//! API server prints them (namespaces: status; configmaps: data count; secrets: type and data count),
//! each row carrying the object's metadata (or the whole object with `includeObject=Object`).

use serde_json::{Value, json};

/// Whether the `Accept` header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// (name, type, priority) of each column; priority 1 columns show with `-o wide`.
fn columns(kind: &str) -> Vec<(&'static str, &'static str, u8)> {
    let mut cols = vec![("Name", "string", 0)];
    match kind {
        "Namespace" => cols.push(("Status", "string", 0)),
        "ConfigMap" => cols.push(("Data", "integer", 0)),
        "Secret" => cols.extend([("Type", "string", 0), ("Data", "integer", 0)]),
        "Pod" => cols.extend([
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
        ]),
        "Service" => cols.extend([
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
        ]),
        "Node" => cols.extend([("Status", "string", 0), ("Roles", "string", 0)]),
        "Deployment" => cols.extend([
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
        ]),
        "ReplicaSet" => cols.extend([
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
        ]),
        "DaemonSet" => cols.extend([
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
        ]),
        "Endpoints" => cols.push(("Endpoints", "string", 0)),
        "EndpointSlice" => cols.extend([
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
        ]),
        "Lease" => cols.push(("Holder", "string", 0)),
        "CertificateSigningRequest" => cols.extend([
            ("SignerName", "string", 0),
            ("Requestor", "string", 0),
            ("Condition", "string", 0),
        ]),
        "Event" => cols.extend([
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ]),
        _ => {}
    }
    cols.push(("Age", "string", 0));
    match kind {
        "Pod" => cols.extend([("IP", "string", 1), ("Node", "string", 1)]),
        "Service" => cols.push(("Selector", "string", 1)),
        "Node" => cols.push(("Version", "string", 0)),
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            cols.extend([
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ]);
        }
        _ => {}
    }
    cols
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp (`2026-11-22T04:40:07Z`).
pub fn epoch_seconds(ts: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| ts.get(r).and_then(|s| s.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// kubectl's short age format.
pub fn age(created: Option<&str>) -> String {
    let Some(t) = created.and_then(epoch_seconds) else {
        return "<unknown>".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let s = (now - t).max(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10_800 => format!("{}m", s / 60),
        10_800..28_800 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        28_800..172_800 => format!("{}h", s / 3600),
        172_800..691_200 => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn count(v: Option<&Value>) -> usize {
    v.and_then(Value::as_object).map_or(0, |m| m.len())
}

fn text(obj: &Value, pointer: &str) -> String {
    match obj.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn list<'a>(obj: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn joined(values: impl Iterator<Item = String>, none: &str) -> String {
    let all: Vec<String> = values.collect();
    if all.is_empty() {
        none.to_string()
    } else if all.len() > 3 {
        format!("{} + {} more...", all[..3].join(","), all.len() - 3)
    } else {
        all.join(",")
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

fn condition(obj: &Value, kind: &str) -> Option<String> {
    list(obj, "/status/conditions")
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .map(|c| text(c, "/status"))
}

fn service_ports(obj: &Value) -> String {
    joined(
        list(obj, "/spec/ports").map(|p| {
            let port = text(p, "/port");
            let proto = text(p, "/protocol");
            match p.get("nodePort") {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        }),
        "<none>",
    )
}

fn cells(kind: &str, obj: &Value) -> Vec<Value> {
    let name = obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let mut row = vec![name];
    match kind {
        "Namespace" => row.push(obj.pointer("/status/phase").cloned().unwrap_or(json!(""))),
        "ConfigMap" => row.push(json!(count(obj.get("data")) + count(obj.get("binaryData")))),
        "Secret" => {
            row.push(obj.get("type").cloned().unwrap_or(json!("Opaque")));
            row.push(json!(count(obj.get("data"))));
        }
        "Pod" => {
            let total = list(obj, "/spec/containers").count();
            let ready = list(obj, "/status/containerStatuses")
                .filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true))
                .count();
            let restarts: i64 = list(obj, "/status/containerStatuses")
                .map(|s| int(s, "/restartCount"))
                .sum();
            row.extend([
                json!(format!("{ready}/{total}")),
                json!(pod_status(obj)),
                json!(restarts.to_string()),
            ]);
        }
        "Service" => {
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
            row.extend([
                json!(text(obj, "/spec/type")),
                json!(text(obj, "/spec/clusterIP")),
                json!(external),
                json!(service_ports(obj)),
            ]);
        }
        "Node" => {
            let mut status = match condition(obj, "Ready").as_deref() {
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
            row.extend([json!(status), json!(roles)]);
        }
        "Deployment" => row.extend([
            json!(format!(
                "{}/{}",
                int(obj, "/status/readyReplicas"),
                int(obj, "/spec/replicas")
            )),
            json!(int(obj, "/status/updatedReplicas")),
            json!(int(obj, "/status/availableReplicas")),
        ]),
        "ReplicaSet" => row.extend([
            json!(int(obj, "/spec/replicas")),
            json!(int(obj, "/status/replicas")),
            json!(int(obj, "/status/readyReplicas")),
        ]),
        "DaemonSet" => row.extend([
            json!(int(obj, "/status/desiredNumberScheduled")),
            json!(int(obj, "/status/currentNumberScheduled")),
            json!(int(obj, "/status/numberReady")),
            json!(int(obj, "/status/updatedNumberScheduled")),
            json!(int(obj, "/status/numberAvailable")),
        ]),
        "Endpoints" => row.push(json!(joined(
            list(obj, "/subsets").flat_map(|s| {
                let ports: Vec<String> = list(s, "/ports").map(|p| text(p, "/port")).collect();
                list(s, "/addresses")
                    .flat_map(move |a| {
                        let ip = text(a, "/ip");
                        let ports = if ports.is_empty() {
                            vec![String::new()]
                        } else {
                            ports.clone()
                        };
                        ports.into_iter().map(move |p| {
                            if p.is_empty() {
                                ip.clone()
                            } else {
                                format!("{ip}:{p}")
                            }
                        })
                    })
                    .collect::<Vec<_>>()
            }),
            "<none>",
        ))),
        "EndpointSlice" => row.extend([
            json!(text(obj, "/addressType")),
            json!(joined(list(obj, "/ports").map(|p| text(p, "/port")), "<unset>")),
            json!(joined(
                list(obj, "/endpoints").flat_map(|e| list(e, "/addresses").map(|a| text(a, ""))),
                "<unset>",
            )),
        ]),
        "Lease" => row.push(json!(text(obj, "/spec/holderIdentity"))),
        "CertificateSigningRequest" => {
            let mut state: Vec<String> = list(obj, "/status/conditions")
                .filter(|c| text(c, "/status") == "True")
                .map(|c| text(c, "/type"))
                .collect();
            if obj.pointer("/status/certificate").is_some() {
                state.push("Issued".into());
            }
            row.extend([
                json!(text(obj, "/spec/signerName")),
                json!(text(obj, "/spec/username")),
                json!(if state.is_empty() {
                    "Pending".into()
                } else {
                    state.join(",")
                }),
            ]);
        }
        "Event" => row.extend([
            json!(text(obj, "/type")),
            json!(text(obj, "/reason")),
            json!(format!(
                "{}/{}",
                text(obj, "/involvedObject/kind").to_lowercase(),
                text(obj, "/involvedObject/name")
            )),
            json!(text(obj, "/message")),
        ]),
        _ => {}
    }
    row.push(json!(age(obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str))));
    match kind {
        "Pod" => {
            let ip = text(obj, "/status/podIP");
            let node = text(obj, "/spec/nodeName");
            row.push(json!(if ip.is_empty() { "<none>".into() } else { ip }));
            row.push(json!(if node.is_empty() { "<none>".into() } else { node }));
        }
        "Service" => row.push(json!(joined(
            obj.pointer("/spec/selector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())),
            "<none>",
        ))),
        "Node" => row.push(json!(text(obj, "/status/nodeInfo/kubeletVersion"))),
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            let containers: Vec<&Value> = list(obj, "/spec/template/spec/containers").collect();
            row.push(json!(
                containers
                    .iter()
                    .map(|c| text(c, "/name"))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            row.push(json!(
                containers
                    .iter()
                    .map(|c| text(c, "/image"))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            row.push(json!(super::subresources::selector_string(
                obj.pointer("/spec/selector")
            )));
        }
        _ => {}
    }
    row
}

/// A Table of `objects` of `kind`, at `resource_version`.
pub fn of(kind: &str, objects: &[Value], resource_version: Option<&Value>, whole_objects: bool) -> Value {
    let defs: Vec<Value> = columns(kind)
        .into_iter()
        .map(|(name, ty, priority)| {
            json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = if whole_objects {
                o.clone()
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
            };
            json!({"cells": cells(kind, o), "object": object})
        })
        .collect();
    let mut meta = json!({});
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = rv.clone();
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_ages() {
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
        assert_eq!(epoch_seconds("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(epoch_seconds("2024-03-01T00:00:00Z"), Some(1_709_251_200));
        let t = of(
            "Secret",
            &[json!({"metadata": {"name": "pw"}, "type": "Opaque", "data": {"a": "", "b": ""}})],
            None,
            false,
        );
        assert_eq!(t["rows"][0]["cells"], json!(["pw", "Opaque", 2, "<unknown>"]));
        assert_eq!(t["columnDefinitions"][1]["name"], "Type");
    }
}
