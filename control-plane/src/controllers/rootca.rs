//! kube-controller-manager's root-ca-cert-publisher: every namespace has the ConfigMap
//! `kube-root-ca.crt` holding the cluster CA, which the service-account volume of every pod
//! projects as `ca.crt` so that workloads can verify the API server. Deleted or changed copies are
//! put back.

use serde_json::{Value, json};

use super::{Change, Controller, ControllerError, Ctx, cache::Cache, objects::Part};

/// The ConfigMap's name in every namespace.
pub const NAME: &str = "kube-root-ca.crt";

const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

pub struct RootCaPublisher;

impl Controller for RootCaPublisher {
    fn name(&self) -> &'static str {
        "root-ca-cert-publisher"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        match change.plural {
            "namespaces" if change.new.is_some() => keys.push(change.key.to_string()),
            "configmaps" if change.key.ends_with(&format!("/{NAME}")) => {
                if let Some((_, Some(ns), _)) = super::parse_key(change.key) {
                    keys.push(format!("/registry/namespaces/{ns}"));
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some(ca) = ctx.config.ca_pem.clone() else {
            return Ok(());
        };
        let Some(ns) = super::read(ctx.store, key) else {
            return Ok(());
        };
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(());
        }
        let namespace = super::cache::str_at(&ns, "/metadata/name");
        let existing = super::read(ctx.store, &format!("/registry/configmaps/{namespace}/{NAME}"));
        let data = json!({"ca.crt": ca});
        let written = match existing {
            Some(cm) if cm.get("data") == Some(&data) => return Ok(()),
            Some(_) => super::patch(
                ctx.store,
                "configmaps",
                Some(&namespace),
                NAME,
                &json!({"data": data}),
                Part::Main,
            ),
            None => {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": NAME, "namespace": namespace, "annotations": {"kubernetes.io/description": DESCRIPTION}},
                    "data": data});
                super::create(ctx.store, "configmaps", Some(&namespace), &cm)
            }
        };
        match written {
            // The namespace went away or is terminating meanwhile; a racing writer made it.
            Err(ControllerError::Api(e)) if matches!(e.code, 403 | 404 | 409) => Ok(()),
            other => other.map(|_: Value| ()),
        }
    }
}
