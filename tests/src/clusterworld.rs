//! A real cluster in namespaces: `berth-control-plane` and nodes whose agents joined it with the
//! bootstrap token it printed, all on one underlay bridge; the real `kubectl` drives it.
//!
//! ```text
//!   underlay netns: bridge br0 --- cp0 ==veth== eth0 [control plane: 192.168.70.100:6443]
//!                              \-- p<i> ==veth== eth0 [node n<i>: 192.168.70.<i>/24, agent joined by token]
//!   node n<i>: vp... ==veth== eth0 [pod n<i>pod<j>: an address of the podCIDR the control plane gave]
//! ```
//!
//! Pods are wired by `berth-agent pod-net add` once the agent has configured the pod CIDR the control
//! plane allocated to its Node (pods do not run containers yet).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    agent::AgentProc,
    overlayworld::{BERTH_DEV, OverlayPod, wait_reachable, wire_pod},
    registry::{Format, ImageSpec, Registry, build_image, push},
    testbed::{BedError, Netns, Proc, TestBed},
    workspace_bin,
};

/// The control plane's address on the underlay.
pub const CP_IP: &str = "192.168.70.100";
/// Its API port.
pub const CP_PORT: u16 = 6443;
/// Port of the cluster's registry, when a test starts one beside the control plane
/// ([`ClusterWorld::start_registry`]).
pub const REGISTRY_PORT: u16 = 5000;
/// The port of the registry that asks for a login ([`ClusterWorld::start_private_registry`]).
pub const PRIVATE_REGISTRY_PORT: u16 = 5001;
/// Its one user and password (the bcrypt hash below is of this password).
pub const PRIVATE_REGISTRY_LOGIN: (&str, &str) = ("berth", "pull-secret");
const PRIVATE_REGISTRY_BCRYPT: &str = "$2a$10$bErThpUllsEcReTsAlTxyu/ewvByZB1qe8xFXmtWlcraXE6XAx..i";

/// The control plane process and its data directory (kept across restarts).
pub struct ControlPlane {
    pub ns: Netns,
    pub dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    proc: Option<Proc>,
}

impl ControlPlane {
    /// Starts (or restarts) the process and waits until it answers `/readyz`.
    pub fn start(&mut self) -> Result<(), BedError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| BedError::Io {
                path: self.log.clone(),
                source,
            })?;
        let mut cmd = self.ns.command(&workspace_bin("berth-control-plane"));
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", &format!("{CP_IP}:{CP_PORT}")])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|source| BedError::Io {
                path: self.log.clone(),
                source,
            })?)
            .stderr(log);
        let child = cmd.spawn().map_err(|source| BedError::Spawn {
            cmd: "berth-control-plane".into(),
            source,
        })?;
        self.proc = Some(Proc {
            child,
            what: "berth-control-plane".into(),
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.kubectl(&["get", "--raw", "/readyz"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BedError::Command {
                    cmd: "berth-control-plane: ready".into(),
                    stderr: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// The control plane's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The join command it printed (`berth-agent run --server ... --token ... --ca-cert-hash ...`).
    pub fn join_command(&self) -> Result<String, BedError> {
        let path = self.dir.join("join-command");
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|source| BedError::Io { path, source })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.child.id())
    }

    /// Runs `kubectl ARGS` as the admin, inside the control plane's namespace (the API's address is
    /// only reachable there and from the nodes).
    pub fn kubectl(&self, args: &[&str]) -> Result<String, BedError> {
        self.kubectl_stdin(args, None)
    }

    /// Starts `kubectl ARGS` as the admin in the control plane's namespace and leaves it running
    /// (`port-forward`), with `env` added; its output is piped. The caller kills it.
    pub fn kubectl_spawn(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<std::process::Child, BedError> {
        let mut cmd = self.ns.command(Path::new("kubectl"));
        cmd.env("HOME", self.dir.join("home"))
            .envs(env.iter().copied())
            .arg("--kubeconfig")
            .arg(self.dir.join("admin.kubeconfig"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().map_err(|source| BedError::Spawn {
            cmd: "kubectl".into(),
            source,
        })
    }

    /// `kubectl ARGS` on a terminal (util-linux `script` gives it one), for `exec -it`; `input` is
    /// typed into it after a second. What the terminal showed, `\r\n` and all.
    pub fn kubectl_in_terminal(&self, args: &[&str], input: &str) -> Result<String, BedError> {
        use std::io::Write;
        let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
        let line = format!(
            "stty cols 101 rows 33; kubectl --kubeconfig {} {}",
            quote(&self.dir.join("admin.kubeconfig").display().to_string()),
            args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
        );
        let mut cmd = self.ns.command(Path::new("script"));
        cmd.env("HOME", self.dir.join("home"))
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawn_err = |source| BedError::Spawn {
            cmd: "script".into(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let mut stdin = child.stdin.take();
        std::thread::sleep(std::time::Duration::from_secs(1));
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(input.as_bytes());
        }
        // Closed only after the session ends: `script` ends the session when its input does.
        let out = child.wait_with_output().map_err(spawn_err)?;
        drop(stdin);
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// [`kubectl`](Self::kubectl) with `stdin` as its input (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String, BedError> {
        use std::io::Write;
        let mut cmd = self.ns.command(Path::new("kubectl"));
        cmd.env("HOME", self.dir.join("home"))
            .arg("--kubeconfig")
            .arg(self.dir.join("admin.kubeconfig"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| BedError::Spawn {
            cmd: "kubectl".into(),
            source,
        })?;
        // Dropping stdin closes it, so kubectl sees EOF either way.
        if let (Some(mut input), Some(text)) = (child.stdin.take(), stdin) {
            let _ = input.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(|source| BedError::Spawn {
            cmd: "kubectl".into(),
            source,
        })?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            return Err(BedError::Command {
                cmd: format!("kubectl {}", args.join(" ")),
                stderr: format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(text)
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<String, BedError> {
        self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
    }

    /// The status of a Node's `Ready` condition (`True`, `False`, `Unknown`), if it has one.
    pub fn node_ready(&self, node: &str) -> Option<String> {
        self.kubectl(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    }
}

/// What pods hold on a node: mounts below its state directory (root filesystems, namespace pins,
/// volumes), pod and container cgroups, network links in its namespace (veths), allocated pod
/// addresses, container shims, pod and log directories, runc's container states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub mounts: usize,
    pub cgroups: usize,
    pub links: usize,
    pub addresses: usize,
    pub processes: usize,
    pub pod_dirs: usize,
    pub log_dirs: usize,
    pub runc_containers: usize,
}

/// Directories below `dir`, itself included (0 if it does not exist).
fn count_dirs(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    1 + entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| count_dirs(&e.path()))
        .sum::<usize>()
}

/// A node: its namespace, underlay address, state directory, pods and agent.
pub struct ClusterNode {
    pub index: u8,
    pub name: String,
    pub ns: Netns,
    pub underlay: Ipv4Addr,
    pub state: PathBuf,
    pub pods: Vec<OverlayPod>,
    pub agent: Option<AgentProc>,
}

impl ClusterNode {
    /// The node's agent (panics if it was never started).
    pub fn agent(&mut self) -> &mut AgentProc {
        self.agent.as_mut().expect("agent started")
    }
}

/// The world. Field order matters: agents and the control plane stop before the bed removes the
/// namespaces.
pub struct ClusterWorld {
    pub nodes: Vec<ClusterNode>,
    pub cp: ControlPlane,
    pub underlay: Netns,
    pub bed: TestBed,
    /// The underlay links' MTU.
    pub mtu: u32,
}

/// Sets the MTU of both ends of a veth pair.
fn set_mtu(a: &Netns, a_if: &str, b: &Netns, b_if: &str, mtu: u32) -> Result<(), BedError> {
    let mtu = mtu.to_string();
    a.ip(&["link", "set", a_if, "mtu", &mtu])?;
    b.ip(&["link", "set", b_if, "mtu", &mtu])?;
    Ok(())
}

impl ClusterWorld {
    /// The control plane (with `cp_args`) and `nodes` nodes joined to it, `pods` pods each, every pod
    /// answering.
    pub fn new(test_name: &str, nodes: u8, pods: usize, cp_args: &[&str]) -> Result<Self, BedError> {
        Self::with_options(test_name, nodes, pods, cp_args, 1500, &[])
    }

    /// [`new`](Self::new) on an underlay whose links have MTU `mtu` (1450 as on OpenStack, 9000 for
    /// jumbo frames), every agent joined with `agent_args` besides the usual ones.
    pub fn with_options(
        test_name: &str,
        nodes: u8,
        pods: usize,
        cp_args: &[&str],
        mtu: u32,
        agent_args: &[&str],
    ) -> Result<Self, BedError> {
        Self::in_bed(TestBed::new(test_name), nodes, pods, cp_args, mtu, agent_args)
    }

    /// The world built in `bed`.
    pub fn in_bed(
        mut bed: TestBed,
        nodes: u8,
        pods: usize,
        cp_args: &[&str],
        mtu: u32,
        agent_args: &[&str],
    ) -> Result<Self, BedError> {
        let underlay = bed.netns("underlay")?;
        underlay.ip(&["link", "add", "br0", "mtu", &mtu.to_string(), "type", "bridge"])?;
        underlay.ip(&["link", "set", "br0", "up"])?;
        let cp_ns = bed.netns("cp")?;
        bed.veth(&cp_ns, "eth0", &underlay, "cp0")?;
        set_mtu(&cp_ns, "eth0", &underlay, "cp0", mtu)?;
        underlay.ip(&["link", "set", "cp0", "master", "br0"])?;
        cp_ns.ip(&["addr", "add", &format!("{CP_IP}/24"), "dev", "eth0"])?;
        let mut cp = ControlPlane {
            ns: cp_ns,
            dir: bed.scratch().join("cp"),
            log: bed.scratch().join("control-plane.log"),
            args: cp_args.iter().map(|s| s.to_string()).collect(),
            proc: None,
        };
        cp.start()?;
        let mut world = ClusterWorld {
            nodes: Vec::new(),
            cp,
            underlay,
            bed,
            mtu,
        };
        for i in 1..=nodes {
            world.add_node(i)?;
        }
        for i in 1..=nodes {
            world.join(i, agent_args)?;
        }
        for i in 1..=nodes {
            world.wire_pods(i, pods)?;
        }
        Ok(world)
    }

    /// Node `i` (1-based).
    pub fn node(&mut self, i: u8) -> &mut ClusterNode {
        &mut self.nodes[usize::from(i) - 1]
    }

    /// Pod `j` of node `i`.
    pub fn pod(&self, i: u8, j: usize) -> &OverlayPod {
        &self.nodes[usize::from(i) - 1].pods[j]
    }

    /// Adds node `i`'s namespace on the underlay (no agent yet).
    pub fn add_node(&mut self, i: u8) -> Result<(), BedError> {
        let ns = self.bed.netns(&format!("n{i}"))?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        let underlay = Ipv4Addr::new(192, 168, 70, i);
        let port = format!("p{i}");
        self.bed.veth(&ns, "eth0", &self.underlay, &port)?;
        set_mtu(&ns, "eth0", &self.underlay, &port, self.mtu)?;
        self.underlay.ip(&["link", "set", &port, "master", "br0"])?;
        ns.ip(&["addr", "add", &format!("{underlay}/24"), "dev", "eth0"])?;
        self.nodes.push(ClusterNode {
            index: i,
            name: format!("node{i}"),
            ns,
            underlay,
            state: self.bed.scratch().join(format!("state-n{i}")),
            pods: Vec::new(),
            agent: None,
        });
        Ok(())
    }

    /// What pods hold on node `i`, counted from the kernel and the node's state: see [`Footprint`].
    pub fn footprint(&self, i: u8) -> Footprint {
        let n = &self.nodes[usize::from(i) - 1];
        let state = n.state.display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&state))
            .count();
        let mut cgroups = 0;
        for controller in ["memory", "cpu", "pids"] {
            let kubepods = self.node_cgroup(i, controller, "kubepods");
            cgroups += count_dirs(&kubepods).saturating_sub(3); // the QoS parents stay
        }
        let links =
            n.ns.ip(&["-o", "link", "show"])
                .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
                .unwrap_or(0);
        let addresses = std::fs::read_dir(n.state.join("ipam"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter(|f| f.file_name().to_string_lossy().parse::<Ipv4Addr>().is_ok())
            .count();
        let processes = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                cmdline.split(|b| *b == 0).any(|a| a == b"container-shim")
                    && cmdline.windows(state.len()).any(|w| w == state.as_bytes())
            })
            .count();
        let entries = |dir: PathBuf| std::fs::read_dir(dir).map_or(0, |d| d.count());
        Footprint {
            mounts,
            cgroups,
            links,
            addresses,
            processes,
            pod_dirs: entries(n.state.join("pods")),
            log_dirs: entries(n.state.join("logs")),
            runc_containers: entries(n.state.join("runc")),
        }
    }

    /// Directory `path` (below the node's `--cgroup-root`) of node `i`'s cgroups in the v1
    /// hierarchy of `controller`.
    pub fn node_cgroup(&self, i: u8, controller: &str, path: &str) -> PathBuf {
        PathBuf::from(format!(
            "/sys/fs/cgroup/{controller}{}/node{i}/{path}",
            self.bed.cgroup_parent()
        ))
    }

    /// The `run` arguments of node `i`'s agent, joining with the printed command's flags.
    pub fn join_args(&mut self, i: u8) -> Result<Vec<String>, BedError> {
        let join = self.cp.join_command()?;
        let cgroup_root = format!("{}/node{i}", self.bed.cgroup_parent());
        let n = self.node(i);
        let mut args: Vec<String> = join
            .split_whitespace()
            .skip_while(|w| *w != "run")
            .skip(1)
            .map(str::to_string)
            .collect();
        args.extend(
            [
                "--node",
                &n.name,
                "--node-ip",
                &n.underlay.to_string(),
                "--uplink",
                "eth0",
                "--pod-interfaces",
                "vp*",
                "--overlay-dev",
                BERTH_DEV,
                "--state-dir",
                &n.state.display().to_string(),
                "--poll-ms",
                "50",
                // Pods' logs and cgroups inside the test bed.
                "--pod-log-dir",
                &n.state.join("logs").display().to_string(),
                "--cgroup-root",
                &cgroup_root,
                "--pod-max-pids",
                "256",
                "--pod-manifest-path",
                &n.state.join("static-pods").display().to_string(),
                "--insecure-registry",
                &format!("{CP_IP}:{REGISTRY_PORT}"),
                "--insecure-registry",
                &format!("{CP_IP}:{PRIVATE_REGISTRY_PORT}"),
            ]
            .map(str::to_string),
        );
        Ok(args)
    }

    /// Starts node `i`'s agent, joined by token (with `extra` arguments), and waits until its Services
    /// are synced and its pod CIDR is configured (`subnet.env` written from the Node's podCIDR).
    pub fn join(&mut self, i: u8, extra: &[&str]) -> Result<(), BedError> {
        let mut args = self.join_args(i)?;
        args.extend(extra.iter().map(|s| s.to_string()));
        self.start_agent(i, &args)?;
        self.wait_joined(i)
    }

    /// Starts node `i`'s agent with `args` (after `run`) and waits for its first Service sync.
    pub fn start_agent(&mut self, i: u8, args: &[String]) -> Result<(), BedError> {
        let bpffs = self.bed.bpffs_root();
        let scratch = self.bed.scratch().to_path_buf();
        let agent = AgentProc::start(&self.node(i).ns, &bpffs, &scratch, args)?;
        self.wait_first_sync(i, agent)
    }

    /// Starts node `i`'s agent as a DaemonSet's pod would run it (see [`AgentProc::start_in_pod`]):
    /// service-account files from `service_account`, the API server's address from the environment.
    pub fn start_agent_in_pod(
        &mut self,
        i: u8,
        args: &[String],
        service_account: &Path,
    ) -> Result<(), BedError> {
        let bpffs = self.bed.bpffs_root();
        let scratch = self.bed.scratch().to_path_buf();
        let ip: Ipv4Addr = CP_IP.parse().map_err(|e| BedError::Command {
            cmd: "control plane address".into(),
            stderr: format!("{e}"),
        })?;
        let api = std::net::SocketAddr::from((ip, CP_PORT));
        let agent = AgentProc::start_in_pod(&self.node(i).ns, &bpffs, &scratch, args, service_account, api)?;
        self.wait_first_sync(i, agent)
    }

    fn wait_first_sync(&mut self, i: u8, mut agent: AgentProc) -> Result<(), BedError> {
        let n = self.node(i);
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.status().is_none() {
            if Instant::now() > deadline || agent.exited() {
                return Err(BedError::Command {
                    cmd: format!("berth-agent on {}: first sync", n.name),
                    stderr: agent.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        n.agent = Some(agent);
        Ok(())
    }

    /// Waits until node `i`'s agent wrote its status and `subnet.env`.
    pub fn wait_joined(&mut self, i: u8) -> Result<(), BedError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let n = self.node(i);
        let subnet = n.state.join("subnet.env");
        loop {
            let agent = n.agent.as_ref().expect("agent started");
            if agent.status().is_some() && subnet.exists() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BedError::Command {
                    cmd: format!("berth-agent on {}: joined and synced", n.name),
                    stderr: agent.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wires `pods` pods on node `i` (its `subnet.env` must exist) and waits until they answer.
    pub fn wire_pods(&mut self, i: u8, pods: usize) -> Result<(), BedError> {
        let idx = usize::from(i) - 1;
        let (ns, state) = (self.nodes[idx].ns.clone(), self.nodes[idx].state.clone());
        for j in 0..pods {
            let pod = wire_pod(&mut self.bed, &ns, &state, i, j)?;
            wait_reachable(&ns, &pod, Duration::from_secs(10))?;
            self.nodes[idx].pods.push(pod);
        }
        Ok(())
    }

    /// Starts the cluster's image registry in the control plane's namespace (`CP_IP:5000`, which every
    /// node reaches over the underlay), with busybox pushed as `busybox:1.36`; returns the image
    /// prefix (`192.168.70.100:5000`).
    pub fn start_registry(&mut self) -> Result<(Registry, String), BedError> {
        let ip: Ipv4Addr = CP_IP.parse().map_err(|e| BedError::Command {
            cmd: "registry address".into(),
            stderr: format!("{e}"),
        })?;
        let addr = std::net::SocketAddr::from((ip, REGISTRY_PORT));
        let registry = Registry::in_netns(&self.cp.ns, addr, &self.bed.scratch().join("registry"))?;
        let layout = self.bed.scratch().join("oci");
        build_image(&layout, &ImageSpec::busybox("1.36"))?;
        let prefix = format!("{CP_IP}:{REGISTRY_PORT}");
        push(
            &layout,
            "1.36",
            &format!("{prefix}/busybox:1.36"),
            Format::Oci,
            Some(&self.cp.ns),
        )?;
        Ok((registry, prefix))
    }

    /// A registry on the control plane's address that serves the images of
    /// [`start_registry`](Self::start_registry) (call that first) only to [`PRIVATE_REGISTRY_LOGIN`];
    /// returns it and its `host:port`.
    pub fn start_private_registry(&mut self) -> Result<(Registry, String), BedError> {
        let ip: Ipv4Addr = CP_IP.parse().map_err(|e| BedError::Command {
            cmd: "registry address".into(),
            stderr: format!("{e}"),
        })?;
        let addr = std::net::SocketAddr::from((ip, PRIVATE_REGISTRY_PORT));
        let registry = Registry::with_login(
            &self.cp.ns,
            addr,
            &self.bed.scratch().join("private-registry"),
            &self.bed.scratch().join("registry"),
            PRIVATE_REGISTRY_LOGIN.0,
            PRIVATE_REGISTRY_BCRYPT,
        )?;
        Ok((registry, format!("{CP_IP}:{PRIVATE_REGISTRY_PORT}")))
    }

    /// `berth-agent lb list` of node `i` (what its maps hold).
    pub fn lb_list(&mut self, i: u8) -> String {
        let bpffs = self.bed.bpffs_root();
        let n = self.node(i);
        Command::new(workspace_bin("berth-agent"))
            .args(["--netns", &n.ns.name, "--bpffs-root"])
            .arg(&bpffs)
            .args(["lb", "list", "--node", &n.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }
}

/// A Service without a selector and its hand-written EndpointSlice (endpoints with their node names),
/// as `kubectl apply` takes them: the Service's ClusterIP `ip`, port 80 to the pods' 8080.
pub fn service_with_endpoints(name: &str, ip: &str, endpoints: &[(Ipv4Addr, &str)]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(addr, node)| {
            format!("- addresses: [\"{addr}\"]\n  conditions: {{ready: true}}\n  nodeName: {node}\n")
        })
        .collect();
    let eps = if eps.is_empty() {
        "[]\n".to_string()
    } else {
        format!("\n{eps}")
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints: {eps}"
    )
}
