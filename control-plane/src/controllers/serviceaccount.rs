//! Every namespace gets the `default` ServiceAccount pods run as unless they name another.

use serde_json::json;

use super::{Change, Controller, ControllerError, Ctx, cache::Cache};

pub struct ServiceAccountController;

impl Controller for ServiceAccountController {
    fn name(&self) -> &'static str {
        "serviceaccount"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        match change.plural {
            "namespaces" if change.new.is_some() => keys.push(change.key.to_string()),
            "serviceaccounts" if change.new.is_none() && change.key.ends_with("/default") => {
                if let Some((_, Some(ns), _)) = super::parse_key(change.key) {
                    keys.push(format!("/registry/namespaces/{ns}"));
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some(ns) = super::read(ctx.store, key) else {
            return Ok(());
        };
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(());
        }
        let name = super::cache::str_at(&ns, "/metadata/name");
        if super::read(ctx.store, &format!("/registry/serviceaccounts/{name}/default")).is_some() {
            return Ok(());
        }
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}});
        match super::create(ctx.store, "serviceaccounts", Some(&name), &sa) {
            Err(ControllerError::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
            other => other.map(|_| ()),
        }
    }
}
