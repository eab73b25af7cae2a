//! The world of the overlay tests and benchmarks: nodes on one underlay bridge, each with its own pods,
//! run in turn as berth nodes, as flannel-configured nodes or with plain routing.
//!
//! ```text
//!   underlay netns: bridge br0 --- p<i> ==veth== eth0 [node n<i>: 192.168.60.<i>/24]
//!   node n<i>: vp... ==veth== eth0 [pod n<i>pod<j>: 10.244.<i>.<2+j>, MTU 1450, server pod-n<i>-<j>]
//! ```
//!
//! Pods are wired by `berth-agent pod-net add` in every mode (the same pods for every data plane): a /32
//! route per pod on the node (source the node's gateway `10.244.<i>.1`, held as a /32 on each pod
//! veth), and in the pod its /32 address and a default route via that gateway, onlink. How pod traffic leaves the node is the node's mode, set after the world is
//! built: [`OverlayWorld::start_berth`], [`OverlayWorld::configure_as_flannel`] or
//! [`OverlayWorld::configure_plain_routing`]; [`OverlayWorld::reset_node`] undoes any of them, so one
//! world can carry several data planes in turn.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    agent::AgentProc,
    probe::Attempt,
    testbed::{BedError, Netns, TestBed},
    workspace_bin,
};

/// TCP port every pod serves (`berth-probe serve`).
pub const TCP_PORT: u16 = 8080;
/// UDP port every pod serves.
pub const UDP_PORT: u16 = 5353;
/// The overlay device the agent creates (`--overlay-dev`).
pub const BERTH_DEV: &str = "berth.1";
/// The kernel VXLAN device of a flannel-configured node.
pub const FLANNEL_DEV: &str = "flannel.1";
/// Pods' MTU: the underlay's 1500 less VXLAN's 50, as flannel sets it, in every mode (so all data
/// planes carry the same segment sizes).
pub const POD_MTU: u32 = 1450;

/// A pod: its namespace, address, the node-side veth and the id its server answers with.
#[derive(Clone, Debug)]
pub struct OverlayPod {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub host_if: String,
    pub id: String,
}

impl OverlayPod {
    /// The pod's TCP server address.
    pub fn tcp(&self) -> SocketAddr {
        SocketAddr::from((self.ip, TCP_PORT))
    }

    /// The pod's UDP server address.
    pub fn udp(&self) -> SocketAddr {
        SocketAddr::from((self.ip, UDP_PORT))
    }
}

/// A node: namespace `n<index>`, underlay address, VTEP MAC, manifests directory, pods, and its agent
/// while it runs as a berth node.
pub struct OverlayNode {
    /// 1-based, as in every name and address of the node.
    pub index: u8,
    /// `node<index>`: the Node object's name and the agent's `--node`.
    pub name: String,
    pub ns: Netns,
    pub underlay: Ipv4Addr,
    /// `02:be:00:00:00:<index>`, fixed for berth.1 and flannel.1 alike, so every Node object can be
    /// written before any node is configured.
    pub vtep_mac: String,
    /// The agent's `--manifests` directory (one per node, under the bed's scratch directory).
    pub manifests: PathBuf,
    pub pods: Vec<OverlayPod>,
    pub agent: Option<AgentProc>,
}

impl OverlayNode {
    /// The node's pod CIDR (`10.244.<index>.0/24`).
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }

    /// The log of the node's agent so far (empty when none ran), for assertion messages.
    pub fn agent_log(&self) -> String {
        self.agent.as_ref().map(AgentProc::log).unwrap_or_default()
    }
}

/// The world. Field order matters: nodes (and their agents) go before the bed removes the namespaces.
pub struct OverlayWorld {
    pub nodes: Vec<OverlayNode>,
    pub underlay: Netns,
    pub bed: TestBed,
}

/// A Node object as flannel's VXLAN backend publishes it (backend type, VtepMAC, public IP) with its
/// pod CIDR: what the agent reads its overlay peers from.
pub fn node_yaml(name: &str, index: u8, underlay: Ipv4Addr, vtep_mac: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    flannel.alpha.coreos.com/backend-type: vxlan\n    flannel.alpha.coreos.com/backend-data: '{{\"VNI\":1,\"VtepMAC\":\"{vtep_mac}\"}}'\n    flannel.alpha.coreos.com/public-ip: {underlay}\nspec:\n  podCIDR: 10.244.{index}.0/24\n---\n"
    )
}

/// Runs `berth-probe --netns NS ARGS` and parses its lines (servers and clients of the test bed).
pub fn probe(from: &Netns, args: &[&str]) -> Result<Vec<Attempt>, BedError> {
    let mut full = vec!["--netns", from.name.as_str()];
    full.extend_from_slice(args);
    let out = crate::testbed::run(&workspace_bin("berth-probe").to_string_lossy(), &full)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(Attempt::parse)
        .collect())
}

/// Repeats one TCP attempt from `from` to `to` until `to`'s server answers (or `timeout`): the servers
/// start asynchronously and a data plane needs a moment to come up.
pub fn wait_reachable(from: &Netns, to: &OverlayPod, timeout: Duration) -> Result<(), BedError> {
    let deadline = Instant::now() + timeout;
    let target = to.tcp().to_string();
    loop {
        let got = probe(from, &["tcp", &target, "--timeout-ms", "300"])?;
        if got.first().and_then(Attempt::id) == Some(to.id.as_str()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BedError::Command {
                cmd: format!("reach {} ({}) from {}", to.id, target, from.name),
                stderr: format!("{got:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl OverlayWorld {
    /// `nodes` nodes with one pod each.
    pub fn new(test_name: &str, nodes: usize) -> Result<OverlayWorld, BedError> {
        Self::with_pods(test_name, nodes, 1)
    }

    /// `nodes` nodes (at most 9, for the one-digit VTEP MACs) with `pods_per_node` pods each; returns
    /// once every pod's server answers.
    pub fn with_pods(test_name: &str, nodes: usize, pods_per_node: usize) -> Result<OverlayWorld, BedError> {
        assert!((1..=9).contains(&nodes), "1 to 9 nodes");
        assert!(pods_per_node <= 200, "pod addresses are 10.244.<i>.<2+j>");
        let mut bed = TestBed::new(test_name);
        let underlay = bed.netns("underlay")?;
        underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
        underlay.ip(&["link", "set", "br0", "up"])?;
        let mut list = Vec::new();
        for i in 1..=nodes as u8 {
            list.push(build_node(&mut bed, &underlay, i, pods_per_node)?);
        }
        let world = OverlayWorld {
            nodes: list,
            underlay,
            bed,
        };
        for n in &world.nodes {
            for p in &n.pods {
                wait_reachable(&n.ns, p, Duration::from_secs(10))?;
            }
        }
        Ok(world)
    }

    /// Node `i` (1-based).
    /// A data-plane counter of node `i` (`berth-agent lb ct`'s `counter NAME = N` lines); 0 when absent.
    pub fn counter(&self, i: u8, name: &str) -> u64 {
        let out = Command::new(workspace_bin("berth-agent"))
            .arg("--bpffs-root")
            .arg(self.bed.bpffs_root())
            .args(["lb", "ct", "--node", &self.node(i).name])
            .output();
        let Ok(out) = out else { return 0 };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("counter {name} = ")).map(str::to_owned))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn node(&self, i: u8) -> &OverlayNode {
        &self.nodes[usize::from(i) - 1]
    }

    fn node_mut(&mut self, i: u8) -> &mut OverlayNode {
        &mut self.nodes[usize::from(i) - 1]
    }

    /// Pod `j` (0-based) of node `i` (1-based).
    pub fn pod(&self, i: u8, j: usize) -> &OverlayPod {
        &self.node(i).pods[j]
    }

    /// The Node objects of every node, as one multi-document manifest.
    pub fn nodes_yaml(&self) -> String {
        self.nodes
            .iter()
            .map(|n| node_yaml(&n.name, n.index, n.underlay, &n.vtep_mac))
            .collect()
    }

    /// Writes every node's Node object into node `i`'s manifests directory (`nodes.yaml`, atomically):
    /// the agent learns its overlay peers from these, as it would from the API server.
    pub fn write_node_manifests(&self, i: u8) -> Result<(), BedError> {
        self.write_manifest(i, "nodes.yaml", &self.nodes_yaml())
    }

    /// Writes `file` into node `i`'s manifests directory atomically (the agent polls the directory
    /// and must never read half a file).
    pub fn write_manifest(&self, i: u8, file: &str, yaml: &str) -> Result<(), BedError> {
        let dir = &self.node(i).manifests;
        let tmp = dir.join(format!(".{file}.tmp"));
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| BedError::Io { path, source }
        };
        std::fs::write(&tmp, yaml).map_err(io(&tmp))?;
        std::fs::rename(&tmp, dir.join(file)).map_err(io(&tmp))
    }

    /// Starts `berth-agent` on node `i` with the overlay (`--overlay-dev berth.1`, the node's VTEP MAC,
    /// pods on `vp*`) and waits for its first sync. Write the Node manifests first
    /// ([`write_node_manifests`](Self::write_node_manifests)): they are where its peers come from.
    pub fn start_berth(&mut self, i: u8) -> Result<(), BedError> {
        self.start_berth_with(i, &[])
    }

    /// [`start_berth`](Self::start_berth) with more `run` arguments (e.g. `--masquerade false`). The
    /// agent's state directory (pod address allocations, `subnet.env`) is in the bed's scratch
    /// directory, never the host's `/var/lib/berth`.
    pub fn start_berth_with(&mut self, i: u8, extra: &[&str]) -> Result<(), BedError> {
        let n = self.node(i);
        let (manifests, mac) = (n.manifests.clone(), n.vtep_mac.clone());
        let mut args = vec!["--vtep-mac", mac.as_str()];
        // Tests poll the manifests fast; `extra` may set its own interval (the benchmark uses the
        // agent's default, since a 50 ms poll measurably disturbs a 2-CPU machine's throughput).
        if !extra.contains(&"--poll-ms") {
            args.extend(["--poll-ms", "50"]);
        }
        args.extend_from_slice(extra);
        self.launch_berth(i, &manifests, &args)
    }

    /// Starts `berth-agent` on node `i` as a member of a cluster whose shared manifests directory is
    /// `cluster` (standing in for the API server): the agent registers its own Node object there (pod
    /// CIDR, InternalIP, flannel's annotations with its VXLAN device's real MAC, none given) and learns
    /// its peers from the other nodes' objects. Waits for its first sync.
    pub fn start_berth_registered(&mut self, i: u8, cluster: &Path, poll_ms: u32) -> Result<(), BedError> {
        let (cidr, poll) = (self.node(i).pod_cidr(), poll_ms.to_string());
        let args = [
            "--pod-cidr",
            cidr.as_str(),
            "--register-node",
            "--poll-ms",
            poll.as_str(),
        ];
        self.launch_berth(i, cluster, &args)
    }

    /// The agent of node `i` with the overlay, its pods' veths, its state in the scratch directory, and
    /// `extra`; waits for its first sync.
    fn launch_berth(&mut self, i: u8, manifests: &Path, extra: &[&str]) -> Result<(), BedError> {
        let state = state_dir(&self.bed, i);
        let n = self.node(i);
        let mut args: Vec<String> = [
            "--node",
            &n.name,
            "--node-ip",
            &n.underlay.to_string(),
            "--manifests",
            &manifests.display().to_string(),
            "--uplink",
            "eth0",
            "--pod-interfaces",
            "vp*",
            "--overlay-dev",
            BERTH_DEV,
            "--state-dir",
            &state.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let agent = AgentProc::start(&n.ns, &self.bed.bpffs_root(), self.bed.scratch(), &args)?;
        let node = self.node_mut(i);
        node.agent = Some(agent);
        wait_synced(node, Duration::from_secs(10))
    }

    /// Configures node `i` exactly as flannel's VXLAN backend configures a node: a kernel VXLAN device
    /// `flannel.1` (VNI 1, port 8472, no learning) holding the node's `.0/32`, and for every other
    /// node one route (its pod CIDR via its `.0` address, onlink), one permanent neighbour entry (that
    /// address -> its VtepMAC) and one FDB entry (VtepMAC -> its underlay address). The device gets the
    /// node's fixed VTEP MAC (flannel publishes whatever MAC the device has; only publishing matters).
    pub fn configure_as_flannel(&self, i: u8) -> Result<(), BedError> {
        let n = self.node(i);
        n.ns.ip(&[
            "link",
            "add",
            FLANNEL_DEV,
            "address",
            &n.vtep_mac,
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "8472",
            "dev",
            "eth0",
            "nolearning",
        ])?;
        n.ns.ip(&["link", "set", FLANNEL_DEV, "mtu", &POD_MTU.to_string(), "up"])?;
        n.ns.ip(&["addr", "add", &format!("10.244.{i}.0/32"), "dev", FLANNEL_DEV])?;
        for peer in self.nodes.iter().filter(|p| p.index != i) {
            let gw = format!("10.244.{}.0", peer.index);
            n.ns.ip(&[
                "route",
                "add",
                &peer.pod_cidr(),
                "via",
                &gw,
                "dev",
                FLANNEL_DEV,
                "onlink",
            ])?;
            n.ns.ip(&[
                "neigh",
                "add",
                &gw,
                "lladdr",
                &peer.vtep_mac,
                "dev",
                FLANNEL_DEV,
                "nud",
                "permanent",
            ])?;
            n.ns.exec(
                "bridge",
                &[
                    "fdb",
                    "append",
                    &peer.vtep_mac,
                    "dev",
                    FLANNEL_DEV,
                    "dst",
                    &peer.underlay.to_string(),
                ],
            )?;
        }
        Ok(())
    }

    /// Routes every other node's pod CIDR via that node's underlay address, without encapsulation:
    /// the ceiling the overlays are measured against (possible here because all nodes share one L2
    /// underlay).
    pub fn configure_plain_routing(&self, i: u8) -> Result<(), BedError> {
        let n = self.node(i);
        for peer in self.nodes.iter().filter(|p| p.index != i) {
            n.ns.ip(&[
                "route",
                "add",
                &peer.pod_cidr(),
                "via",
                &peer.underlay.to_string(),
                "dev",
                "eth0",
            ])?;
        }
        Ok(())
    }

    /// Undoes any mode of node `i`: kills its agent and runs `berth-agent cleanup` in the node's
    /// namespace (removes its pins, which detaches its programs, and its masquerade table), deletes
    /// berth.1 and flannel.1 (their routes, neighbour and FDB entries go with them) and the plain
    /// routes via eth0. The pods and their /32 routes stay.
    pub fn reset_node(&mut self, i: u8) -> Result<(), BedError> {
        let bpffs = self.bed.bpffs_root();
        let node = self.node_mut(i);
        if let Some(mut agent) = node.agent.take() {
            agent.kill();
        }
        let out = Command::new(workspace_bin("berth-agent"))
            .args(["--netns", &node.ns.name, "--bpffs-root"])
            .arg(&bpffs)
            .args(["cleanup", "--node", &node.name])
            .output()
            .map_err(|source| BedError::Spawn {
                cmd: "berth-agent cleanup".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(BedError::Command {
                cmd: format!("berth-agent cleanup --node {}", node.name),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        for dev in [BERTH_DEV, FLANNEL_DEV] {
            if node.ns.ip(&["link", "show", "dev", dev]).is_ok() {
                node.ns.ip(&["link", "del", dev])?;
            }
        }
        node.ns
            .ip(&["route", "flush", "root", "10.244.0.0/16", "dev", "eth0"])?;
        Ok(())
    }
}

/// Waits until the agent of `node` has written its first status (its first sync: programs attached,
/// overlay peers written); error with its log otherwise.
fn wait_synced(node: &OverlayNode, timeout: Duration) -> Result<(), BedError> {
    let deadline = Instant::now() + timeout;
    let Some(agent) = &node.agent else {
        return Ok(());
    };
    while agent.status().is_none() {
        if Instant::now() > deadline {
            return Err(BedError::Command {
                cmd: format!("berth-agent on {}: first sync", node.name),
                stderr: agent.log(),
            });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// Node `i`: its namespace on the bridge (forwarding on, rp_filter off: pod traffic is routed through
/// it and may arrive on a device other than the one its source routes to), its pods, a manifests
/// directory.
fn build_node(bed: &mut TestBed, underlay_ns: &Netns, i: u8, pods: usize) -> Result<OverlayNode, BedError> {
    let ns = bed.netns(&format!("n{i}"))?;
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
    ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
    let underlay = Ipv4Addr::new(192, 168, 60, i);
    let port = format!("p{i}");
    bed.veth(&ns, "eth0", underlay_ns, &port)?;
    underlay_ns.ip(&["link", "set", &port, "master", "br0"])?;
    ns.ip(&["addr", "add", &format!("{underlay}/24"), "dev", "eth0"])?;
    let mut list = Vec::new();
    for j in 0..pods {
        list.push(add_pod(bed, &ns, i, j)?);
    }
    let manifests = bed.scratch().join(format!("manifests-n{i}"));
    std::fs::create_dir_all(&manifests).map_err(|source| BedError::Io {
        path: manifests.clone(),
        source,
    })?;
    Ok(OverlayNode {
        index: i,
        name: format!("node{i}"),
        ns,
        underlay,
        vtep_mac: format!("02:be:00:00:00:{i:02x}"),
        manifests,
        pods: list,
        agent: None,
    })
}

/// Pod `j` of node `i`: veth `vp<j>` (the agent's `vp*`) to namespace `n<i>pod<j>`, routed as a /32
/// from the node's gateway address, serving TCP and UDP as `pod-n<i>-<j>`.
/// The state directory of node `i`'s agent (pod address allocations, `subnet.env`), in the bed's
/// scratch directory, never the host's `/var/lib/berth`.
pub fn state_dir(bed: &TestBed, i: u8) -> PathBuf {
    bed.scratch().join(format!("state-n{i}"))
}

/// Pod `j` of node `i`, wired by `berth-agent pod-net add` (the node's pod network as the agent wires
/// it: an address from the node's pod CIDR, a routed veth pair `vp...` with the gateway `.1`), so a
/// berth node delivers into it directly; the baselines route to the same veth. The node's
/// `subnet.env` is written first, as the agent would write it.
fn add_pod(bed: &mut TestBed, node: &Netns, i: u8, j: usize) -> Result<OverlayPod, BedError> {
    let state = state_dir(bed, i);
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| BedError::Io { path, source }
    };
    std::fs::create_dir_all(&state).map_err(io(&state))?;
    let subnet = state.join("subnet.env");
    if !subnet.exists() {
        let text = format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.{i}.1/24\nFLANNEL_MTU={POD_MTU}\nFLANNEL_IPMASQ=false\n"
        );
        std::fs::write(&subnet, text).map_err(io(&subnet))?;
    }
    wire_pod(bed, node, &state, i, j)
}

/// Pod `j` of node `i` wired by `berth-agent pod-net add` with the node's `state` directory (which
/// must hold the node's `subnet.env`), serving TCP and UDP as `pod-n<i>-<j>`.
pub fn wire_pod(
    bed: &mut TestBed,
    node: &Netns,
    state: &Path,
    i: u8,
    j: usize,
) -> Result<OverlayPod, BedError> {
    let ns = bed.netns(&format!("n{i}pod{j}"))?;
    let pod = format!("default/pod-n{i}-{j}");
    let out = Command::new(workspace_bin("berth-agent"))
        .args(["--netns", &node.name, "pod-net", "add", "--state-dir"])
        .arg(state)
        .args(["--pod", &pod, "--pod-netns", &ns.name])
        .output()
        .map_err(|source| BedError::Spawn {
            cmd: "berth-agent pod-net add".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |key: &str| {
        text.split(&format!("\"{key}\":\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_owned)
    };
    let (Some(ip), Some(host_if)) = (
        field("ip").and_then(|a| a.parse::<Ipv4Addr>().ok()),
        field("host_if"),
    ) else {
        return Err(BedError::Command {
            cmd: format!("berth-agent pod-net add --pod {pod}"),
            stderr: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
        });
    };
    let id = format!("pod-n{i}-{j}");
    bed.serve(&ns, &id, TCP_PORT, UDP_PORT)?;
    Ok(OverlayPod { ns, ip, host_if, id })
}
