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

pub mod fields;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod selector;
pub mod status;
pub mod table;
pub mod typed;
pub mod watch;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::store::Store;
pub use status::ApiError;

/// The Kubernetes version the server reports. kubectl's dispatcher on this machine picks the client
/// binary matching the server's minor version.
pub const KUBE_MINOR: &str = "33";

/// An answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub code: u16,
    pub body: Value,
    /// `text/plain` bodies (health checks) are sent as the string itself.
    pub plain: bool,
    /// Sent as `Warning: 299 - "..."` headers (kubectl prints them).
    pub warnings: Vec<String>,
}

impl Reply {
    fn json(code: u16, body: Value) -> Self {
        Reply {
            code,
            body,
            plain: false,
            warnings: Vec::new(),
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
        }
    }

    /// The `Status` answer for an error.
    pub fn error(e: ApiError) -> Self {
        Reply::json(e.code, e.to_json())
    }
}

/// The API over a store.
pub struct Api {
    store: Arc<Store>,
    admin_token: String,
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Undoes percent-encoding (query values such as `labelSelector=app%3Dweb`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Api {
    pub fn new(store: Arc<Store>, admin_token: String) -> Self {
        Api { store, admin_token }
    }

    /// Answers one request.
    pub fn handle(&self, req: &ApiRequest<'_>) -> Reply {
        let path = req.path.trim_end_matches('/');
        match (req.method, path) {
            ("GET", "/healthz" | "/livez" | "/readyz") => return Reply::text("ok"),
            ("GET", "/version") => return Reply::json(200, version()),
            _ => {}
        }
        if req.token != Some(self.admin_token.as_str()) {
            return Reply::error(ApiError::new(401, "Unauthorized", "Unauthorized"));
        }
        let req = ApiRequest { path, ..*req };
        match self.route(&req) {
            Ok(reply) => reply,
            Err(e) => Reply::error(e),
        }
    }

    /// Creates the namespaces every cluster has (`default`, `kube-system`, `kube-public`,
    /// `kube-node-lease`) if they are missing.
    pub fn ensure_system_namespaces(&self) -> Result<(), ApiError> {
        let Some(r) = objects::resource("namespaces") else {
            return Ok(());
        };
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            match objects::create(
                &self.store,
                r,
                None,
                body.to_string().as_bytes(),
                typed::FieldValidation::Strict,
            ) {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The store, for streaming watches.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// `Some` when the request is a watch of a collection: its plan, or the error to answer with.
    pub fn watch_plan(&self, req: &ApiRequest<'_>) -> Option<Result<watch::WatchPlan, Reply>> {
        let (path, query) = (req.path, req.query);
        if req.method != "GET" || !query_param(query, "watch").is_some_and(|v| v == "true" || v == "1") {
            return None;
        }
        if req.token != Some(self.admin_token.as_str()) {
            return Some(Err(Reply::error(ApiError::new(
                401,
                "Unauthorized",
                "Unauthorized",
            ))));
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let target = match segments.as_slice() {
            ["api", "v1", "namespaces", ns, plural] => require_namespaced(plural).map(|r| (r, Some(*ns))),
            ["api", "v1", plural] => objects::resource(plural)
                .map(|r| (r, None))
                .ok_or_else(|| unknown(path)),
            _ => Err(unknown(path)),
        };
        let plan = target.and_then(|(r, ns)| {
            let selector = selectors(query)?;
            let params = watch::WatchParams {
                resource_version: query_param(query, "resourceVersion"),
                resource_version_match: query_param(query, "resourceVersionMatch"),
                timeout_seconds: query_param(query, "timeoutSeconds"),
                allow_bookmarks: query_param(query, "allowWatchBookmarks") == Some("true"),
                send_initial_events: query_param(query, "sendInitialEvents") == Some("true"),
            };
            watch::plan(&self.store, r, ns, &params, selector, table::wanted(req.accept))
        });
        Some(plan.map_err(Reply::error))
    }

    fn route(&self, req: &ApiRequest<'_>) -> Result<Reply, ApiError> {
        let path = req.path;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            ["api"] => Ok(Reply::json(
                200,
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            )),
            ["apis"] => Ok(Reply::json(
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
            )),
            ["api", "v1"] => Ok(Reply::json(200, core_v1_resources())),
            ["openapi", "v3"] => Ok(Reply::json(200, openapi::root())),
            ["openapi", "v3", "api", "v1"] => Ok(Reply::json(200, openapi::core_v1())),
            ["api", "v1", "namespaces", ns, plural] => {
                self.collection(req, require_namespaced(plural)?, Some(ns))
            }
            ["api", "v1", "namespaces", ns, plural, name] => {
                self.item(req, require_namespaced(plural)?, Some(ns), name)
            }
            ["api", "v1", plural] => {
                let r = objects::resource(plural).ok_or_else(|| unknown(path))?;
                self.collection(req, r, None)
            }
            ["api", "v1", plural, name] => {
                let r = objects::resource(plural).ok_or_else(|| unknown(path))?;
                if r.namespaced {
                    return Err(unknown(path));
                }
                self.item(req, r, None, name)
            }
            _ => Err(unknown(path)),
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
                let list = objects::list(&self.store, r, namespace, &selector)?;
                if table::wanted(req.accept) {
                    let whole = query_param(req.query, "includeObject") == Some("Object");
                    let items = list["items"].as_array().cloned().unwrap_or_default();
                    let rv = list.pointer("/metadata/resourceVersion");
                    return Ok(Reply::json(200, table::of(r.kind, &items, rv, whole)));
                }
                Ok(Reply::json(200, list))
            }
            "POST" => {
                if namespace.is_none() && r.namespaced {
                    return Err(ApiError::method_not_allowed("POST", r.plural));
                }
                let v = req.field_validation()?;
                Ok(Reply::written(
                    201,
                    objects::create(&self.store, r, namespace, req.body, v)?,
                ))
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
            "PUT" => {
                let v = req.field_validation()?;
                Ok(Reply::written(
                    200,
                    objects::replace(&self.store, r, namespace, name, req.body, v)?,
                ))
            }
            "PATCH" => {
                let kind = match req.content_type.split(';').next().unwrap_or_default().trim() {
                    "application/merge-patch+json" => objects::PatchKind::Merge,
                    "application/strategic-merge-patch+json" => objects::PatchKind::Strategic,
                    other => {
                        return Err(ApiError::new(
                            415,
                            "UnsupportedMediaType",
                            format!(
                                "the patch type {other:?} is not supported (merge-patch+json and strategic-merge-patch+json are)"
                            ),
                        ));
                    }
                };
                let v = req.field_validation()?;
                Ok(Reply::written(
                    200,
                    objects::patch(&self.store, r, namespace, name, kind, req.body, v)?,
                ))
            }
            "DELETE" => Ok(Reply::json(
                200,
                objects::delete(&self.store, r, namespace, name)?,
            )),
            other => Err(ApiError::method_not_allowed(other, r.plural)),
        }
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
}

impl ApiRequest<'_> {
    fn field_validation(&self) -> Result<typed::FieldValidation, ApiError> {
        typed::FieldValidation::parse(query_param(self.query, "fieldValidation"))
    }
}

/// The request's label and field selectors.
fn selectors(query: &str) -> Result<selector::Selectors, ApiError> {
    let labels = query_param(query, "labelSelector").map(percent_decode);
    let fields = query_param(query, "fieldSelector").map(percent_decode);
    selector::Selectors::parse(labels.as_deref(), fields.as_deref()).map_err(ApiError::bad_request)
}

fn unknown(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

fn require_namespaced(plural: &str) -> Result<&'static objects::Resource, ApiError> {
    objects::resource(plural)
        .filter(|r| r.namespaced)
        .ok_or_else(|| unknown(plural))
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-berth"),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

fn core_v1_resources() -> Value {
    let resources: Vec<Value> = objects::CORE_V1
        .iter()
        .map(|r| {
            json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortNames": r.short_names,
            })
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources})
}

#[cfg(test)]
mod tests;
