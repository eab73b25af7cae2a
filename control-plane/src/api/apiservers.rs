//! The `default/kubernetes` Endpoints when several API servers share one etcd (kube-apiserver's
//! `lease` endpoint reconciler). Every API server holds a Lease `kube-system/apiserver-<id>`, labelled
//! `apiserver.kubernetes.io/identity: kube-apiserver` as kube-apiserver's identity Leases are, with its
//! address in an annotation, and renews it a few times per lease duration; each one then sets the
//! Endpoints to the addresses of the Leases still held. A Lease counts as held while its
//! resourceVersion keeps changing as this process watches it (as node lifecycle judges nodes), so
//! clocks that disagree between machines do not matter.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{ApiError, objects, resources, selector::Selectors, typed::FieldValidation};
use crate::store::Store;

const NAMESPACE: &str = "kube-system";
const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
const ADDRESS_ANNOTATION: &str = "berth.dev/apiserver-address";

/// One API server's part in keeping the Endpoints true.
pub struct ApiServerEndpoints {
    lease_name: String,
    identity: String,
    address: SocketAddr,
    duration: Duration,
    /// Other API servers' Leases: resourceVersion and when this process saw it change.
    seen: HashMap<String, (String, Instant)>,
}

fn resource(plural: &str) -> Result<&'static resources::Resource, ApiError> {
    resources::by_plural(plural)
        .ok_or_else(|| ApiError::new(500, "InternalError", format!("no resource {plural}")))
}

/// `id` as a DNS-1123 label fragment.
fn lease_name(id: &str) -> String {
    let cleaned: String = id
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let cleaned = cleaned.trim_matches('-');
    let mut name = format!("apiserver-{cleaned}");
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

impl ApiServerEndpoints {
    /// The API server `identity`, reachable at `address`, holding its Lease for `duration`.
    pub fn new(identity: &str, address: SocketAddr, duration: Duration) -> ApiServerEndpoints {
        ApiServerEndpoints {
            lease_name: lease_name(identity),
            identity: identity.to_string(),
            address,
            duration,
            seen: HashMap::new(),
        }
    }

    /// How often to call [`tick`](Self::tick): three renewals per lease duration.
    pub fn interval(&self) -> Duration {
        self.duration / 3
    }

    /// Renews this API server's Lease, then sets the Endpoints to every live API server's address.
    pub fn tick(&mut self, store: &Store) -> Result<(), ApiError> {
        self.renew(store)?;
        let addresses = self.live_addresses(store)?;
        write_endpoints(store, &addresses)
    }

    fn renew(&self, store: &Store) -> Result<(), ApiError> {
        let leases = resource("leases")?;
        let now = super::times::now_micro_rfc3339();
        let patch = json!({
            "metadata": {"annotations": {ADDRESS_ANNOTATION: self.address.to_string()}},
            "spec": {"renewTime": now, "holderIdentity": self.identity}
        });
        match objects::patch(
            store,
            leases,
            Some(NAMESPACE),
            &self.lease_name,
            objects::PatchKind::Merge,
            patch.to_string().as_bytes(),
            FieldValidation::Strict,
            objects::Part::Main,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.lease_name,
                        "namespace": NAMESPACE,
                        "labels": {IDENTITY_LABEL: "kube-apiserver"},
                        "annotations": {ADDRESS_ANNOTATION: self.address.to_string()}
                    },
                    "spec": {
                        "holderIdentity": self.identity,
                        "leaseDurationSeconds": self.duration.as_secs().max(1),
                        "renewTime": now
                    }
                });
                objects::create(
                    store,
                    leases,
                    Some(NAMESPACE),
                    lease.to_string().as_bytes(),
                    FieldValidation::Strict,
                )
                .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// This API server's address and those of the others whose Leases changed within a duration.
    fn live_addresses(&mut self, store: &Store) -> Result<Vec<SocketAddr>, ApiError> {
        let selector = Selectors::parse(Some(&format!("{IDENTITY_LABEL}=kube-apiserver")), None)
            .map_err(ApiError::bad_request)?;
        let list = objects::list(store, resource("leases")?, Some(NAMESPACE), &selector)?;
        let now = Instant::now();
        let mut addresses = vec![self.address];
        let mut present = Vec::new();
        for lease in list["items"].as_array().into_iter().flatten() {
            let name = lease
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if name == self.lease_name {
                continue;
            }
            present.push(name.to_string());
            let rv = lease
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let entry = self.seen.entry(name.to_string()).or_insert((rv.clone(), now));
            if entry.0 != rv {
                *entry = (rv, now);
            }
            if now.duration_since(entry.1) > self.duration {
                // Gone (or restarted under another identity): its Lease goes too, so they do not pile
                // up. A live server that was only slow creates its Lease again at its next renewal.
                if let Err(e) = objects::delete(
                    store,
                    resource("leases")?,
                    Some(NAMESPACE),
                    name,
                    &objects::DeleteOptions::default(),
                ) && e.code != 404
                {
                    return Err(e);
                }
                continue;
            }
            if let Some(address) = lease
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(ADDRESS_ANNOTATION))
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                addresses.push(address);
            }
        }
        self.seen.retain(|name, _| present.contains(name));
        addresses.sort();
        addresses.dedup();
        Ok(addresses)
    }
}

/// The Endpoints `default/kubernetes` for these API servers: one subset per port.
pub fn endpoints_for(addresses: &[SocketAddr]) -> Value {
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for a in addresses {
        by_port.entry(a.port()).or_default().push(a.ip().to_string());
    }
    let subsets: Vec<Value> = by_port
        .into_iter()
        .map(|(port, ips)| {
            json!({
                "addresses": ips.into_iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
            })
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets
    })
}

/// The EndpointSlice `default/kubernetes` kube-apiserver's reconciler writes beside the Endpoints: what
/// service proxies (kube-proxy, berth) read to serve the `kubernetes` ClusterIP.
pub fn endpoint_slice_for(addresses: &[SocketAddr]) -> Value {
    let port = addresses.first().map_or(443, SocketAddr::port);
    let ips: Vec<Value> = addresses
        .iter()
        .filter(|a| a.port() == port && a.is_ipv4())
        .map(|a| json!({"addresses": [a.ip().to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {
            "kubernetes.io/service-name": "kubernetes",
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
        }},
        "addressType": "IPv4",
        "endpoints": ips,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
    })
}

/// Writes the Endpoints and the EndpointSlice if they say something else. Several API servers may write
/// at once: a conflict means another wrote meanwhile, so the comparison is made again.
pub fn write_endpoints(store: &Store, addresses: &[SocketAddr]) -> Result<(), ApiError> {
    for (plural, body, fields) in [
        ("endpoints", endpoints_for(addresses), &["subsets"][..]),
        (
            "endpointslices",
            endpoint_slice_for(addresses),
            &["endpoints", "ports"][..],
        ),
    ] {
        let mut attempts = 0;
        loop {
            match put_if_changed(store, plural, body.clone(), fields) {
                Err(e) if (e.code == 409) && attempts < 5 => attempts += 1,
                other => break other?,
            }
        }
    }
    Ok(())
}

/// Creates `default/kubernetes` of `plural`, or replaces it (compare-and-swap on what was read) when one
/// of `fields` differs.
fn put_if_changed(store: &Store, plural: &str, mut body: Value, fields: &[&str]) -> Result<(), ApiError> {
    let r = resource(plural)?;
    match objects::get(store, r, Some("default"), "kubernetes") {
        Ok(current) if fields.iter().all(|f| current.get(f) == body.get(f)) => Ok(()),
        Ok(current) => {
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            objects::replace(
                store,
                r,
                Some("default"),
                "kubernetes",
                body.to_string().as_bytes(),
                FieldValidation::Strict,
                objects::Part::Main,
            )
            .map(|_| ())
        }
        Err(e) if e.code == 404 => objects::create(
            store,
            r,
            Some("default"),
            body.to_string().as_bytes(),
            FieldValidation::Strict,
        )
        .map(|_| ()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_dns_labels() {
        assert_eq!(lease_name("Host_1234"), "apiserver-host-1234");
        assert_eq!(lease_name(&"x".repeat(100)).len(), 63);
    }

    #[test]
    fn one_subset_per_port() {
        let addresses: Vec<SocketAddr> = ["10.0.0.1:6443", "10.0.0.2:6443", "127.0.0.1:7000"]
            .iter()
            .map(|a| a.parse().expect("address"))
            .collect();
        let ep = endpoints_for(&addresses);
        assert_eq!(
            ep["subsets"],
            json!([
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
                {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": 7000, "protocol": "TCP"}]}
            ])
        );
    }
}
