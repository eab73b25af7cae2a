//! JSON patch (RFC 6902), `application/json-patch+json`: what `kubectl patch --type=json` sends. A
//! list of operations (`add`, `remove`, `replace`, `move`, `copy`, `test`) on JSON pointers
//! (RFC 6901), applied in order, all or nothing. As in kube-apiserver, a patch that is not a list of
//! operations is a 400, an operation that cannot apply (a missing path, a failed `test`) is a 422,
//! and a patch has at most 10,000 operations.

use serde_json::Value;

use super::status::ApiError;

/// kube-apiserver's `MaxJSONPatchOperations`.
pub const MAX_OPERATIONS: usize = 10_000;

/// Applies the JSON patch `patch` to `target`; on error `target` is unchanged.
pub fn apply(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let Value::Array(ops) = patch else {
        return Err(ApiError::bad_request("a JSON patch must be a list of operations"));
    };
    if ops.len() > MAX_OPERATIONS {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, got {}",
                ops.len()
            ),
        ));
    }
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        operation(&mut doc, op).map_err(|e| match e {
            Failure::Malformed(why) => {
                ApiError::bad_request(format!("operation {i} of the JSON patch: {why}"))
            }
            Failure::Inapplicable(why) => {
                ApiError::new(422, "Invalid", format!("operation {i} of the JSON patch: {why}"))
            }
        })?;
    }
    *target = doc;
    Ok(())
}

enum Failure {
    /// The patch is not well formed (400).
    Malformed(String),
    /// The operation does not apply to this document (422).
    Inapplicable(String),
}

fn field<'a>(op: &'a Value, name: &str) -> Result<&'a Value, Failure> {
    op.get(name)
        .ok_or_else(|| Failure::Malformed(format!("missing {name:?}")))
}

fn pointer<'a>(op: &'a Value, name: &str) -> Result<&'a str, Failure> {
    field(op, name)?
        .as_str()
        .ok_or_else(|| Failure::Malformed(format!("{name:?} must be a string")))
}

fn operation(doc: &mut Value, op: &Value) -> Result<(), Failure> {
    let path = pointer(op, "path")?;
    match field(op, "op")?.as_str().unwrap_or_default() {
        "add" => add(doc, path, field(op, "value")?.clone()),
        "remove" => remove(doc, path).map(|_| ()),
        "replace" => {
            let value = field(op, "value")?.clone();
            *resolve(doc, path)? = value;
            Ok(())
        }
        "move" => {
            let from = pointer(op, "from")?;
            if path.starts_with(from) && path[from.len()..].starts_with('/') {
                return Err(Failure::Inapplicable(format!(
                    "cannot move {from:?} into its own child {path:?}"
                )));
            }
            let value = remove(doc, from)?;
            add(doc, path, value)
        }
        "copy" => {
            let value = resolve(doc, pointer(op, "from")?)?.clone();
            add(doc, path, value)
        }
        "test" => {
            let wanted = field(op, "value")?;
            let found = resolve(doc, path)?;
            if found != wanted {
                return Err(Failure::Inapplicable(format!(
                    "testing value {path} failed: it is {found}, not {wanted}"
                )));
            }
            Ok(())
        }
        other => Err(Failure::Malformed(format!("unknown op {other:?}"))),
    }
}

/// The reference tokens of a JSON pointer (`~1` is `/`, `~0` is `~`).
fn tokens(path: &str) -> Result<Vec<String>, Failure> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Failure::Malformed(format!(
            "{path:?} is not a JSON pointer (it must start with '/')"
        )));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn missing(path: &str) -> Failure {
    Failure::Inapplicable(format!("the path {path:?} does not exist"))
}

/// An array index token: digits only, no leading zero.
fn index(token: &str, len: usize, path: &str) -> Result<usize, Failure> {
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let i: usize = if valid {
        token.parse().map_err(|_| missing(path))?
    } else {
        return Err(missing(path));
    };
    if i < len { Ok(i) } else { Err(missing(path)) }
}

/// The value at `path`.
fn resolve<'a>(doc: &'a mut Value, path: &str) -> Result<&'a mut Value, Failure> {
    let mut at = doc;
    for token in tokens(path)? {
        at = match at {
            Value::Object(map) => map.get_mut(&token).ok_or_else(|| missing(path))?,
            Value::Array(items) => {
                let i = index(&token, items.len(), path)?;
                &mut items[i]
            }
            _ => return Err(missing(path)),
        };
    }
    Ok(at)
}

/// The parent of `path`'s last token, and that token (`None` for the whole document).
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<Option<(&'a mut Value, String)>, Failure> {
    let mut tokens = tokens(path)?;
    let Some(last) = tokens.pop() else {
        return Ok(None);
    };
    let parent_path: String = tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect();
    Ok(Some((resolve(doc, &parent_path)?, last)))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), Failure> {
    let Some((container, last)) = parent(doc, path)? else {
        *doc = value;
        return Ok(());
    };
    match container {
        Value::Object(map) => {
            map.insert(last, value);
            Ok(())
        }
        Value::Array(items) => {
            let i = if last == "-" {
                items.len()
            } else {
                index(&last, items.len() + 1, path)?
            };
            items.insert(i, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, Failure> {
    let Some((container, last)) = parent(doc, path)? else {
        return Err(Failure::Inapplicable(
            "the whole document cannot be removed".into(),
        ));
    };
    match container {
        Value::Object(map) => map.remove(&last).ok_or_else(|| missing(path)),
        Value::Array(items) => {
            let i = index(&last, items.len(), path)?;
            Ok(items.remove(i))
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(doc: Value, patch: Value) -> Result<Value, u16> {
        let mut doc = doc;
        apply(&mut doc, &patch).map(|()| doc).map_err(|e| e.code)
    }

    #[test]
    fn rfc_6902_operations() {
        let doc = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"ports": [{"port": 80}]}});
        let out = patched(
            doc.clone(),
            json!([
                {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
                {"op": "add", "path": "/spec/ports/-", "value": {"port": 443}},
                {"op": "add", "path": "/spec/ports/0", "value": {"port": 8080}},
                {"op": "replace", "path": "/metadata/labels/app", "value": "api"},
                {"op": "remove", "path": "/spec/ports/1"},
                {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copy"},
                {"op": "move", "from": "/metadata/labels/tier", "path": "/metadata/labels/moved"},
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/example.com~1note", "value": "x"},
                {"op": "test", "path": "/spec/ports/1/port", "value": 443},
            ]),
        )
        .expect("applies");
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"app": "api", "copy": "api", "moved": "front"}, "annotations": {"example.com/note": "x"}},
                   "spec": {"ports": [{"port": 8080}, {"port": 443}]}})
        );
    }

    #[test]
    fn failures_are_400_or_422_and_change_nothing() {
        let doc = json!({"a": [1, 2]});
        assert_eq!(patched(doc.clone(), json!({"op": "add"})), Err(400));
        assert_eq!(
            patched(doc.clone(), json!([{"op": "frobnicate", "path": "/a"}])),
            Err(400)
        );
        assert_eq!(
            patched(doc.clone(), json!([{"op": "add", "path": "a", "value": 1}])),
            Err(400)
        );
        assert_eq!(
            patched(doc.clone(), json!([{"op": "remove", "path": "/b"}])),
            Err(422)
        );
        assert_eq!(
            patched(
                doc.clone(),
                json!([{"op": "replace", "path": "/a/2", "value": 1}])
            ),
            Err(422)
        );
        assert_eq!(
            patched(doc.clone(), json!([{"op": "add", "path": "/a/01", "value": 1}])),
            Err(422)
        );
        assert_eq!(
            patched(doc.clone(), json!([{"op": "move", "from": "/a", "path": "/a/0"}])),
            Err(422)
        );
        let mut d = doc.clone();
        let failed = apply(
            &mut d,
            &json!([{"op": "add", "path": "/b", "value": 1}, {"op": "test", "path": "/a/0", "value": 2}]),
        );
        assert_eq!(failed.map_err(|e| e.code), Err(422));
        assert_eq!(d, doc, "all or nothing");
        let many: Vec<Value> = (0..=MAX_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "", "value": 0}))
            .collect();
        assert_eq!(patched(doc, Value::Array(many)), Err(413));
    }
}
