//! `pods/<name>/log`: what kube-apiserver checks before it asks the pod's node for the log, and where
//! it asks. The node's agent serves logs the way kubelet does (`GET /containerLogs/<namespace>/<pod>/
//! <container>` on the port the Node reports in `status.daemonEndpoints.kubeletEndpoint`); the server
//! streams its answer back ([`crate::kubelet`]). Hollow nodes run no containers: their pods' logs are
//! empty, answered here.

use serde_json::Value;

use super::{ApiError, objects, query_param, resources};
use crate::store::Store;

/// kubelet's default port, used when a Node reports none.
pub const KUBELET_PORT: u16 = 10250;

/// Where a pod's log is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogSource {
    /// The node's agent: `https://<address>/<path_and_query>`.
    Node { address: String, path_and_query: String },
    /// A hollow node: the containers print nothing.
    Hollow,
}

/// The `PodLogOptions` kubelet understands, passed on after checking the numbers are numbers.
const OPTIONS: &[(&str, bool)] = &[
    ("follow", false),
    ("previous", false),
    ("timestamps", false),
    ("sinceSeconds", true),
    ("tailLines", true),
    ("limitBytes", true),
    ("sinceTime", false),
];

/// Checks a log request for pod `name` as kube-apiserver does and says where to read it.
pub fn plan(store: &Store, namespace: &str, name: &str, query: &str) -> Result<LogSource, ApiError> {
    let pods = resources::by_plural("pods")
        .ok_or_else(|| ApiError::new(500, "InternalError", "no pods resource"))?;
    let pod = objects::get(store, pods, Some(namespace), name)?;
    let container = container(
        &pod,
        name,
        query_param(query, "container").map(super::percent_decode),
    )?;
    let mut passed = Vec::new();
    for (option, numeric) in OPTIONS {
        let Some(v) = query_param(query, option) else {
            continue;
        };
        let v = super::percent_decode(v);
        if *numeric && v.parse::<i64>().map_or(true, |n| n < 0) {
            return Err(ApiError::invalid(
                "PodLogOptions",
                "",
                option,
                &format!("Invalid value: {v:?}: must be a non-negative integer"),
            ));
        }
        passed.push(format!("{option}={}", encode(&v)));
    }
    let Some(address) = agent_address(store, &pod, name)? else {
        return Ok(LogSource::Hollow);
    };
    let mut path_and_query = format!("/containerLogs/{namespace}/{name}/{container}");
    if !passed.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&passed.join("&"));
    }
    Ok(LogSource::Node {
        address,
        path_and_query,
    })
}

/// `host:port` of the kubelet API of the node pod `name` is bound to, as its Node reports it (InternalIP,
/// `daemonEndpoints`); `None` for a hollow node, which runs no containers.
pub fn agent_address(store: &Store, pod: &Value, name: &str) -> Result<Option<String>, ApiError> {
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let nodes = resources::by_plural("nodes")
        .ok_or_else(|| ApiError::new(500, "InternalError", "no nodes resource"))?;
    let node = objects::get(store, nodes, None, node_name).map_err(|_| {
        ApiError::bad_request(format!(
            "pod {name} is bound to node {node_name}, which does not exist"
        ))
    })?;
    if node
        .pointer("/metadata/labels/node.berth.dev~1hollow")
        .and_then(Value::as_str)
        == Some("true")
    {
        return Ok(None);
    }
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "node {node_name} reports no InternalIP to reach its agent at"
            ))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| (1..=65535).contains(p))
        .map_or(KUBELET_PORT, |p| p as u16);
    let address = match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{address}:{port}"),
    };
    Ok(Some(address))
}

/// The container whose log is wanted: the one named (which must be the pod's), else the pod's only
/// one, else the one `kubectl.kubernetes.io/default-container` names.
pub fn container(pod: &Value, name: &str, wanted: Option<String>) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    let ephemeral = names("ephemeralContainers");
    match wanted.filter(|w| !w.is_empty()) {
        Some(w) if containers.contains(&w) || init.contains(&w) || ephemeral.contains(&w) => Ok(w),
        Some(w) => Err(ApiError::bad_request(format!(
            "container {w} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            if let Some(default) = pod
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                .and_then(Value::as_str)
                .filter(|d| containers.iter().any(|c| c == d))
            {
                return Ok(default.to_string());
            }
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_named_single_or_defaulted() {
        let one = json!({"spec": {"containers": [{"name": "web"}]}});
        assert_eq!(container(&one, "p", None).ok().as_deref(), Some("web"));
        let err = container(&one, "p", Some("db".into())).expect_err("not the pod's");
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "container db is not valid for pod p")
        );
        let two = json!({"metadata": {}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let err = container(&two, "p", None).expect_err("ambiguous");
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(container(&two, "p", Some("i".into())).ok().as_deref(), Some("i"));
        let defaulted = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/default-container": "b"}}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(container(&defaulted, "p", None).ok().as_deref(), Some("b"));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("2024-01-01T00:00:00Z"), "2024-01-01T00%3A00%3A00Z");
    }
}
