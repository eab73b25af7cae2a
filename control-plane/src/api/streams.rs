//! `pods/exec`, `pods/attach` and `pods/portforward`: what kube-apiserver checks before it hands the
//! client's upgraded connection (WebSocket, as kubectl 1.30+ speaks it) to the pod's node, and where
//! it hands it. The server then relays the bytes both ways without reading them
//! ([`crate::kubelet::upgrade`]); the node's agent speaks the stream protocol.

use serde_json::Value;

use super::{
    ApiError,
    logs::{agent_address, container},
    objects, query_param, resources,
};
use crate::store::Store;

/// Which stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Exec,
    Attach,
    PortForward,
}

impl StreamKind {
    /// The kind a `pods/<subresource>` names.
    pub fn of(subresource: &str) -> Option<Self> {
        match subresource {
            "exec" => Some(Self::Exec),
            "attach" => Some(Self::Attach),
            "portforward" => Some(Self::PortForward),
            _ => None,
        }
    }
}

/// The options a stream passes on to the agent (kubelet's names, as kube-apiserver forwards them).
const PASSED: &[&str] = &["command", "stdin", "stdout", "stderr", "tty", "ports"];

/// Checks the request for pod `name` and says `(agent address, path and query)` to ask.
pub fn plan(
    store: &Store,
    namespace: &str,
    name: &str,
    kind: StreamKind,
    query: &str,
) -> Result<(String, String), ApiError> {
    let pods = resources::by_plural("pods")
        .ok_or_else(|| ApiError::new(500, "InternalError", "no pods resource"))?;
    let pod = objects::get(store, pods, Some(namespace), name)?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if matches!(phase, "Succeeded" | "Failed") {
        let what = if kind == StreamKind::PortForward {
            "forward ports to"
        } else {
            "exec into or attach to a container in"
        };
        return Err(ApiError::bad_request(format!(
            "cannot {what} a completed pod; current phase is {phase}"
        )));
    }
    let address = agent_address(store, &pod, name)?.ok_or_else(|| {
        ApiError::bad_request(format!(
            "pod {name} runs on a hollow node, which has no containers"
        ))
    })?;
    let path = match kind {
        StreamKind::PortForward => format!("/portForward/{namespace}/{name}"),
        StreamKind::Exec | StreamKind::Attach => {
            let c = container(
                &pod,
                name,
                query_param(query, "container").map(super::percent_decode),
            )?;
            if kind == StreamKind::Exec && query_param(query, "command").is_none() {
                return Err(ApiError::bad_request("you must specify at least 1 command"));
            }
            let verb = if kind == StreamKind::Exec {
                "exec"
            } else {
                "attach"
            };
            format!("/{verb}/{namespace}/{name}/{c}")
        }
    };
    let passed: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let key = kv.split_once('=').map_or(*kv, |(k, _)| k);
            PASSED.contains(&key)
        })
        .collect();
    let path_and_query = if passed.is_empty() {
        path
    } else {
        format!("{path}?{}", passed.join("&"))
    };
    Ok((address, path_and_query))
}
