//! CertificateSigningRequests: `kubectl get csr` columns (signer, requestor, condition). Signing is
//! the certificates controller's (`controllers/certificates.rs`).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use serde_json::{Value, json};

use super::{Column, Columns, Strategy, column, list, text};
use crate::api::{
    status::ApiError,
    typed::{self, FieldValidation},
};

/// The strategy of certificates.k8s.io/v1 CertificateSigningRequests.
pub struct CertificateSigningRequests;

/// The entry of the resource table.
pub const CERTIFICATE_SIGNING_REQUESTS: CertificateSigningRequests = CertificateSigningRequests;

impl Strategy for CertificateSigningRequests {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<CertificateSigningRequest>(obj, validation)
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[
            column("SignerName", "string"),
            column("Requestor", "string"),
            column("Condition", "string"),
        ];
        Columns {
            before_age: BEFORE,
            after_age: &[],
        }
    }

    /// The condition column lists the true conditions, and `Issued` once a certificate is there.
    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut state: Vec<String> = list(obj, "/status/conditions")
            .filter(|c| text(c, "/status") == "True")
            .map(|c| text(c, "/type"))
            .collect();
        if obj.pointer("/status/certificate").is_some() {
            state.push("Issued".into());
        }
        let condition = if state.is_empty() {
            "Pending".to_string()
        } else {
            state.join(",")
        };
        vec![
            json!(text(obj, "/spec/signerName")),
            json!(text(obj, "/spec/username")),
            json!(condition),
        ]
    }
}
