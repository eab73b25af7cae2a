//! What this node tells the cluster about its part of the overlay: its Node object with `spec.podCIDR`,
//! the InternalIP, and flannel's annotations (`backend-type: vxlan`, `backend-data` with the VTEP MAC,
//! `public-ip`), exactly as flannel publishes them, so flannel nodes and berth nodes find each other.
//!
//! Until the agent talks to an API server, "publishing" means writing that Node object into the
//! manifests directory (`node-<name>.yaml`): a directory shared by the nodes plays the API server's
//! part, and the other agents read it like any other manifest.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use k8s_openapi::{
    api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use thiserror::Error;

use berth_datapath::net::{PodCidr, VNI, format_mac};

use super::desired::annotations;

/// Errors of publishing the Node object.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The manifest could not be written.
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The object could not be serialised (a bug).
    #[error("serialising the Node object: {0}")]
    Serialize(String),
}

/// The Node object of this node as the overlay needs it published.
pub fn node_object(name: &str, pod_cidr: PodCidr, node_ip: Ipv4Addr, vtep_mac: &[u8; 6]) -> Node {
    let backend_data = serde_json::json!({"VNI": VNI, "VtepMAC": format_mac(vtep_mac)}).to_string();
    let annotations = BTreeMap::from([
        (annotations::BACKEND_TYPE.to_string(), "vxlan".to_string()),
        (annotations::BACKEND_DATA.to_string(), backend_data),
        (annotations::PUBLIC_IP.to_string(), node_ip.to_string()),
        (annotations::KUBE_SUBNET_MANAGER.to_string(), "true".to_string()),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(pod_cidr.to_string()),
            pod_cidrs: Some(vec![pod_cidr.to_string()]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: node_ip.to_string(),
            }]),
            ..NodeStatus::default()
        }),
    }
}

/// Writes `node` as `dir/node-<name>.yaml` (atomically, only when it differs). Returns whether it was
/// written.
pub fn write_to_manifests(dir: &Path, node: &Node) -> Result<bool, PublishError> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let path = dir.join(format!("node-{name}.yaml"));
    let text = serde_norway::to_string(node).map_err(|e| PublishError::Serialize(e.to_string()))?;
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(false);
    }
    let tmp = dir.join(format!(".node-{name}.yaml.tmp"));
    std::fs::write(&tmp, &text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| PublishError::Write { path, source })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::peers;

    #[test]
    fn a_published_node_is_a_peer_for_others() {
        let mac = [0x02, 0xbe, 0, 0, 0, 7];
        let node = node_object(
            "n7",
            "10.244.7.0/24".parse().expect("cidr"),
            "192.168.60.7".parse().expect("ip"),
            &mac,
        );
        let yaml = serde_norway::to_string(&node).expect("yaml");
        assert!(yaml.contains("kind: Node"), "{yaml}");
        let back: Node = serde_norway::from_str(&yaml).expect("parse");
        let (p, skipped) = peers(&[back], "n1");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(p[0].vtep_mac, mac);
        assert_eq!(p[0].underlay.to_string(), "192.168.60.7");
    }
}
