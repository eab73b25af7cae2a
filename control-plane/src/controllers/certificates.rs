//! Node client certificates, as kube-controller-manager's CSR approver and signer give them: a
//! CertificateSigningRequest for `kubernetes.io/kube-apiserver-client-kubelet` from a bootstrap
//! token (a node joining) or from the node itself (renewal), asking for exactly
//! `CN=system:node:<name>, O=system:nodes`, is approved and signed by the cluster CA. Anything else
//! waits for an administrator (`kubectl certificate approve`) — and is signed once approved.

use base64::Engine;
use serde_json::{Value, json};

use super::{Change, Controller, ControllerError, Ctx, cache::Cache, cache::str_at};
use crate::{api::objects::Part, pki};

pub struct CertificateController;

const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";

fn condition(csr: &Value, kind: &str) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| str_at(c, "/type") == kind && str_at(c, "/status") == "True")
}

impl Controller for CertificateController {
    fn name(&self) -> &'static str {
        "certificates"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        if change.plural == "certificatesigningrequests" && change.new.is_some() {
            keys.push(change.key.to_string());
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some(csr) = super::read(ctx.store, key) else {
            return Ok(());
        };
        let name = str_at(&csr, "/metadata/name");
        if condition(&csr, "Denied")
            || condition(&csr, "Failed")
            || csr.pointer("/status/certificate").is_some()
        {
            return Ok(());
        }
        if str_at(&csr, "/spec/signerName") != KUBELET_CLIENT {
            return Ok(());
        }
        let pem = csr
            .pointer("/spec/request")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let subject = pki::csr_subject(&pem);
        let approved = condition(&csr, "Approved");
        if !approved {
            let groups: Vec<String> = csr
                .pointer("/spec/groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect();
            let username = str_at(&csr, "/spec/username");
            let Ok((cn, orgs)) = &subject else {
                return self.fail(ctx, &csr, "the request is not a PEM certificate request");
            };
            let node = cn.strip_prefix("system:node:").unwrap_or_default();
            let from_bootstrap = groups.iter().any(|g| g == "system:bootstrappers");
            let renewal = username == *cn && groups.iter().any(|g| g == "system:nodes");
            let usages_ok = csr
                .pointer("/spec/usages")
                .and_then(Value::as_array)
                .is_none_or(|u| {
                    u.iter().all(|x| {
                        matches!(
                            x.as_str(),
                            Some("client auth" | "digital signature" | "key encipherment")
                        )
                    })
                });
            let shape_ok = !node.is_empty() && *orgs == ["system:nodes".to_string()] && usages_ok;
            if !(shape_ok && (from_bootstrap || renewal)) {
                // Not ours to approve: an administrator decides.
                return Ok(());
            }
            let mut status = csr.get("status").cloned().unwrap_or(json!({}));
            let now = crate::api::objects::now_rfc3339();
            status["conditions"] = json!([{"type": "Approved", "status": "True", "reason": "AutoApproved", "message": "Auto approving kubelet client certificate after SubjectAccessReview.", "lastUpdateTime": now, "lastTransitionTime": now}]);
            super::patch(
                ctx.store,
                "certificatesigningrequests",
                None,
                &name,
                &json!({"status": status}),
                Part::Status,
            )?;
            tracing::info!(csr = %name, %node, "approved a node client certificate");
        }
        let Some(ca_key) = &ctx.config.ca_key_pem else {
            return Ok(());
        };
        let signed = match pki::sign_client_csr(ca_key, &pem) {
            Ok(cert) => cert,
            Err(e) => return self.fail(ctx, &csr, &e.to_string()),
        };
        let cert = base64::engine::general_purpose::STANDARD.encode(signed.as_bytes());
        super::patch(
            ctx.store,
            "certificatesigningrequests",
            None,
            &name,
            &json!({"status": {"certificate": cert}}),
            Part::Status,
        )?;
        Ok(())
    }
}

impl CertificateController {
    fn fail(&self, ctx: &Ctx<'_>, csr: &Value, why: &str) -> Result<(), ControllerError> {
        let name = str_at(csr, "/metadata/name");
        let mut conditions: Vec<Value> = csr
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let now = crate::api::objects::now_rfc3339();
        conditions.push(json!({"type": "Failed", "status": "True", "reason": "SigningError", "message": why, "lastUpdateTime": now, "lastTransitionTime": now}));
        super::patch(
            ctx.store,
            "certificatesigningrequests",
            None,
            &name,
            &json!({"status": {"conditions": conditions}}),
            Part::Status,
        )?;
        Ok(())
    }
}
