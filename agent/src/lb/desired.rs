//! From Kubernetes Services and EndpointSlices to the frontends the data plane must serve, with
//! kube-proxy's semantics: ports matched by name, ready endpoints only (serving-and-terminating ones as
//! a fallback), internal/externalTrafficPolicy Local, sessionAffinity ClientIP, NodePort on every node
//! address. Pure functions: no maps, no I/O, so every rule is unit-tested.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
};

use crate::model::{EndpointAddress, EndpointSlice, Service};
use berth_datapath::service::{
    BackendAddr, DesiredState, Frontend, FrontendKind, FrontendSpec, LbAlgorithm, Protocol,
};

pub use crate::model::SERVICE_NAME_LABEL;
/// Label of Services that another service proxy implements: kube-proxy and berth leave them alone.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Per-Service annotation choosing the backend selection algorithm (`random` or `maglev`).
pub const LB_ALGORITHM_ANNOTATION: &str = "berth.dev/lb-algorithm";
/// Kubernetes' default sessionAffinity ClientIP timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// The node this agent serves.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// `spec.nodeName` of pods here (endpoints' `nodeName`).
    pub name: String,
    /// Addresses on which NodePorts are served.
    pub addresses: Vec<Ipv4Addr>,
    /// Default backend selection.
    pub algorithm: LbAlgorithm,
}

/// A Service that cannot be programmed, and why (logged; the rest of the state still applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub service: String,
    pub reason: String,
}

/// Endpoints of one Service port, split by condition.
#[derive(Default)]
struct PortEndpoints {
    ready: BTreeSet<BackendAddr>,
    terminating: BTreeSet<BackendAddr>,
}

fn service_id(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

/// Groups endpoints by (namespace, service name, port name, protocol).
fn index_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &str,
) -> HashMap<(String, String, String, Protocol), PortEndpoints> {
    let mut index: HashMap<(String, String, String, Protocol), PortEndpoints> = HashMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(service) = slice.service_name() else {
            continue;
        };
        let namespace = slice
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        for port in slice.ports.iter().flatten() {
            let (Some(number), Some(proto)) = (port.port, Protocol::from_name(port.protocol.as_deref()))
            else {
                continue;
            };
            let Ok(number) = u16::try_from(number) else {
                continue;
            };
            let key = (
                namespace.clone(),
                service.to_string(),
                port.name.clone().unwrap_or_default(),
                proto,
            );
            let entry = index.entry(key).or_default();
            for ep in &slice.endpoints {
                let cond = ep.conditions.as_ref();
                // As kube-proxy reads them: nil `ready` and nil `serving` mean true, nil `terminating`
                // means not terminating.
                let ready = cond.and_then(|c| c.ready).unwrap_or(true);
                let serving = cond.and_then(|c| c.serving).unwrap_or(true);
                let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
                let local = ep.node_name.as_deref() == Some(node);
                let Some(EndpointAddress::V4(addr)) = ep.address else {
                    continue;
                };
                let backend = BackendAddr {
                    addr,
                    port: number,
                    proto,
                    local,
                };
                if ready && !terminating {
                    entry.ready.insert(backend);
                } else if serving && terminating {
                    entry.terminating.insert(backend);
                }
            }
        }
    }
    // An address listed ready in one slice and terminating in another counts as ready.
    for e in index.values_mut() {
        let ready = &e.ready;
        e.terminating.retain(|b| !ready.contains(b));
    }
    index
}

fn select(eps: Option<&PortEndpoints>, local_only: bool) -> (Vec<BackendAddr>, Vec<BackendAddr>) {
    let Some(eps) = eps else {
        return (Vec::new(), Vec::new());
    };
    let keep = |b: &&BackendAddr| !local_only || b.local;
    (
        eps.ready.iter().filter(keep).copied().collect(),
        eps.terminating.iter().filter(keep).copied().collect(),
    )
}

/// Computes the desired frontends. Services that cannot be programmed are returned in `Skipped`.
pub fn compute<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &NodeInfo,
) -> (DesiredState, Vec<Skipped>) {
    let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        if let Some(key) = slice_service(slice) {
            by_service.entry(key).or_default().push(slice);
        }
    }
    let mut state = DesiredState::default();
    let mut skipped = Vec::new();
    for svc in services {
        let slices = by_service
            .get(&service_key(svc))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let frontends = service_frontends(svc, slices.iter().copied(), node, &mut skipped);
        merge(&mut state, frontends, &mut skipped);
    }
    (state, skipped)
}

/// (namespace, name) of a Service.
pub fn service_key(svc: &Service) -> (String, String) {
    (
        svc.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// (namespace, Service name) an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub fn slice_service(slice: &EndpointSlice) -> Option<(String, String)> {
    let name = slice.service_name()?;
    Some((
        slice
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name.to_string(),
    ))
}

/// Adds one Service's frontends to `state`. Without an API server nothing allocates addresses, so
/// two Services may claim one frontend: the first claim wins and the other is skipped.
pub fn merge(state: &mut DesiredState, frontends: Vec<(Frontend, FrontendSpec)>, skipped: &mut Vec<Skipped>) {
    for (frontend, spec) in frontends {
        if let Some(owner) = state.frontends.get(&frontend)
            && owner.service != spec.service
        {
            skipped.push(Skipped {
                reason: format!(
                    "{}:{}/{} is already served for {}",
                    frontend.addr, frontend.port, frontend.proto, owner.service
                ),
                service: spec.service,
            });
            continue;
        }
        state.frontends.insert(frontend, spec);
    }
}

/// The frontends of one Service, from its EndpointSlices; what cannot be programmed goes to `skipped`.
pub fn service_frontends<'a>(
    svc: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &NodeInfo,
    skipped: &mut Vec<Skipped>,
) -> Vec<(Frontend, FrontendSpec)> {
    let mut out = Vec::new();
    collect_frontends(svc, &index_endpoints(slices, &node.name), node, &mut out, skipped);
    out
}

fn collect_frontends(
    svc: &Service,
    endpoints: &HashMap<(String, String, String, Protocol), PortEndpoints>,
    node: &NodeInfo,
    out: &mut Vec<(Frontend, FrontendSpec)>,
    skipped: &mut Vec<Skipped>,
) {
    let id = service_id(svc);
    let Some(spec) = svc.spec.as_ref() else { return };
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return;
    }
    // Another service proxy's Service (kube-proxy's convention; API watches exclude them already).
    if svc
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
    {
        return;
    }
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => None, // headless: DNS only, nothing to balance
        Some(ip) => match ip.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                skipped.push(Skipped {
                    service: id.clone(),
                    reason: format!("clusterIP {ip:?} is not IPv4"),
                });
                None
            }
        },
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let algorithm = match svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LB_ALGORITHM_ANNOTATION))
        .map(String::as_str)
    {
        Some("maglev") => LbAlgorithm::Maglev,
        Some("random") => LbAlgorithm::Random,
        _ => node.algorithm,
    };
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let namespace = svc.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut external_addrs: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if svc_type == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref());
        external_addrs.extend(
            ingress
                .iter()
                .flat_map(|i| i.iter())
                .filter_map(|i| i.ip.as_ref()?.parse::<Ipv4Addr>().ok()),
        );
    }

    for port in spec.ports.iter().flatten() {
        let Some(proto) = Protocol::from_name(port.protocol.as_deref()) else {
            skipped.push(Skipped {
                service: id.clone(),
                reason: format!("protocol {:?} is not supported", port.protocol),
            });
            continue;
        };
        let Ok(svc_port) = u16::try_from(port.port) else {
            skipped.push(Skipped {
                service: id.clone(),
                reason: format!("port {} out of range", port.port),
            });
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        let service = if port_name.is_empty() {
            id.clone()
        } else {
            format!("{id}:{port_name}")
        };
        let eps = endpoints.get(&(namespace.clone(), name.clone(), port_name, proto));
        let mut add = |addr: Ipv4Addr, port: u16, kind: FrontendKind, local_only: bool, snat: bool| {
            let (ready, terminating) = select(eps, local_only);
            let local_drop = local_only && ready.is_empty() && terminating.is_empty();
            let frontend = Frontend { addr, port, proto };
            out.push((
                frontend,
                FrontendSpec {
                    service: service.clone(),
                    kind,
                    ready,
                    terminating,
                    affinity_timeout,
                    snat,
                    local_drop,
                    algorithm,
                },
            ));
        };
        if let Some(ip) = cluster_ip {
            add(ip, svc_port, FrontendKind::ClusterIp, internal_local, false);
        }
        for ip in &external_addrs {
            add(
                *ip,
                svc_port,
                FrontendKind::NodePort,
                external_local,
                !external_local,
            );
        }
        if matches!(svc_type, "NodePort" | "LoadBalancer")
            && let Some(node_port) = port
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
        {
            for ip in &node.addresses {
                add(
                    *ip,
                    node_port,
                    FrontendKind::NodePort,
                    external_local,
                    !external_local,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_norway::from_str(yaml).expect("test YAML parses")
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            addresses: vec!["192.168.1.10".parse().expect("ip")],
            ..Default::default()
        }
    }

    const SVC: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  externalTrafficPolicy: Local
  sessionAffinity: ClientIP
  ports:
  - {name: http, port: 80, targetPort: 8080, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP}
"#;

    const SLICE: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: demo, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- addresses: [10.244.1.2]
  nodeName: n1
- addresses: [10.244.2.2]
  nodeName: n2
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.244.2.3]
  nodeName: n2
  conditions: {ready: false}
"#;

    fn compute_one() -> DesiredState {
        let (state, skipped) = compute(&[parse(SVC)], &[parse(SLICE)], &node());
        assert!(skipped.is_empty(), "{skipped:?}");
        state
    }

    fn fe(addr: &str, port: u16, proto: Protocol) -> Frontend {
        Frontend {
            addr: addr.parse().expect("ip"),
            port,
            proto,
        }
    }

    #[test]
    fn ports_map_by_name_to_endpoint_ports() {
        let state = compute_one();
        let http = &state.frontends[&fe("10.96.0.10", 80, Protocol::Tcp)];
        assert_eq!(
            http.ready
                .iter()
                .map(|b| (b.addr.to_string(), b.port))
                .collect::<Vec<_>>(),
            vec![("10.244.1.2".to_string(), 8080)]
        );
        let dns = &state.frontends[&fe("10.96.0.10", 53, Protocol::Udp)];
        assert_eq!(dns.ready[0].port, 5353);
        assert_eq!(dns.service, "demo/web:dns");
    }

    #[test]
    fn terminating_serving_kept_apart_and_unready_dropped() {
        let http = &compute_one().frontends[&fe("10.96.0.10", 80, Protocol::Tcp)];
        assert_eq!(http.terminating.len(), 1);
        assert_eq!(http.terminating[0].addr.to_string(), "10.244.2.2");
        assert!(
            !http
                .ready
                .iter()
                .chain(&http.terminating)
                .any(|b| b.addr.to_string() == "10.244.2.3")
        );
    }

    #[test]
    fn node_port_local_uses_local_endpoints_without_snat() {
        let np = &compute_one().frontends[&fe("192.168.1.10", 30080, Protocol::Tcp)];
        assert_eq!(np.kind, FrontendKind::NodePort);
        assert!(!np.snat);
        assert!(np.ready.iter().all(|b| b.local));
        assert!(np.terminating.is_empty());
        assert!(!np.local_drop);
    }

    #[test]
    fn node_port_cluster_snat_and_all_endpoints() {
        let svc = SVC.replace("externalTrafficPolicy: Local", "externalTrafficPolicy: Cluster");
        let (state, _) = compute(&[parse(&svc)], &[parse(SLICE)], &node());
        let np = &state.frontends[&fe("192.168.1.10", 30080, Protocol::Tcp)];
        assert!(np.snat);
        assert_eq!(np.ready.len() + np.terminating.len(), 2);
    }

    #[test]
    fn local_policy_without_local_endpoints_drops() {
        let mut n = node();
        n.name = "elsewhere".into();
        let (state, _) = compute(&[parse(SVC)], &[parse(SLICE)], &n);
        assert!(state.frontends[&fe("192.168.1.10", 30080, Protocol::Tcp)].local_drop);
        // ClusterIP is not affected by externalTrafficPolicy.
        assert!(!state.frontends[&fe("10.96.0.10", 80, Protocol::Tcp)].local_drop);
    }

    #[test]
    fn affinity_default_timeout() {
        let http = &compute_one().frontends[&fe("10.96.0.10", 80, Protocol::Tcp)];
        assert_eq!(http.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
    }

    #[test]
    fn headless_and_external_name_are_skipped_silently() {
        let headless = SVC
            .replace("clusterIP: 10.96.0.10", "clusterIP: None")
            .replace("type: NodePort", "type: ClusterIP");
        let (state, skipped) = compute(&[parse(&headless)], &[parse(SLICE)], &node());
        assert!(state.frontends.is_empty());
        assert!(skipped.is_empty());
    }

    #[test]
    fn service_without_slices_has_no_backends() {
        let (state, _) = compute(&[parse(SVC)], &[], &node());
        let http = &state.frontends[&fe("10.96.0.10", 80, Protocol::Tcp)];
        assert!(http.ready.is_empty() && http.terminating.is_empty() && !http.local_drop);
    }

    #[test]
    fn a_frontend_claimed_twice_keeps_the_first_owner() {
        let other = SVC.replace("name: web, namespace: demo", "name: other, namespace: demo");
        let (state, skipped) = compute(&[parse(SVC), parse(&other)], &[parse(SLICE)], &node());
        assert_eq!(
            state.frontends[&fe("10.96.0.10", 80, Protocol::Tcp)].service,
            "demo/web:http"
        );
        assert!(
            skipped
                .iter()
                .any(|s| s.service == "demo/other:http"
                    && s.reason.contains("already served for demo/web:http")),
            "{skipped:?}"
        );
    }

    #[test]
    fn maglev_annotation_overrides_default() {
        let svc = SVC.replace(
            "namespace: demo}",
            "namespace: demo, annotations: {berth.dev/lb-algorithm: maglev}}",
        );
        let (state, _) = compute(&[parse(&svc)], &[parse(SLICE)], &node());
        assert!(
            state
                .frontends
                .values()
                .all(|f| f.algorithm == LbAlgorithm::Maglev)
        );
    }
}
