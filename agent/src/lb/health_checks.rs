//! kube-proxy's health-check node ports: a LoadBalancer Service with `externalTrafficPolicy: Local`
//! has a `healthCheckNodePort` on which every node answers whether it has endpoints of the Service,
//! so a cloud load balancer sends traffic only to nodes that can serve it without a second hop.
//! Which ports to serve and what to answer, from Services and EndpointSlices: a pure function.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::Arc,
};

use super::desired::SERVICE_PROXY_NAME_LABEL;
use crate::model::{EndpointAddress, EndpointSlice, Service};

/// What one health-check node port answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints of the Service on this node (each address once, whatever its ports).
    pub local_endpoints: usize,
}

impl HealthCheck {
    /// The HTTP status: 200 with local endpoints, 503 without (the load balancer skips the node).
    pub fn status(&self) -> (u16, &'static str) {
        if self.local_endpoints > 0 {
            (200, "OK")
        } else {
            (503, "Service Unavailable")
        }
    }

    /// The JSON body kube-proxy answers with.
    pub fn body(&self) -> String {
        serde_json::json!({
            "service": {"namespace": self.namespace, "name": self.name},
            "localEndpoints": self.local_endpoints,
            "serviceProxyHealthy": true,
        })
        .to_string()
    }
}

/// The Services that ask for a health check: namespace -> name -> port (nested, so that a slice's
/// Service is looked up by its borrowed names, with no key built per slice).
pub type Asking = HashMap<String, HashMap<String, u16>>;

/// The health-check node ports this node serves, by port.
pub fn desired(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    node: &str,
) -> BTreeMap<u16, HealthCheck> {
    answers(&asking(services), slices, node)
}

/// The Services with a health-check node port: LoadBalancers with `externalTrafficPolicy: Local`.
pub fn asking(services: &[Arc<Service>]) -> Asking {
    let mut wanted = Asking::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let proxied_elsewhere = svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL));
        if proxied_elsewhere
            || spec.type_.as_deref() != Some("LoadBalancer")
            || spec.external_traffic_policy.as_deref() != Some("Local")
        {
            continue;
        }
        let Some(port) = spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            continue;
        };
        let namespace = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        wanted.entry(namespace).or_default().insert(name, port);
    }
    wanted
}

/// What each port of `wanted` answers: the ready endpoints of its Service on `node`.
pub fn answers(wanted: &Asking, slices: &[Arc<EndpointSlice>], node: &str) -> BTreeMap<u16, HealthCheck> {
    if wanted.is_empty() {
        return BTreeMap::new();
    }
    // Local ready addresses per Service, keyed by the names `wanted` holds.
    let mut local: HashMap<(&str, &str), BTreeSet<Ipv4Addr>> = HashMap::new();
    for slice in slices {
        let Some(service) = slice.service_name() else {
            continue;
        };
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        let Some((namespace, service)) = wanted
            .get_key_value(namespace)
            .and_then(|(ns, names)| names.get_key_value(service).map(|(name, _)| (ns, name)))
        else {
            continue;
        };
        for ep in &slice.endpoints {
            // As kube-proxy counts: ready (nil means ready) and on this node.
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready || ep.node_name.as_deref() != Some(node) {
                continue;
            }
            if let Some(EndpointAddress::V4(addr)) = ep.address {
                local
                    .entry((namespace.as_str(), service.as_str()))
                    .or_default()
                    .insert(addr);
            }
        }
    }
    wanted
        .iter()
        .flat_map(|(namespace, names)| names.iter().map(move |(name, port)| (namespace, name, *port)))
        .map(|(namespace, name, port)| {
            let local_endpoints = local
                .get(&(namespace.as_str(), name.as_str()))
                .map_or(0, BTreeSet::len);
            (
                port,
                HealthCheck {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    local_endpoints,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> Arc<T> {
        Arc::new(serde_norway::from_str(yaml).expect("yaml"))
    }

    #[test]
    fn local_load_balancers_get_a_port_answering_their_local_endpoints() {
        let svc = |name: &str, policy: &str| {
            parse::<Service>(&format!(
                "metadata: {{name: {name}, namespace: web}}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: {policy}\n  healthCheckNodePort: 32000\n  ports: [{{port: 80}}]\n"
            ))
        };
        let mut slice: EndpointSlice = serde_norway::from_str(
            "metadata: {name: s, namespace: web, labels: {kubernetes.io/service-name: front}}\naddressType: IPv4\nendpoints:\n- {addresses: [10.244.0.5], nodeName: n1, conditions: {ready: true}}\n- {addresses: [10.244.0.6], nodeName: n1, conditions: {ready: false}}\n- {addresses: [10.244.1.5], nodeName: n2}\n",
        )
        .expect("slice");
        crate::model::Trim::trim(&mut slice);
        let slices = [Arc::new(slice)];
        let got = desired(&[svc("front", "Local")], &slices, "n1");
        let check = &got[&32000];
        assert_eq!((check.name.as_str(), check.local_endpoints), ("front", 1));
        assert_eq!(check.status().0, 200);
        assert_eq!(
            check.body(),
            r#"{"localEndpoints":1,"service":{"name":"front","namespace":"web"},"serviceProxyHealthy":true}"#
        );
        let elsewhere = desired(&[svc("front", "Local")], &slices, "n3");
        assert_eq!(elsewhere[&32000].status().0, 503);
        assert!(desired(&[svc("front", "Cluster")], &slices, "n1").is_empty());
    }
}
