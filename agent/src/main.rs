//! `berth-agent`: one per node. See `berth-agent --help`.

use std::{net::Ipv4Addr, path::PathBuf, process::ExitCode, time::Duration};

use berth_agent::{
    agent::{self, AgentConfig, Source},
    api_client, join,
};
use berth_datapath::{
    DEFAULT_BPFFS_ROOT, PinDir, conntrack::CtTimeouts, inspect, loader, maps::LbMaps, masquerade,
    net::PodCidr, netns, podnet, service::LbAlgorithm,
};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "berth-agent",
    version,
    about = "berth node agent: eBPF Service load balancing"
)]
struct Cli {
    /// Enter this named network namespace (/var/run/netns/NAME) first.
    #[arg(long, global = true)]
    netns: Option<String>,
    /// Root of berth's bpffs pins; the node's pins live in ROOT/NODE.
    #[arg(long, global = true, default_value = DEFAULT_BPFFS_ROOT)]
    bpffs_root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: keep the data plane in step with the cluster (an API server, or a manifests
    /// directory in standalone mode).
    Run(Box<RunArgs>),
    /// Inspect the load balancer from the pinned maps.
    Lb {
        #[command(subcommand)]
        what: LbCommand,
    },
    /// Detach everything of a node and remove its pins and its masquerade rule (pod address
    /// allocations stay: they belong to the pods).
    Cleanup {
        #[arg(long)]
        node: String,
    },
    /// Wire pods into the pod network (the part of a CNI plugin's job berth does itself).
    PodNet {
        #[command(subcommand)]
        what: PodNetCommand,
    },
}

#[derive(Subcommand)]
enum PodNetCommand {
    /// Give a pod an address from the node's pod CIDR and a veth pair into its network namespace;
    /// prints the result as JSON. Idempotent.
    Add {
        /// The node's state directory (as given to `run`).
        #[arg(long)]
        state_dir: PathBuf,
        /// The pod's id (`namespace/name` or a sandbox id).
        #[arg(long)]
        pod: String,
        /// The pod's network namespace (an `ip netns` name).
        #[arg(long)]
        pod_netns: String,
        /// Interface name inside the pod.
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
    /// Remove a pod's veth pair and release its address. Idempotent.
    Del {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        pod: String,
    },
}

#[derive(Subcommand)]
enum LbCommand {
    /// Services (frontends) and their backends.
    List {
        #[arg(long)]
        node: String,
    },
    /// Conntrack entries and data-path counters.
    Ct {
        #[arg(long)]
        node: String,
    },
    /// Local pods (direct delivery) and overlay peers.
    Pods {
        #[arg(long)]
        node: String,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// This node's name (matches endpoints' nodeName); the host name, lowercased, by default (as
    /// kubelet's).
    #[arg(long, default_value_t = default_node_name())]
    node: String,
    /// Node address (repeatable): NodePorts are served on each; the first is the SNAT source.
    #[arg(long = "node-ip")]
    node_ips: Vec<Ipv4Addr>,
    /// Standalone mode: a directory of Service, EndpointSlice and Node manifests instead of an API server.
    #[arg(long, conflicts_with = "kubeconfig")]
    manifests: Option<PathBuf>,
    /// Credentials and address of the API server (a kubeconfig file). Without it, the join flags and
    /// --manifests: the pod's service-account credentials when running in a pod.
    #[arg(long, conflicts_with_all = ["token", "manifests"])]
    kubeconfig: Option<PathBuf>,
    /// Join: the API server's address (https://HOST:PORT), as `kubeadm join` takes it. Also overrides
    /// the address of in-cluster credentials (never reach the API through the ClusterIP berth serves).
    #[arg(long, conflicts_with = "manifests")]
    server: Option<String>,
    /// Join: a bootstrap token (ID.SECRET), as `kubeadm join --token`. Used once: the node's own
    /// certificate is kept in STATE_DIR/kubeconfig and reused on restart.
    #[arg(long, requires_all = ["server", "ca_cert_hash"])]
    token: Option<String>,
    /// Join: the pin of the cluster's CA (sha256:HEX of its public key), as `kubeadm join
    /// --discovery-token-ca-cert-hash`; repeatable (any may match).
    #[arg(long = "ca-cert-hash", requires = "token")]
    ca_cert_hash: Vec<String>,
    /// The node's uplink interface (NodePort traffic from outside).
    #[arg(long)]
    uplink: Option<String>,
    /// Pod-facing interfaces: names or `*` patterns (repeatable).
    #[arg(long = "pod-interfaces")]
    pod_interfaces: Vec<String>,
    /// cgroup v2 directory of the node's own subtree, for socket-level load balancing; empty for none
    /// (so a manifest can turn it off through a variable).
    #[arg(long, value_parser = path_or_empty)]
    cgroup: Option<PathBuf>,
    /// Default backend selection for new flows.
    #[arg(long, value_enum, default_value_t = LbAlgorithm::Random)]
    lb_algorithm: LbAlgorithm,
    /// SNAT source port range: NodePort with externalTrafficPolicy Cluster, pod egress masquerade in
    /// eBPF. Keep it clear of the node's own ephemeral ports (net.ipv4.ip_local_port_range).
    #[arg(long, default_value = "61000-65535", value_parser = parse_range)]
    snat_ports: (u16, u16),
    /// How often to check the manifests directory, interfaces and pod allocations, in milliseconds.
    #[arg(long, default_value_t = 200)]
    poll_ms: u64,
    /// How often to garbage-collect conntrack, in seconds.
    #[arg(long, default_value_t = 10)]
    ct_gc_secs: u64,
    /// Idle timeout of UDP flows, in seconds.
    #[arg(long, default_value_t = 60)]
    ct_udp_timeout_secs: u64,
    /// Create this VXLAN device (on --uplink, VNI 1, UDP 8472) and carry the pod network between nodes
    /// over VXLAN, encapsulated by the eBPF programs.
    #[arg(long)]
    overlay_dev: Option<String>,
    /// UDP port of the VXLAN overlay, as flannel's --vxlan-port. flannel's Node annotations do not
    /// carry it: every node of a cluster, berth or flannel, must be given the same.
    #[arg(long, default_value_t = berth_common::DEFAULT_VXLAN_PORT)]
    vxlan_port: u16,
    /// MAC of the VXLAN device (its VTEP MAC); kernel-chosen when absent.
    #[arg(long, value_parser = parse_mac_arg)]
    vtep_mac: Option<[u8; 6]>,
    /// Capacity of the frontend map (a Service port's ClusterIP, external IPs, NodePort on each node
    /// address...); each frontend holds its first 16 backends.
    #[arg(long, default_value_t = berth_common::capacity::FRONTENDS)]
    max_frontends: u32,
    /// Capacity of the map of backend slots beyond each frontend's first 16 (Services with more
    /// endpoints).
    #[arg(long, default_value_t = berth_common::capacity::SLOTS)]
    max_service_slots: u32,
    /// Capacity of the conntrack map (two entries per translated flow).
    #[arg(long, default_value_t = berth_common::capacity::CONNTRACK)]
    max_conntrack: u32,
    /// Testing aid: pause this many microseconds after each backend and outer backend-slot write.
    #[arg(long, default_value_t = 0, hide = true)]
    slot_write_delay_us: u64,
    /// File written after every sync ("generation frontends").
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Node-local state (pod address allocations, subnet.env); default /var/lib/berth/NODE.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Standalone mode: this node's pod CIDR, when no Node object in the manifests gives one
    /// (spec.podCIDR wins). Joined to an API server, the control plane allocates it.
    #[arg(long, requires = "manifests")]
    pod_cidr: Option<PodCidr>,
    /// The cluster's pod network.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: PodCidr,
    /// Masquerade pod egress to outside the cluster's pod network (as flannel's --ip-masq).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    masquerade: bool,
    /// Who masquerades: berth's eBPF programs (no netfilter connection tracking on the node; ports
    /// from --snat-ports) or, as a fallback, an nftables rule.
    #[arg(long, value_enum, default_value_t = masquerade::MasqueradeMode::Ebpf)]
    masquerade_mode: masquerade::MasqueradeMode,
    /// Register this node: with an API server, its Node (flannel annotations, addresses, capacity), its
    /// Lease and status; in standalone mode, its Node object written into the manifests directory.
    /// Implied when joining with --token. Without it, with --kubeconfig, the agent is a kube-proxy
    /// replacement beside kubelet, which owns the Node.
    #[arg(long)]
    register_node: bool,
    /// Testing aid: renew the node certificate this many seconds after it was issued (default: at 70 %
    /// of its lifetime).
    #[arg(long, hide = true)]
    renew_certificate_after_secs: Option<u64>,
    /// The port of kubelet's API the node advertises (daemonEndpoints).
    #[arg(long, default_value_t = 10250)]
    kubelet_port: i32,
    /// Run the pods the scheduler binds to this node (with an API server and a registered node).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    run_pods: bool,
    /// Where container logs are written (`NAMESPACE_NAME_UID/CONTAINER/N.log`, as kubelet).
    #[arg(long, default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,
    /// cgroup parent of every pod (kubelet's --cgroup-root), in each cgroup hierarchy.
    #[arg(long, default_value = "/")]
    cgroup_root: String,
    /// Static pods: a directory of Pod manifests this node runs on its own (kubelet's
    /// --pod-manifest-path), with an API server (published as mirror pods) or standalone.
    #[arg(long)]
    pod_manifest_path: Option<PathBuf>,
    /// Processes allowed in one pod's cgroup (kubelet's --pod-max-pids); -1 is unlimited.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pod_max_pids: i64,
    /// A container's log is rotated at this size (kubelet's --container-log-max-size): bytes or a
    /// quantity such as 10Mi; 0 never rotates.
    #[arg(long, default_value = "10Mi", value_parser = parse_bytes)]
    container_log_max_size: u64,
    /// Log files kept per container, the current one included (kubelet's --container-log-max-files).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    container_log_max_files: u64,
    /// A registry (HOST:PORT) reached over plain HTTP instead of HTTPS; repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Nameserver of ClusterFirst pods (kubelet's --cluster-dns); repeatable. Without it pods get the
    /// node's /etc/resolv.conf.
    #[arg(long = "cluster-dns")]
    cluster_dns: Vec<String>,
    /// The cluster's DNS domain (search paths of pods).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_default()
}

/// A path, empty allowed (clap's own path parser refuses an empty value).
fn path_or_empty(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

fn parse_mac_arg(s: &str) -> Result<[u8; 6], String> {
    berth_datapath::net::parse_mac(s).ok_or_else(|| format!("{s:?} is not a MAC (aa:bb:cc:dd:ee:ff)"))
}

/// Bytes, as a plain number or a Kubernetes quantity (`10Mi`, `1G`).
fn parse_bytes(s: &str) -> Result<u64, String> {
    berth_agent::pods::resources::milli(s)
        .and_then(|m| u64::try_from(m / 1000).ok())
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or a quantity such as 10Mi)"))
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or("expected FIRST-LAST")?;
    let a: u16 = a.parse().map_err(|e| format!("{e}"))?;
    let b: u16 = b.parse().map_err(|e| format!("{e}"))?;
    if a > b || a < 1024 {
        return Err("range must be FIRST-LAST with 1024 <= FIRST <= LAST".into());
    }
    Ok((a, b))
}

/// glibc's allocator gives each thread that allocates its own arena (up to 8 per core) and keeps freed
/// memory in them: the initial lists of 10,000 Services and EndpointSlices, parsed on the runtime's
/// workers, would leave that peak resident for good. Two arenas, and large buffers from their own
/// mappings, keep the agent's resident size close to what it holds.
fn limit_allocator_arenas() {
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

fn main() -> ExitCode {
    // A container's shim (started by this agent for each container it runs) is this same binary,
    // dispatched before anything else starts: it must stay small and single-threaded.
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("container-shim") {
        return match berth_runtime::shim::args_from(argv) {
            Ok(args) => ExitCode::from(berth_runtime::shim::run(&args, std::io::stdout()) as u8),
            Err(e) => {
                eprintln!("berth-agent container-shim: {e}");
                ExitCode::FAILURE
            }
        };
    }
    limit_allocator_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(ns) = &cli.netns {
        netns::enter(ns)?;
    }
    match cli.command {
        Command::Run(a) => {
            let state_dir = a
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/lib/berth").join(&a.node));
            let mut register_node = a.register_node;
            let mut certificate = None;
            let source = if let Some(dir) = &a.manifests {
                Source::Manifests(dir.clone())
            } else if let (Some(token), Some(server)) = (&a.token, &a.server) {
                let params = join::JoinParams {
                    server: server.clone(),
                    token: token.clone(),
                    ca_cert_hashes: a.ca_cert_hash.clone(),
                    node: a.node.clone(),
                    state_dir: state_dir.clone(),
                    renew_after: a.renew_certificate_after_secs.map(Duration::from_secs),
                };
                let kubeconfig = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(join::ensure_kubeconfig(&params))?;
                register_node = true;
                certificate = Some(agent::Certificate {
                    kubeconfig: kubeconfig.clone(),
                    renew_after: params.renew_after,
                });
                Source::Api(Box::new(api_client::config(Some(&kubeconfig))?))
            } else {
                let mut config = api_client::config(a.kubeconfig.as_deref())?;
                if a.kubeconfig.is_none()
                    && let Some(server) = &a.server
                {
                    config.cluster_url = server.parse()?;
                }
                Source::Api(Box::new(config))
            };
            let defaults = CtTimeouts::default();
            agent::run(
                AgentConfig {
                    node_ips: a.node_ips,
                    uplink: a.uplink,
                    pod_interfaces: a.pod_interfaces,
                    cgroup: a.cgroup.filter(|c| !c.as_os_str().is_empty()),
                    bpffs_root: cli.bpffs_root,
                    algorithm: a.lb_algorithm,
                    snat_ports: a.snat_ports,
                    poll_interval: Duration::from_millis(a.poll_ms),
                    ct_gc_interval: Duration::from_secs(a.ct_gc_secs),
                    ct_timeouts: CtTimeouts {
                        udp: Duration::from_secs(a.ct_udp_timeout_secs),
                        ..defaults
                    },
                    capacities: loader::Capacities {
                        frontends: a.max_frontends,
                        service_slots: a.max_service_slots,
                        conntrack: a.max_conntrack,
                        ..Default::default()
                    },
                    slot_write_delay: Duration::from_micros(a.slot_write_delay_us),
                    overlay_dev: a.overlay_dev,
                    vtep_mac: a.vtep_mac,
                    vxlan_port: a.vxlan_port,
                    status_file: a.status_file,
                    state_dir,
                    node_name: a.node,
                    pod_cidr: a.pod_cidr,
                    cluster_cidr: a.cluster_cidr,
                    masquerade: a.masquerade,
                    masquerade_mode: a.masquerade_mode,
                    register_node,
                    certificate,
                    kubelet_port: a.kubelet_port,
                    pods: a.run_pods.then(|| agent::PodsConfig {
                        log_dir: a.pod_log_dir.clone(),
                        cgroup_root: a.cgroup_root.clone(),
                        pod_max_pids: (a.pod_max_pids > 0).then_some(a.pod_max_pids),
                        log_rotation: berth_runtime::shim::LogRotation {
                            max_size: a.container_log_max_size,
                            max_files: a.container_log_max_files as usize,
                        },
                        insecure_registries: a.insecure_registries.clone(),
                        cluster_dns: a.cluster_dns.clone(),
                        cluster_domain: a.cluster_domain.clone(),
                        static_pod_dir: a.pod_manifest_path.clone(),
                    }),
                },
                source,
            )?;
        }
        Command::Lb { what } => {
            let (node, show): (String, fn(&LbMaps) -> anyhow::Result<String>) = match what {
                LbCommand::List { node } => (node, |m| Ok(inspect::services(m)?)),
                LbCommand::Ct { node } => (node, |m| Ok(inspect::conntrack(m))),
                LbCommand::Pods { node } => (node, |m| Ok(inspect::pod_network(m))),
            };
            let maps = LbMaps::open(&PinDir::new(&cli.bpffs_root, &node))?;
            print!("{}", show(&maps)?);
        }
        Command::PodNet { what } => match what {
            PodNetCommand::Add {
                state_dir,
                pod,
                pod_netns,
                ifname,
            } => {
                let wired = podnet::add(&state_dir, &pod, &pod_netns, &ifname)?;
                println!("{}", serde_json::to_string(&wired)?);
            }
            PodNetCommand::Del { state_dir, pod } => {
                if let Some(addr) = podnet::del(&state_dir, &pod)? {
                    println!("released {addr}");
                }
            }
        },
        Command::Cleanup { node } => {
            if let Err(e) = masquerade::remove(&masquerade::NftCommand) {
                tracing::warn!(error = %e, "masquerade table not removed");
            }
            let pins = PinDir::new(&cli.bpffs_root, &node);
            match std::fs::remove_dir_all(pins.path()) {
                Ok(()) => println!("removed {}", pins.path().display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => anyhow::bail!("removing {}: {e}", pins.path().display()),
            }
        }
    }
    Ok(())
}
