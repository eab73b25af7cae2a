//! Leases (node heartbeats, leader election): `kubectl get leases` shows the holder.

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{Value, json};

use super::{Column, Columns, Strategy, column, text};
use crate::api::{
    status::ApiError,
    typed::{self, FieldValidation},
};

/// The strategy of coordination.k8s.io/v1 Leases.
pub struct Leases;

/// The entry of the resource table.
pub const LEASES: Leases = Leases;

impl Strategy for Leases {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<Lease>(obj, validation)
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[column("Holder", "string")];
        Columns {
            before_age: BEFORE,
            after_age: &[],
        }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![json!(text(obj, "/spec/holderIdentity"))]
    }
}
