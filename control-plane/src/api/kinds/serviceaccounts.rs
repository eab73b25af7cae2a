//! ServiceAccounts: their merge keys. (Tokens are `api/serviceaccounts.rs`'.)

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;

use super::Strategy;
use crate::api::{
    patch::{OBJECT_META, Schema, keyed, nested},
    status::ApiError,
    typed::{self, FieldValidation},
};

/// The strategy of core/v1 ServiceAccounts.
pub struct ServiceAccounts;

/// The entry of the resource table.
pub const SERVICE_ACCOUNTS: ServiceAccounts = ServiceAccounts;

impl Strategy for ServiceAccounts {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<ServiceAccount>(obj, validation)
    }

    /// `secrets` merge by `name`; `imagePullSecrets` here has no strategy (unlike PodSpec's) and is
    /// replaced.
    fn merge_keys(&self) -> Schema {
        const SERVICE_ACCOUNT: Schema = &[nested("metadata", OBJECT_META), keyed("secrets", "name", &[])];
        SERVICE_ACCOUNT
    }
}
