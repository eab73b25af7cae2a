//! The standard world of the load-balancer tests and the demo: one node namespace running the agent,
//! pods (each its own namespace on a veth, routed /32) running `berth-probe` servers, and an external
//! client beyond the node's uplink.
//!
//! ```text
//!   ext (192.168.50.100) --- up0 [node 192.168.50.1] --- vp0..vpN --- pod0..podN (10.244.0.10+i)
//! ```

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    agent::AgentProc,
    probe::{self, Attempt},
    testbed::{BedError, Netns, TestBed},
    workspace_bin,
};

/// The node's address on the uplink.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// The external client's address.
pub const EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 100);
/// Gateway address the node answers on every pod link.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// TCP port every pod serves.
pub const TCP_PORT: u16 = 8080;
/// UDP port every pod serves.
pub const UDP_PORT: u16 = 5353;
/// Node name used in EndpointSlices for pods of this node.
pub const NODE_NAME: &str = "node1";

/// A TCP connection or connected UDP socket held open by a `berth-probe hold` / `hold-udp` process
/// (killed on drop).
pub struct Held {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: BufReader<std::process::ChildStdout>,
    /// `ok ID PEER FROM 0`: which backend took the connection.
    pub greeting: String,
}

impl Held {
    /// Sends a line through the connection and returns what came back (`echo LINE` when it works).
    pub fn echo(&mut self, msg: &str) -> String {
        self.stdin.write_all(format!("{msg}\n").as_bytes()).expect("send");
        let mut reply = String::new();
        self.out.read_line(&mut reply).expect("echo");
        reply.trim().to_string()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens one TCP connection from namespace `ns` (in `cgroup`, for the socket LB) to `target` and keeps
/// it (a `berth-probe hold`).
pub fn hold_from(ns: &Netns, cgroup: Option<&std::path::Path>, target: &str) -> Held {
    spawn_hold(ns, cgroup, "hold", target)
}

/// Opens one connected UDP socket from `ns` (in `cgroup`) to `target` and keeps it (`berth-probe
/// hold-udp`): [`Held::echo`] sends a datagram and returns `echo SERVER-ID` or `err KIND 0`.
pub fn hold_udp_from(ns: &Netns, cgroup: Option<&std::path::Path>, target: &str) -> Held {
    spawn_hold(ns, cgroup, "hold-udp", target)
}

fn spawn_hold(ns: &Netns, cgroup: Option<&std::path::Path>, subcommand: &str, target: &str) -> Held {
    let mut cmd = Command::new(workspace_bin("berth-probe"));
    cmd.args(["--netns", &ns.name]);
    if let Some(cg) = cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    let mut child = cmd
        .args([subcommand, target])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("berth-probe hold");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    let stdin = child.stdin.take().expect("stdin");
    let mut held = Held {
        child,
        stdin,
        out,
        greeting: String::new(),
    };
    held.out.read_line(&mut held.greeting).expect("greeting");
    held
}

/// A pod: its namespace, address and the node-side interface.
#[derive(Clone, Debug)]
pub struct Pod {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub host_if: String,
    /// Server id the pod answers with.
    pub id: String,
}

/// The world. Field order matters: the agent is killed before the bed tears the namespaces down.
pub struct LbWorld {
    pub agent: Option<AgentProc>,
    pub pods: Vec<Pod>,
    pub node: Netns,
    pub ext: Netns,
    pub manifests: PathBuf,
    pub bed: TestBed,
}

impl LbWorld {
    /// Builds the world with `pods` pods, each serving TCP 8080 and UDP 5353.
    pub fn build(name: &str, pods: usize) -> Result<LbWorld, BedError> {
        let mut bed = TestBed::new(name);
        let node = bed.netns("node")?;
        let ext = bed.netns("ext")?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        node.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        node.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        bed.veth(&node, "up0", &ext, "eth0")?;
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "up0"])?;
        ext.ip(&["addr", "add", &format!("{EXT_IP}/24"), "dev", "eth0"])?;
        ext.ip(&["route", "add", "default", "via", &NODE_IP.to_string()])?;
        let mut list = Vec::new();
        for i in 0..pods {
            list.push(add_pod(&mut bed, &node, i)?);
        }
        let manifests = bed.scratch().join("manifests");
        std::fs::create_dir_all(&manifests).map_err(|source| BedError::Io {
            path: manifests.clone(),
            source,
        })?;
        let world = LbWorld {
            agent: None,
            pods: list,
            node,
            ext,
            manifests,
            bed,
        };
        world.wait_servers()?;
        Ok(world)
    }

    /// Adds one more pod (same layout) while the world runs; returns its index.
    pub fn add_pod(&mut self) -> Result<usize, BedError> {
        let i = self.pods.len();
        let pod = add_pod(&mut self.bed, &self.node, i)?;
        self.pods.push(pod);
        self.wait_servers()?;
        Ok(i)
    }

    fn wait_servers(&self) -> Result<(), BedError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for pod in &self.pods {
            loop {
                let got = self.probe(
                    &self.node,
                    None,
                    &["tcp", &format!("{}:{TCP_PORT}", pod.ip), "--timeout-ms", "300"],
                );
                if got.first().and_then(Attempt::id) == Some(&pod.id) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BedError::Command {
                        cmd: format!("wait for server {}", pod.id),
                        stderr: format!("{got:?}"),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The node's cgroup for the socket LB.
    pub fn node_cgroup(&self) -> PathBuf {
        self.bed.cgroup("node")
    }

    /// Starts the agent on the node with the world's interfaces; `extra` are more `run` arguments.
    pub fn start_agent(&mut self, socket_lb: bool, extra: &[&str]) -> Result<(), BedError> {
        let mut args: Vec<String> = [
            "--node",
            NODE_NAME,
            "--node-ip",
            &NODE_IP.to_string(),
            "--manifests",
            &self.manifests.display().to_string(),
            "--uplink",
            "up0",
            "--pod-interfaces",
            "vp*",
            "--poll-ms",
            "50",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if socket_lb {
            args.push("--cgroup".into());
            args.push(self.node_cgroup().display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let agent = AgentProc::start(&self.node, &self.bed.bpffs_root(), self.bed.scratch(), &args)?;
        self.agent = Some(agent);
        Ok(())
    }

    /// Runs `berth-agent lb SUBCOMMAND --node node1` on the world's pins and returns its output.
    pub fn lb(&self, subcommand: &str) -> String {
        let out = Command::new(workspace_bin("berth-agent"))
            .arg("--bpffs-root")
            .arg(self.bed.bpffs_root())
            .args(["lb", subcommand, "--node", NODE_NAME])
            .output()
            .expect("berth-agent lb");
        assert!(
            out.status.success(),
            "lb {subcommand}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The running agent.
    pub fn agent(&mut self) -> &mut AgentProc {
        self.agent.as_mut().expect("agent started")
    }

    /// Writes a manifest file atomically.
    pub fn write_manifest(&self, file: &str, yaml: &str) {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests.join(file)).expect("rename manifest");
    }

    /// Writes manifests and waits until the agent programmed `frontends` frontends.
    pub fn apply(&mut self, file: &str, yaml: &str, frontends: usize) {
        let before = self.agent().status().map_or(0, |s| s.0);
        self.write_manifest(file, yaml);
        self.agent()
            .wait_frontends(frontends, before, Duration::from_secs(10));
    }

    /// Runs `berth-probe ARGS` in `ns` (inside `cgroup` if given) and parses its lines.
    pub fn probe(&self, ns: &Netns, cgroup: Option<&PathBuf>, args: &[&str]) -> Vec<Attempt> {
        self.probe_output(ns, cgroup, args)
            .lines()
            .filter_map(probe::Attempt::parse)
            .collect()
    }

    /// Runs `berth-probe ARGS` in `ns` (inside `cgroup` if given) and returns what it printed.
    pub fn probe_output(&self, ns: &Netns, cgroup: Option<&PathBuf>, args: &[&str]) -> String {
        let mut cmd = Command::new(workspace_bin("berth-probe"));
        cmd.args(["--netns", &ns.name]);
        if let Some(cg) = cgroup {
            cmd.arg("--cgroup").arg(cg);
        }
        let out = cmd.args(args).output().expect("run berth-probe");
        assert!(
            out.status.success(),
            "berth-probe {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Opens one TCP connection from pod `from` to `target` and keeps it (a `berth-probe hold`).
    pub fn hold(&self, from: usize, target: &str, socket_lb: bool) -> Held {
        let cgroup = socket_lb.then(|| self.node_cgroup());
        hold_from(&self.pods[from].ns, cgroup.as_deref(), target)
    }

    /// `n` TCP attempts from pod `from` to `target`, via the socket LB (`socket_lb`) or the TC path.
    pub fn tcp_from_pod(&self, from: usize, target: SocketAddr, n: u32, socket_lb: bool) -> Vec<Attempt> {
        let cg = socket_lb.then(|| self.node_cgroup());
        self.probe(
            &self.pods[from].ns,
            cg.as_ref(),
            &["tcp", &target.to_string(), "--count", &n.to_string()],
        )
    }
}

/// Creates pod `i`: namespace, veth to the node, routed /32, a `berth-probe` server.
fn add_pod(bed: &mut TestBed, node: &Netns, i: usize) -> Result<Pod, BedError> {
    let ns = bed.netns(&format!("pod{i}"))?;
    let ip = Ipv4Addr::new(10, 244, 0, 10 + i as u8);
    let host_if = format!("vp{i}");
    bed.veth(node, &host_if, &ns, "eth0")?;
    node.ip(&["addr", "add", &format!("{POD_GATEWAY}/32"), "dev", &host_if])?;
    node.ip(&[
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        &host_if,
        "src",
        &POD_GATEWAY.to_string(),
    ])?;
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    ns.ip(&[
        "route",
        "replace",
        "default",
        "via",
        &POD_GATEWAY.to_string(),
        "dev",
        "eth0",
        "onlink",
    ])?;
    // The pod subnet is routed through the gateway too (pods are /32 neighbours of the node only).
    ns.ip(&[
        "route",
        "replace",
        "10.244.0.0/24",
        "via",
        &POD_GATEWAY.to_string(),
        "dev",
        "eth0",
        "onlink",
    ])?;
    let id = format!("pod{i}");
    bed.serve(&ns, &id, TCP_PORT, UDP_PORT)?;
    Ok(Pod { ns, ip, host_if, id })
}

/// A ClusterIP (or other type) Service manifest. `ports`: (name, port, targetPort, protocol, nodePort).
pub fn service_yaml(
    name: &str,
    cluster_ip: &str,
    spec_extra: &str,
    ports: &[(&str, u16, u16, &str, u16)],
) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  clusterIP: {cluster_ip}\n{spec_extra}  ports:\n"
    );
    for (pname, port, target, proto, node_port) in ports {
        y.push_str(&format!(
            "  - name: {pname}\n    port: {port}\n    targetPort: {target}\n    protocol: {proto}\n"
        ));
        if *node_port != 0 {
            y.push_str(&format!("    nodePort: {node_port}\n"));
        }
    }
    y
}

/// An endpoint of an EndpointSlice: address, node, (ready, serving, terminating).
pub struct Ep<'a> {
    pub ip: &'a str,
    pub node: &'a str,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl<'a> Ep<'a> {
    /// A ready endpoint on `node`.
    pub fn ready(ip: &'a str, node: &'a str) -> Self {
        Ep {
            ip,
            node,
            ready: true,
            serving: true,
            terminating: false,
        }
    }
    /// A terminating endpoint that still serves.
    pub fn terminating(ip: &'a str, node: &'a str) -> Self {
        Ep {
            ip,
            node,
            ready: false,
            serving: true,
            terminating: true,
        }
    }
}

/// An EndpointSlice manifest for `service`. `ports`: (name, port, protocol).
pub fn slice_yaml(name: &str, service: &str, endpoints: &[Ep<'_>], ports: &[(&str, u16, &str)]) -> String {
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\nports:\n"
    );
    for (pname, port, proto) in ports {
        y.push_str(&format!("- name: {pname}\n  port: {port}\n  protocol: {proto}\n"));
    }
    y.push_str("endpoints:\n");
    if endpoints.is_empty() {
        y.truncate(y.len() - "endpoints:\n".len());
        y.push_str("endpoints: []\n");
    }
    for ep in endpoints {
        y.push_str(&format!(
            "- addresses: [\"{}\"]\n  nodeName: {}\n  conditions: {{ready: {}, serving: {}, terminating: {}}}\n",
            ep.ip, ep.node, ep.ready, ep.serving, ep.terminating
        ));
    }
    y
}

/// ClusterIP of the `web` Service used across the tests.
pub const WEB_IP: &str = "10.96.0.10";

/// The `web` Service (TCP 80 -> 8080 `http`, UDP 53 -> 5353 `dns`) over pods `backends` of `world`,
/// as one manifest (Service + EndpointSlice). `spec_extra`: more `spec:` lines, indented two spaces.
pub fn web_yaml(world: &LbWorld, backends: &[usize], spec_extra: &str) -> String {
    let ips: Vec<String> = backends.iter().map(|i| world.pods[*i].ip.to_string()).collect();
    let eps: Vec<Ep<'_>> = ips.iter().map(|ip| Ep::ready(ip, NODE_NAME)).collect();
    format!(
        "{}---\n{}",
        service_yaml(
            "web",
            WEB_IP,
            spec_extra,
            &[("http", 80, TCP_PORT, "TCP", 0), ("dns", 53, UDP_PORT, "UDP", 0)]
        ),
        slice_yaml(
            "web-1",
            "web",
            &eps,
            &[("http", TCP_PORT, "TCP"), ("dns", UDP_PORT, "UDP")]
        )
    )
}
