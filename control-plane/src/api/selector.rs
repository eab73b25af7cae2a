//! Label selectors in their string form (`labelSelector=app=web,tier!=db,env,!canary,env in (a,b)`).

use serde_json::Value;

/// One requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    /// A key must be a qualified name and a value a label value (`!!!` is no selector, and
    /// selects nothing rather than everything): a 400 saying which, as kube-apiserver answers.
    fn check(&self) -> Result<(), String> {
        let (key, values): (&str, Vec<&str>) = match self {
            Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, vec![v.as_str()]),
            Requirement::Exists(k) | Requirement::NotExists(k) => (k, Vec::new()),
            Requirement::In(k, set) | Requirement::NotIn(k, set) => {
                (k, set.iter().map(String::as_str).collect())
            }
        };
        super::names::qualified_name(key).map_err(|why| {
            format!(
                "unable to parse requirement: Invalid value: {key:?}: {}",
                why.join(", ")
            )
        })?;
        for v in values {
            super::names::label_value(v).map_err(|why| {
                format!(
                    "unable to parse requirement: Invalid value: {v:?}: {}",
                    why.join(", ")
                )
            })?;
        }
        Ok(())
    }
}

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits at commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set_of(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| format!("{s:?}: expected a parenthesised set of values"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

impl LabelSelector {
    /// Parses the query-string form; a clear message when it is not one.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s).into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, set)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set_of(set)?)
            } else if let Some((k, set)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set_of(set)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if part.contains(char::is_whitespace) || part.contains('(') {
                return Err(format!("unable to parse requirement {part:?}"));
            } else {
                Requirement::Exists(part.into())
            };
            req.check()?;
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object with `labels` (its `metadata.labels`) matches.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, set) => get(k).is_some_and(|v| set.iter().any(|s| s == v)),
            Requirement::NotIn(k, set) => get(k).is_none_or(|v| set.iter().all(|s| s != v)),
        })
    }
}

/// One `matchExpressions` entry of a `LabelSelector` or a `nodeSelectorTerm` (`key`, `operator`,
/// `values`), as an object carries it.
pub struct Expression<'a> {
    pub key: &'a str,
    pub operator: Option<&'a str>,
    pub values: Vec<&'a str>,
}

impl<'a> Expression<'a> {
    /// Reads an expression object; missing fields read as empty.
    pub fn of(e: &'a Value) -> Self {
        Expression {
            key: e.get("key").and_then(Value::as_str).unwrap_or_default(),
            operator: e.get("operator").and_then(Value::as_str),
            values: e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default(),
        }
    }

    /// The expressions of a selector's `field` (`matchExpressions`, `matchFields`); none when absent.
    pub fn all_in(selector: &'a Value, field: &str) -> impl Iterator<Item = Expression<'a>> {
        selector
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(Expression::of)
    }

    /// Whether `value` (the key's value, `None` when the key is absent) satisfies the expression.
    /// `In`, `NotIn`, `Exists` and `DoesNotExist` are a label selector's operators; node selectors
    /// add `Gt` and `Lt` (`numeric`), which compare integers. Any other operator matches nothing.
    pub fn matches(&self, value: Option<&str>, numeric: bool) -> bool {
        match self.operator {
            Some("In") => value.is_some_and(|v| self.values.contains(&v)),
            Some("NotIn") => value.is_none_or(|v| !self.values.contains(&v)),
            Some("Exists") => value.is_some(),
            Some("DoesNotExist") => value.is_none(),
            Some(op @ ("Gt" | "Lt")) if numeric => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if op == "Gt" { v > bound } else { v < bound }
            }
            _ => false,
        }
    }

    /// The expression in a selector string (`env in (a,b)`, `env`, `!env`); `None` for an
    /// operator that string form cannot say.
    fn to_selector_string(&self) -> Option<String> {
        let key = self.key;
        match self.operator {
            Some("In") => Some(format!("{key} in ({})", self.values.join(","))),
            Some("NotIn") => Some(format!("{key} notin ({})", self.values.join(","))),
            Some("Exists") => Some(key.to_string()),
            Some("DoesNotExist") => Some(format!("!{key}")),
            _ => None,
        }
    }
}

/// Whether `labels` match a `LabelSelector` object (`matchLabels` and `matchExpressions`, as
/// workloads and Services select pods). An empty selector matches everything; a malformed expression
/// matches nothing.
pub fn matches_label_selector(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    by_labels && Expression::all_in(selector, "matchExpressions").all(|e| e.matches(get(e.key), false))
}

/// A request's label and field selectors together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: super::fields::FieldSelector,
}

impl Selectors {
    /// From the (already percent-decoded) `labelSelector` and `fieldSelector` values.
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, String> {
        Ok(Selectors {
            labels: labels.map(LabelSelector::parse).transpose()?.unwrap_or_default(),
            fields: fields
                .map(super::fields::FieldSelector::parse)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// Whether the object matches both.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj.pointer("/metadata/labels")) && self.fields.matches(obj)
    }

    /// A quick look at a stored object's JSON: `false` when its labels alone rule it out. Only the
    /// labels are decoded (the rest is skipped over), so a list by label of 100 pods out of 10,000
    /// decodes 100 whole objects, not 10,000. `true` means "decode it and ask [`matches`](Self::matches)".
    pub fn may_match_stored(&self, json: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct Stored {
            #[serde(default)]
            metadata: Metadata,
        }
        #[derive(serde::Deserialize, Default)]
        struct Metadata {
            #[serde(default)]
            labels: Option<serde_json::Map<String, Value>>,
        }
        if self.labels.0.is_empty() {
            return true;
        }
        match serde_json::from_slice::<Stored>(json) {
            Ok(stored) => {
                let labels = stored.metadata.labels.map(Value::Object);
                self.labels.matches(labels.as_ref())
            }
            Err(_) => true,
        }
    }
}

/// A LabelSelector in its string form (`app=web,tier in (a,b)`), as `Scale.status.selector` has it.
pub fn selector_string(selector: Option<&Value>) -> String {
    let Some(sel) = selector else {
        return String::new();
    };
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    parts.extend(Expression::all_in(sel, "matchExpressions").filter_map(|e| e.to_selector_string()));
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_look_at_the_labels_rules_out_what_cannot_match() {
        let s = Selectors::parse(Some("app=web"), None).expect("selector");
        assert!(
            s.may_match_stored(br#"{"kind":"Pod","metadata":{"name":"a","labels":{"app":"web"}},"spec":{}}"#)
        );
        assert!(!s.may_match_stored(br#"{"kind":"Pod","metadata":{"name":"a","labels":{"app":"db"}}}"#));
        assert!(!s.may_match_stored(br#"{"metadata":{"name":"a"}}"#));
        // Not JSON as expected: left to the full decode.
        assert!(s.may_match_stored(b"[1]"));
        assert!(Selectors::default().may_match_stored(b"anything"));
    }

    #[test]
    fn selector_objects_match_by_expression_and_print_as_strings() {
        let sel = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "stage"]},
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "team", "operator": "Exists"},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        });
        let labels = json!({"app": "web", "env": "prod", "team": "a"});
        assert!(matches_label_selector(&sel, &labels));
        assert!(!matches_label_selector(
            &sel,
            &json!({"app": "web", "env": "dev", "team": "a"})
        ));
        assert!(!matches_label_selector(
            &sel,
            &json!({"app": "web", "env": "prod", "team": "a", "canary": "1"})
        ));
        assert!(!matches_label_selector(
            &sel,
            &json!({"app": "web", "env": "prod", "team": "a", "tier": "db"})
        ));
        assert_eq!(
            selector_string(Some(&sel)),
            "app=web,env in (prod,stage),tier notin (db),team,!canary"
        );
        // Gt and Lt are node-selector operators: a label selector using one matches nothing.
        let gt = json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]});
        assert!(!matches_label_selector(&gt, &json!({"cores": "8"})));
        let e = Expression::of(&gt["matchExpressions"][0]);
        assert!(e.matches(Some("8"), true));
        assert!(!e.matches(Some("4"), true));
        assert!(!e.matches(Some("many"), true));
        assert!(!e.matches(None, true));
        let lt = json!({"key": "cores", "operator": "Lt", "values": ["4"]});
        assert!(Expression::of(&lt).matches(Some("2"), true));
        assert!(!Expression::of(&json!({"key": "x", "operator": "Near"})).matches(Some("y"), true));
    }

    #[test]
    fn equality_set_and_existence() {
        let labels = json!({"app": "web", "env": "prod"});
        let m = |s: &str| LabelSelector::parse(s).expect("parses").matches(Some(&labels));
        assert!(m("app=web"));
        assert!(m("app==web,env"));
        assert!(!m("app!=web"));
        assert!(m("!canary"));
        assert!(m("env in (prod, staging),app notin (db)"));
        assert!(!m("env in (staging)"));
        assert!(m(""));
        assert!(LabelSelector::parse("env in prod").is_err());
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]});
        assert!(matches_label_selector(&sel, &labels));
        assert!(!matches_label_selector(&sel, &json!({"app": "web"})));
        assert!(matches_label_selector(&json!({}), &labels));
    }
}
