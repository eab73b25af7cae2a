//! The agent's start-up: load and pin the eBPF object, set up what the node needs once (node-wide
//! settings, the VXLAN device, the socket LB's cgroup), open the source of cluster state, then run one
//! task per subsystem ([`crate::subsystems`]) until SIGTERM or SIGINT. Everything attached stays
//! attached afterwards (pinned), so traffic keeps flowing while the agent is stopped or upgraded.

use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf, sync::Arc, time::Duration};

use berth_common::{CFG_F_MASQUERADE, NodeConfig, ipv4_to_be};
use berth_datapath::{
    PinDir,
    attach::{self, AttachError},
    conntrack::CtTimeouts,
    endpoints::EndpointProgrammer,
    loader::{self, LoadError},
    maps::{self, MapsError, ServiceMaps},
    masquerade::MasqueradeMode,
    net::PodCidr,
    overlay::{self, OverlayProgrammer},
    programmer::ServiceProgrammer,
};
use berth_runtime::{container::Engine, image::ImageStore, image::Puller, runc::Runc};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    api_client,
    kubelet_api::KubeletApi,
    lb::{LbAlgorithm, NodeInfo},
    node::{self, Health, NodeIdentity},
    overlay::publish,
    pods::{PodEnv, PodManager, PodSources},
    source::{self, Inputs},
    subsystems::{
        endpoints::LocalEndpoints, health_checks::HealthChecks, interfaces::Interfaces, peers::OverlayPeers,
        pod_network::PodNetwork, services::ServiceLb,
    },
};

/// Errors that stop the agent.
#[derive(Debug, Error)]
pub enum AgentError {
    /// The eBPF object could not be loaded or its maps pinned.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A program could not be attached at start (overlay egress, socket LB).
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// A pinned map could not be opened or written at start.
    #[error(transparent)]
    Maps(#[from] MapsError),
    /// The VXLAN device could not be set up.
    #[error(transparent)]
    Vxlan(#[from] berth_datapath::overlay::VxlanError),
    /// The Node object could not be written into the manifests directory.
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    /// The source of cluster state could not be started.
    #[error("starting the source of cluster state: {0}")]
    Source(String),
    /// The async runtime could not be built.
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Where the cluster's objects come from.
pub enum Source {
    /// A directory of manifests (standalone mode).
    Manifests(PathBuf),
    /// An API server, through a kube-rs client with this configuration.
    Api(Box<kube::Config>),
}

/// Where the node's certificate lives and when to renew it.
pub struct Certificate {
    pub kubeconfig: PathBuf,
    /// Testing aid: renew this long after issue instead of at 70 % of the lifetime.
    pub renew_after: Option<Duration>,
}

/// Everything the agent needs to know about its node; all of it is configuration, never a guess.
pub struct AgentConfig {
    pub node_name: String,
    /// Node addresses: NodePorts are served on each; the first is the SNAT source.
    pub node_ips: Vec<Ipv4Addr>,
    /// The node's uplink (NodePort traffic from outside arrives here).
    pub uplink: Option<String>,
    /// Pod-facing interfaces, as names or `*` patterns.
    pub pod_interfaces: Vec<String>,
    /// cgroup v2 directory of the node's own subtree for the socket LB.
    pub cgroup: Option<PathBuf>,
    pub bpffs_root: PathBuf,
    pub algorithm: LbAlgorithm,
    /// Source ports for SNATed NodePort flows.
    pub snat_ports: (u16, u16),
    /// How often the manifests directory, interfaces and pod allocations are looked at.
    pub poll_interval: Duration,
    pub ct_gc_interval: Duration,
    pub ct_timeouts: CtTimeouts,
    /// Name of the node's VXLAN device for the pod network between nodes (created on the uplink); no
    /// overlay when absent.
    pub overlay_dev: Option<String>,
    /// MAC of that device (its VTEP MAC, published in the flannel annotations); kernel-chosen if absent.
    pub vtep_mac: Option<[u8; 6]>,
    /// UDP port of the overlay (flannel's `--vxlan-port`; every node of a cluster must use the same).
    pub vxlan_port: u16,
    /// Map sizes.
    pub capacities: loader::Capacities,
    /// Testing aid: pause after each backend and outer-slot write (see `ServiceProgrammer::set_slot_write_delay`).
    pub slot_write_delay: Duration,
    /// Written (atomically) after every Service sync: `generation frontends`.
    pub status_file: Option<PathBuf>,
    /// Node-local state: pod address allocations, `subnet.env`.
    pub state_dir: PathBuf,
    /// This node's pod CIDR when its Node object gives none (standalone mode).
    pub pod_cidr: Option<PodCidr>,
    /// The cluster's pod network (all nodes' pod CIDRs).
    pub cluster_cidr: PodCidr,
    /// Masquerade pod egress to outside the cluster's pod network.
    pub masquerade: bool,
    /// Who masquerades: the eBPF programs or an nftables rule.
    pub masquerade_mode: MasqueradeMode,
    /// The node's own certificate, kept renewed while running (joined by token).
    pub certificate: Option<Certificate>,
    /// The port kubelet's API is served on (advertised in the Node's daemonEndpoints).
    pub kubelet_port: i32,
    /// Register the node: with an API server its Node, Lease and status ([`node`]); in standalone mode
    /// its Node object (pod CIDR, flannel annotations) written into the manifests directory.
    pub register_node: bool,
    /// Run the pods bound to this node (with an API server and a registered node).
    pub pods: Option<PodsConfig>,
}

/// The pod runtime's settings.
#[derive(Clone, Debug)]
pub struct PodsConfig {
    /// Container logs (`/var/log/pods`).
    pub log_dir: PathBuf,
    /// cgroup parent of all pods (`/`).
    pub cgroup_root: String,
    /// Processes allowed per pod (None: unlimited).
    pub pod_max_pids: Option<i64>,
    /// When container logs are rotated.
    pub log_rotation: berth_runtime::shim::LogRotation,
    /// Registries reached over plain HTTP (`host:port`).
    pub insecure_registries: Vec<String>,
    /// Nameservers of `ClusterFirst` pods (kubelet's `--cluster-dns`); the node's resolver if none.
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// Static pods: Pod manifests run by this node alone (kubelet's `--pod-manifest-path`).
    pub static_pod_dir: Option<PathBuf>,
}

/// Starts the pod manager on the API's pods bound to this node (`api`: the client and the pods
/// feed) and the static pods directory.
fn start_pods(
    cfg: &AgentConfig,
    p: &PodsConfig,
    api: Option<(kube::Client, source::Feed<k8s_openapi::api::core::v1::Pod>)>,
    events: Option<crate::events::EventSink>,
    services: source::Store<crate::model::Service>,
) -> Result<(), AgentError> {
    let (client, api_pods) = api.unzip();
    let mut env = pod_env(cfg, p, client)?;
    env.events = events;
    env.services = Some(services);
    env.exits = match crate::pods::exits::ExitWatcher::new() {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "container exits not watched; pods are looked at every second");
            None
        }
    };
    let static_pods = match &p.static_pod_dir {
        Some(dir) => Some(
            source::static_pods::start(
                dir.clone(),
                cfg.node_name.clone(),
                cfg.poll_interval.max(Duration::from_secs(1)),
            )
            .map_err(|e| AgentError::Source(format!("static pods {}: {e}", dir.display())))?,
        ),
        None => None,
    };
    tokio::spawn(PodManager { env: Arc::new(env) }.run(PodSources {
        api: api_pods,
        static_pods,
    }));
    Ok(())
}

/// The container engine of the configuration.
fn engine(cfg: &AgentConfig, p: &PodsConfig) -> Result<Engine, AgentError> {
    let shim_exe = std::env::current_exe().map_err(|e| AgentError::Source(format!("own executable: {e}")))?;
    Ok(Engine {
        runc: Runc::new(&cfg.state_dir.join("runc")),
        shim_exe,
        cgroups: Arc::from(berth_runtime::cgroups::detect()),
        log_rotation: p.log_rotation,
    })
}

/// What the pod workers share, from the configuration.
fn pod_env(cfg: &AgentConfig, p: &PodsConfig, client: Option<kube::Client>) -> Result<PodEnv, AgentError> {
    let store =
        ImageStore::open(&cfg.state_dir.join("images")).map_err(|e| AgentError::Source(e.to_string()))?;
    Ok(PodEnv {
        node_name: cfg.node_name.clone(),
        node_ip: cfg.node_ips.first().map(ToString::to_string).unwrap_or_default(),
        state_dir: cfg.state_dir.clone(),
        pods_dir: cfg.state_dir.join("pods"),
        log_dir: p.log_dir.clone(),
        cgroup_root: p.cgroup_root.clone(),
        pod_max_pids: p.pod_max_pids,
        cluster_dns: p.cluster_dns.clone(),
        cluster_domain: p.cluster_domain.clone(),
        engine: engine(cfg, p)?,
        puller: Puller::new(Arc::new(store), &p.insecure_registries),
        client,
        pull_lock: tokio::sync::Mutex::new(()),
        events: None,
        exits: None,
        services: None,
    })
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(cfg: AgentConfig, source: Source) -> Result<(), AgentError> {
    // Two workers: the subsystems' map writes are short and synchronous, the watchers mostly wait.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    runtime.block_on(run_async(cfg, source))
}

async fn run_async(cfg: AgentConfig, source: Source) -> Result<(), AgentError> {
    let pins = PinDir::new(&cfg.bpffs_root, &cfg.node_name);
    let mut ebpf = loader::load(&pins, &cfg.capacities)?;
    let mut programmer = ServiceProgrammer::restore(ServiceMaps::open(&pins)?)?;
    programmer.set_slot_write_delay(cfg.slot_write_delay);
    if cfg.node_ips.is_empty() {
        warn!(
            "no --node-ip: NodePorts are not served and SNAT frontends (externalIPs with externalTrafficPolicy Cluster) drop"
        );
    }
    let vtep = match (&cfg.overlay_dev, &cfg.uplink) {
        (Some(dev), Some(uplink)) => Some(overlay::ensure_vxlan(dev, uplink, cfg.vtep_mac, cfg.vxlan_port)?),
        (Some(dev), None) => {
            warn!(device = %dev, "the overlay needs --uplink (the underlay device); overlay disabled");
            None
        }
        _ => None,
    };
    maps::write_node_config(
        &pins,
        NodeConfig {
            snat_addr: cfg.node_ips.first().map_or(0, |ip| ipv4_to_be(ip.octets())),
            snat_port_min: cfg.snat_ports.0,
            snat_port_max: cfg.snat_ports.1,
            vtep_ifindex: vtep.map_or(0, |v| v.ifindex),
            vtep_mac: vtep.map_or([0; 6], |v| v.mac),
            vxlan_port: cfg.vxlan_port.to_be(),
            cluster_net: ipv4_to_be(cfg.cluster_cidr.network.octets()),
            cluster_mask: ipv4_to_be(cfg.cluster_cidr.mask().octets()),
            flags: if cfg.masquerade && cfg.masquerade_mode == MasqueradeMode::Ebpf {
                CFG_F_MASQUERADE
            } else {
                0
            },
        },
    )?;
    if let Some(v) = vtep {
        let mac = berth_datapath::net::format_mac(&v.mac);
        info!(vtep_mac = %mac, "overlay enabled (publish this VtepMAC in the node's flannel backend-data)");
    }
    let overlay_peers = match vtep {
        Some(_) => Some(OverlayProgrammer::restore(&pins)?),
        None => None,
    };
    if cfg.register_node
        && let Source::Manifests(dir) = &source
    {
        match (vtep, cfg.pod_cidr, cfg.node_ips.first()) {
            (Some(v), Some(cidr), Some(ip)) => {
                let node = publish::node_object(&cfg.node_name, cidr, *ip, &v.mac);
                publish::write_to_manifests(dir, &node)?;
                info!(node = %cfg.node_name, pod_cidr = %cidr, "Node object published");
            }
            _ => warn!("--register-node needs the overlay, --pod-cidr and --node-ip; not registered"),
        }
    }
    let endpoints = EndpointProgrammer::restore(&pins)?;
    let pod_mtu = vtep.map_or(1500, |v| v.mtu);
    if let (Some(dev), Some(_)) = (&cfg.overlay_dev, vtep) {
        attach::attach_overlay_egress(&mut ebpf, &pins, dev)?;
    }
    if let Some(cgroup) = &cfg.cgroup {
        std::fs::create_dir_all(cgroup).map_err(|source| AttachError::Cgroup {
            path: cgroup.clone(),
            source,
        })?;
        attach::attach_sock_lb(&mut ebpf, &pins, cgroup)?;
    }

    let (synced_tx, synced_rx) = watch::channel(false);
    let (pod_cidr_tx, pod_cidr_rx) = watch::channel(None);
    let mut events = None;
    let inputs: Inputs = match source {
        Source::Manifests(dir) => {
            // Standalone, the node runs its static pods only.
            let inputs = source::manifests::start(dir.clone(), cfg.poll_interval)
                .map_err(|e| AgentError::Source(format!("manifests directory {}: {e}", dir.display())))?;
            if let Some(p) = cfg.pods.as_ref().filter(|p| p.static_pod_dir.is_some()) {
                start_pods(&cfg, p, None, None, inputs.services.store().clone())?;
            }
            inputs
        }
        Source::Api(config) => {
            let client_ca = config.root_cert.clone().unwrap_or_default();
            let client = api_client::client(*config).map_err(|e| AgentError::Source(e.to_string()))?;
            if cfg.register_node {
                tokio::spawn(node::run(
                    client.clone(),
                    NodeIdentity {
                        name: cfg.node_name.clone(),
                        addresses: cfg.node_ips.clone(),
                        vtep_mac: vtep.map(|v| v.mac),
                        kubelet_port: cfg.kubelet_port,
                    },
                    cfg.state_dir.clone(),
                    Health {
                        services_synced: synced_rx,
                        pod_cidr: pod_cidr_rx.clone(),
                    },
                ));
            } else {
                info!("not registering the node (kube-proxy replacement: kubelet owns the Node)");
            }
            events = Some(crate::events::start(client.clone(), cfg.node_name.clone()));
            let inputs = source::api::start(client.clone());
            if cfg.register_node
                && let Some(p) = &cfg.pods
            {
                let pods = source::api::pods(client.clone(), &cfg.node_name);
                let kubelet = KubeletApi {
                    node_name: cfg.node_name.clone(),
                    node_ips: cfg.node_ips.clone(),
                    port: u16::try_from(cfg.kubelet_port).unwrap_or(10250),
                    client_ca,
                    log_dir: p.log_dir.clone(),
                    pods_dir: cfg.state_dir.join("pods"),
                    pods: pods.store().clone(),
                    engine: engine(&cfg, p)?,
                    client: Some(client.clone()),
                    state_dir: cfg.state_dir.clone(),
                };
                tokio::spawn(async move {
                    if let Err(e) = kubelet.serve().await {
                        warn!(error = %e, "kubelet API not served: kubectl logs will fail for this node");
                    }
                });
                start_pods(
                    &cfg,
                    p,
                    Some((client.clone(), pods)),
                    events.clone(),
                    inputs.services.store().clone(),
                )?;
            }
            if let Some(c) = &cfg.certificate {
                tokio::spawn(crate::join::keep_renewed(
                    c.kubeconfig.clone(),
                    cfg.node_name.clone(),
                    c.renew_after,
                    client.clone(),
                ));
            }
            inputs
        }
    };

    let (scanned_tx, scanned_rx) = watch::channel(false);
    let (iface_changes_tx, iface_changes_rx) = watch::channel(0u64);
    tokio::spawn(
        Interfaces {
            ebpf,
            pins: pins.clone(),
            uplink: cfg.uplink.clone(),
            overlay_dev: cfg.overlay_dev.clone(),
            pod_interfaces: cfg.pod_interfaces.clone(),
            poll_interval: cfg.poll_interval,
            attached: HashMap::new(),
        }
        .run(scanned_tx, iface_changes_tx),
    );
    tokio::spawn(
        ServiceLb {
            programmer,
            node: NodeInfo {
                name: cfg.node_name.clone(),
                addresses: cfg.node_ips.clone(),
                algorithm: cfg.algorithm,
            },
            state: Default::default(),
            events,
            ct_gc_interval: cfg.ct_gc_interval,
            ct_timeouts: cfg.ct_timeouts,
            status_file: cfg.status_file.clone(),
            interfaces_scanned: scanned_rx,
            synced: synced_tx,
            sock_lb_cgroup: cfg.cgroup.clone(),
        }
        .run(inputs.clone()),
    );
    tokio::spawn(HealthChecks::new(cfg.node_name.clone(), Ipv4Addr::UNSPECIFIED).run(inputs.clone()));
    if let Some(programmer) = overlay_peers {
        tokio::spawn(
            OverlayPeers {
                programmer,
                node_name: cfg.node_name.clone(),
            }
            .run(inputs.clone()),
        );
    }
    tokio::spawn(
        PodNetwork {
            node_name: cfg.node_name.clone(),
            configured: cfg.pod_cidr,
            cluster_cidr: cfg.cluster_cidr,
            state_dir: cfg.state_dir.clone(),
            pod_mtu,
            masquerade: cfg.masquerade,
            masquerade_mode: cfg.masquerade_mode,
            nft: Box::new(berth_datapath::masquerade::NftCommand),
            vxlan_port: cfg.vxlan_port,
            overlay_dev: vtep.and(cfg.overlay_dev.clone()),
            applied: pod_cidr_tx,
        }
        .run(inputs.nodes.clone()),
    );
    tokio::spawn(
        LocalEndpoints {
            programmer: endpoints,
            state_dir: cfg.state_dir.clone(),
            poll_interval: cfg.poll_interval,
        }
        .run(pod_cidr_rx, iface_changes_rx),
    );

    shutdown_signal().await;
    info!("stopping; programs and maps stay pinned");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
