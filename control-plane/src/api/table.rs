//! `kubectl get` output: when a client asks for `application/json;as=Table;v=v1;g=meta.k8s.io`, lists,
//! gets and watch events answer with a `meta.k8s.io/v1` Table: NAME, the kind's columns as the real
//! API server prints them (each kind's [`super::kinds::Strategy::columns`]), AGE, and any after it,
//! each row carrying the object's metadata (or the whole object with `includeObject=Object`).

use serde_json::{Value, json};

use super::{
    kinds::{Columns, column},
    resources,
    times::epoch_seconds,
};

/// Whether the `Accept` header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// An object's age as `kubectl get` shows it.
fn age_of(obj: &Value) -> String {
    age(obj.pointer("/metadata/creationTimestamp").and_then(Value::as_str))
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

/// A Table of `objects` of `kind`, at `resource_version`.
pub fn of(kind: &str, objects: &[Value], resource_version: Option<&Value>, whole_objects: bool) -> Value {
    let strategy = resources::by_kind(kind).map(|r| r.strategy);
    let columns = strategy.map_or(Columns::NONE, |s| s.columns());
    let name = column("Name", "string");
    let age = column("Age", "string");
    let defs: Vec<Value> = std::iter::once(&name)
        .chain(columns.before_age)
        .chain(std::iter::once(&age))
        .chain(columns.after_age)
        .map(|c| {
            json!({"name": c.name, "type": c.ty, "format": if c.name == "Name" { "name" } else { "" }, "description": "", "priority": c.priority})
        })
        .collect();
    let cells = |obj: &Value| {
        let mut row = vec![obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null)];
        if let Some(s) = strategy {
            row.extend(s.cells(obj));
        }
        row.push(json!(age_of(obj)));
        if let Some(s) = strategy {
            row.extend(s.cells_after_age(obj));
        }
        row
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let object = if whole_objects {
                o.clone()
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
            };
            json!({"cells": cells(o), "object": object})
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
