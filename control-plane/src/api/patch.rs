//! PATCH bodies: JSON merge patch (RFC 7386) and strategic merge patch as far as the served kinds need
//! it. Namespaces, ConfigMaps and Secrets have maps and no merge-keyed lists, where a strategic merge
//! patch means what a merge patch means; its directives are honoured for maps (`$patch: replace` and
//! `$patch: delete`), and the list-ordering hints kubectl adds (`$setElementOrder/...`, `$retainKeys`,
//! `$deleteFromPrimitiveList/...`) are removed. Kinds with keyed lists (pods, services) will need the
//! merge-key table (see RESEARCH.md).

use serde_json::Value;

use super::status::ApiError;

/// RFC 7386: objects merge recursively, `null` removes a member, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Strategic merge patch for kinds without merge-keyed lists.
pub fn strategic(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replacement = patch.clone();
            if let Value::Object(m) = &mut replacement {
                m.remove("$patch");
            }
            *target = replacement;
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown $patch directive {other:?}"
            )));
        }
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if k.starts_with("$setElementOrder/")
                || k.starts_with("$deleteFromPrimitiveList/")
                || k == "$retainKeys"
            {
                continue;
            }
            if v.is_null() {
                t.remove(k);
                continue;
            }
            let slot = t.entry(k.clone()).or_insert(Value::Null);
            strategic(slot, v)?;
            if slot.is_null() {
                t.remove(k);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        merge(&mut doc, &json!({"c": ["x"]}));
        assert_eq!(doc, json!({"a": "z", "c": ["x"]}));
    }

    #[test]
    fn strategic_directives_on_maps() {
        let mut doc = json!({"data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "y"}}});
        strategic(
            &mut doc,
            &json!({"data": {"$patch": "replace", "c": "3"}, "metadata": {"labels": {"$patch": "delete"}}, "$setElementOrder/x": []}),
        )
        .expect("patch");
        assert_eq!(doc, json!({"data": {"c": "3"}, "metadata": {}}));
        assert!(strategic(&mut doc, &json!({"data": {"$patch": "bogus"}})).is_err());
    }
}
