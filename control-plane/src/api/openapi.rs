//! The OpenAPI v3 documents kubectl reads before `apply` and `create -f`: one per group-version,
//! listing for each kind a `patch` operation with its group-version-kind and the `fieldValidation`
//! parameter. That tells kubectl the server validates fields itself, so kubectl sends
//! `fieldValidation=Strict` instead of validating against schemas (which this server does not publish
//! yet: `components.schemas` is empty, and kubectl 1.27/1.28, which want OpenAPI v2 in protobuf, need
//! `--validate=false`).

use serde_json::{Map, Value, json};

use super::objects::CORE_V1;

/// Changes whenever the documents change, so kubectl's cache does not serve an old one.
const HASH: &str = "berth-core-v1-1";

/// `/openapi/v3`: where each group-version's document is.
pub fn root() -> Value {
    json!({"paths": {"api/v1": {"serverRelativeURL": format!("/openapi/v3/api/v1?hash={HASH}")}}})
}

/// `/openapi/v3/api/v1`.
pub fn core_v1() -> Value {
    let mut paths = Map::new();
    for r in CORE_V1 {
        let path = if r.namespaced {
            format!("/api/v1/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("/api/v1/{}/{{name}}", r.plural)
        };
        paths.insert(
            path,
            json!({"patch": {
                "operationId": format!("patchCoreV1{}", r.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": "", "version": "v1", "kind": r.kind},
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
