//! ConfigMaps and Secrets: keys that are file names in a volume, at most 1 MiB of data, a Secret's
//! `stringData` folded into `data`, a token Secret naming its account, and their `kubectl get`
//! columns.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::{Value, json};

use super::{Column, Columns, Problems, Strategy, Write, column};
use crate::api::{
    serviceaccounts::{LEGACY_TOKEN_ACCOUNT_ANNOTATION, LEGACY_TOKEN_TYPE},
    status::ApiError,
    typed::{self, FieldValidation},
};

/// The strategy of core/v1 ConfigMaps.
pub struct ConfigMaps;

/// The entry of the resource table.
pub const CONFIG_MAPS: ConfigMaps = ConfigMaps;

impl Strategy for ConfigMaps {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<ConfigMap>(obj, validation)
    }

    fn create(&self, w: &Write<'_>, obj: &mut Value) -> Result<(), ApiError> {
        validate_data(CONFIG_MAP_DATA, obj).into_result(w.kind, obj)
    }

    fn update(&self, w: &Write<'_>, _old: &Value, obj: &mut Value) -> Result<(), ApiError> {
        validate_data(CONFIG_MAP_DATA, obj).into_result(w.kind, obj)
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[column("Data", "integer")];
        Columns {
            before_age: BEFORE,
            after_age: &[],
        }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(count(obj.get("data")) + count(obj.get("binaryData")))]
    }
}

/// The strategy of core/v1 Secrets.
pub struct Secrets;

/// The entry of the resource table.
pub const SECRETS: Secrets = Secrets;

impl Secrets {
    fn check(&self, kind: &str, obj: &mut Value) -> Result<(), ApiError> {
        fold_string_data(obj);
        let mut p = validate_data(SECRET_DATA, obj);
        // A token Secret names its account (the tokens controller fills in the rest).
        let account = obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(LEGACY_TOKEN_ACCOUNT_ANNOTATION))
            .and_then(Value::as_str);
        if obj.get("type").and_then(Value::as_str) == Some(LEGACY_TOKEN_TYPE)
            && account.is_none_or(str::is_empty)
        {
            p.add(
                format!("metadata.annotations[{LEGACY_TOKEN_ACCOUNT_ANNOTATION}]"),
                "Required value",
            );
        }
        p.into_result(kind, obj)
    }
}

impl Strategy for Secrets {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<Secret>(obj, validation)
    }

    fn create(&self, w: &Write<'_>, obj: &mut Value) -> Result<(), ApiError> {
        self.check(w.kind, obj)
    }

    fn update(&self, w: &Write<'_>, _old: &Value, obj: &mut Value) -> Result<(), ApiError> {
        self.check(w.kind, obj)
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[column("Type", "string"), column("Data", "integer")];
        Columns {
            before_age: BEFORE,
            after_age: &[],
        }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            obj.get("type").cloned().unwrap_or(json!("Opaque")),
            json!(count(obj.get("data"))),
        ]
    }
}

fn count(v: Option<&Value>) -> usize {
    v.and_then(Value::as_object).map_or(0, |m| m.len())
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

/// A ConfigMap's fields of keyed data: `data` (text) and `binaryData` (base64).
const CONFIG_MAP_DATA: &[(&str, Encoding)] = &[("data", Encoding::Text), ("binaryData", Encoding::Base64)];

/// A Secret's keyed data: `data` (base64).
const SECRET_DATA: &[(&str, Encoding)] = &[("data", Encoding::Base64)];

/// How a data field's values hold their bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Text,
    /// Base64: the value holds three quarters of its length.
    Base64,
}

/// The keys and size of an object's keyed data `fields`.
fn validate_data(fields: &[(&str, Encoding)], obj: &Value) -> Problems {
    let mut p = Problems::default();
    let mut total = 0usize;
    let mut seen = std::collections::HashSet::new();
    for (field, encoding) in fields {
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
            let bytes = match encoding {
                Encoding::Text => len,
                Encoding::Base64 => len / 4 * 3,
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
}
