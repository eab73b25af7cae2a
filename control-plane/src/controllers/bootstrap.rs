//! Bootstrap tokens after they are made, as kube-controller-manager's `bootstrapsigner` and
//! `tokencleaner` keep them: `kube-public/cluster-info` carries a `jws-kubeconfig-<id>` signature
//! for every valid signing token (a joining node checks it to trust the server it found), and
//! expired token Secrets are deleted, their signatures with them.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Change, Controller, ControllerError, Ctx, cache::Cache};
use crate::{
    api::objects::{DeleteOptions, Part},
    tokens::TokenSecret,
};

const CLUSTER_INFO: &str = "/registry/configmaps/kube-public/cluster-info";
const SIGNATURE_PREFIX: &str = "jws-kubeconfig-";

/// How often expirations are looked at without any change (kube-controller-manager's token
/// cleaner looks when a token's time comes; a minute late is within what a 24 h TTL means).
const EXPIRY_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Default)]
pub struct BootstrapController {
    last_check: Option<std::time::Instant>,
}

impl Controller for BootstrapController {
    fn name(&self) -> &'static str {
        "bootstrap"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        let token_secret = change
            .key
            .starts_with("/registry/secrets/kube-system/bootstrap-token-");
        if token_secret || change.key == CLUSTER_INFO {
            keys.push(CLUSTER_INFO.to_string());
        }
    }

    fn tick(&mut self, _cache: &Cache, _config: &super::Config) -> Vec<String> {
        if self.last_check.is_some_and(|t| t.elapsed() < EXPIRY_CHECK) {
            return Vec::new();
        }
        self.last_check = Some(std::time::Instant::now());
        vec![CLUSTER_INFO.to_string()]
    }

    fn reconcile(&mut self, _key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut signing: BTreeMap<String, String> = BTreeMap::new();
        for obj in super::list(ctx.store, "secrets", Some("kube-system"))? {
            let Some(token) = TokenSecret::of(&obj) else {
                continue;
            };
            if token.expired(now) {
                let name = super::cache::str_at(&obj, "/metadata/name");
                super::delete(
                    ctx.store,
                    "secrets",
                    Some("kube-system"),
                    &name,
                    &DeleteOptions::default(),
                )?;
                tracing::info!(token = %token.id, "deleted an expired bootstrap token");
                continue;
            }
            if token.signing {
                signing.insert(token.id, token.secret);
            }
        }
        let Some(info) = super::read(ctx.store, CLUSTER_INFO) else {
            return Ok(());
        };
        let Some(kubeconfig) = info.pointer("/data/kubeconfig").and_then(Value::as_str) else {
            return Ok(());
        };
        let current: Map<String, Value> = info
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut change = Map::new();
        for (id, secret) in &signing {
            let signature = crate::pki::jws_detached(id, secret, kubeconfig);
            let key = format!("{SIGNATURE_PREFIX}{id}");
            if current.get(&key).and_then(Value::as_str) != Some(signature.as_str()) {
                change.insert(key, json!(signature));
            }
        }
        for key in current.keys() {
            let signed_by = key.strip_prefix(SIGNATURE_PREFIX);
            if signed_by.is_some_and(|id| !signing.contains_key(id)) {
                change.insert(key.clone(), Value::Null);
            }
        }
        if !change.is_empty() {
            super::patch(
                ctx.store,
                "configmaps",
                Some("kube-public"),
                "cluster-info",
                &json!({"data": change}),
                Part::Main,
            )?;
        }
        Ok(())
    }
}
