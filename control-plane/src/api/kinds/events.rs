//! Events: `kubectl get events` columns.

use k8s_openapi::api::core::v1::Event;
use serde_json::{Value, json};

use super::{Column, Columns, Strategy, column, text};
use crate::api::{
    status::ApiError,
    typed::{self, FieldValidation},
};

/// The strategy of core/v1 Events.
pub struct Events;

/// The entry of the resource table.
pub const EVENTS: Events = Events;

impl Strategy for Events {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<Event>(obj, validation)
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[
            column("Type", "string"),
            column("Reason", "string"),
            column("Object", "string"),
            column("Message", "string"),
        ];
        Columns {
            before_age: BEFORE,
            after_age: &[],
        }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(text(obj, "/type")),
            json!(text(obj, "/reason")),
            json!(format!(
                "{}/{}",
                text(obj, "/involvedObject/kind").to_lowercase(),
                text(obj, "/involvedObject/name")
            )),
            json!(text(obj, "/message")),
        ]
    }
}
