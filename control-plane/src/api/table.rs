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

fn columns(kind: &str) -> Vec<(&'static str, &'static str)> {
    let mut cols = vec![("Name", "string")];
    match kind {
        "Namespace" => cols.push(("Status", "string")),
        "ConfigMap" => cols.push(("Data", "integer")),
        "Secret" => cols.extend([("Type", "string"), ("Data", "integer")]),
        _ => {}
    }
    cols.push(("Age", "string"));
    cols
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp (`2026-11-22T04:40:07Z`).
fn epoch_seconds(ts: &str) -> Option<i64> {
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
        _ => {}
    }
    row.push(json!(age(obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str))));
    row
}

/// A Table of `objects` of `kind`, at `resource_version`.
pub fn of(kind: &str, objects: &[Value], resource_version: Option<&Value>, whole_objects: bool) -> Value {
    let defs: Vec<Value> = columns(kind)
        .into_iter()
        .map(|(name, ty)| {
            json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": 0})
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
