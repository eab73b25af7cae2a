//! From Node objects to overlay peers: for every other node with a pod CIDR, the underlay address to
//! send VXLAN to and the VTEP MAC to address inner frames to — read from flannel's Node annotations
//! (`flannel.alpha.coreos.com/backend-type: vxlan`, `backend-data: {"VNI":1,"VtepMAC":"..."}`,
//! `public-ip`), so berth and flannel nodes can reach each other. Pure functions, unit-tested.

use std::net::Ipv4Addr;

use berth_datapath::net::{Peer, PodCidr, VNI, parse_mac};
use k8s_openapi::api::core::v1::Node;
use serde::Deserialize;

/// flannel's Node annotations.
pub mod annotations {
    pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
    pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
    pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
    /// Real flanneld ignores Nodes without it.
    pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";
}

/// A node left out of the overlay, and why (logged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub node: String,
    pub reason: String,
}

#[derive(Deserialize)]
struct BackendData {
    #[serde(rename = "VNI", default)]
    vni: Option<u32>,
    #[serde(rename = "VtepMAC")]
    vtep_mac: String,
}

fn peer(node: &Node) -> Result<Option<Peer>, String> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let spec = node.spec.as_ref();
    let cidr = spec.and_then(|s| {
        s.pod_cidr
            .clone()
            .or_else(|| s.pod_cidrs.as_ref().and_then(|c| c.first().cloned()))
    });
    let Some(cidr) = cidr else {
        return Ok(None); // no pod CIDR assigned yet: nothing to route
    };
    let pod_cidr: PodCidr = cidr.parse()?;
    let ann = node.metadata.annotations.as_ref();
    let get = |k: &str| ann.and_then(|a| a.get(k)).map(String::as_str);
    match get(annotations::BACKEND_TYPE) {
        Some("vxlan") => {}
        Some(other) => return Err(format!("backend-type {other:?} is not vxlan")),
        None => return Err("no flannel backend annotations yet".into()),
    }
    let data: BackendData = serde_json::from_str(get(annotations::BACKEND_DATA).unwrap_or("null"))
        .map_err(|e| format!("backend-data: {e}"))?;
    if data.vni.is_some_and(|v| v != VNI) {
        return Err(format!("VNI {:?} differs from {VNI}", data.vni));
    }
    let vtep_mac =
        parse_mac(&data.vtep_mac).ok_or_else(|| format!("VtepMAC {:?} is not a MAC", data.vtep_mac))?;
    let internal = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone());
    let underlay = get(annotations::PUBLIC_IP)
        .map(str::to_owned)
        .or(internal)
        .ok_or("neither public-ip annotation nor InternalIP")?;
    let underlay: Ipv4Addr = underlay
        .parse()
        .map_err(|_| format!("underlay address {underlay:?} is not IPv4"))?;
    Ok(Some(Peer {
        node: name,
        pod_cidr,
        underlay,
        vtep_mac,
    }))
}

/// Overlay peers of node `me`: every other node with a pod CIDR and flannel VXLAN annotations, sorted
/// by CIDR. Nodes with broken annotations are skipped with the reason; nodes not yet annotated too.
pub fn peers<'a>(nodes: impl IntoIterator<Item = &'a Node>, me: &str) -> (Vec<Peer>, Vec<Skipped>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        if name == me {
            continue;
        }
        match peer(node) {
            Ok(Some(p)) => out.push(p),
            Ok(None) => {}
            Err(reason) => skipped.push(Skipped { node: name, reason }),
        }
    }
    out.sort_by_key(|p| p.pod_cidr);
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(yaml: &str) -> Node {
        serde_norway::from_str(yaml).expect("node YAML")
    }

    const N2: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: n2
  annotations:
    flannel.alpha.coreos.com/backend-type: vxlan
    flannel.alpha.coreos.com/backend-data: '{"VNI":1,"VtepMAC":"0e:1f:2a:3b:4c:5d"}'
    flannel.alpha.coreos.com/public-ip: 192.168.60.2
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.60.99}]}
"#;

    #[test]
    fn flannel_annotations_make_a_peer() {
        let (p, s) = peers(&[node(N2)], "n1");
        assert!(s.is_empty(), "{s:?}");
        assert_eq!(
            p,
            vec![Peer {
                node: "n2".into(),
                pod_cidr: "10.244.2.0/24".parse().expect("cidr"),
                underlay: "192.168.60.2".parse().expect("ip"),
                vtep_mac: [0x0e, 0x1f, 0x2a, 0x3b, 0x4c, 0x5d],
            }]
        );
    }

    #[test]
    fn internal_ip_when_no_public_ip() {
        let n = N2.replace("    flannel.alpha.coreos.com/public-ip: 192.168.60.2\n", "");
        assert_eq!(
            peers(&[node(&n)], "n1").0[0].underlay.to_string(),
            "192.168.60.99"
        );
    }

    #[test]
    fn self_unannotated_and_broken_nodes() {
        assert!(
            peers(&[node(N2)], "n2").0.is_empty(),
            "a node is not its own peer"
        );
        let bare = N2.replace("  annotations:\n", "  labels:\n");
        let (p, s) = peers(&[node(&bare)], "n1");
        assert!(p.is_empty() && s.len() == 1);
        let bad_mac = N2.replace("0e:1f:2a:3b:4c:5d", "zz");
        assert!(peers(&[node(&bad_mac)], "n1").1[0].reason.contains("VtepMAC"));
        let other_vni = N2.replace("\"VNI\":1", "\"VNI\":7");
        assert!(peers(&[node(&other_vni)], "n1").1[0].reason.contains("VNI"));
        let no_cidr = N2.replace("spec: {podCIDR: 10.244.2.0/24}", "spec: {}");
        assert_eq!(peers(&[node(&no_cidr)], "n1"), (vec![], vec![]));
    }

    #[test]
    fn cidr_parsing_normalises() {
        let c: PodCidr = "10.244.3.7/24".parse().expect("cidr");
        assert_eq!(c.to_string(), "10.244.3.0/24");
        assert!("10.244.3.0".parse::<PodCidr>().is_err());
        assert!("10.244.3.0/33".parse::<PodCidr>().is_err());
        assert_eq!(parse_mac("aa:bb:cc:dd:ee"), None);
    }
}
