//! Kubernetes `Status` answers: every error the API gives is one, with the HTTP code, a machine-readable
//! `reason` clients act on (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Expired`...) and a
//! message that says what is wrong.

use serde_json::{Value, json};

use crate::store::StoreError;

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details.kind` / `details.name`, when the error is about one object.
    pub details: Option<(String, String)>,
    /// `details.causes`: (field, message) for each invalid field (kubectl prints them).
    pub causes: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            causes: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    /// 422 Invalid: `field` of object `kind`/`name` has an invalid value (`why`).
    pub fn invalid(kind: &str, name: &str, field: &str, why: &str) -> Self {
        ApiError {
            details: Some((kind.to_string(), name.to_string())),
            causes: vec![(field.to_string(), why.to_string())],
            ..ApiError::new(
                422,
                "Invalid",
                format!("{kind} \"{name}\" is invalid: {field}: {why}"),
            )
        }
    }

    /// 422 Invalid about `field`, before the object it is about is named (see [`ApiError::about`]).
    pub fn invalid_field(field: &str, why: &str) -> Self {
        ApiError::invalid("", "", field, why)
    }

    /// 422 Invalid with several causes at once, as the API server reports every invalid field.
    pub fn invalid_all(kind: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let text: Vec<String> = causes.iter().map(|(f, w)| format!("{f}: {w}")).collect();
        let message = if text.len() == 1 {
            format!("{kind} \"{name}\" is invalid: {}", text[0])
        } else {
            format!("{kind} \"{name}\" is invalid: [{}]", text.join(", "))
        };
        ApiError {
            details: Some((kind.to_string(), name.to_string())),
            causes,
            ..ApiError::new(422, "Invalid", message)
        }
    }

    /// Names the object an `Invalid` error is about (its message says which object).
    pub fn about(self, kind: &str, name: &str) -> Self {
        if self.reason != "Invalid" {
            return self;
        }
        ApiError::invalid_all(kind, name, self.causes)
    }

    pub fn not_found(resource: &str, name: &str) -> Self {
        ApiError {
            details: Some((resource.to_string(), name.to_string())),
            ..ApiError::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
        }
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )
    }

    /// The `Status` body.
    pub fn to_json(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((kind, name)) = &self.details {
            status["details"] = json!({"name": name, "kind": kind});
            if !self.causes.is_empty() {
                let causes: Vec<Value> = self
                    .causes
                    .iter()
                    .map(|(field, message)| json!({"reason": "FieldValueInvalid", "message": message, "field": field}))
                    .collect();
                status["details"]["causes"] = Value::Array(causes);
            }
        }
        status
    }

    /// A store error about `resource`/`name`.
    pub fn from_store(e: StoreError, resource: &str, name: &str) -> Self {
        let with = |mut err: ApiError| {
            err.details = Some((resource.to_string(), name.to_string()));
            err
        };
        match e {
            StoreError::AlreadyExists { .. } => with(ApiError::new(
                409,
                "AlreadyExists",
                format!("{resource} \"{name}\" already exists"),
            )),
            StoreError::NotFound { .. } => ApiError::not_found(resource, name),
            StoreError::Conflict { .. } => with(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            )),
            StoreError::Compacted { requested, oldest } => ApiError::new(
                410,
                "Expired",
                format!("too old resource version: {requested} ({oldest})"),
            ),
            StoreError::FutureRevision { requested, current } => ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            StoreError::Sqlite { .. } => ApiError::new(500, "InternalError", e.to_string()),
            StoreError::Etcd(_) => ApiError::new(503, "ServiceUnavailable", e.to_string()),
        }
    }
}
