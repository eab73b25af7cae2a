//! Endpoints and EndpointSlices: the endpoints controller's output (and berth's agent's input), with
//! `kubectl get` columns; a slice's address type is checked.

use k8s_openapi::api::{core::v1::Endpoints, discovery::v1::EndpointSlice};
use serde_json::{Value, json};

use super::{Column, Columns, Problems, Strategy, Write, column, joined, list, text};
use crate::api::{
    status::ApiError,
    typed::{self, FieldValidation},
};

/// The strategy of core/v1 Endpoints.
pub struct EndpointsStrategy;

/// The entry of the resource table.
pub const ENDPOINTS: EndpointsStrategy = EndpointsStrategy;

impl Strategy for EndpointsStrategy {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<Endpoints>(obj, validation)
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[column("Endpoints", "string")];
        Columns {
            before_age: BEFORE,
            after_age: &[],
        }
    }

    /// `ip:port` of every address and port, as `kubectl get endpoints` shows them.
    fn cells(&self, obj: &Value) -> Vec<Value> {
        let addresses = list(obj, "/subsets").flat_map(|s| {
            let ports: Vec<String> = list(s, "/ports").map(|p| text(p, "/port")).collect();
            list(s, "/addresses")
                .flat_map(move |a| {
                    let ip = text(a, "/ip");
                    if ports.is_empty() {
                        return vec![ip];
                    }
                    ports.iter().map(|p| format!("{ip}:{p}")).collect()
                })
                .collect::<Vec<_>>()
        });
        vec![json!(joined(addresses, "<none>"))]
    }
}

/// The strategy of discovery.k8s.io/v1 EndpointSlices.
pub struct EndpointSlices;

/// The entry of the resource table.
pub const ENDPOINT_SLICES: EndpointSlices = EndpointSlices;

impl Strategy for EndpointSlices {
    fn decode(&self, obj: Value, validation: FieldValidation) -> Result<(Value, Vec<String>), ApiError> {
        typed::through::<EndpointSlice>(obj, validation)
    }

    fn create(&self, w: &Write<'_>, obj: &mut Value) -> Result<(), ApiError> {
        let mut p = Problems::default();
        if !matches!(
            obj.get("addressType").and_then(Value::as_str),
            Some("IPv4" | "IPv6" | "FQDN")
        ) {
            p.add(
                "addressType",
                "Unsupported value: must be one of IPv4, IPv6, FQDN",
            );
        }
        p.into_result(w.kind, obj)
    }

    fn columns(&self) -> Columns {
        const BEFORE: &[Column] = &[
            column("AddressType", "string"),
            column("Ports", "string"),
            column("Endpoints", "string"),
        ];
        Columns {
            before_age: BEFORE,
            after_age: &[],
        }
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(text(obj, "/addressType")),
            json!(joined(list(obj, "/ports").map(|p| text(p, "/port")), "<unset>")),
            json!(joined(
                list(obj, "/endpoints").flat_map(|e| list(e, "/addresses").map(|a| text(a, ""))),
                "<unset>",
            )),
        ]
    }
}
