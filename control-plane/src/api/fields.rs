//! Field selectors (`fieldSelector=metadata.name=web,metadata.namespace!=kube-system`): the fields
//! every resource supports. kubectl uses `metadata.name` to watch one object (`delete --wait`,
//! `rollout status`). Other fields are refused with the API server's message.

use serde_json::Value;

/// One requirement: field path, wanted value, equal or not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    pointer: &'static str,
    value: String,
    equal: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<Requirement>);

impl FieldSelector {
    /// Parses the query-string form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(format!("invalid selector: '{part}'; can't understand '{part}'"));
            };
            let pointer = match field.trim() {
                "metadata.name" => "/metadata/name",
                "metadata.namespace" => "/metadata/namespace",
                other => return Err(format!("field label not supported: {other}")),
            };
            reqs.push(Requirement {
                pointer,
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether `obj` matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let v = obj.pointer(r.pointer).and_then(Value::as_str).unwrap_or_default();
            (v == r.value) == r.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn name_and_namespace() {
        let obj = json!({"metadata": {"name": "web", "namespace": "demo"}});
        let m = |s: &str| FieldSelector::parse(s).expect("parses").matches(&obj);
        assert!(m("metadata.name=web"));
        assert!(m("metadata.name==web,metadata.namespace!=kube-system"));
        assert!(!m("metadata.name=db"));
        assert!(m(""));
        assert!(FieldSelector::parse("spec.nodeName=n1").is_err_and(|e| e.contains("not supported")));
    }
}
