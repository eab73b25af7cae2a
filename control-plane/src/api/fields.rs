//! Field selectors (`fieldSelector=metadata.name=web,metadata.namespace!=kube-system`): the fields
//! every resource supports. kubectl uses `metadata.name` to watch one object (`delete --wait`,
//! `rollout status`). Other fields are refused with the API server's message.

use serde_json::Value;

/// The selectable fields: those of every resource, and those the kinds served add (pods by node and
/// phase for nodes and kubectl, events by the object they are about for `kubectl describe`).
const FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "/metadata/name"),
    ("metadata.namespace", "/metadata/namespace"),
    ("spec.nodeName", "/spec/nodeName"),
    ("spec.schedulerName", "/spec/schedulerName"),
    ("spec.restartPolicy", "/spec/restartPolicy"),
    ("spec.serviceAccountName", "/spec/serviceAccountName"),
    ("spec.unschedulable", "/spec/unschedulable"),
    ("status.phase", "/status/phase"),
    ("status.podIP", "/status/podIP"),
    ("type", "/type"),
    ("reason", "/reason"),
    ("source", "/source/component"),
    ("involvedObject.kind", "/involvedObject/kind"),
    ("involvedObject.namespace", "/involvedObject/namespace"),
    ("involvedObject.name", "/involvedObject/name"),
    ("involvedObject.uid", "/involvedObject/uid"),
    ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
    (
        "involvedObject.resourceVersion",
        "/involvedObject/resourceVersion",
    ),
    ("involvedObject.fieldPath", "/involvedObject/fieldPath"),
];

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
            let pointer = FIELDS
                .iter()
                .find(|(f, _)| *f == field.trim())
                .map(|(_, p)| *p)
                .ok_or_else(|| format!("field label not supported: {}", field.trim()))?;
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
            let v = match obj.pointer(r.pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                // An absent boolean (`spec.unschedulable`) reads as false, as the API server has it.
                None if r.pointer == "/spec/unschedulable" => "false".into(),
                _ => String::new(),
            };
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
        assert!(FieldSelector::parse("spec.nodeName=").is_ok_and(|f| f.matches(&obj)));
        assert!(FieldSelector::parse("spec.bogus=n1").is_err_and(|e| e.contains("not supported")));
    }
}
