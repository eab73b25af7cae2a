//! Who is asking and what they may do.
//!
//! Authentication: the admin bearer token (`system:masters`); bootstrap tokens
//! (`<id>.<secret>`, checked against the `bootstrap-token-<id>` Secret in `kube-system`, as
//! kube-apiserver's bootstrap token authenticator does: user `system:bootstrap:<id>`, group
//! `system:bootstrappers`); and client certificates signed by the cluster CA (the TLS layer verified
//! them; the subject's CN is the user, its O entries the groups), which is how a node acts after it
//! joined.
//!
//! Authorization: `system:masters` may do anything; bootstrappers may only submit and read
//! certificate signing requests and read `kube-public/cluster-info`; nodes (`system:node:<name>` in
//! `system:nodes`) get what the Node authorizer and NodeRestriction admission give a kubelet: read
//! what they run and route (nodes, pods, services, endpoints and slices, leases, CSRs; no
//! subresource such as pods/log; Secrets and ConfigMaps only when a pod bound to the node uses
//! them), write only their own Node and Lease, the status of pods bound to them and their deletion,
//! mirror pods of their own, and events.

use serde_json::Value;

use super::{
    node_graph::NodeGraph, objects, rbac, rbac::RbacIndex, resources::Resource, status::ApiError,
    times::now_epoch,
};

/// What the authorizers keep in memory, caught up from the store's events on each question: which
/// Secrets and ConfigMaps each node's pods use (Node authorizer) and RBAC's roles and bindings.
#[derive(Default)]
pub struct Indexes {
    pub node_graph: NodeGraph,
    pub rbac: RbacIndex,
}
use crate::store::Store;

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn admin() -> User {
        User {
            name: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    /// A request without credentials, as kube-apiserver's anonymous authentication names it.
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// A cluster administrator (`system:masters`).
    pub fn is_admin(&self) -> bool {
        self.in_group("system:masters")
    }

    fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// The node this user is, if it is one.
    pub fn node_name(&self) -> Option<&str> {
        if !self.in_group("system:nodes") {
            return None;
        }
        self.name.strip_prefix("system:node:").filter(|n| !n.is_empty())
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// Checks a bootstrap token against its Secret.
fn bootstrap_user(store: &Store, token: &str) -> Option<User> {
    let (id, secret) = token.split_once('.')?;
    let well_formed =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !well_formed(id, 6) || !well_formed(secret, 16) {
        return None;
    }
    let kv = store.get(&format!("/registry/secrets/kube-system/bootstrap-token-{id}"))?;
    let token = crate::tokens::TokenSecret::of(&objects::render(&kv).ok()?)?;
    // An expiration that does not parse is expired, as kube-apiserver's bootstrap authenticator has it.
    if token.id != id
        || !same_secret(token.secret.as_bytes(), secret.as_bytes())
        || !token.authentication
        || token.expired(now_epoch())
    {
        return None;
    }
    let mut groups = vec![
        "system:bootstrappers".to_string(),
        "system:authenticated".to_string(),
    ];
    if let Some(extra) = token.extra_groups {
        groups.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(str::to_string),
        );
    }
    Some(User {
        name: format!("system:bootstrap:{id}"),
        groups,
    })
}

/// The user of a client certificate the TLS layer verified against the cluster CA.
fn certificate_user(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Some(User { name, groups })
}

/// Compares secrets in time that depends on their lengths only, never on where they first differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticates a request by its bearer token or verified client certificate.
pub fn authenticate(
    store: &Store,
    admin_token: &str,
    token: Option<&str>,
    client_cert: Option<&[u8]>,
) -> Result<User, ApiError> {
    match (token, client_cert) {
        (Some(t), _) if same_secret(t.as_bytes(), admin_token.as_bytes()) => Ok(User::admin()),
        (Some(t), _) => bootstrap_user(store, t).ok_or_else(unauthorized),
        (None, Some(der)) => certificate_user(der).ok_or_else(unauthorized),
        (None, None) => Err(unauthorized()),
    }
}

/// Who a request asks to act as (`Impersonate-User`, `Impersonate-Group`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Impersonation {
    pub user: Option<String>,
    pub groups: Vec<String>,
}

/// The user `user` acts as when it asks to impersonate, as kube-apiserver's impersonation filter
/// decides: the `impersonate` verb on `users` (or on the `serviceaccounts` object for a service
/// account's user name) and on `groups` for each group asked for, by RBAC (cluster administrators
/// may do anything; nodes and bootstrap tokens never impersonate). The request then has exactly the
/// rights of the impersonated user and groups (`system:authenticated` added, and a service
/// account's groups for one).
pub fn impersonate(
    store: &Store,
    indexes: &Indexes,
    user: &User,
    wanted: &Impersonation,
) -> Result<User, ApiError> {
    let Some(name) = wanted.user.clone().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(
            "requested impersonation of groups without impersonating a user",
        ));
    };
    let service_account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, sa)| (ns.to_string(), sa.to_string()));
    let may = |resource: &str, namespace: &str, target: &str| {
        user.is_admin()
            || (user.node_name().is_none()
                && !user.in_group("system:bootstrappers")
                && rbac::allows(
                    store,
                    &indexes.rbac,
                    user,
                    &rbac::Ask {
                        verb: "impersonate",
                        resource,
                        namespace,
                        name: target,
                        ..rbac::Ask::default()
                    },
                ))
    };
    let refuse = |resource: &str, namespace: &str, target: &str| {
        let scope = if namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{namespace}\"")
        };
        ApiError::new(
            403,
            "Forbidden",
            format!(
                "{resource} \"{target}\" is forbidden: User \"{}\" cannot impersonate resource \"{resource}\" in API group \"\" {scope}",
                user.name
            ),
        )
    };
    match &service_account {
        Some((ns, sa)) if !may("serviceaccounts", ns, sa) => return Err(refuse("serviceaccounts", ns, sa)),
        None if !may("users", "", &name) => return Err(refuse("users", "", &name)),
        _ => {}
    }
    for group in &wanted.groups {
        if !may("groups", "", group) {
            return Err(refuse("groups", "", group));
        }
    }
    let mut groups = wanted.groups.clone();
    if let Some((ns, _)) = service_account.as_ref().filter(|_| groups.is_empty()) {
        groups = vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ];
    }
    if name != "system:anonymous" && !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(User { name, groups })
}

/// What a request does, as authorization sees it.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'a str,
    pub resource: &'a Resource,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// The object's name (for a create: the name in the body).
    pub name: Option<&'a str>,
}

fn forbidden(user: &User, a: &Attributes<'_>, why: &str) -> ApiError {
    let resource = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource.plural),
        None => a.resource.plural.to_string(),
    };
    let scope = match a.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    let subject = match a.name {
        Some(n) => format!("{} \"{n}\"", a.resource.plural),
        None => a.resource.plural.to_string(),
    };
    let mut e = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{subject} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}{}",
            user.name,
            a.verb,
            a.resource.group,
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        ),
    );
    e.details = Some((
        a.resource.plural.to_string(),
        a.name.unwrap_or_default().to_string(),
    ));
    e
}

fn reads(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// Allows or refuses (403) a request.
pub fn authorize(store: &Store, indexes: &Indexes, user: &User, a: &Attributes<'_>) -> Result<(), ApiError> {
    if user.in_group("system:masters") {
        return Ok(());
    }
    if let Some(node) = user.node_name() {
        return authorize_node(store, &indexes.node_graph, user, node, a);
    }
    let cluster_info = a.resource.plural == "configmaps"
        && a.subresource.is_none()
        && a.verb == "get"
        && a.namespace == Some("kube-public")
        && a.name == Some("cluster-info");
    if user.in_group("system:unauthenticated") {
        // kubeadm's `kubeadm:bootstrap-signer-clusterinfo` Role: discovery reads cluster-info before
        // it trusts the server (its JWS signature is what proves the server knows the token); every
        // other anonymous request is unauthenticated.
        return if cluster_info { Ok(()) } else { Err(unauthorized()) };
    }
    if user.in_group("system:bootstrappers") {
        let csr = a.resource.plural == "certificatesigningrequests"
            && a.subresource.is_none()
            && (reads(a.verb) || a.verb == "create");
        if csr || cluster_info {
            return Ok(());
        }
    }
    // Everyone else: what RBAC grants.
    let ask = rbac::Ask {
        verb: a.verb,
        api_group: a.resource.group,
        resource: a.resource.plural,
        subresource: a.subresource.unwrap_or_default(),
        namespace: a.namespace.unwrap_or_default(),
        name: a.name.unwrap_or_default(),
        path: None,
    };
    if rbac::allows(store, &indexes.rbac, user, &ask) {
        return Ok(());
    }
    Err(forbidden(user, a, ""))
}

/// Whether `user` may do what `ask` says, by the same authorizers as a real request (for access
/// reviews: `kubectl auth can-i`). A resource this server does not serve is RBAC's alone.
pub fn allowed(store: &Store, indexes: &Indexes, user: &User, ask: &rbac::Ask<'_>) -> bool {
    if user.in_group("system:masters") {
        return true;
    }
    if ask.path.is_some() {
        return user.node_name().is_none() && rbac::allows(store, &indexes.rbac, user, ask);
    }
    let served = super::resources::RESOURCES
        .iter()
        .find(|r| r.group == ask.api_group && r.plural == ask.resource);
    match served {
        Some(resource) => {
            let attributes = Attributes {
                verb: ask.verb,
                resource,
                subresource: Some(ask.subresource).filter(|s| !s.is_empty()),
                namespace: Some(ask.namespace).filter(|s| !s.is_empty()),
                name: Some(ask.name).filter(|s| !s.is_empty()),
            };
            authorize(store, indexes, user, &attributes).is_ok()
        }
        None => user.node_name().is_none() && rbac::allows(store, &indexes.rbac, user, ask),
    }
}

/// The Secrets or ConfigMaps (`kind`) a pod spec uses: volumes (also projected), env and envFrom of
/// every container, image pull secrets.
pub fn references(spec: &Value, kind: &str) -> Vec<String> {
    let secrets = kind == "secrets";
    let mut out = Vec::new();
    let mut push = |v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_str) {
            out.push(n.to_string());
        }
    };
    let list = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for vol in list(spec, "/volumes") {
        if secrets {
            push(vol.pointer("/secret/secretName"));
        } else {
            push(vol.pointer("/configMap/name"));
        }
        for source in list(&vol, "/projected/sources") {
            push(source.pointer(if secrets {
                "/secret/name"
            } else {
                "/configMap/name"
            }));
        }
    }
    for group in ["/containers", "/initContainers", "/ephemeralContainers"] {
        for c in list(spec, group) {
            for env in list(&c, "/env") {
                push(env.pointer(if secrets {
                    "/valueFrom/secretKeyRef/name"
                } else {
                    "/valueFrom/configMapKeyRef/name"
                }));
            }
            for from in list(&c, "/envFrom") {
                push(from.pointer(if secrets {
                    "/secretRef/name"
                } else {
                    "/configMapRef/name"
                }));
            }
        }
    }
    if secrets {
        for s in list(spec, "/imagePullSecrets") {
            push(s.get("name"));
        }
    }
    out
}

/// The kinds a node may read: what it runs and routes (kubelet's and kube-proxy's reads).
const NODE_READABLE: [&str; 7] = [
    "nodes",
    "pods",
    "services",
    "endpoints",
    "endpointslices",
    "leases",
    "certificatesigningrequests",
];

fn authorize_node(
    store: &Store,
    graph: &NodeGraph,
    user: &User,
    node: &str,
    a: &Attributes<'_>,
) -> Result<(), ApiError> {
    let plural = a.resource.plural;
    let ns = a.namespace.unwrap_or_default();
    let name = a.name.unwrap_or_default();
    let allowed = match plural {
        "secrets" | "configmaps" => a.verb == "get" && graph.uses(store, node, ns, plural, name),
        // What kubelet and kube-proxy read (the system:node and system:node-proxier roles), as the
        // objects themselves: no subresource such as pods/log (the API server would then dial
        // another node with its own administrator certificate).
        _ if reads(a.verb) => {
            NODE_READABLE.contains(&plural) && matches!(a.subresource, None | Some("status"))
        }
        "nodes" => matches!(a.verb, "create" | "update" | "patch") && name == node,
        "leases" => ns == "kube-node-lease" && name == node && !matches!(a.verb, "deletecollection"),
        "pods" => {
            let bound = || {
                store
                    .get(&format!("/registry/pods/{ns}/{name}"))
                    .and_then(|kv| objects::render(&kv).ok())
                    .is_some_and(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
            };
            match (a.verb, a.subresource) {
                ("update" | "patch", Some("status")) | ("delete", None) => bound(),
                // Mirror pods of its static pods only: the body is checked by `admit_node_pod`.
                ("create", None) => true,
                _ => false,
            }
        }
        "events" => matches!(a.verb, "create" | "update" | "patch"),
        // Tokens for its pods' service accounts (the request is checked against the pod it binds
        // to by `serviceaccounts::token_request`).
        "serviceaccounts" => a.verb == "create" && a.subresource == Some("token"),
        "certificatesigningrequests" => a.verb == "create" && a.subresource.is_none(),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        let why = match plural {
            "nodes" if name != node => format!("node '{node}' cannot modify node '{name}'"),
            "pods" => format!("node '{node}' can only change pods bound to it"),
            _ => String::new(),
        };
        Err(forbidden(user, a, &why))
    }
}

/// NodeRestriction for a pod a node creates: only a mirror pod of its own static pod, bound to it,
/// using no Secret, ConfigMap, service account or volume claim, owned by nothing but its Node.
pub fn admit_node_pod(user: &User, body: &[u8]) -> Result<(), ApiError> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let refuse = |why: String| {
        Err(ApiError::new(
            403,
            "Forbidden",
            format!("pod is forbidden: {why}"),
        ))
    };
    let Ok(pod) = serde_json::from_slice::<Value>(body) else {
        return refuse(format!("node {node:?} must send a mirror pod as JSON"));
    };
    if !super::kinds::is_mirror_pod(&pod) {
        return refuse(format!(
            "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
        ));
    }
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    if spec.get("nodeName").and_then(Value::as_str) != Some(node) {
        return refuse(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    if spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return refuse(format!(
            "node {node:?} can not create pods that reference serviceaccounts"
        ));
    }
    for kind in ["secrets", "configmaps"] {
        if !references(&spec, kind).is_empty() {
            return refuse(format!("node {node:?} can not create pods that reference {kind}"));
        }
    }
    let claims = spec.get("volumes").and_then(Value::as_array).is_some_and(|vs| {
        vs.iter()
            .any(|v| v.get("persistentVolumeClaim").is_some() || v.get("ephemeral").is_some())
    });
    if claims {
        return refuse(format!(
            "node {node:?} can not create pods that reference persistentvolumeclaims"
        ));
    }
    let foreign_owner = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners.iter().any(|o| {
                o.get("kind").and_then(Value::as_str) != Some("Node")
                    || o.get("name").and_then(Value::as_str) != Some(node)
            })
        });
    if foreign_owner {
        return refuse(format!(
            "node {node:?} can only create pods with an owner reference set to itself"
        ));
    }
    Ok(())
}

/// Labels a node may not give itself (NodeRestriction): the prefixes that scheduling and isolation
/// decisions trust because nodes cannot set them.
fn restricted_label(key: &str) -> bool {
    let prefix = key.split_once('/').map_or("", |(p, _)| p);
    prefix == "node-restriction.kubernetes.io"
        || prefix.ends_with(".node-restriction.kubernetes.io")
        || prefix == "node-role.kubernetes.io"
}

fn restricted_labels(node: &Value) -> Vec<(String, Value)> {
    node.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| restricted_label(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// NodeRestriction for a node writing its own Node: `current` is what the store holds (None when it
/// registers), `proposed` what the write would make of it. It may register with taints (kubelet's
/// `--register-with-taints`) but not change them afterwards, and never set, change or remove
/// `node-restriction.kubernetes.io/` or `node-role.kubernetes.io/` labels.
pub fn admit_node_write(user: &User, current: Option<&Value>, proposed: &Value) -> Result<(), ApiError> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let refuse = |why: String| {
        Err(ApiError::new(
            403,
            "Forbidden",
            format!("nodes \"{node}\" is forbidden: {why}"),
        ))
    };
    let before = current.map(restricted_labels).unwrap_or_default();
    let after = restricted_labels(proposed);
    if before != after {
        let keys: Vec<&str> = after.iter().chain(&before).map(|(k, _)| k.as_str()).collect();
        return refuse(format!(
            "is not allowed to modify labels: {}",
            keys.first().copied().unwrap_or_default()
        ));
    }
    let taints = |v: &Value| {
        v.pointer("/spec/taints")
            .cloned()
            .filter(|t| !t.as_array().is_some_and(|a| a.is_empty()))
    };
    if let Some(current) = current
        && taints(current) != taints(proposed)
    {
        return refuse(format!("node {node:?} is not allowed to modify taints"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_keeps_its_taints_and_cannot_label_itself_into_trust() {
        let node = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        let current = json!({"metadata": {"name": "n1", "labels": {"zone": "a", "node-role.kubernetes.io/worker": ""}},
            "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
        let mut ok = current.clone();
        ok["metadata"]["labels"]["zone"] = json!("b");
        assert!(
            admit_node_write(&node, Some(&current), &ok).is_ok(),
            "other labels are its own"
        );
        let mut untainted = current.clone();
        untainted["spec"]["taints"] = json!([]);
        let e = admit_node_write(&node, Some(&current), &untainted).expect_err("taints removed");
        assert!(e.message.contains("modify taints"), "{}", e.message);
        let mut promoted = current.clone();
        promoted["metadata"]["labels"]["node-restriction.kubernetes.io/pci"] = json!("true");
        assert_eq!(
            admit_node_write(&node, Some(&current), &promoted).map_err(|e| e.code),
            Err(403)
        );
        let mut demoted = current.clone();
        demoted["metadata"]["labels"] = json!({"zone": "a"});
        assert_eq!(
            admit_node_write(&node, Some(&current), &demoted).map_err(|e| e.code),
            Err(403)
        );
        let registering =
            json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}}});
        assert_eq!(
            admit_node_write(&node, None, &registering).map_err(|e| e.code),
            Err(403)
        );
        let tainted =
            json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        assert!(
            admit_node_write(&node, None, &tainted).is_ok(),
            "registering with taints"
        );
        assert!(admit_node_write(&User::admin(), Some(&current), &untainted).is_ok());
    }

    #[test]
    fn nodes_create_only_mirror_pods_of_their_own() {
        let node = User {
            name: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        let pod = |annotations: Value, spec: Value| {
            serde_json::to_vec(&json!({"metadata": {"name": "p", "annotations": annotations}, "spec": spec}))
                .expect("json")
        };
        let mirror = json!({"kubernetes.io/config.mirror": "abc"});
        let mine = json!({"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]});
        assert!(admit_node_pod(&node, &pod(mirror.clone(), mine.clone())).is_ok());
        for (annotations, spec, why) in [
            (json!({}), mine.clone(), "can only create mirror pods"),
            (
                mirror.clone(),
                json!({"nodeName": "n2", "containers": []}),
                "set to itself",
            ),
            (
                mirror.clone(),
                json!({"nodeName": "n1", "serviceAccountName": "admin", "containers": []}),
                "serviceaccounts",
            ),
            (
                mirror.clone(),
                json!({"nodeName": "n1", "volumes": [{"name": "s", "secret": {"secretName": "token"}}], "containers": []}),
                "reference secrets",
            ),
        ] {
            let e = admit_node_pod(&node, &pod(annotations, spec)).expect_err(why);
            assert_eq!(e.code, 403);
            assert!(e.message.contains(why), "{}", e.message);
        }
        assert!(
            admit_node_pod(&User::admin(), b"not json").is_ok(),
            "others are not a node's business"
        );
    }

    #[test]
    fn pod_references() {
        let spec = json!({
            "volumes": [{"name": "a", "secret": {"secretName": "tls"}}, {"name": "b", "configMap": {"name": "cfg"}}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "k"}}}], "envFrom": [{"configMapRef": {"name": "env"}}]}],
            "imagePullSecrets": [{"name": "reg"}]
        });
        assert_eq!(references(&spec, "secrets"), ["tls", "pw", "reg"]);
        assert_eq!(references(&spec, "configmaps"), ["cfg", "env"]);
    }
}
