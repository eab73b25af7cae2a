//! The Kubernetes API, transport-free: [`Api::handle`] takes a method, path, query, bearer token and
//! body and returns a [`Reply`] (the server turns it into HTTP). Kept free of sockets so it is tested
//! directly and the server stays a thin shell.
//!
//! Served so far: `/version`, `/healthz`, `/livez`, `/readyz` (without authentication, as the
//! `system:public-info-viewer` role allows), discovery (`/api`, `/api/v1`, `/apis`), a minimal OpenAPI
//! v3, and create / get / list (with label selectors) / replace / patch / delete / watch of namespaces,
//! configmaps and secrets. Every error is a `Status`. Watches are planned here ([`Api::watch_plan`])
//! and streamed by the server (bookmarks, streaming lists); `kubectl get` gets Tables. The other
//! resources come next
//! (see `RESEARCH.md`).

pub mod admission;
pub mod allocator;
pub mod apiservers;
pub mod apply;
pub mod auth;
pub mod discovery;
pub mod fields;
pub mod jsonpatch;
pub mod kinds;
pub mod limits;
pub mod logs;
pub mod names;
pub mod node_graph;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod resources;
pub mod selector;
pub mod serviceaccounts;
pub mod status;
pub mod streams;
pub mod subresources;
pub mod table;
pub mod times;
pub mod token_cache;
pub mod typed;
pub mod watch;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::{metrics, store::Store};
pub use status::ApiError;

/// The Kubernetes version the server reports. kubectl's dispatcher on this machine picks the client
/// binary matching the server's minor version.
pub const KUBE_MINOR: &str = "33";

/// The Kubernetes verb of a request on a resource (what authorization and metrics name it by).
fn verb_of(method: &str, named: bool, query: &str) -> &'static str {
    let watch = query_param(query, "watch").is_some_and(|v| v == "true" || v == "1");
    match (method, named) {
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "unknown",
    }
}

/// How a request is labelled in `/metrics`: verb and resource for resource paths; the method in
/// lower case and no resource for the rest (discovery, health, OpenAPI).
pub fn request_labels(method: &str, path: &str, query: &str) -> metrics::RequestLabels {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match Target::parse(&segments) {
        Ok(Some(t)) => metrics::RequestLabels {
            verb: verb_of(method, t.name.is_some(), query),
            group: t.resource.group.to_string(),
            version: t.resource.version.to_string(),
            resource: t.resource.plural.to_string(),
            subresource: t.subresource.unwrap_or_default().to_string(),
        },
        _ => metrics::RequestLabels {
            verb: match method {
                "GET" => "get",
                "POST" => "post",
                "PUT" => "put",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "other",
            },
            group: String::new(),
            version: String::new(),
            resource: String::new(),
            subresource: String::new(),
        },
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: u16,
    pub body: Value,
    /// `text/plain` bodies (health checks) are sent as the string itself.
    pub plain: bool,
    /// Sent as `Warning: 299 - "..."` headers (kubectl prints them).
    pub warnings: Vec<String>,
    /// The `Content-Type` of a JSON body when it is not plain `application/json` (aggregated
    /// discovery, which clients recognise by it).
    pub content_type: Option<&'static str>,
    /// A JSON body already encoded (large lists), sent instead of `body`.
    pub encoded: Option<Vec<u8>>,
}

impl Reply {
    fn json(code: u16, body: Value) -> Self {
        Reply {
            code,
            body,
            plain: false,
            warnings: Vec::new(),
            content_type: None,
            encoded: None,
        }
    }

    fn written(code: u16, (body, warnings): objects::Written) -> Self {
        Reply {
            warnings,
            ..Reply::json(code, body)
        }
    }

    fn text(body: &str) -> Self {
        Reply {
            code: 200,
            body: Value::String(body.into()),
            plain: true,
            warnings: Vec::new(),
            content_type: None,
            encoded: None,
        }
    }

    /// A JSON answer encoded by the caller.
    fn encoded(code: u16, json: Vec<u8>) -> Self {
        Reply {
            encoded: Some(json),
            ..Reply::json(code, Value::Null)
        }
    }

    /// The `Status` answer for an error.
    pub fn error(e: ApiError) -> Self {
        Reply::json(e.code, e.to_json())
    }
}

/// Namespaces the cluster cannot do without: never deleted (kube-apiserver's NamespaceLifecycle
/// admission protects the same ones).
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The API over a store.
pub struct Api {
    store: Arc<Store>,
    admin_token: String,
    /// Which Secrets and ConfigMaps each node's pods use, for the Node authorizer.
    /// What the authorizers keep in memory (node graph, RBAC).
    indexes: auth::Indexes,
    /// Signs and verifies service-account tokens (`None`: no key could be made; TokenRequests fail).
    signer: Option<Arc<crate::jwt::Signer>>,
    /// Service-account tokens whose signature was verified.
    token_cache: token_cache::TokenCache,
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Undoes a query value's form encoding (`labelSelector=app%3Dweb`, `+` for a space).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

impl Api {
    /// The API with a service-account signing key held in memory only (its tokens end with the
    /// process); [`Api::with_signer`] gives the one kept in the data directory.
    pub fn new(store: Arc<Store>, admin_token: String) -> Self {
        let signer = crate::jwt::Signer::ephemeral().ok().map(Arc::new);
        Api {
            store,
            admin_token,
            indexes: auth::Indexes::default(),
            signer,
            token_cache: token_cache::TokenCache::default(),
        }
    }

    /// The API signing service-account tokens with `signer`.
    pub fn with_signer(store: Arc<Store>, admin_token: String, signer: Arc<crate::jwt::Signer>) -> Self {
        Api {
            signer: Some(signer),
            ..Api::new(store, admin_token)
        }
    }

    fn signer(&self) -> Result<&crate::jwt::Signer, ApiError> {
        self.signer
            .as_deref()
            .ok_or_else(|| ApiError::new(503, "ServiceUnavailable", "no service-account signing key"))
    }

    /// `/.well-known/openid-configuration` and `/openid/v1/jwks` (`None`: another path). Readable by
    /// whom RBAC lets `get` the path: service accounts, by the default policy.
    fn service_account_issuer(
        &self,
        req: &ApiRequest<'_>,
        user: &Result<auth::User, ApiError>,
    ) -> Option<Reply> {
        let document = match req.path {
            "/.well-known/openid-configuration" => serviceaccounts::openid_configuration(),
            "/openid/v1/jwks" => match self.signer() {
                Ok(signer) => serviceaccounts::jwks(signer),
                Err(e) => return Some(Reply::error(e)),
            },
            _ => return None,
        };
        let answer = user.clone().and_then(|user| {
            if req.method != "GET" {
                return Err(ApiError::method_not_allowed(req.method, req.path));
            }
            let ask = rbac::Ask {
                verb: "get",
                path: Some(req.path),
                ..rbac::Ask::default()
            };
            if auth::allowed(&self.store, &self.indexes, &user, &ask) {
                Ok(())
            } else {
                Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "forbidden: User \"{}\" cannot get path \"{}\"",
                        user.name, req.path
                    ),
                ))
            }
        });
        Some(match answer {
            Ok(()) => Reply {
                content_type: (req.path == "/openid/v1/jwks").then_some("application/jwk-set+json"),
                ..Reply::json(200, document)
            },
            Err(e) => Reply::error(e),
        })
    }

    /// Answers one request.
    pub fn handle(&self, req: &ApiRequest<'_>) -> Reply {
        self.handle_as(req, None)
    }

    /// Answers one request whose user the caller already authenticated (`known`, from
    /// [`Api::authenticate_request`]: the server checks who sends a body before reading it, and
    /// that answer is not computed twice).
    pub fn handle_as(&self, req: &ApiRequest<'_>, known: Option<auth::User>) -> Reply {
        let path = req.path.trim_end_matches('/');
        match (req.method, path) {
            ("GET", "/healthz" | "/livez" | "/readyz") => return Reply::text("ok"),
            ("GET", "/version") => return Reply::json(200, discovery::version()),
            _ => {}
        }
        let req = ApiRequest { path, ..*req };
        let user = match known {
            Some(user) => Ok(user),
            None => self.authenticate(&req),
        };
        if path == "/metrics" {
            // Cluster administrators only: no bootstrap token or node reads the server's internals
            // (kube-apiserver's default RBAC grants /metrics to no such user either).
            return match (user, req.method) {
                (Ok(user), _) if !user.is_admin() => Reply::error(ApiError::new(
                    403,
                    "Forbidden",
                    format!("forbidden: User \"{}\" cannot get path \"/metrics\"", user.name),
                )),
                (Ok(_), "GET") => Reply {
                    content_type: Some(metrics::CONTENT_TYPE),
                    ..Reply::text(&metrics::global().render(&self.store))
                },
                (Ok(_), method) => Reply::error(ApiError::method_not_allowed(method, path)),
                (Err(e), _) => Reply::error(e),
            };
        }
        if let Some(reply) = self.service_account_issuer(&req, &user) {
            return reply;
        }
        // Who asks is known before anything is built from the body, and the body's shape is
        // counted before it is parsed (see `limits`).
        let answer = user.and_then(|user| {
            limits::check_body(req.body)?;
            self.route(&req, &user)
        });
        match answer {
            Ok(reply) => reply,
            Err(e) => Reply::error(e),
        }
    }

    /// Who sent `req` (headers only; the body is not looked at), or the 401/403 to answer: for
    /// the server to check before it reads a body.
    pub fn authenticate_request(&self, req: &ApiRequest<'_>) -> Result<auth::User, ApiError> {
        self.authenticate(req)
    }

    fn authenticate(&self, req: &ApiRequest<'_>) -> Result<auth::User, ApiError> {
        // Node discovery (`kubeadm join`, `berth-agent run --token`) reads cluster-info before it
        // trusts the server, without credentials: the one request served to anonymous users.
        if req.token.is_none()
            && req.client_cert.is_none()
            && req.method == "GET"
            && req.path == "/api/v1/namespaces/kube-public/configmaps/cluster-info"
        {
            return Ok(auth::User::anonymous());
        }
        let user = match (req.token, &self.signer) {
            // A service account's token: verified by the key that signed it, never taken for a
            // bootstrap or admin token.
            (Some(token), Some(signer)) if crate::jwt::looks_like_jwt(token) => {
                serviceaccounts::authenticate(&self.store, signer, &self.token_cache, token)
                    .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))?
            }
            _ => auth::authenticate(&self.store, &self.admin_token, req.token, req.client_cert)?,
        };
        match req.impersonation {
            Some(wanted) => auth::impersonate(&self.store, &self.indexes, &user, wanted),
            None => Ok(user),
        }
    }

    /// Whether `user` may make this request at all, judged from its method and path alone (a create's
    /// name in the body is not read): a client that may not write a resource gets its 403 before the
    /// server looks at the body's media type, as from kube-apiserver. Paths that name no resource
    /// are judged later, with the body.
    pub fn authorize_without_body(&self, req: &ApiRequest<'_>, user: &auth::User) -> Result<(), ApiError> {
        let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
        if discovery::answer_for(&segments, req.accept).is_some() {
            return Ok(());
        }
        let Ok(Some(target)) = Target::parse(&segments) else {
            return Ok(());
        };
        let attributes = auth::Attributes {
            verb: verb_of(req.method, target.name.is_some(), req.query),
            resource: target.resource,
            subresource: target.subresource,
            namespace: target.namespace,
            name: target.name,
        };
        auth::authorize(&self.store, &self.indexes, user, &attributes)
    }

    /// Checks that `user` may do what `req` asks of `target`.
    fn authorize(
        &self,
        req: &ApiRequest<'_>,
        user: &auth::User,
        target: &Target<'_>,
    ) -> Result<(), ApiError> {
        let verb = verb_of(req.method, target.name.is_some(), req.query);
        // A create names its object in the body.
        // Only the name is read (the rest skipped, nothing built): the create parses the body later.
        #[derive(serde::Deserialize)]
        struct Named {
            metadata: Option<Meta>,
        }
        #[derive(serde::Deserialize)]
        struct Meta {
            name: Option<String>,
        }
        let body_name = if target.name.is_none() && req.method == "POST" {
            serde_json::from_slice::<Named>(req.body)
                .ok()
                .and_then(|b| b.metadata?.name)
        } else {
            None
        };
        let attributes = auth::Attributes {
            verb,
            resource: target.resource,
            subresource: target.subresource,
            namespace: target.namespace,
            name: target.name.or(body_name.as_deref()),
        };
        auth::authorize(&self.store, &self.indexes, user, &attributes)
    }

    /// What every cluster has, made at start: the namespaces `default`, `kube-system`,
    /// `kube-public`, `kube-node-lease`; the `default/kubernetes` Service (10.96.0.1:443) and its
    /// Endpoints naming `api_address`; and reservations no object holds released.
    pub fn bootstrap(&self, api_address: std::net::SocketAddr) -> Result<(), ApiError> {
        let exists_ok = |r: Result<objects::Written, ApiError>| match r {
            Ok(_) => Ok(()),
            Err(e) if e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(e),
        };
        let create = |plural: &str, ns: Option<&str>, body: Value| {
            let r = resources::by_plural(plural)
                .ok_or_else(|| ApiError::new(500, "InternalError", format!("no resource {plural}")))?;
            exists_ok(objects::create(
                &self.store,
                r,
                ns,
                body.to_string().as_bytes(),
                typed::FieldValidation::Strict,
            ))
        };
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            create("namespaces", None, json!({"metadata": {"name": name}}))?;
        }
        // RBAC's default roles and bindings, made once (an administrator's changes to them stay).
        for (plural, object) in rbac::default_policy() {
            create(plural, None, object)?;
        }
        admission::repair(&self.store);
        let kubernetes_service = create(
            "services",
            Some("default"),
            json!({
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {
                    "clusterIP": allocator::KUBERNETES_SERVICE_IP.to_string(),
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_address.port()}],
                    "sessionAffinity": "None",
                    "type": "ClusterIP"
                }
            }),
        );
        if let Err(e) = kubernetes_service {
            // Another API server starting at the same time (shared etcd) may hold 10.96.0.1 for the
            // Service it is creating: fine once the Service exists; until then, a conflict to retry.
            let services = resources::by_plural("services")
                .ok_or_else(|| ApiError::new(500, "InternalError", "no resource services"))?;
            if objects::get(&self.store, services, Some("default"), "kubernetes").is_err() {
                return Err(if e.code == 422 {
                    ApiError::new(409, "Conflict", e.message)
                } else {
                    e
                });
            }
        }
        // Kept true from then on by every API server's `apiservers::ApiServerEndpoints`.
        let ep = resources::by_plural("endpoints")
            .ok_or_else(|| ApiError::new(500, "InternalError", "no resource endpoints"))?;
        match objects::get(&self.store, ep, Some("default"), "kubernetes") {
            Ok(_) => Ok(()),
            Err(_) => apiservers::write_endpoints(&self.store, &[api_address]),
        }
    }

    /// Publishes what a node needs to join, as `kubeadm init` does: the bootstrap token Secret
    /// (`kube-system/bootstrap-token-<id>`, expiring at `expiration` if given) a node authenticates
    /// with, and `kube-public/cluster-info` (the API server's URL and CA, signed with the token) it
    /// can read with that token. Signatures of other tokens in cluster-info are kept (the bootstrap
    /// controller keeps them in step with their Secrets).
    pub fn publish_join(
        &self,
        server_url: &str,
        ca_pem: &str,
        token_id: &str,
        token_secret: &str,
        expiration: Option<&str>,
    ) -> Result<(), ApiError> {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let secret = crate::tokens::secret(
            token_id,
            token_secret,
            expiration,
            "berth node join token (DATA_DIR/join-token)",
        );
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {}\n",
            b64(ca_pem)
        );
        let configmaps = resources::by_plural("configmaps")
            .ok_or_else(|| ApiError::new(500, "InternalError", "no resource configmaps"))?;
        let mut data = serde_json::Map::new();
        if let Ok(existing) = objects::get(&self.store, configmaps, Some("kube-public"), "cluster-info") {
            for (k, v) in existing
                .get("data")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if k.starts_with("jws-kubeconfig-") {
                    data.insert(k.clone(), v.clone());
                }
            }
        }
        data.insert(
            format!("jws-kubeconfig-{token_id}"),
            json!(crate::pki::jws_detached(token_id, token_secret, &kubeconfig)),
        );
        data.insert("kubeconfig".into(), json!(kubeconfig));
        let cluster_info = json!({
            "metadata": {"name": "cluster-info", "namespace": "kube-public"},
            "data": data,
        });
        for (plural, ns, name, body) in [
            (
                "secrets",
                "kube-system",
                format!("bootstrap-token-{token_id}"),
                secret,
            ),
            (
                "configmaps",
                "kube-public",
                "cluster-info".to_string(),
                cluster_info,
            ),
        ] {
            let r = resources::by_plural(plural)
                .ok_or_else(|| ApiError::new(500, "InternalError", format!("no resource {plural}")))?;
            let bytes = body.to_string().into_bytes();
            let written = match objects::get(&self.store, r, Some(ns), &name) {
                Ok(_) => objects::replace(
                    &self.store,
                    r,
                    Some(ns),
                    &name,
                    &bytes,
                    typed::FieldValidation::Strict,
                    objects::Part::Main,
                ),
                Err(_) => objects::create(&self.store, r, Some(ns), &bytes, typed::FieldValidation::Strict),
            };
            written?;
        }
        Ok(())
    }

    /// The bootstrap token Secret of `token_id`, if the store has one.
    pub fn join_token_secret(&self, token_id: &str) -> Option<crate::tokens::TokenSecret> {
        let secrets = resources::by_plural("secrets")?;
        let obj = objects::get(
            &self.store,
            secrets,
            Some("kube-system"),
            &format!("bootstrap-token-{token_id}"),
        )
        .ok()?;
        crate::tokens::TokenSecret::of(&obj)
    }

    /// The store, for streaming watches.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// For `GET pods/<name>/log`: authenticates, authorizes and checks the request, and says where the
    /// log is read (`None`: not a log request).
    pub fn log_plan(&self, req: &ApiRequest<'_>) -> Option<Result<logs::LogSource, Reply>> {
        let path = req.path.trim_end_matches('/');
        if req.method != "GET" || !path.ends_with("/log") {
            return None;
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let target = match Target::parse(&segments) {
            Ok(Some(t)) if t.resource.plural == "pods" && t.subresource == Some("log") => t,
            _ => return None,
        };
        let plan = self
            .authenticate(req)
            .and_then(|user| self.authorize(req, &user, &target))
            .and_then(|()| {
                logs::plan(
                    &self.store,
                    target.namespace.unwrap_or("default"),
                    target.name.unwrap_or_default(),
                    req.query,
                )
            });
        Some(plan.map_err(Reply::error))
    }

    /// For `pods/<name>/{exec,attach,portforward}`: authenticates, authorizes (`create` on the
    /// subresource, as kube-apiserver requires of WebSocket upgrades too) and checks the request, and
    /// says which agent to hand the stream to and with what path (`None`: not a stream request).
    pub fn stream_plan(&self, req: &ApiRequest<'_>) -> Option<Result<(String, String), Reply>> {
        let path = req.path.trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let target = match Target::parse(&segments) {
            Ok(Some(t)) if t.resource.plural == "pods" => t,
            _ => return None,
        };
        let kind = streams::StreamKind::of(target.subresource?)?;
        if !matches!(req.method, "GET" | "POST") {
            return Some(Err(Reply::error(ApiError::new(
                405,
                "MethodNotAllowed",
                format!(
                    "the server does not allow this method on the requested resource: {}",
                    req.method
                ),
            ))));
        }
        let as_create = ApiRequest {
            method: "POST",
            ..*req
        };
        let plan = self
            .authenticate(req)
            .and_then(|user| self.authorize(&as_create, &user, &target))
            .and_then(|()| {
                streams::plan(
                    &self.store,
                    target.namespace.unwrap_or("default"),
                    target.name.unwrap_or_default(),
                    kind,
                    req.query,
                )
            });
        Some(plan.map_err(Reply::error))
    }

    /// `Some` when the request is a watch of a collection: its plan, or the error to answer with.
    pub fn watch_plan(&self, req: &ApiRequest<'_>) -> Option<Result<watch::WatchPlan, Reply>> {
        let (path, query) = (req.path.trim_end_matches('/'), req.query);
        if req.method != "GET" || !query_param(query, "watch").is_some_and(|v| v == "true" || v == "1") {
            return None;
        }
        let user = match self.authenticate(req) {
            Ok(u) => u,
            Err(e) => return Some(Err(Reply::error(e))),
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let target = match Target::parse(&segments) {
            Ok(Some(t)) if t.name.is_none() => self.authorize(req, &user, &t).map(|()| t),
            Ok(_) => Err(unknown(path)),
            Err(e) => Err(e),
        };
        let plan = target.and_then(|t| {
            let selector = selectors(query)?;
            let params = watch::WatchParams {
                resource_version: query_param(query, "resourceVersion"),
                resource_version_match: query_param(query, "resourceVersionMatch"),
                timeout_seconds: query_param(query, "timeoutSeconds"),
                allow_bookmarks: query_param(query, "allowWatchBookmarks") == Some("true"),
                send_initial_events: query_param(query, "sendInitialEvents") == Some("true"),
            };
            watch::plan(
                &self.store,
                t.resource,
                t.namespace,
                &params,
                selector,
                table::wanted(req.accept),
            )
        });
        Some(plan.map_err(Reply::error))
    }

    fn route(&self, req: &ApiRequest<'_>, user: &auth::User) -> Result<Reply, ApiError> {
        let path = req.path;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if let Some((discovered, content_type)) = discovery::answer_for(&segments, req.accept) {
            return if req.method == "GET" {
                Ok(Reply {
                    content_type,
                    ..Reply::json(200, discovered)
                })
            } else {
                Err(ApiError::method_not_allowed(req.method, path))
            };
        }
        let Some(target) = Target::parse(&segments)? else {
            return Err(unknown(path));
        };
        self.authorize(req, user, &target)?;
        if target.resource.kind == "SelfSubjectRulesReview" {
            return self.rules_review(req, user);
        }
        if target.resource.group == "authorization.k8s.io" {
            return self.access_review(req, user, target.resource);
        }
        if target.resource.group == "authentication.k8s.io" {
            return self.authentication_review(req, user, target.resource);
        }
        if target.resource.group == "rbac.authorization.k8s.io"
            && matches!(req.method, "POST" | "PUT" | "PATCH")
            && !user.is_admin()
        {
            self.check_escalation(req, user, &target)?;
        }
        if target.resource.kind == "Pod" && target.name.is_none() && req.method == "POST" {
            auth::admit_node_pod(user, req.body)?;
        }
        if target.resource.kind == "Node" && target.subresource.is_none() && user.node_name().is_some() {
            self.admit_node_write(req, user, target.resource, target.name)?;
        }
        // A certificate signing request records who asked for it.
        let stamped;
        let req = if target.resource.kind == "CertificateSigningRequest" && req.method == "POST" {
            let mut body: Value = serde_json::from_slice(req.body)
                .map_err(|e| ApiError::bad_request(format!("the request body is not a JSON object: {e}")))?;
            if !body.is_object() {
                return Err(ApiError::bad_request("the request body is not a JSON object"));
            }
            body["spec"]["username"] = json!(user.name);
            body["spec"]["groups"] = json!(user.groups);
            stamped = body.to_string().into_bytes();
            &ApiRequest {
                body: &stamped,
                ..*req
            }
        } else {
            req
        };
        if let (Some(name), Some("token")) = (target.name, target.subresource)
            && target.resource.plural == "serviceaccounts"
        {
            if req.method != "POST" {
                return Err(ApiError::method_not_allowed(req.method, req.path));
            }
            req.no_dry_run()?;
            let namespace = target.namespace.unwrap_or("default");
            let answer =
                serviceaccounts::token_request(&self.store, self.signer()?, user, namespace, name, req.body)?;
            return Ok(Reply::json(201, answer));
        }
        match (target.name, target.subresource) {
            (None, _) => self.collection(req, target.resource, target.namespace),
            (Some(name), None) => self.item(req, target.resource, target.namespace, name),
            (Some(name), Some(sub)) => self.subresource(req, target.resource, target.namespace, name, sub),
        }
    }

    fn collection(
        &self,
        req: &ApiRequest<'_>,
        r: &'static objects::Resource,
        namespace: Option<&str>,
    ) -> Result<Reply, ApiError> {
        match req.method {
            "GET" => {
                let selector = selectors(req.query)?;
                let options = list_options(req.query, &objects::prefix(r, namespace))?;
                if table::wanted(req.accept) {
                    let list = objects::list_with(&self.store, r, namespace, &selector, &options)?;
                    let whole = query_param(req.query, "includeObject") == Some("Object");
                    let items = list["items"].as_array().cloned().unwrap_or_default();
                    let mut table =
                        table::of(r.kind, &items, list.pointer("/metadata/resourceVersion"), whole);
                    table["metadata"] = list["metadata"].clone();
                    return Ok(Reply::json(200, table));
                }
                let list = objects::list_json(&self.store, r, namespace, &selector, &options)?;
                Ok(Reply::encoded(200, list))
            }
            "POST" => {
                if namespace.is_none() && r.namespaced {
                    return Err(ApiError::method_not_allowed("POST", r.plural));
                }
                let v = req.write_options()?;
                Ok(Reply::written(
                    201,
                    objects::create(&self.store, r, namespace, req.body, v)?,
                ))
            }
            "DELETE" if r.kind == "Namespace" => {
                // As kube-apiserver: namespaces have no deletecollection.
                Err(ApiError::method_not_allowed("DELETE", r.plural))
            }
            "DELETE" => {
                // deletecollection: every selected object, each as its own delete.
                let selector = selectors(req.query)?;
                let opts = req.delete_options()?;
                let list = objects::list(&self.store, r, namespace, &selector)?;
                let mut deleted = Vec::new();
                for obj in list["items"].as_array().into_iter().flatten() {
                    let name = obj
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
                    match objects::delete(&self.store, r, ns, name, &opts) {
                        Ok(gone) => deleted.push(gone),
                        Err(e) if e.code == 404 => {}
                        Err(e) => return Err(e),
                    }
                }
                let mut answer = list;
                answer["items"] = Value::Array(deleted);
                Ok(Reply::json(200, answer))
            }
            other => Err(ApiError::method_not_allowed(other, r.plural)),
        }
    }

    fn item(
        &self,
        req: &ApiRequest<'_>,
        r: &'static objects::Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Reply, ApiError> {
        match req.method {
            "GET" => {
                let obj = objects::get(&self.store, r, namespace, name)?;
                if table::wanted(req.accept) {
                    let whole = query_param(req.query, "includeObject") == Some("Object");
                    let rv = obj.pointer("/metadata/resourceVersion").cloned();
                    return Ok(Reply::json(200, table::of(r.kind, &[obj], rv.as_ref(), whole)));
                }
                Ok(Reply::json(200, obj))
            }
            "PUT" | "PATCH" => self.write(req, r, namespace, name, objects::Part::Main),
            "DELETE" => {
                if r.kind == "Namespace" && SYSTEM_NAMESPACES.contains(&name) {
                    let mut e = ApiError::new(
                        403,
                        "Forbidden",
                        format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
                    );
                    e.details = Some(("namespaces".into(), name.into()));
                    return Err(e);
                }
                let opts = req.delete_options()?;
                Ok(Reply::json(
                    200,
                    objects::delete(&self.store, r, namespace, name, &opts)?,
                ))
            }
            other => Err(ApiError::method_not_allowed(other, r.plural)),
        }
    }

    /// `SelfSubjectAccessReview` (may I?) and `SubjectAccessReview` (may they?): answered from the
    /// authorizers, never stored (`kubectl auth can-i`).
    fn access_review(
        &self,
        req: &ApiRequest<'_>,
        user: &auth::User,
        r: &'static objects::Resource,
    ) -> Result<Reply, ApiError> {
        let mut review = review_body(req)?;
        let spec = review.get("spec").cloned().unwrap_or(json!({}));
        let subject = if r.kind == "SubjectAccessReview" {
            let name = spec.get("user").and_then(Value::as_str).unwrap_or_default();
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect();
            if name.is_empty() && groups.is_empty() {
                return Err(ApiError::invalid(
                    r.kind,
                    "",
                    "spec.user",
                    "Invalid value: \"\": at least one of user or group must be specified",
                ));
            }
            auth::User {
                name: name.to_string(),
                groups,
            }
        } else {
            user.clone()
        };
        let text = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
        let (resource, non_resource) = (spec.get("resourceAttributes"), spec.get("nonResourceAttributes"));
        let allowed = match (resource, non_resource) {
            (Some(a), None) => {
                let (verb, group, plural) = (text(a, "verb"), text(a, "group"), text(a, "resource"));
                let (sub, ns, name) = (text(a, "subresource"), text(a, "namespace"), text(a, "name"));
                let ask = rbac::Ask {
                    verb: &verb,
                    api_group: &group,
                    resource: &plural,
                    subresource: &sub,
                    namespace: &ns,
                    name: &name,
                    path: None,
                };
                auth::allowed(&self.store, &self.indexes, &subject, &ask)
            }
            (None, Some(a)) => {
                let (verb, path) = (text(a, "verb"), text(a, "path"));
                let ask = rbac::Ask {
                    verb: &verb,
                    path: Some(&path),
                    ..rbac::Ask::default()
                };
                auth::allowed(&self.store, &self.indexes, &subject, &ask)
            }
            _ => {
                return Err(ApiError::invalid(
                    r.kind,
                    "",
                    "spec.resourceAttributes",
                    "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                ));
            }
        };
        review["apiVersion"] = json!(r.api_version());
        review["kind"] = json!(r.kind);
        review["status"] = if allowed {
            json!({"allowed": true, "reason": "allowed by berth's authorizers (system:masters, Node, RBAC)"})
        } else {
            json!({"allowed": false})
        };
        Ok(Reply::json(201, review))
    }

    /// `SelfSubjectRulesReview` (`kubectl auth can-i --list`): the RBAC rules that apply to the caller
    /// in `spec.namespace`. Nodes and bootstrap tokens are authorized by more than RBAC, so their
    /// answer says it is incomplete.
    fn rules_review(&self, req: &ApiRequest<'_>, user: &auth::User) -> Result<Reply, ApiError> {
        let mut review = review_body(req)?;
        let namespace = review
            .pointer("/spec/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
        for rule in rbac::rules_for(&self.store, &self.indexes.rbac, user, &namespace) {
            let field = |f: &str| rule.get(f).cloned().unwrap_or(json!([]));
            if rule.get("nonResourceURLs").is_some() {
                non_resource_rules
                    .push(json!({"verbs": field("verbs"), "nonResourceURLs": field("nonResourceURLs")}));
            } else {
                let mut r = json!({"verbs": field("verbs"), "apiGroups": field("apiGroups"), "resources": field("resources")});
                if let Some(names) = rule.get("resourceNames") {
                    r["resourceNames"] = names.clone();
                }
                resource_rules.push(r);
            }
        }
        let beyond_rbac =
            user.node_name().is_some() || user.groups.iter().any(|g| g == "system:bootstrappers");
        review["apiVersion"] = json!("authorization.k8s.io/v1");
        review["kind"] = json!("SelfSubjectRulesReview");
        review["status"] = json!({
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": beyond_rbac,
        });
        if beyond_rbac {
            review["status"]["evaluationError"] =
                json!("the Node and bootstrap-token authorizers grant more than these rules show");
        }
        Ok(Reply::json(201, review))
    }

    /// `SelfSubjectReview` (`kubectl auth whoami`) and `TokenReview` (is this token valid, and whose:
    /// what kube-rbac-proxy and metrics-server ask the API server).
    fn authentication_review(
        &self,
        req: &ApiRequest<'_>,
        user: &auth::User,
        r: &'static objects::Resource,
    ) -> Result<Reply, ApiError> {
        let mut review = review_body(req)?;
        let info = |u: &auth::User| json!({"username": u.name, "groups": u.groups});
        review["apiVersion"] = json!(r.api_version());
        review["kind"] = json!(r.kind);
        review["status"] = if r.kind == "SelfSubjectReview" {
            json!({"userInfo": info(user)})
        } else {
            let token = review
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if token.is_empty() {
                return Err(ApiError::invalid(
                    r.kind,
                    "",
                    "spec.token",
                    "Required value: token must not be empty",
                ));
            }
            let reviewed = ApiRequest {
                token: Some(&token),
                client_cert: None,
                impersonation: None,
                user_agent: None,
                ..*req
            };
            match self.authenticate(&reviewed) {
                Ok(u) => {
                    json!({"authenticated": true, "user": info(&u), "audiences": [serviceaccounts::ISSUER]})
                }
                Err(_) => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        };
        Ok(Reply::json(201, review))
    }

    /// RBAC's escalation check: a role may be written only by someone who holds every permission in
    /// it (or may `escalate` roles), a binding only by someone who holds the permissions of the role
    /// it binds (or may `bind` it). Cluster administrators pass without a check.
    fn check_escalation(
        &self,
        req: &ApiRequest<'_>,
        user: &auth::User,
        target: &Target<'_>,
    ) -> Result<(), ApiError> {
        let r = target.resource;
        let Some(ProposedWrite { proposed, .. }) =
            self.proposed_write(req, r, target.namespace, target.name)?
        else {
            return Ok(());
        };
        let namespace = if r.namespaced {
            target.namespace.unwrap_or_default()
        } else {
            ""
        };
        let name = proposed
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let may = |verb: &str, plural: &str, name: &str| {
            let ask = rbac::Ask {
                verb,
                api_group: "rbac.authorization.k8s.io",
                resource: plural,
                namespace,
                name,
                ..rbac::Ask::default()
            };
            rbac::allows(&self.store, &self.indexes.rbac, user, &ask)
        };
        let refuse = |why: String| {
            ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{} \"{name}\" is forbidden: user \"{}\" (groups={:?}) is attempting to grant RBAC permissions not currently held: {why}",
                    r.plural, user.name, user.groups
                ),
            )
        };
        match r.kind {
            "Role" | "ClusterRole" => {
                if may("escalate", r.plural, name) {
                    return Ok(());
                }
                if proposed.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                    return Err(refuse("an aggregationRule needs the escalate verb".into()));
                }
                let rules = proposed
                    .get("rules")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                rbac::covers(&self.store, &self.indexes.rbac, user, namespace, &rules).map_err(refuse)
            }
            _ => {
                let role_kind = proposed
                    .pointer("/roleRef/kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let role_name = proposed
                    .pointer("/roleRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let role_plural = if role_kind == "Role" {
                    "roles"
                } else {
                    "clusterroles"
                };
                if may("bind", role_plural, role_name) {
                    return Ok(());
                }
                let rules = rbac::bound_rules(&self.store, &self.indexes.rbac, &proposed, namespace)
                    .ok_or_else(|| {
                        refuse(format!(
                            "the {role_kind} {role_name:?} it refers to does not exist"
                        ))
                    })?;
                rbac::covers(&self.store, &self.indexes.rbac, user, namespace, &rules).map_err(refuse)
            }
        }
    }

    /// What a POST, PUT or PATCH would write (the body, or the stored object with the patch applied,
    /// kept beside it); `None` when there is nothing to judge yet (the object to patch does not
    /// exist: the write itself answers NotFound).
    fn proposed_write(
        &self,
        req: &ApiRequest<'_>,
        r: &'static objects::Resource,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<Option<ProposedWrite>, ApiError> {
        let json = |body: &[u8]| {
            serde_json::from_slice::<Value>(body)
                .map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))
        };
        match (req.method, name) {
            ("PATCH", Some(name)) => {
                let Ok(current) = objects::get(&self.store, r, namespace, name) else {
                    return Ok(None);
                };
                let mut proposed = current.clone();
                patch::apply(
                    req.patch_kind()?,
                    r.strategy.merge_keys(),
                    &mut proposed,
                    &json(req.body)?,
                )?;
                Ok(Some(ProposedWrite {
                    patched: Some(current),
                    proposed,
                }))
            }
            ("POST" | "PUT", _) => Ok(Some(ProposedWrite {
                patched: None,
                proposed: json(req.body)?,
            })),
            _ => Ok(None),
        }
    }

    /// NodeRestriction on what a node's write would make of its Node ([`auth::admit_node_write`]): the
    /// Node as it is (none for a create) against what the write proposes.
    fn admit_node_write(
        &self,
        req: &ApiRequest<'_>,
        user: &auth::User,
        r: &'static objects::Resource,
        name: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(write) = self.proposed_write(req, r, None, name)? else {
            return Ok(()); // nothing to judge: the write itself answers
        };
        let current = match (write.patched, req.method, name) {
            (Some(patched), _, _) => Some(patched),
            (None, "PUT", Some(name)) => objects::get(&self.store, r, None, name).ok(),
            _ => None,
        };
        auth::admit_node_write(user, current.as_ref(), &write.proposed)
    }

    /// PUT or PATCH of an object or of one of its parts (status, approval, finalize).
    fn write(
        &self,
        req: &ApiRequest<'_>,
        r: &'static objects::Resource,
        namespace: Option<&str>,
        name: &str,
        part: objects::Part,
    ) -> Result<Reply, ApiError> {
        let v = req.write_options()?;
        if req.method == "PUT" {
            return Ok(Reply::written(
                200,
                objects::replace(&self.store, r, namespace, name, req.body, v, part)?,
            ));
        }
        let kind = req.patch_kind()?;
        if kind == objects::PatchKind::Apply {
            if !matches!(part, objects::Part::Main | objects::Part::Status) {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "server-side apply is served for objects and their status, not for their other subresources",
                ));
            }
            let Some(manager) = query_param(req.query, "fieldManager")
                .map(percent_decode)
                .filter(|m| !m.is_empty())
            else {
                return Err(ApiError::invalid(
                    "PatchOptions",
                    "",
                    "fieldManager",
                    "Required value: is required for apply patch",
                ));
            };
            let force = query_param(req.query, "force") == Some("true");
            let opts = apply::ApplyOptions {
                manager: &manager,
                force,
                subresource: part.subresource(),
            };
            let (code, written) =
                objects::server_side_apply(&self.store, r, namespace, name, req.body, &opts, v)?;
            return Ok(Reply::written(code, written));
        }
        Ok(Reply::written(
            200,
            objects::patch(&self.store, r, namespace, name, kind, req.body, v, part)?,
        ))
    }

    fn subresource(
        &self,
        req: &ApiRequest<'_>,
        r: &'static objects::Resource,
        namespace: Option<&str>,
        name: &str,
        sub: &str,
    ) -> Result<Reply, ApiError> {
        let path = req.path;
        if !r.subresources.contains(&sub) {
            return Err(unknown(path));
        }
        if !matches!(sub, "status" | "approval" | "finalize") && req.method != "GET" {
            req.no_dry_run()?;
        }
        match (sub, req.method) {
            ("status", "GET") => Ok(Reply::json(200, objects::get(&self.store, r, namespace, name)?)),
            ("status", "PUT" | "PATCH") => self.write(req, r, namespace, name, objects::Part::Status),
            ("approval", "PUT" | "PATCH") => self.write(req, r, namespace, name, objects::Part::Approval),
            ("finalize", "PUT") => self.write(req, r, namespace, name, objects::Part::Finalize),
            ("scale", "GET") => Ok(Reply::json(
                200,
                subresources::scale_of(r, &objects::get(&self.store, r, namespace, name)?),
            )),
            ("scale", "PUT" | "PATCH") => {
                let patch = match req.method {
                    "PATCH" => Some(req.patch_kind()?),
                    _ => None,
                };
                let manager = req.write_options()?.manager;
                Ok(Reply::json(
                    200,
                    subresources::scale_write(&self.store, r, namespace, name, req.body, patch, manager)?,
                ))
            }
            ("binding", "POST") => Ok(Reply::json(
                201,
                subresources::bind(&self.store, r, namespace, name, req.body)?,
            )),
            ("eviction", "POST") => Ok(Reply::json(
                201,
                subresources::evict(&self.store, r, namespace, name, req.body)?,
            )),
            (_, other) => Err(ApiError::method_not_allowed(other, path)),
        }
    }
}

/// The body of a review (access, rules, token, self-subject): only created, always a JSON object.
fn review_body(req: &ApiRequest<'_>) -> Result<Value, ApiError> {
    if req.method != "POST" {
        return Err(ApiError::method_not_allowed(req.method, req.path));
    }
    let review: Value = serde_json::from_slice(req.body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not a JSON object: {e}")))?;
    if !review.is_object() {
        return Err(ApiError::bad_request("the request body is not a JSON object"));
    }
    Ok(review)
}

/// What a write would store, and the stored object it was computed from (a PATCH's).
struct ProposedWrite {
    patched: Option<Value>,
    proposed: Value,
}

/// What a resource path names: a collection, an object, or an object's subresource.
struct Target<'a> {
    resource: &'static objects::Resource,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Parses `/api/v1/...` or `/apis/<group>/<version>/...` (`Ok(None)`: not a resource path).
    fn parse(segments: &[&'a str]) -> Result<Option<Target<'a>>, ApiError> {
        let (group, version, rest) = match segments {
            ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
            ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
            _ => return Ok(None),
        };
        let whole = segments.join("/");
        let namespaced = match rest {
            ["namespaces", ns, plural, more @ ..] => resources::find(group, version, plural)
                .filter(|r| r.namespaced)
                .map(|r| (r, Some(*ns), more)),
            _ => None,
        };
        let (resource, namespace, more) = match namespaced {
            Some(found) => found,
            None => {
                let r = resources::find(group, version, rest[0]).ok_or_else(|| unknown(&whole))?;
                (r, None, &rest[1..])
            }
        };
        if namespace.is_none() && resource.namespaced && !more.is_empty() {
            return Err(unknown(&whole));
        }
        if more.len() > 2 {
            return Err(unknown(&whole));
        }
        Ok(Some(Target {
            resource,
            namespace,
            name: more.first().copied(),
            subresource: more.get(1).copied(),
        }))
    }
}

/// One request, as the API sees it.
#[derive(Clone, Copy, Debug)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// The bearer token of the `Authorization` header, if any.
    pub token: Option<&'a str>,
    /// The body's media type.
    pub content_type: &'a str,
    /// The `Accept` header (Table output when it asks for one).
    pub accept: &'a str,
    pub body: &'a [u8],
    /// The client certificate (DER) the TLS layer verified against the cluster CA, if one was sent.
    pub client_cert: Option<&'a [u8]>,
    /// `Impersonate-User` / `Impersonate-Group` headers (`kubectl --as`), if any.
    pub impersonation: Option<&'a auth::Impersonation>,
    /// The `User-Agent` header (names the field manager of a write that names none).
    pub user_agent: Option<&'a str>,
}

impl ApiRequest<'_> {
    fn field_validation(&self) -> Result<typed::FieldValidation, ApiError> {
        typed::FieldValidation::parse(query_param(self.query, "fieldValidation"))
    }

    /// `dryRun=All` (`kubectl diff`, `--dry-run=server`); 400 for any other value.
    fn dry_run(&self) -> Result<bool, ApiError> {
        match query_param(self.query, "dryRun").filter(|v| !v.is_empty()) {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "unsupported dry run value {other:?}: only \"All\" is"
            ))),
        }
    }

    /// Field validation and dry run of a create, update or patch.
    fn write_options(&self) -> Result<objects::WriteOptions, ApiError> {
        let field_manager = query_param(self.query, "fieldManager").map(percent_decode);
        Ok(objects::WriteOptions {
            validation: self.field_validation()?,
            dry_run: self.dry_run()?,
            manager: apply::manager_of(field_manager.as_deref(), self.user_agent),
            applied: false,
        })
    }

    /// Refuses a dry run of a request that cannot do one (it would be carried out for real).
    fn no_dry_run(&self) -> Result<(), ApiError> {
        if self.dry_run()? {
            return Err(ApiError::bad_request(
                "dry run is not supported for this request; nothing was changed",
            ));
        }
        Ok(())
    }

    fn delete_options(&self) -> Result<objects::DeleteOptions, ApiError> {
        let mut opts = objects::DeleteOptions::parse(
            self.body,
            query_param(self.query, "gracePeriodSeconds"),
            query_param(self.query, "propagationPolicy"),
        )?;
        // In the query or in the body's DeleteOptions.
        opts.dry_run |= self.dry_run()?;
        Ok(opts)
    }

    fn patch_kind(&self) -> Result<objects::PatchKind, ApiError> {
        match self.content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Ok(objects::PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(objects::PatchKind::Strategic),
            "application/json-patch+json" => Ok(objects::PatchKind::Json),
            // The body arrives as YAML; the server turned it into JSON.
            "application/apply-patch+yaml" => Ok(objects::PatchKind::Apply),
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the patch type {other:?} is not supported (json-patch+json, merge-patch+json, strategic-merge-patch+json and apply-patch+yaml are)"
                ),
            )),
        }
    }
}

/// The request's label and field selectors.
fn selectors(query: &str) -> Result<selector::Selectors, ApiError> {
    let labels = query_param(query, "labelSelector").map(percent_decode);
    let fields = query_param(query, "fieldSelector").map(percent_decode);
    selector::Selectors::parse(labels.as_deref(), fields.as_deref()).map_err(ApiError::bad_request)
}

/// A list's snapshot and page from its query (`resourceVersion`, `resourceVersionMatch`, `limit`,
/// `continue`), checked as kube-apiserver checks them.
fn list_options(query: &str, prefix: &str) -> Result<objects::ListOptions, ApiError> {
    let limit = match query_param(query, "limit").filter(|v| !v.is_empty()) {
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("limit {v:?} is not a number")))?
            .max(0) as usize,
        None => 0,
    };
    let version = query_param(query, "resourceVersion").filter(|v| !v.is_empty());
    let matching = query_param(query, "resourceVersionMatch").filter(|v| !v.is_empty());
    let parse_version = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("resourceVersion {v:?} is not a resource version")))
    };
    let mut options = objects::ListOptions {
        limit,
        ..Default::default()
    };
    if let Some(token) = query_param(query, "continue").filter(|v| !v.is_empty()) {
        if version.is_some() || matching.is_some() {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (revision, start_after) = objects::decode_continue(&percent_decode(token), prefix)?;
        options.at = Some(revision);
        options.start_after = Some(start_after);
        return Ok(options);
    }
    match (matching, version) {
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        (Some("Exact"), Some("0")) => {
            return Err(ApiError::bad_request(
                "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        (Some("Exact"), Some(v)) => options.at = Some(parse_version(v)?),
        (Some("NotOlderThan") | None, Some(v)) => {
            // "0": any state will do; the newest is at hand.
            let v = parse_version(v)?;
            options.not_older_than = (v > 0).then_some(v);
        }
        (Some(other), _) => {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch {other:?} is not supported: Exact, NotOlderThan"
            )));
        }
        (None, None) => {}
    }
    Ok(options)
}

fn unknown(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

#[cfg(test)]
mod tests;
