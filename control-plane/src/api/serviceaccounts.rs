//! Service-account tokens, as kube-apiserver issues and checks them: the TokenRequest subresource
//! (`POST serviceaccounts/NAME/token`) hands out bound, expiring JWTs signed by the control plane's
//! key ([`crate::jwt`]); the authenticator accepts them while the service account, and the pod,
//! Secret or Node they are bound to, still exist with the same UID; the OIDC discovery document and
//! the JWKS let others verify them; and the ServiceAccount admission plugin mounts a pod's token,
//! the cluster CA and its namespace at `/var/run/secrets/kubernetes.io/serviceaccount`.

use base64::Engine;
use serde_json::{Value, json};

use super::{
    auth::User,
    objects,
    status::ApiError,
    times::{epoch_seconds, now_epoch},
    token_cache::TokenCache,
};
use crate::{jwt::Signer, store::Store};

/// The issuer (`iss`) of the tokens and the audience the API server accepts (kube-apiserver's
/// default `--service-account-issuer` and `--api-audiences` on kubeadm clusters).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The issuer of the non-expiring tokens kept in `kubernetes.io/service-account-token` Secrets
/// (`controllers/legacytokens.rs`), as kube-controller-manager writes them.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// The type of a Secret that holds a service account's token.
pub const LEGACY_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// The annotation of a token Secret that names its account (the one field its author must set).
pub const LEGACY_TOKEN_ACCOUNT_ANNOTATION: &str = "kubernetes.io/service-account.name";

/// Where containers find their token, the CA and their namespace.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A TokenRequest's lifetime when it names none (one hour).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// The shortest lifetime one may ask for (kube-apiserver's validation: ten minutes).
const MIN_EXPIRATION_SECONDS: i64 = 600;

/// Clock skew tolerated on `exp` and `nbf` (go-jose's default leeway, which kube-apiserver uses).
const LEEWAY_SECONDS: i64 = 60;

/// A pod-bound token stays valid this long after the pod's deletion began (kube-apiserver's grace).
const DELETED_POD_GRACE_SECONDS: i64 = 60;

/// The lifetime of the tokens in the volumes the admission plugin adds (kube-apiserver's
/// `warnafter` marker value: 1 h plus 7 s).
const VOLUME_TOKEN_SECONDS: i64 = 3607;

/// What a pod-bound token asked for with [`VOLUME_TOKEN_SECONDS`] really lives: one year, as
/// kube-apiserver's `--service-account-extend-token-expiration` (on by default) issues it, so that
/// clients which read their token once keep working; the token says when it should have been
/// replaced (`kubernetes.io/warnafter`), and the node still refreshes it at the hour.
const EXTENDED_TOKEN_SECONDS: i64 = 365 * 24 * 3600;

fn stored(store: &Store, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
    let key = match namespace {
        Some(ns) => format!("/registry/{plural}/{ns}/{name}"),
        None => format!("/registry/{plural}/{name}"),
    };
    objects::render(&store.get(&key)?).ok()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The store plural of a kind a token can be bound to.
fn bound_plural(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("pods"),
        "Secret" => Some("secrets"),
        "Node" => Some("nodes"),
        _ => None,
    }
}

/// Answers `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`: a TokenRequest with its
/// `status.token` and `status.expirationTimestamp`. A node may only ask for tokens bound to a pod
/// of its own that runs as that service account (the Node authorizer and NodeRestriction).
pub fn token_request(
    store: &Store,
    signer: &Signer,
    user: &User,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let mut request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not a TokenRequest: {e}")))?;
    if !request.is_object() {
        return Err(ApiError::bad_request("the request body is not a JSON object"));
    }
    let invalid = |field: &str, message: String| ApiError::invalid("TokenRequest", "", field, &message);
    let expiration = match request.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid(
                "spec.expirationSeconds",
                format!("Invalid value: {v}: must be a whole number of seconds"),
            )
        })?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"),
        ));
    }
    let audiences: Vec<String> = match request.pointer("/spec/audiences").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                invalid(
                    "spec.audiences",
                    "Invalid value: audiences must be strings".into(),
                )
            })?,
        _ => vec![ISSUER.to_string()],
    };
    let sa = stored(store, "serviceaccounts", Some(namespace), name).ok_or_else(|| {
        let mut e = ApiError::not_found("serviceaccounts", name);
        e.details = Some(("serviceaccounts".into(), name.into()));
        e
    })?;
    let mut private = json!({
        "namespace": namespace,
        "serviceaccount": {"name": name, "uid": str_at(&sa, "/metadata/uid")},
    });
    let bound = request
        .pointer("/spec/boundObjectRef")
        .filter(|v| !v.is_null())
        .cloned();
    let mut bound_pod = None;
    if let Some(reference) = &bound {
        let kind = str_at(reference, "/kind");
        let plural = bound_plural(kind).ok_or_else(|| {
            invalid(
                "spec.boundObjectRef.kind",
                format!("Unsupported value: {kind:?}: supported values: \"Pod\", \"Secret\", \"Node\""),
            )
        })?;
        let bound_name = str_at(reference, "/name");
        let ns = (kind != "Node").then_some(namespace);
        let object =
            stored(store, plural, ns, bound_name).ok_or_else(|| ApiError::not_found(plural, bound_name))?;
        let uid = str_at(&object, "/metadata/uid");
        let wanted_uid = str_at(reference, "/uid");
        if !wanted_uid.is_empty() && wanted_uid != uid {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "the UID in the bound object reference ({wanted_uid}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        private[kind.to_lowercase()] = json!({"name": bound_name, "uid": uid});
        if kind == "Pod" {
            // As kube-apiserver 1.30+: a pod-bound token also names the pod's node.
            let node_name = str_at(&object, "/spec/nodeName");
            if let Some(node) = stored(store, "nodes", None, node_name).filter(|_| !node_name.is_empty()) {
                private["node"] = json!({"name": node_name, "uid": str_at(&node, "/metadata/uid")});
            }
            bound_pod = Some(object);
        }
    }
    if let Some(node) = user.node_name() {
        // NodeRestriction: tokens for the pods a node runs, never free-standing ones.
        let refuse = |why: &str| {
            ApiError::new(
                403,
                "Forbidden",
                format!("serviceaccounts \"{name}\" is forbidden: node \"{node}\" {why}"),
            )
        };
        let Some(pod) = &bound_pod else {
            return Err(refuse("requested token not bound to a pod"));
        };
        if str_at(pod, "/spec/nodeName") != node {
            return Err(refuse(
                "requested token bound to a pod scheduled on a different node",
            ));
        }
        if str_at(pod, "/spec/serviceAccountName") != name {
            return Err(refuse(
                "requested token for a service account its pod does not use",
            ));
        }
    }
    let issued = now_epoch();
    let expires = issued + expiration;
    // A volume token (bound to a pod, for this API server) lives a year past its stated expiry.
    let lifetime = if bound_pod.is_some() && expiration == VOLUME_TOKEN_SECONDS && audiences == [ISSUER] {
        private["warnafter"] = json!(expires);
        EXTENDED_TOKEN_SECONDS
    } else {
        expiration
    };
    let claims = json!({
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "aud": audiences,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
        "jti": objects::new_uid(),
        "kubernetes.io": private,
    });
    let token = signer
        .sign(&claims)
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({"name": name, "namespace": namespace, "creationTimestamp": Value::Null});
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(expiration);
    request["status"] = json!({
        "token": token,
        "expirationTimestamp": super::times::rfc3339_at(expires.max(0) as u64),
    });
    Ok(request)
}

/// The user of a service-account token this server issued, if it is still valid: signed by this
/// server's key, for this API server's audience, within its lifetime, and its service account (and
/// the object it is bound to) still the one it was issued for. The signature is checked once per
/// token (`cache`), the rest on every call.
pub fn authenticate(store: &Store, signer: &Signer, cache: &TokenCache, token: &str) -> Option<User> {
    let now = now_epoch();
    let claims = cache.claims(token, now, || signer.verify(token).ok())?;
    if claims.get("iss").and_then(Value::as_str) == Some(LEGACY_ISSUER) {
        return legacy_user(store, &claims, token);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return None;
    }
    let for_us = match claims.get("aud") {
        Some(Value::String(a)) => a == ISSUER,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(ISSUER)),
        _ => false,
    };
    let exp = claims.get("exp").and_then(Value::as_i64)?;
    let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(i64::MIN);
    if !for_us || now - LEEWAY_SECONDS > exp || now + LEEWAY_SECONDS < nbf {
        return None;
    }
    let private = claims.get("kubernetes.io")?;
    let namespace = str_at(private, "/namespace");
    let name = str_at(private, "/serviceaccount/name");
    if claims.get("sub").and_then(Value::as_str) != Some(&format!("system:serviceaccount:{namespace}:{name}"))
    {
        return None;
    }
    let same = |plural: &str, ns: Option<&str>, at: &str| -> Option<Value> {
        let object = stored(store, plural, ns, str_at(private, &format!("/{at}/name")))?;
        (str_at(&object, "/metadata/uid") == str_at(private, &format!("/{at}/uid"))).then_some(object)
    };
    same("serviceaccounts", Some(namespace), "serviceaccount")?;
    if private.get("pod").is_some() {
        let pod = same("pods", Some(namespace), "pod")?;
        let deleted_at = pod
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(epoch_seconds);
        if deleted_at.is_some_and(|t| t < now - DELETED_POD_GRACE_SECONDS) {
            return None;
        }
    } else if private.get("secret").is_some() {
        same("secrets", Some(namespace), "secret")?;
    } else if private.get("node").is_some() {
        same("nodes", None, "node")?;
    }
    Some(account_user(namespace, name))
}

/// The user of a token from a `kubernetes.io/service-account-token` Secret: valid while that Secret
/// still holds exactly this token and its account still has the UID the token names (no expiry, as
/// in Kubernetes; deleting the Secret revokes it).
fn legacy_user(store: &Store, claims: &Value, token: &str) -> Option<User> {
    let claim = |name: &str| {
        claims
            .get(format!("kubernetes.io/serviceaccount/{name}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let (namespace, name) = (claim("namespace"), claim("service-account.name"));
    let account = stored(store, "serviceaccounts", Some(namespace), name)?;
    if str_at(&account, "/metadata/uid") != claim("service-account.uid") {
        return None;
    }
    let secret = stored(store, "secrets", Some(namespace), claim("secret.name"))?;
    let held = secret
        .pointer("/data/token")
        .and_then(Value::as_str)
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok());
    if secret.get("type").and_then(Value::as_str) != Some(LEGACY_TOKEN_TYPE)
        || held.as_deref() != Some(token.as_bytes())
    {
        return None;
    }
    Some(account_user(namespace, name))
}

/// A service account's user: its name and groups.
fn account_user(namespace: &str, name: &str) -> User {
    User {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    }
}

/// `/.well-known/openid-configuration`: where the keys are and what tokens look like, for anyone
/// who verifies service-account tokens (cloud identity federation, Vault).
pub fn openid_configuration() -> Value {
    json!({
        "issuer": ISSUER,
        "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

/// `/openid/v1/jwks`: the public key tokens are verified with.
pub fn jwks(signer: &Signer) -> Value {
    json!({"keys": [signer.jwk()]})
}

/// The namespace's `default` account, made now when the serviceaccount controller has not made it
/// yet: a pod applied right after its namespace (one `kubectl apply -f`) would otherwise race the
/// controller, where kube-apiserver retries the lookup for a while. `None` when it cannot be made
/// (the namespace is gone or terminating).
fn make_default_account(store: &Store, namespace: &str) -> Option<Value> {
    let r = super::resources::by_plural("serviceaccounts")?;
    let body = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}});
    let made = objects::create(
        store,
        r,
        Some(namespace),
        body.to_string().as_bytes(),
        super::typed::FieldValidation::Strict,
    );
    match made {
        Ok((sa, _)) => Some(sa),
        Err(e) if e.code == 409 => stored(store, "serviceaccounts", Some(namespace), "default"),
        Err(_) => None,
    }
}

/// The ServiceAccount admission plugin on a new pod (mirror pods skip it): its service account must exist, and unless the
/// pod or the account opts out (`automountServiceAccountToken: false`) every container gets the
/// `kube-api-access-*` projected volume (token, CA bundle, namespace) at [`MOUNT_PATH`].
pub fn admit_pod(store: &Store, pod: &mut Value) -> Result<(), ApiError> {
    let namespace = str_at(pod, "/metadata/namespace").to_string();
    let account = str_at(pod, "/spec/serviceAccountName").to_string();
    if account.is_empty() {
        return Ok(());
    }
    let found = stored(store, "serviceaccounts", Some(&namespace), &account).or_else(|| {
        (account == "default")
            .then(|| make_default_account(store, &namespace))
            .flatten()
    });
    let Some(sa) = found else {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "pods \"{}\" is forbidden: error looking up service account {namespace}/{account}: serviceaccount \"{account}\" not found",
                str_at(pod, "/metadata/name")
            ),
        ));
    };
    let automount = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let suffix = objects::random_suffix();
    let volume = format!("kube-api-access-{suffix}");
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            if mounts.iter().any(|m| str_at(m, "/mountPath") == MOUNT_PATH) {
                continue;
            }
            mounts.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
            mounted = true;
        }
    }
    if mounted {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(json!({
                "name": volume,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": VOLUME_TOKEN_SECONDS, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            }));
        }
    }
    Ok(())
}
