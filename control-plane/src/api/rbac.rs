//! RBAC (`rbac.authorization.k8s.io/v1`), evaluated as kube-apiserver's RBAC authorizer does: a
//! request is allowed when a ClusterRoleBinding, or a RoleBinding in the request's namespace, names
//! the user (by name, group, or as a ServiceAccount) and refers to a role with a rule that matches
//! the request's verb, API group, resource (and subresource), name or non-resource path. Nothing is
//! ever denied by a rule; what no rule allows is refused.
//!
//! Also here: the escalation check on writes of roles and bindings (a user may grant only what it
//! holds, unless it has `escalate` on roles or `bind` on the role it binds), and the default policy
//! the server creates at start (kube-apiserver's bootstrap roles that matter here: `cluster-admin`
//! for `system:masters`, `system:discovery`, `system:basic-user`, `system:public-info-viewer`, and the
//! user-facing `admin`, `edit`, `view`, aggregated from roles labelled `aggregate-to-*`).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};

use super::auth::User;
use crate::store::{EventKind, Store};

const CLUSTER_ROLE_BINDINGS: &str = "/registry/clusterrolebindings/";
const CLUSTER_ROLES: &str = "/registry/clusterroles/";
const ROLE_BINDINGS: &str = "/registry/rolebindings/";
const ROLES: &str = "/registry/roles/";

/// RBAC's roles and bindings, parsed once and kept from the store's events (caught up on each
/// question, as [`super::node_graph`]): authorizing a request reads no store key and parses no JSON.
/// Listing and parsing every ClusterRoleBinding and role per request made RBAC the largest part of
/// a small request's cost.
#[derive(Default)]
pub struct RbacIndex(Mutex<Mirrors>);

#[derive(Default)]
struct Mirrors {
    cluster_role_bindings: Mirror,
    cluster_roles: Mirror,
    role_bindings: Mirror,
    roles: Mirror,
}

/// The objects under one key prefix, by key.
#[derive(Default)]
struct Mirror {
    /// The store revision the mirror reflects (0: not built).
    position: u64,
    objects: BTreeMap<String, Arc<Value>>,
}

impl Mirror {
    fn catch_up(&mut self, store: &Store, prefix: &str) {
        if self.position == 0 {
            self.rebuild(store, prefix);
            return;
        }
        let objects = &mut self.objects;
        let caught_up = store.catch_up(prefix, &mut self.position, |e| {
            let parsed = match e.kind {
                EventKind::Put => serde_json::from_slice(&e.kv.value).ok(),
                EventKind::Delete => None,
            };
            match parsed {
                Some(v) => objects.insert(e.kv.key.clone(), Arc::new(v)),
                None => objects.remove(&e.kv.key),
            };
        });
        // Fell behind a compaction: read the prefix as it is.
        if caught_up.is_err() {
            self.rebuild(store, prefix);
        }
    }

    fn rebuild(&mut self, store: &Store, prefix: &str) {
        self.objects.clear();
        let Ok(page) = store.list(prefix, None, None, 0) else {
            return;
        };
        for kv in &page.items {
            if let Ok(v) = serde_json::from_slice(&kv.value) {
                self.objects.insert(kv.key.clone(), Arc::new(v));
            }
        }
        self.position = page.revision.max(1);
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.objects.get(key).map(Arc::as_ref)
    }

    /// The objects whose keys start with `prefix`.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.as_ref())
    }
}

impl RbacIndex {
    /// The mirrors, caught up with the store.
    fn current(&self, store: &Store) -> std::sync::MutexGuard<'_, Mirrors> {
        // A panic while catching up leaves a mirror behind, never wrong: keep using it.
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.cluster_role_bindings.catch_up(store, CLUSTER_ROLE_BINDINGS);
        m.cluster_roles.catch_up(store, CLUSTER_ROLES);
        m.role_bindings.catch_up(store, ROLE_BINDINGS);
        m.roles.catch_up(store, ROLES);
        m
    }
}

/// What a request asks, in RBAC's terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ask<'a> {
    pub verb: &'a str,
    pub api_group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// For requests that are not about a resource (`/healthz`, `/api`): the path.
    pub path: Option<&'a str>,
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn has(list: &[String], wanted: &str) -> bool {
    list.iter().any(|x| x == "*" || x == wanted)
}

/// Whether one PolicyRule allows `ask` (rbac/v1's `RuleAllows`).
pub fn rule_allows(rule: &Value, ask: &Ask<'_>) -> bool {
    let verbs = strings(rule, "verbs");
    if !has(&verbs, ask.verb) {
        return false;
    }
    if let Some(path) = ask.path {
        return strings(rule, "nonResourceURLs").iter().any(|u| {
            u == "*" || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
        });
    }
    if !has(&strings(rule, "apiGroups"), ask.api_group) {
        return false;
    }
    let combined = if ask.subresource.is_empty() {
        ask.resource.to_string()
    } else {
        format!("{}/{}", ask.resource, ask.subresource)
    };
    let resources = strings(rule, "resources");
    let resource_ok = resources.iter().any(|r| {
        r == "*" || *r == combined || (!ask.subresource.is_empty() && *r == format!("*/{}", ask.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names = strings(rule, "resourceNames");
    names.is_empty() || (!ask.name.is_empty() && names.iter().any(|n| n == ask.name))
}

/// Whether a binding's subject is `user`; `binding_namespace` for ServiceAccounts named without one.
fn subject_is(subject: &Value, user: &User, binding_namespace: &str) -> bool {
    let field = |f: &str| subject.get(f).and_then(Value::as_str).unwrap_or_default();
    match field("kind") {
        "User" => field("name") == user.name,
        "Group" => user.groups.iter().any(|g| g == field("name")),
        "ServiceAccount" => {
            let ns = match field("namespace") {
                "" => binding_namespace,
                ns => ns,
            };
            user.name == format!("system:serviceaccount:{ns}:{}", field("name"))
        }
        _ => false,
    }
}

/// The rules every binding naming `user` grants in `namespace` (`""`: cluster-wide only).
pub fn rules_for(store: &Store, index: &RbacIndex, user: &User, namespace: &str) -> Vec<Value> {
    let m = index.current(store);
    let mut rules = Vec::new();
    let mut add_role = |role: Option<&Value>| {
        for r in role
            .and_then(|r| r.get("rules"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            rules.push(r.clone());
        }
    };
    let role_name = |binding: &Value| {
        binding
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    for binding in m.cluster_role_bindings.objects.values() {
        let subjects = binding.get("subjects").and_then(Value::as_array);
        if subjects.into_iter().flatten().any(|s| subject_is(s, user, "")) {
            let role = role_name(binding);
            add_role(m.cluster_roles.get(&format!("{CLUSTER_ROLES}{role}")));
        }
    }
    if !namespace.is_empty() {
        let prefix = format!("{ROLE_BINDINGS}{namespace}/");
        for binding in m.role_bindings.under(&prefix) {
            let subjects = binding.get("subjects").and_then(Value::as_array);
            if !subjects
                .into_iter()
                .flatten()
                .any(|s| subject_is(s, user, namespace))
            {
                continue;
            }
            let role = role_name(binding);
            match binding.pointer("/roleRef/kind").and_then(Value::as_str) {
                Some("ClusterRole") => add_role(m.cluster_roles.get(&format!("{CLUSTER_ROLES}{role}"))),
                Some("Role") => add_role(m.roles.get(&format!("{ROLES}{namespace}/{role}"))),
                _ => {}
            }
        }
    }
    rules
}

/// Whether RBAC allows `ask` for `user`.
pub fn allows(store: &Store, index: &RbacIndex, user: &User, ask: &Ask<'_>) -> bool {
    rules_for(store, index, user, ask.namespace)
        .iter()
        .any(|rule| rule_allows(rule, ask))
}

/// The rules of a role being written, cut into single asks (one verb, group, resource, name or
/// path each): what the writer must itself be allowed for the write not to escalate.
fn atoms(rule: &Value) -> Vec<(String, String, String, String, Option<String>)> {
    let verbs = strings(rule, "verbs");
    let mut out = Vec::new();
    for path in strings(rule, "nonResourceURLs") {
        for verb in &verbs {
            out.push((
                verb.clone(),
                String::new(),
                String::new(),
                String::new(),
                Some(path.clone()),
            ));
        }
    }
    let groups = strings(rule, "apiGroups");
    let names = strings(rule, "resourceNames");
    let names = if names.is_empty() {
        vec![String::new()]
    } else {
        names
    };
    for verb in &verbs {
        for group in &groups {
            for resource in strings(rule, "resources") {
                for name in &names {
                    out.push((verb.clone(), group.clone(), resource.clone(), name.clone(), None));
                }
            }
        }
    }
    out
}

/// Whether `user`'s own rules in `namespace` cover `rules` (each atom allowed; a `*` in `rules` is
/// covered only by a `*`).
pub fn covers(
    store: &Store,
    index: &RbacIndex,
    user: &User,
    namespace: &str,
    rules: &[Value],
) -> Result<(), String> {
    let held = rules_for(store, index, user, namespace);
    for rule in rules {
        for (verb, group, resource, name, path) in atoms(rule) {
            let (resource, subresource) = resource.split_once('/').unwrap_or((resource.as_str(), ""));
            let ask = Ask {
                verb: &verb,
                api_group: &group,
                resource,
                subresource,
                namespace,
                name: &name,
                path: path.as_deref(),
            };
            if !held.iter().any(|h| rule_allows(h, &ask)) {
                return Err(format!("{rule}"));
            }
        }
    }
    Ok(())
}

/// The rules of the role a binding refers to (`None`: no such role).
pub fn bound_rules(store: &Store, index: &RbacIndex, binding: &Value, namespace: &str) -> Option<Vec<Value>> {
    let name = binding.pointer("/roleRef/name").and_then(Value::as_str)?;
    let m = index.current(store);
    let role = match binding.pointer("/roleRef/kind").and_then(Value::as_str)? {
        "ClusterRole" => m.cluster_roles.get(&format!("{CLUSTER_ROLES}{name}"))?,
        "Role" => m.roles.get(&format!("{ROLES}{namespace}/{name}"))?,
        _ => return None,
    };
    Some(
        role.get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    )
}

/// The label that aggregates a role into one of the user-facing roles.
fn aggregate_to(role: &str) -> String {
    format!("rbac.authorization.k8s.io/aggregate-to-{role}")
}

/// The default ClusterRoles and ClusterRoleBindings, as kube-apiserver's bootstrap policy has them
/// (the subset that matters to the kinds served here). Created at start when absent.
pub fn default_policy() -> Vec<(&'static str, Value)> {
    let role = |name: &str, labels: Value, rules: Value| json!({"metadata": {"name": name, "labels": labels, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}, "rules": rules});
    let bootstrap = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    // A role feeding `view` feeds `edit` and `admin` too, one feeding `edit` feeds `admin`.
    let with = |into: &[&str]| {
        let mut l = bootstrap.clone();
        for role in into {
            l[aggregate_to(role)] = json!("true");
        }
        l
    };
    let read = json!(["get", "list", "watch"]);
    let write = json!(["create", "delete", "deletecollection", "patch", "update"]);
    let aggregated = |name: &str, to: &[&str]| {
        let selectors: Vec<Value> = to
            .iter()
            .map(|t| json!({"matchLabels": {aggregate_to(t): "true"}}))
            .collect();
        json!({"metadata": {"name": name, "labels": bootstrap, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
               "aggregationRule": {"clusterRoleSelectors": selectors}, "rules": []})
    };
    let binding = |name: &str, role: &str, subjects: Value| {
        json!({"metadata": {"name": name, "labels": bootstrap, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": subjects})
    };
    let group = |g: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g});
    vec![
        (
            "clusterroles",
            role(
                "cluster-admin",
                bootstrap.clone(),
                json!([
                    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                    {"nonResourceURLs": ["*"], "verbs": ["*"]}
                ]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:discovery",
                bootstrap.clone(),
                json!([
                    {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}
                ]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:basic-user",
                bootstrap.clone(),
                json!([
                    {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                    {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}
                ]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:public-info-viewer",
                bootstrap.clone(),
                json!([
                    {"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}
                ]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:service-account-issuer-discovery",
                bootstrap.clone(),
                json!([
                    {"nonResourceURLs": ["/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks", "/openid/v1/jwks/"], "verbs": ["get"]}
                ]),
            ),
        ),
        // What kube-proxy (and berth's agent as a kube-proxy replacement) reads and writes.
        (
            "clusterroles",
            role(
                "system:node-proxier",
                bootstrap.clone(),
                json!([
                    {"apiGroups": [""], "resources": ["endpoints", "services"], "verbs": ["list", "watch"]},
                    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
                    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
                ]),
            ),
        ),
        ("clusterroles", aggregated("admin", &["admin"])),
        ("clusterroles", aggregated("edit", &["edit"])),
        ("clusterroles", aggregated("view", &["view"])),
        // What the aggregated roles are made of: view reads, edit writes, admin manages roles too.
        (
            "clusterroles",
            role(
                "system:aggregate-to-view",
                with(&["view", "edit", "admin"]),
                json!([
                    {"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims", "pods", "pods/log", "pods/status", "replicationcontrollers", "serviceaccounts", "services", "services/status", "events", "namespaces", "namespaces/status"], "verbs": read},
                    {"apiGroups": ["apps"], "resources": ["daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/scale", "replicasets/status"], "verbs": read},
                    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": read}
                ]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:aggregate-to-edit",
                with(&["edit", "admin"]),
                json!([
                    {"apiGroups": [""], "resources": ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "pods/eviction"], "verbs": ["create", "delete", "deletecollection", "patch", "update", "get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims", "replicationcontrollers", "secrets", "serviceaccounts", "services"], "verbs": write},
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": read},
                    {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments", "deployments/scale", "replicasets", "replicasets/scale"], "verbs": write},
                    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": write}
                ]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:aggregate-to-admin",
                with(&["admin"]),
                json!([
                    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "roles"], "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]},
                    {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]}
                ]),
            ),
        ),
        (
            "clusterrolebindings",
            binding("cluster-admin", "cluster-admin", json!([group("system:masters")])),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:discovery",
                "system:discovery",
                json!([group("system:authenticated")]),
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:basic-user",
                "system:basic-user",
                json!([group("system:authenticated")]),
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:service-account-issuer-discovery",
                "system:service-account-issuer-discovery",
                json!([group("system:serviceaccounts")]),
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:node-proxier",
                "system:node-proxier",
                json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-proxy"}]),
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:public-info-viewer",
                "system:public-info-viewer",
                json!([group("system:authenticated"), group("system:unauthenticated")]),
            ),
        ),
    ]
}

/// The rules of an aggregated ClusterRole: the union of the rules of every ClusterRole its
/// selectors match (the clusterrole-aggregation controller's work), `None` for others.
pub fn aggregated_rules(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    let selectors = role
        .pointer("/aggregationRule/clusterRoleSelectors")?
        .as_array()?;
    let own = role.pointer("/metadata/name");
    let mut rules: Vec<Value> = Vec::new();
    for other in all.iter().filter(|o| o.pointer("/metadata/name") != own) {
        let labels = other.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
        if selectors
            .iter()
            .any(|s| super::selector::matches_label_selector(s, &labels))
        {
            for rule in other.get("rules").and_then(Value::as_array).into_iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask<'a>(verb: &'a str, group: &'a str, resource: &'a str, sub: &'a str, name: &'a str) -> Ask<'a> {
        Ask {
            verb,
            api_group: group,
            resource,
            subresource: sub,
            namespace: "default",
            name,
            path: None,
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_names_and_paths() {
        let rule = json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]});
        assert!(rule_allows(&rule, &ask("get", "", "pods", "", "p")));
        assert!(rule_allows(&rule, &ask("get", "", "pods", "log", "p")));
        assert!(!rule_allows(&rule, &ask("get", "", "pods", "exec", "p")));
        assert!(!rule_allows(&rule, &ask("delete", "", "pods", "", "p")));
        assert!(!rule_allows(&rule, &ask("get", "apps", "pods", "", "p")));
        let named = json!({"apiGroups": ["apps"], "resources": ["*/scale"], "resourceNames": ["web"], "verbs": ["*"]});
        assert!(rule_allows(
            &named,
            &ask("update", "apps", "deployments", "scale", "web")
        ));
        assert!(!rule_allows(
            &named,
            &ask("update", "apps", "deployments", "scale", "api")
        ));
        assert!(!rule_allows(
            &named,
            &ask("list", "apps", "deployments", "scale", "")
        ));
        let urls = json!({"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]});
        let path = |p| Ask {
            verb: "get",
            path: Some(p),
            ..Ask::default()
        };
        assert!(rule_allows(&urls, &path("/healthz")));
        assert!(rule_allows(&urls, &path("/apis/apps/v1")));
        assert!(!rule_allows(&urls, &path("/metrics")));
    }

    #[test]
    fn subjects_and_aggregation() {
        let jane = User {
            name: "jane".into(),
            groups: vec!["dev".into()],
        };
        assert!(subject_is(&json!({"kind": "User", "name": "jane"}), &jane, ""));
        assert!(subject_is(&json!({"kind": "Group", "name": "dev"}), &jane, ""));
        let sa = User {
            name: "system:serviceaccount:shop:web".into(),
            groups: vec![],
        };
        assert!(subject_is(
            &json!({"kind": "ServiceAccount", "name": "web"}),
            &sa,
            "shop"
        ));
        assert!(!subject_is(
            &json!({"kind": "ServiceAccount", "name": "web", "namespace": "other"}),
            &sa,
            "shop"
        ));
        let policy: Vec<Value> = default_policy()
            .into_iter()
            .filter(|(p, _)| *p == "clusterroles")
            .map(|(_, r)| r)
            .collect();
        let edit = policy
            .iter()
            .find(|r| r["metadata"]["name"] == "edit")
            .expect("edit");
        let rules = aggregated_rules(edit, &policy).expect("aggregated");
        assert!(
            rules
                .iter()
                .any(|r| rule_allows(r, &ask("create", "apps", "deployments", "", "")))
        );
        assert!(
            !rules
                .iter()
                .any(|r| rule_allows(r, &ask("create", "rbac.authorization.k8s.io", "roles", "", "")))
        );
    }
}
