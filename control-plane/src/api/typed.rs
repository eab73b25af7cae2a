//! Objects checked against their Kubernetes types: every object written goes through the k8s-openapi
//! type of its kind and back, so a field of the wrong type is refused (400) and the stored JSON has
//! exactly the type's fields. Unknown fields are what `fieldValidation` is about: `Strict` refuses them
//! (kubectl's default once the OpenAPI says the server validates), `Warn` drops them with a warning,
//! `Ignore` drops them silently.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::status::ApiError;

/// The `fieldValidation` query parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    /// Parses the parameter (absent: `Warn`, the API server's default).
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("Warn") | Some("") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation {other:?} is not one of Strict, Warn, Ignore"
            ))),
        }
    }
}

/// `obj` through the Kubernetes type `T` and back, and the warnings to send (each kind's
/// [`super::kinds::Strategy::decode`]).
pub fn through<T: DeserializeOwned + Serialize>(
    obj: Value,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let mut unknown = Vec::new();
    let typed: T = serde_ignored::deserialize(obj, |path| unknown.push(path.to_string()))
        .map_err(|e| ApiError::bad_request(format!("the object does not decode: {e}")))?;
    if validation == FieldValidation::Strict && !unknown.is_empty() {
        let fields: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            fields.join(", ")
        )));
    }
    let warnings = if validation == FieldValidation::Warn {
        unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect()
    } else {
        Vec::new()
    };
    let value = serde_json::to_value(&typed)
        .map_err(|e| ApiError::new(500, "InternalError", format!("re-encoding the object: {e}")))?;
    Ok((value, warnings))
}
