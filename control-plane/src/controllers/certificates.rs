//! Node certificates, as kube-controller-manager's CSR approver and signers give them.
//!
//! - `kubernetes.io/kube-apiserver-client-kubelet`: a CSR from a bootstrap token (a node joining) or
//!   from the node itself (renewal) asking for exactly `CN=system:node:<name>, O=system:nodes` is
//!   approved.
//! - `kubernetes.io/kubelet-serving`: kube-controller-manager approves none (an administrator or an
//!   approver such as kubelet-csr-approver does); berth approves what such an approver checks: the
//!   node asks for its own name, and its alternative names are that name and addresses its Node
//!   object reports.
//!
//! Anything else waits for an administrator (`kubectl certificate approve`). Once approved, a CSR is
//! signed only if it has the signer's shape ([`pki::check_node_csr`]: the subject, the usages, the
//! alternative names); otherwise it is marked Failed with the reason.

use base64::Engine;
use serde_json::{Value, json};

use super::{Change, Controller, ControllerError, Ctx, cache::Cache, cache::str_at};
use crate::{
    api::objects::Part,
    pki::{self, CsrContents, NodeCertificate},
};

#[derive(Default)]
pub struct CertificateController {
    /// Serving CSRs not approved: looked at again when a Node changes (a node may ask before its
    /// Node object reports the addresses the certificate names).
    waiting: std::collections::BTreeSet<String>,
}

fn condition(csr: &Value, kind: &str) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| str_at(c, "/type") == kind && str_at(c, "/status") == "True")
}

fn strings(csr: &Value, pointer: &str) -> Vec<String> {
    csr.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_string))
        .collect()
}

/// Whether berth approves the CSR by itself (see the module's text).
fn auto_approved(
    kind: NodeCertificate,
    csr: &Value,
    contents: &CsrContents,
    node_addresses: &[String],
) -> bool {
    let groups = strings(csr, "/spec/groups");
    let usages = strings(csr, "/spec/usages");
    if pki::check_node_csr(kind, contents, &usages).is_err() {
        return false;
    }
    let node = contents.common_name.trim_start_matches("system:node:");
    let by_the_node =
        str_at(csr, "/spec/username") == contents.common_name && groups.iter().any(|g| g == "system:nodes");
    match kind {
        NodeCertificate::Client => by_the_node || groups.iter().any(|g| g == "system:bootstrappers"),
        NodeCertificate::Serving => {
            by_the_node
                && contents.dns_names.iter().all(|n| n == node)
                && contents
                    .ips
                    .iter()
                    .all(|ip| node_addresses.contains(&ip.to_string()))
        }
    }
}

impl Controller for CertificateController {
    fn name(&self) -> &'static str {
        "certificates"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        if change.plural == "certificatesigningrequests" {
            if change.new.is_some() {
                keys.push(change.key.to_string());
            } else {
                self.waiting.remove(change.key);
            }
        }
        if change.plural == "nodes" {
            keys.extend(self.waiting.iter().cloned());
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        self.waiting.remove(key);
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
        let Some(kind) = NodeCertificate::of_signer(&str_at(&csr, "/spec/signerName")) else {
            return Ok(());
        };
        let pem = csr
            .pointer("/spec/request")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let Ok(contents) = pki::csr_contents(&pem) else {
            return self.fail(ctx, &csr, "the request is not a PEM certificate request");
        };
        if !condition(&csr, "Approved") {
            let node = contents.common_name.trim_start_matches("system:node:");
            let addresses: Vec<String> = super::read(ctx.store, &format!("/registry/nodes/{node}"))
                .map(|n| strings_of(&n, "/status/addresses", "address"))
                .unwrap_or_default();
            if !auto_approved(kind, &csr, &contents, &addresses) {
                // Not ours to approve (yet): an administrator decides, or the Node catches up.
                if kind == NodeCertificate::Serving {
                    self.waiting.insert(key.to_string());
                }
                return Ok(());
            }
            let (message, what) = match kind {
                NodeCertificate::Client => (
                    "Auto approving kubelet client certificate after SubjectAccessReview.",
                    "client",
                ),
                NodeCertificate::Serving => (
                    "Auto approving kubelet serving certificate for the node's own names and addresses.",
                    "serving",
                ),
            };
            let mut status = csr.get("status").cloned().unwrap_or(json!({}));
            let now = crate::api::times::now_rfc3339();
            status["conditions"] = json!([{"type": "Approved", "status": "True", "reason": "AutoApproved", "message": message, "lastUpdateTime": now, "lastTransitionTime": now}]);
            super::patch(
                ctx.store,
                "certificatesigningrequests",
                None,
                &name,
                &json!({"status": status}),
                Part::Status,
            )?;
            tracing::info!(csr = %name, %node, "approved a node {what} certificate");
        }
        let Some(ca_key) = &ctx.config.ca_key_pem else {
            return Ok(());
        };
        let signed = match pki::sign_node_csr(ca_key, &pem, kind, &strings(&csr, "/spec/usages")) {
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

/// Field `field` of each element of the array at `pointer`.
fn strings_of(v: &Value, pointer: &str, field: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get(field).and_then(Value::as_str).map(str::to_string))
        .collect()
}

impl CertificateController {
    fn fail(&self, ctx: &Ctx<'_>, csr: &Value, why: &str) -> Result<(), ControllerError> {
        let name = str_at(csr, "/metadata/name");
        let mut conditions: Vec<Value> = csr
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let now = crate::api::times::now_rfc3339();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(ips: &[&str]) -> CsrContents {
        CsrContents {
            common_name: "system:node:n1".into(),
            organizations: vec!["system:nodes".into()],
            dns_names: vec!["n1".into()],
            ips: ips.iter().map(|ip| ip.parse().expect("ip")).collect(),
            other_names: 0,
        }
    }

    fn csr(username: &str, groups: &[&str]) -> Value {
        json!({"spec": {"username": username, "groups": groups, "usages": ["digital signature", "server auth"]}})
    }

    #[test]
    fn serving_certificates_are_approved_for_the_nodes_own_names_only() {
        let node = csr("system:node:n1", &["system:nodes"]);
        let addresses = ["192.168.70.1".to_string(), "n1".to_string()];
        let kind = NodeCertificate::Serving;
        assert!(auto_approved(
            kind,
            &node,
            &serving(&["192.168.70.1"]),
            &addresses
        ));
        assert!(
            !auto_approved(kind, &node, &serving(&["10.0.0.9"]), &addresses),
            "an address not the node's"
        );
        assert!(
            !auto_approved(kind, &node, &serving(&["192.168.70.1"]), &[]),
            "before the Node reports it"
        );
        let other = csr("system:node:n2", &["system:nodes"]);
        assert!(
            !auto_approved(kind, &other, &serving(&["192.168.70.1"]), &addresses),
            "asked by another node"
        );
        let bootstrap = csr("system:bootstrap:abcdef", &["system:bootstrappers"]);
        assert!(!auto_approved(
            kind,
            &bootstrap,
            &serving(&["192.168.70.1"]),
            &addresses
        ));
    }
}
