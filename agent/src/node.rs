//! The node's own objects in the API, written through their own client (never into an input): the
//! Node (registered at start with its addresses, capacity, nodeInfo, kubelet endpoint, and flannel's
//! annotations), its status conditions, and its Lease in `kube-node-lease`, renewed every 10 s as
//! kubelet does. The control plane's node lifecycle judges the node by that Lease: an agent that dies
//! stops renewing it and the node goes NotReady after the grace period.
//!
//! Conditions reflect real state: `Ready` once the data plane is loaded and the Services have been
//! programmed from a complete list; `NetworkUnavailable` until the pod network is configured (with the
//! reason, e.g. no podCIDR allocated).

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{
            DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, ObjectMeta, Time},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use berth_datapath::net::{PodCidr, format_mac};

use crate::overlay::desired::annotations;

/// How often the Lease is renewed (kubelet's default).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Lease's duration (kubelet's default).
pub const LEASE_SECONDS: i32 = 40;
/// How often the status is written when nothing changed (kubelet reports at least every 5 min).
const STATUS_REFRESH: Duration = Duration::from_secs(60);

/// What the node tells the cluster about itself.
pub struct NodeIdentity {
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
    /// The VXLAN device's MAC, when the overlay is on (flannel's `VtepMAC`).
    pub vtep_mac: Option<[u8; 6]>,
    /// The port kubelet's API is (to be) served on.
    pub kubelet_port: i32,
}

/// Health the subsystems report, for the conditions.
pub struct Health {
    /// The Service LB has programmed a complete list at least once.
    pub services_synced: watch::Receiver<bool>,
    /// The pod CIDR as configured by the pod network task.
    pub pod_cidr: watch::Receiver<Option<PodCidr>>,
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// Capacity as kubelet reports it: CPUs, memory, pods (kubelet's default 110), ephemeral storage of
/// the state directory's filesystem.
fn capacity(state_dir: &std::path::Path) -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let mut out = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("memory".to_string(), Quantity(format!("{mem_kib}Ki"))),
        ("pods".to_string(), Quantity("110".into())),
    ]);
    let dir = std::ffi::CString::new(
        state_dir
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(std::path::Path::new("/"))
            .as_os_str()
            .as_encoded_bytes(),
    )
    .ok();
    if let Some(dir) = dir {
        // SAFETY: statvfs fills the zeroed struct for a valid C path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(dir.as_ptr(), &mut st) } == 0 {
            let bytes = st.f_blocks as u64 * st.f_frsize as u64;
            out.insert(
                "ephemeral-storage".into(),
                Quantity(format!("{}Ki", bytes / 1024)),
            );
        }
    }
    out
}

/// A condition as it stands now; its transition time is carried over by [`carry_transitions`].
fn condition(type_: &str, status: bool, reason: &str, message: &str) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now()),
        last_transition_time: Some(now()),
    }
}

/// Keeps each condition's `lastTransitionTime` from `before` unless its status changed.
fn carry_transitions(now: &mut [NodeCondition], before: &[NodeCondition]) {
    for c in now {
        if let Some(prev) = before.iter().find(|p| p.type_ == c.type_ && p.status == c.status) {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

/// The Node as this agent registers it.
fn node_object(id: &NodeIdentity, state_dir: &std::path::Path) -> Node {
    let mut annotations =
        BTreeMap::from([(annotations::KUBE_SUBNET_MANAGER.to_string(), "true".to_string())]);
    if let Some(mac) = id.vtep_mac {
        annotations.insert(annotations::BACKEND_TYPE.into(), "vxlan".into());
        annotations.insert(
            annotations::BACKEND_DATA.into(),
            json!({"VNI": berth_datapath::net::VNI, "VtepMAC": format_mac(&mac)}).to_string(),
        );
    }
    if let Some(ip) = id.addresses.first() {
        annotations.insert(annotations::PUBLIC_IP.into(), ip.to_string());
    }
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), id.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch().to_string()),
    ]);
    let mut addresses: Vec<NodeAddress> = id
        .addresses
        .iter()
        .map(|a| NodeAddress {
            type_: "InternalIP".into(),
            address: a.to_string(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: id.name.clone(),
    });
    let capacity = capacity(state_dir);
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(addresses),
            allocatable: Some(capacity.clone()),
            capacity: Some(capacity),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: id.kubelet_port,
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: arch().into(),
                boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
                container_runtime_version: format!("berth://{}", env!("CARGO_PKG_VERSION")),
                kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
                kube_proxy_version: format!("berth-{}", env!("CARGO_PKG_VERSION")),
                kubelet_version: format!("berth-{}", env!("CARGO_PKG_VERSION")),
                machine_id: read_trimmed("/etc/machine-id"),
                operating_system: "linux".into(),
                os_image: os_image(),
                system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Registers the Node, then keeps its Lease renewed and its conditions true, forever.
pub async fn run(client: Client, id: NodeIdentity, state_dir: std::path::PathBuf, mut health: Health) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let node = node_object(&id, &state_dir);
    loop {
        match register(&nodes, &node).await {
            Ok(()) => break,
            Err(e) => {
                warn!(node = %id.name, error = %e, "registering the Node; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    info!(node = %id.name, "Node registered");
    let mut written: Option<Vec<NodeCondition>> = None;
    let mut last_status = tokio::time::Instant::now();
    let mut renew = tokio::time::interval(LEASE_RENEW);
    loop {
        tokio::select! {
            _ = renew.tick() => {
                if let Err(e) = renew_lease(&leases, &id.name).await {
                    warn!(error = %e, "renewing the node's Lease");
                }
            }
            _ = health.services_synced.changed() => {}
            _ = health.pod_cidr.changed() => {}
        }
        let mut conditions = conditions(&health);
        let before = written.as_deref().unwrap_or_default();
        carry_transitions(&mut conditions, before);
        let same = |a: &NodeCondition, b: &NodeCondition| {
            (&a.type_, &a.status, &a.reason) == (&b.type_, &b.status, &b.reason)
        };
        let changed =
            before.len() != conditions.len() || before.iter().zip(&conditions).any(|(a, b)| !same(a, b));
        if !changed && last_status.elapsed() < STATUS_REFRESH {
            continue;
        }
        let mut status = node.status.clone().unwrap_or_default();
        status.conditions = Some(conditions.clone());
        let patch = json!({"status": status});
        match nodes
            .patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                if changed {
                    let summary: Vec<String> = conditions
                        .iter()
                        .map(|c| format!("{}={}", c.type_, c.status))
                        .collect();
                    info!(conditions = %summary.join(","), "node status written");
                }
                written = Some(conditions);
                last_status = tokio::time::Instant::now();
            }
            Err(e) => warn!(error = %e, "writing the node's status"),
        }
    }
}

fn conditions(health: &Health) -> Vec<NodeCondition> {
    let synced = *health.services_synced.borrow();
    let cidr = *health.pod_cidr.borrow();
    vec![
        condition(
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "berth does not evict on memory pressure yet",
        ),
        condition(
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "berth does not evict on disk pressure yet",
        ),
        condition(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "berth does not evict on PID pressure yet",
        ),
        match cidr {
            Some(c) => condition(
                "NetworkUnavailable",
                false,
                "BerthPodNetworkReady",
                &format!("pod network {c} configured"),
            ),
            None => condition(
                "NetworkUnavailable",
                true,
                "NoPodCIDR",
                "no podCIDR allocated to this node yet (spec.podCIDR is empty)",
            ),
        },
        if synced {
            condition(
                "Ready",
                true,
                "KubeletReady",
                "berth agent is ready: eBPF data plane loaded and attached, Services programmed",
            )
        } else {
            condition(
                "Ready",
                false,
                "DataPlaneNotSynced",
                "the eBPF data plane has not programmed a complete list of Services yet",
            )
        },
    ]
}

async fn register(nodes: &Api<Node>, node: &Node) -> Result<(), kube::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    match nodes.create(&PostParams::default(), node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Registered before (a restart): bring labels and annotations up to date, keep the rest.
            let patch = json!({"metadata": {
                "labels": node.metadata.labels,
                "annotations": node.metadata.annotations,
            }});
            nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

async fn renew_lease(leases: &Api<Lease>, name: &str) -> Result<(), kube::Error> {
    let renew = MicroTime(Timestamp::now());
    let patch =
        json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew}});
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("kube-node-lease".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.into()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(renew),
                    ..LeaseSpec::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}
