//! ClusterRoles with an `aggregationRule` (`admin`, `edit`, `view`) hold the rules of every
//! ClusterRole their selectors match, kept in step as those change: kube-controller-manager's
//! clusterrole-aggregation controller.

use serde_json::{Value, json};

use super::{Change, Controller, ControllerError, Ctx, cache::Cache};
use crate::api::{objects::Part, rbac};

pub struct AggregationController;

impl Controller for AggregationController {
    fn name(&self) -> &'static str {
        "clusterrole-aggregation"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        // Any ClusterRole may feed an aggregated one: one key stands for "recompute them all".
        if change.plural == "clusterroles" {
            keys.push("/registry/clusterroles/".to_string());
        }
    }

    fn reconcile(&mut self, _key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let all = super::list(ctx.store, "clusterroles", None)?;
        for role in &all {
            let Some(rules) = rbac::aggregated_rules(role, &all) else {
                continue;
            };
            let current = role.get("rules").cloned().unwrap_or(json!([]));
            if current == Value::Array(rules.clone()) {
                continue;
            }
            let name = super::cache::str_at(role, "/metadata/name");
            super::patch(
                ctx.store,
                "clusterroles",
                None,
                &name,
                &json!({"rules": rules}),
                Part::Main,
            )?;
        }
        Ok(())
    }
}
