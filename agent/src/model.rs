//! Services and EndpointSlices as the agent holds them: the fields it reads and nothing else, with the
//! Kubernetes field names and nesting, so they deserialize from the same JSON and YAML and the
//! translation reads them as it would read the k8s-openapi types.
//!
//! Why: the stores hold every Service and EndpointSlice of the cluster. As k8s-openapi structs an
//! EndpointSlice endpoint takes 352 bytes before its strings (every optional field of the API is there,
//! `targetRef`, `hints`, topology...), so 10,000 slices of 10 endpoints were about 55 MB; these mirrors
//! keep what load balancing needs. The metadata stays the API's `ObjectMeta`, which the watchers and
//! reflector stores (kube-runtime) work with. Nodes are few and stay k8s-openapi's `Node`.

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use std::{
    collections::HashSet,
    net::Ipv4Addr,
    sync::{Arc, LazyLock, Mutex, PoisonError},
};

use serde::{Deserialize, Deserializer};

macro_rules! resource {
    ($ty:ident, $group:expr, $version:expr, $api_version:expr, $kind:expr, $plural:expr) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = $api_version;
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = NamespaceResourceScope;
        }

        impl k8s_openapi::ListableResource for $ty {
            const LIST_KIND: &'static str = concat!($kind, "List");
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A `v1` Service.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<ServiceSpec>,
    pub status: Option<ServiceStatus>,
}
resource!(Service, "", "v1", "v1", "Service", "services");

/// The parts of `ServiceSpec` load balancing reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "externalIPs")]
    pub external_ips: Option<Vec<String>>,
    pub ports: Option<Vec<ServicePort>>,
    pub session_affinity: Option<String>,
    pub session_affinity_config: Option<SessionAffinityConfig>,
    pub external_traffic_policy: Option<String>,
    pub internal_traffic_policy: Option<String>,
    /// The node port on which LoadBalancer Services with `externalTrafficPolicy: Local` are
    /// health-checked ([`crate::lb::health_checks`]).
    pub health_check_node_port: Option<i32>,
}

/// A Service port.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub port: i32,
    pub node_port: Option<i32>,
}

/// `sessionAffinityConfig`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct SessionAffinityConfig {
    #[serde(rename = "clientIP")]
    pub client_ip: Option<ClientIpConfig>,
}

/// `sessionAffinityConfig.clientIP`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpConfig {
    pub timeout_seconds: Option<i32>,
}

/// The parts of `ServiceStatus` load balancing reads (LoadBalancer ingress addresses).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub load_balancer: Option<LoadBalancerStatus>,
}

/// `status.loadBalancer`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct LoadBalancerStatus {
    pub ingress: Option<Vec<LoadBalancerIngress>>,
}

/// One `status.loadBalancer.ingress` entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct LoadBalancerIngress {
    pub ip: Option<String>,
}

/// A `discovery.k8s.io/v1` EndpointSlice.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The `kubernetes.io/service-name` label, moved here by [`Trim::trim`] (a label map costs more
    /// than 500 bytes however few labels it holds).
    #[serde(skip)]
    pub service_name: Option<String>,
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    pub ports: Option<Vec<EndpointPort>>,
}
resource!(
    EndpointSlice,
    "discovery.k8s.io",
    "v1",
    "discovery.k8s.io/v1",
    "EndpointSlice",
    "endpointslices"
);

impl EndpointSlice {
    /// The Service this slice belongs to: its `kubernetes.io/service-name` label (kept in
    /// [`EndpointSlice::service_name`] once trimmed).
    pub fn service_name(&self) -> Option<&str> {
        self.service_name.as_deref().or_else(|| {
            self.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
        })
    }
}

/// One endpoint: its address, conditions and node. 48 bytes and no heap of its own for an IPv4
/// endpoint; with 10,000 Services of 10 endpoints the endpoints are the largest part of the stores.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The first of `addresses`, the only one with a meaning: the API says "no semantics are defined
    /// for additional addresses beyond the first, and kube-proxy does not look at them".
    #[serde(rename = "addresses", deserialize_with = "first_address")]
    pub address: Option<EndpointAddress>,
    pub conditions: Option<EndpointConditions>,
    /// Shared among all endpoints on one node (see [`intern`]).
    #[serde(default, deserialize_with = "interned")]
    pub node_name: Option<Arc<str>>,
}

/// An endpoint address: IPv4, which the data plane serves, as its four bytes; anything else (IPv6, a
/// malformed address) as written, for the translation to skip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointAddress {
    V4(Ipv4Addr),
    Other(Box<str>),
}

impl From<String> for EndpointAddress {
    fn from(s: String) -> Self {
        match s.parse() {
            Ok(ip) => EndpointAddress::V4(ip),
            Err(_) => EndpointAddress::Other(s.into_boxed_str()),
        }
    }
}

fn first_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EndpointAddress>, D::Error> {
    let addresses: Vec<String> = Vec::deserialize(d)?;
    Ok(addresses.into_iter().next().map(EndpointAddress::from))
}

fn interned<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(intern))
}

/// One shared copy of each node name: every endpoint names its node, and a cluster has far fewer nodes
/// than endpoints. Names no endpoint holds any more are dropped whenever the table has doubled.
pub fn intern(name: String) -> Arc<str> {
    struct Table {
        names: HashSet<Arc<str>>,
        prune_at: usize,
    }
    static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| {
        Mutex::new(Table {
            names: HashSet::new(),
            prune_at: 64,
        })
    });
    let mut table = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = table.names.get(name.as_str()) {
        return Arc::clone(shared);
    }
    if table.names.len() >= table.prune_at {
        table.names.retain(|n| Arc::strong_count(n) > 1);
        table.prune_at = (table.names.len() * 2).max(64);
    }
    let shared: Arc<str> = name.into();
    table.names.insert(Arc::clone(&shared));
    shared
}

/// `ready`, `serving`, `terminating`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct EndpointConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

/// An EndpointSlice port.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub port: Option<i32>,
    pub protocol: Option<String>,
}

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Drops what the agent never reads from an object before it is stored. Both sources trim every object
/// they deliver: with 10,000 Services and their EndpointSlices the metadata alone (labels, annotations
/// such as kubectl's last-applied configuration, owner references, uids, resource versions) was more
/// than half of the agent's memory. The watchers track resource versions themselves, before trimming.
pub trait Trim {
    fn trim(&mut self);
}

/// Name and namespace only: all the translation reads of a Service's or EndpointSlice's metadata.
fn name_only(meta: &mut ObjectMeta) {
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        ..ObjectMeta::default()
    };
}

impl Trim for Service {
    fn trim(&mut self) {
        name_only(&mut self.metadata);
    }
}

impl Trim for EndpointSlice {
    fn trim(&mut self) {
        if self.service_name.is_none() {
            self.service_name = self.service_name().map(str::to_string);
        }
        name_only(&mut self.metadata);
    }
}

/// Pods bound to this node: few, read whole by their workers; only managedFields go.
impl Trim for k8s_openapi::api::core::v1::Pod {
    fn trim(&mut self) {
        self.metadata.managed_fields = None;
    }
}

/// Nodes are few and their annotations carry flannel's overlay data: only managedFields go.
impl Trim for k8s_openapi::api::core::v1::Node {
    fn trim(&mut self) {
        self.metadata.managed_fields = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_json_of_both_kinds_reads_into_the_mirrors() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "demo", "uid": "x", "managedFields": []},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "externalIPs": ["192.0.2.1"], "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}],
                     "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7", "ipMode": "VIP"}]}}
        }))
        .expect("Service");
        let spec = svc.spec.as_ref().expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(spec.external_ips.as_deref(), Some(&["192.0.2.1".to_string()][..]));
        assert_eq!(
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds),
            Some(60)
        );
        assert_eq!(spec.ports.as_ref().map(|p| p[0].node_port), Some(Some(30080)));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "demo", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": false, "serving": true, "terminating": true},
                           "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "web-abc"}, "zone": "a"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .expect("EndpointSlice");
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("n1"));
        assert_eq!(
            slice.endpoints[0].address,
            Some(EndpointAddress::V4("10.244.1.5".parse().expect("ip")))
        );
        assert_eq!(
            slice.endpoints[0].conditions.as_ref().and_then(|c| c.terminating),
            Some(true)
        );
        assert_eq!(slice.ports.as_ref().and_then(|p| p[0].port), Some(8080));
    }
}
