//! The OpenAPI v3 documents kubectl reads before `apply` and `create -f`: one per group-version,
//! listing for each kind a `patch` operation with its group-version-kind and the `fieldValidation`
//! parameter. That tells kubectl the server validates fields itself, so kubectl sends
//! `fieldValidation=Strict` instead of validating against schemas (which this server does not publish
//! yet: `components.schemas` is empty, and kubectl 1.27/1.28, which want OpenAPI v2 in protobuf, need
//! `--validate=false`).

use serde_json::{Map, Value, json};

use super::resources::{self, GROUPS};

/// Changes whenever the documents change, so kubectl's cache does not serve an old one.
const HASH: &str = "berth-2";

/// `/openapi/v3`: where each group-version's document is.
pub fn root() -> Value {
    let mut paths = Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": format!("/openapi/v3/api/v1?hash={HASH}")}),
    );
    for g in GROUPS {
        paths.insert(
            format!("apis/{g}/v1"),
            json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/v1?hash={HASH}")}),
        );
    }
    json!({ "paths": paths })
}

/// The document of one group-version (`/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/v1`).
pub fn document(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    for r in resources::of_group_version(group, version) {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let group_title: String = group
            .split('.')
            .next()
            .unwrap_or_default()
            .chars()
            .enumerate()
            .map(|(i, c)| if i == 0 { c.to_ascii_uppercase() } else { c })
            .collect();
        paths.insert(
            path,
            json!({"patch": {
                "operationId": format!("patch{}{}{}", if group.is_empty() { "Core" } else { &group_title }, "V1", r.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}}
                ],
                "responses": {"200": {"description": "OK"}}
            }}),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", super::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": {}}
    })
}
