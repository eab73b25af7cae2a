//! The agent's main loop in standalone mode: manifests in, maps and attachments kept in step.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use berth_common::{NodeConfig, ipv4_to_be};
use thiserror::Error;
use tracing::{error, info, warn};

use crate::{
    datapath::{
        PinDir,
        attach::{self, AttachError, TcRole},
        conntrack::{self, CtTimeouts},
        endpoints::{self, EndpointProgrammer},
        loader::{self, LoadError},
        maps::{LbMaps, MapsError},
        overlay::{self, OverlayProgrammer},
        programmer::ServiceProgrammer,
    },
    lb::{self, LbAlgorithm, NodeInfo},
    manifests::{ManifestDir, ManifestError},
    masquerade, netns,
    overlay::{PodCidr, publish},
    podnet::{Ipam, Subnet},
};

/// Errors that stop the agent.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Manifests(#[from] ManifestError),
    #[error(transparent)]
    Vxlan(#[from] crate::datapath::overlay::VxlanError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    /// The status file could not be written.
    #[error("writing status file {path}: {source}")]
    Status {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the agent needs to know about its node; all of it is configuration, never a guess.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    /// Node addresses: NodePorts are served on each; the first is the SNAT source.
    pub node_ips: Vec<Ipv4Addr>,
    pub manifests: PathBuf,
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
    pub poll_interval: Duration,
    pub ct_gc_interval: Duration,
    pub ct_timeouts: CtTimeouts,
    /// Name of the node's VXLAN device for the pod network between nodes (created on the uplink); no
    /// overlay when absent.
    pub overlay_dev: Option<String>,
    /// MAC of that device (its VTEP MAC, published in the flannel annotations); kernel-chosen if absent.
    pub vtep_mac: Option<[u8; 6]>,
    /// Map sizes.
    pub capacities: loader::Capacities,
    /// Testing aid: pause after each backend-slot write (see `ServiceProgrammer::set_slot_write_delay`).
    pub slot_write_delay: Duration,
    /// Written (atomically) after every sync: `generation frontends`.
    pub status_file: Option<PathBuf>,
    /// Node-local state: pod address allocations, `subnet.env`.
    pub state_dir: PathBuf,
    /// This node's pod CIDR when no Node object in the manifests gives one.
    pub pod_cidr: Option<PodCidr>,
    /// The cluster's pod network (all nodes' pod CIDRs).
    pub cluster_cidr: PodCidr,
    /// Masquerade pod egress to outside the cluster's pod network.
    pub masquerade: bool,
    /// Publish this node's Node object (pod CIDR, flannel annotations) into the manifests directory.
    pub register_node: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

struct Agent {
    cfg: AgentConfig,
    pins: PinDir,
    ebpf: aya::Ebpf,
    programmer: ServiceProgrammer,
    manifests: ManifestDir,
    /// Interfaces with an attached TC program, by name, with their ifindex at attach time.
    attached: HashMap<String, u32>,
    overlay: Option<OverlayProgrammer>,
    endpoints: EndpointProgrammer,
    /// The node's pod CIDR as last applied (subnet.env, masquerade rule, allocation store).
    pod_cidr: Option<PodCidr>,
    /// MTU of pod interfaces (the overlay device's, else the uplink's).
    pod_mtu: u32,
    /// Modification time of the allocation store when endpoints were last synced.
    endpoints_stamp: Option<std::time::SystemTime>,
    generation: u64,
    /// The last apply failed or held back removals: retry on the next poll even without changes.
    dirty: bool,
}

fn ifindex(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: valid C string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

impl Agent {
    /// Attaches to new interfaces and forgets gone ones; returns whether anything changed.
    fn sync_interfaces(&mut self) -> bool {
        let mut changed = false;
        let present = netns::interfaces();
        let mut wanted: Vec<(String, TcRole)> = Vec::new();
        for name in &present {
            if self.cfg.uplink.as_deref() == Some(name.as_str()) {
                wanted.push((name.clone(), TcRole::Uplink));
            } else if self.cfg.overlay_dev.as_deref() == Some(name.as_str())
                || self.cfg.pod_interfaces.iter().any(|p| netns::matches(p, name))
            {
                // Pods of other nodes arrive through the VXLAN device: their replies need reverse NAT.
                wanted.push((name.clone(), TcRole::Pod));
            }
        }
        for (name, role) in &wanted {
            let index = ifindex(name);
            if self.attached.get(name) == Some(&index) {
                continue;
            }
            match attach::attach_tc(&mut self.ebpf, &self.pins, name, *role) {
                Ok(()) => {
                    info!(iface = %name, ?role, "attached");
                    self.attached.insert(name.clone(), index);
                    changed = true;
                }
                Err(e) => warn!(iface = %name, error = %e, "cannot attach; will retry"),
            }
        }
        let gone: Vec<String> = self
            .attached
            .keys()
            .filter(|n| !wanted.iter().any(|(w, _)| w == *n))
            .cloned()
            .collect();
        for name in gone {
            attach::detach_tc(&self.pins, &name);
            self.attached.remove(&name);
            info!(iface = %name, "interface gone; link pin removed");
            changed = true;
        }
        changed
    }

    fn sync_services(&mut self) -> Result<(), AgentError> {
        let (changed, errors) = self.manifests.poll()?;
        if !changed && !self.dirty && self.generation > 0 {
            return Ok(());
        }
        for e in &errors {
            error!(error = %e, "manifest rejected");
        }
        let objects = self.manifests.objects();
        let node = NodeInfo {
            name: self.cfg.node_name.clone(),
            addresses: self.cfg.node_ips.clone(),
            algorithm: self.cfg.algorithm,
        };
        let (desired, skipped) = lb::desired::compute(&objects.services, &objects.endpoint_slices, &node);
        for s in skipped {
            warn!(service = %s.service, reason = %s.reason, "Service not programmed");
        }
        if let Some(overlay) = self.overlay.as_mut() {
            let (peers, skipped) = crate::overlay::peers(&objects.nodes, &self.cfg.node_name);
            for s in skipped {
                warn!(node = %s.node, reason = %s.reason, "node not in the overlay");
            }
            let (written, removed) = overlay.apply(self.programmer.maps(), &peers)?;
            if written + removed > 0 {
                info!(peers = peers.len(), written, removed, "overlay peers synced");
            }
        }
        let own = objects
            .nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(self.cfg.node_name.as_str()))
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| match c.parse::<PodCidr>() {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(error = %e, "own Node object has a bad podCIDR; ignored");
                    None
                }
            });
        self.set_pod_cidr(own.or(self.cfg.pod_cidr));
        let started = Instant::now();
        // A file that never parsed hides objects the maps may still serve (after a restart): add and
        // change, but remove nothing until every file is readable.
        let removals = !self.manifests.incomplete();
        if !removals {
            warn!("a manifest has never parsed since start: removals are held back until it does");
        }
        // Until an apply succeeds, every poll retries it.
        self.dirty = true;
        let stats = self.programmer.apply(&desired, removals)?;
        self.dirty = false;
        self.generation += 1;
        info!(
            generation = self.generation,
            frontends = desired.frontends.len(),
            written = stats.frontends_written,
            removed = stats.frontends_removed,
            backends_added = stats.backends_added,
            backends_removed = stats.backends_removed,
            took_ms = started.elapsed().as_millis() as u64,
            "Services synced"
        );
        Ok(())
    }

    /// Applies a new pod CIDR: `subnet.env` for pod wiring, the masquerade rule. Failures are logged and
    /// retried on the next change.
    fn set_pod_cidr(&mut self, cidr: Option<PodCidr>) {
        let Some(cidr) = cidr else {
            return;
        };
        if self.pod_cidr == Some(cidr) {
            return;
        }
        let subnet = Subnet {
            cluster: self.cfg.cluster_cidr,
            node: cidr,
            mtu: self.pod_mtu,
            masquerade: self.cfg.masquerade,
        };
        if let Err(e) = subnet.write(&self.cfg.state_dir) {
            error!(error = %e, "cannot write subnet.env; pods cannot be wired");
            return;
        }
        let rule = if self.cfg.masquerade {
            masquerade::install(cidr, self.cfg.cluster_cidr)
        } else {
            masquerade::remove()
        };
        if let Err(e) = rule {
            error!(error = %e, "pod egress masquerade not applied");
            return;
        }
        if let Some(dev) = self.overlay.as_ref().and(self.cfg.overlay_dev.as_deref())
            && let Err(e) = overlay::route_host_traffic(dev, cidr, self.cfg.cluster_cidr)
        {
            error!(error = %e, "the host cannot reach other nodes' pods");
            return;
        }
        info!(pod_cidr = %cidr, masquerade = self.cfg.masquerade, "pod network configured");
        self.pod_cidr = Some(cidr);
        self.endpoints_stamp = None;
    }

    /// Keeps local pod delivery in step with the allocation records, when they changed or interfaces came
    /// and went.
    fn sync_endpoints(&mut self, interfaces_changed: bool) {
        let Some(cidr) = self.pod_cidr else {
            return;
        };
        let ipam = match Ipam::open(&self.cfg.state_dir, cidr) {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "pod address store unreadable");
                return;
            }
        };
        let stamp = std::fs::metadata(ipam.dir()).and_then(|m| m.modified()).ok();
        if !interfaces_changed && stamp.is_some() && stamp == self.endpoints_stamp {
            return;
        }
        let records = match ipam.allocations() {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "pod address store unreadable");
                return;
            }
        };
        let desired = endpoints::desired(&records);
        match self.endpoints.apply(self.programmer.maps(), desired) {
            Ok((written, removed)) => {
                if written + removed > 0 {
                    info!(written, removed, "local pod endpoints synced");
                }
                self.endpoints_stamp = stamp;
            }
            Err(e) => warn!(error = %e, "local pod endpoints not synced; retrying"),
        }
    }

    fn write_status(&self) -> Result<(), AgentError> {
        let Some(path) = &self.cfg.status_file else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let body = format!("{} {}\n", self.generation, self.programmer.frontend_count());
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| AgentError::Status {
                path: path.clone(),
                source,
            })
    }
}

/// Runs the agent until SIGTERM or SIGINT. Everything it attached stays attached afterwards (pinned).
pub fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    install_signal_handlers();
    let pins = PinDir::new(&cfg.bpffs_root, &cfg.node_name);
    let mut ebpf = loader::load(&pins, &cfg.capacities)?;
    let maps = LbMaps::open(&pins)?;
    let mut programmer = ServiceProgrammer::restore(maps)?;
    programmer.set_slot_write_delay(cfg.slot_write_delay);
    if cfg.node_ips.is_empty() {
        warn!(
            "no --node-ip: NodePorts are not served and SNAT frontends (externalIPs with externalTrafficPolicy Cluster) drop"
        );
    }
    let vtep = match (&cfg.overlay_dev, &cfg.uplink) {
        (Some(dev), Some(uplink)) => Some(overlay::ensure_vxlan(dev, uplink, cfg.vtep_mac)?),
        (Some(dev), None) => {
            warn!(device = %dev, "the overlay needs --uplink (the underlay device); overlay disabled");
            None
        }
        _ => None,
    };
    programmer.set_node_config(NodeConfig {
        snat_addr: cfg.node_ips.first().map_or(0, |ip| ipv4_to_be(ip.octets())),
        snat_port_min: cfg.snat_ports.0,
        snat_port_max: cfg.snat_ports.1,
        vtep_ifindex: vtep.map_or(0, |v| v.ifindex),
        vtep_mac: vtep.map_or([0; 6], |v| v.mac),
        pad: [0; 2],
        cluster_net: ipv4_to_be(cfg.cluster_cidr.network.octets()),
        cluster_mask: ipv4_to_be(cfg.cluster_cidr.mask().octets()),
    })?;
    if let Some(v) = vtep {
        let mac: Vec<String> = v.mac.iter().map(|b| format!("{b:02x}")).collect();
        info!(vtep_mac = %mac.join(":"), "overlay enabled (publish this VtepMAC in the node's flannel backend-data)");
    }
    let overlay = vtep.map(|_| OverlayProgrammer::restore(programmer.maps()));
    if cfg.register_node {
        match (vtep, cfg.pod_cidr, cfg.node_ips.first()) {
            (Some(v), Some(cidr), Some(ip)) => {
                let node = publish::node_object(&cfg.node_name, cidr, *ip, &v.mac);
                publish::write_to_manifests(&cfg.manifests, &node)?;
                info!(node = %cfg.node_name, pod_cidr = %cidr, "Node object published");
            }
            _ => warn!("--register-node needs the overlay, --pod-cidr and --node-ip; not registered"),
        }
    }
    let endpoints = EndpointProgrammer::restore(programmer.maps());
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
    let mut agent = Agent {
        manifests: ManifestDir::new(&cfg.manifests),
        cfg,
        pins,
        ebpf,
        programmer,
        attached: HashMap::new(),
        overlay,
        endpoints,
        pod_cidr: None,
        pod_mtu,
        endpoints_stamp: None,
        generation: 0,
        dirty: false,
    };
    // Services first, then interfaces: a new attachment finds the maps complete.
    agent.sync_services()?;
    agent.sync_interfaces();
    agent.sync_endpoints(true);
    let keep: Vec<&str> = agent.attached.keys().map(String::as_str).collect();
    attach::remove_stale_tc_pins(&agent.pins, &keep);
    agent.write_status()?;
    let mut last_gc = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(agent.cfg.poll_interval);
        let generation = agent.generation;
        if let Err(e) = agent.sync_services() {
            error!(error = %e, "sync failed; retrying");
        }
        let interfaces_changed = agent.sync_interfaces();
        agent.sync_endpoints(interfaces_changed);
        // The status tells tests (and operators) that the state is live: written after attachments.
        if agent.generation != generation
            && let Err(e) = agent.write_status()
        {
            warn!(error = %e, "cannot write status file");
        }
        if last_gc.elapsed() >= agent.cfg.ct_gc_interval {
            last_gc = Instant::now();
            match conntrack::collect(agent.programmer.maps(), &agent.cfg.ct_timeouts) {
                Ok((seen, removed)) if removed > 0 => info!(seen, removed, "conntrack GC"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "conntrack GC failed"),
            }
        }
    }
    info!("stopping; programs and maps stay pinned");
    Ok(())
}
