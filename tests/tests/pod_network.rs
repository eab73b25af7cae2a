//! Pod addressing on one node: `berth-agent pod-net add` wires pods (address from the node's pod CIDR,
//! routed veth pair); pods on the node reach each other through eBPF direct delivery; addresses survive
//! an agent crash without being handed out twice; pod egress to outside the cluster is masqueraded to
//! the node address.

use std::{net::Ipv4Addr, process::Command, time::Duration};

use berth_tests::{
    agent::AgentProc,
    probe::Attempt,
    testbed::{Netns, TestBed},
    workspace_bin,
};

const NODE: &str = "node1";
const NODE_IP: &str = "192.168.70.1";
const OUTSIDE_IP: &str = "192.168.70.2";

struct World {
    bed: TestBed,
    node: Netns,
    outside: Netns,
    state: std::path::PathBuf,
}

fn world(name: &str) -> World {
    let mut bed = TestBed::new(name);
    let node = bed.netns("n1").expect("node ns");
    let outside = bed.netns("out").expect("outside ns");
    node.sysctl("net.ipv4.ip_forward", "1").expect("forwarding");
    bed.veth(&node, "eth0", &outside, "eth0").expect("uplink");
    node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "eth0"])
        .expect("node address");
    outside
        .ip(&["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"])
        .expect("outside address");
    // The outside has no route to pod addresses: only masqueraded traffic can get answers.
    let mut serve = outside.command(&workspace_bin("berth-probe"));
    serve.args(["serve", "--id", "outside", "--tcp", "8080", "--udp", "5353"]);
    bed.spawn(serve, "outside server").expect("server");
    let state = bed.scratch().join("state");
    World {
        bed,
        node,
        outside,
        state,
    }
}

impl World {
    fn start_agent(&self, masquerade: bool) -> AgentProc {
        self.start_agent_with(masquerade, &[])
    }

    fn start_agent_with(&self, masquerade: bool, extra: &[&str]) -> AgentProc {
        let manifests = self.bed.scratch().join("manifests");
        std::fs::create_dir_all(&manifests).expect("manifests dir");
        let args: Vec<String> = [
            "--node",
            NODE,
            "--node-ip",
            NODE_IP,
            "--manifests",
            &manifests.display().to_string(),
            "--uplink",
            "eth0",
            "--pod-interfaces",
            "vp*",
            "--pod-cidr",
            "10.244.1.0/24",
            "--state-dir",
            &self.state.display().to_string(),
            "--masquerade",
            if masquerade { "true" } else { "false" },
            "--poll-ms",
            "50",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let mut agent =
            AgentProc::start(&self.node, &self.bed.bpffs_root(), self.bed.scratch(), &args).expect("agent");
        agent.wait_frontends(0, 0, Duration::from_secs(10));
        agent
    }

    fn agent_cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new(workspace_bin("berth-agent"))
            .args(["--netns", &self.node.name, "--bpffs-root"])
            .arg(self.bed.bpffs_root())
            .args(args)
            .output()
            .expect("berth-agent")
    }

    /// Creates a pod namespace, wires it with `pod-net add`, starts a server in it.
    fn add_pod(&mut self, name: &str) -> (Netns, Ipv4Addr) {
        let ns = self.bed.netns(name).expect("pod ns");
        let out = self.agent_cmd(&[
            "pod-net",
            "add",
            "--state-dir",
            &self.state.display().to_string(),
            "--pod",
            &format!("default/{name}"),
            "--pod-netns",
            &ns.name,
        ]);
        assert!(
            out.status.success(),
            "pod-net add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pod-net JSON");
        let ip: Ipv4Addr = json["ip"].as_str().expect("ip").parse().expect("IPv4");
        let mut serve = ns.command(&workspace_bin("berth-probe"));
        serve.args(["serve", "--id", name, "--tcp", "8080", "--udp", "5353"]);
        self.bed.spawn(serve, name).expect("pod server");
        (ns, ip)
    }

    fn pods_view(&self) -> String {
        String::from_utf8_lossy(&self.agent_cmd(&["lb", "pods", "--node", NODE]).stdout).into_owned()
    }

    fn counter(&self, name: &str) -> u64 {
        let out = self.agent_cmd(&["lb", "ct", "--node", NODE]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("counter {name} = ")).map(str::to_owned))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the data plane delivers to `n` local pods.
    fn wait_pods(&self, n: usize, agent: &AgentProc) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let view = self.pods_view();
            if view.lines().filter(|l| l.starts_with("pod ")).count() == n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "expected {n} local pods, have:\n{view}\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn probe(from: &Netns, args: &[&str]) -> Vec<Attempt> {
    let out = Command::new(workspace_bin("berth-probe"))
        .args(["--netns", &from.name])
        .args(args)
        .output()
        .expect("probe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(Attempt::parse)
        .collect()
}

/// Whether two short TCP attempts from `from` to `target` both go unanswered.
fn unanswered(from: &Netns, target: &str) -> bool {
    probe(from, &["tcp", target, "--count", "2", "--timeout-ms", "300"])
        .iter()
        .all(|a| a.id().is_none())
}

fn all_from(got: &[Attempt], n: usize, id: &str) -> bool {
    got.len() == n && got.iter().all(|a| a.id() == Some(id))
}

#[test]
fn pods_get_addresses_that_survive_restarts_and_reach_each_other_directly() {
    let mut w = world("podnet");
    let mut agent = w.start_agent(true);
    let (a_ns, a_ip) = w.add_pod("a");
    let (_b_ns, b_ip) = w.add_pod("b");
    assert_eq!(
        (a_ip.to_string().as_str(), b_ip.to_string().as_str()),
        ("10.244.1.2", "10.244.1.3")
    );
    w.wait_pods(2, &agent);

    let before = w.counter("local_delivered");
    let got = probe(&a_ns, &["tcp", &format!("{b_ip}:8080"), "--count", "20"]);
    assert!(all_from(&got, 20, "b"), "a -> b: {got:?}\n{}", agent.log());
    if let Attempt::Ok { peer, .. } = &got[0] {
        assert!(peer.starts_with(&format!("{a_ip}:")), "pod address kept: {peer}");
    }
    let got = probe(&a_ns, &["udp", &format!("{b_ip}:5353"), "--count", "10"]);
    assert!(all_from(&got, 10, "b"), "UDP a -> b: {got:?}");
    // Both directions of 20 connections and 10 datagrams were delivered by eBPF, not the stack.
    let delivered = w.counter("local_delivered") - before;
    assert!(
        delivered >= 100,
        "direct deliveries: {delivered}\n{}",
        w.pods_view()
    );

    // Egress to outside the cluster leaves with the node's address.
    let got = probe(&a_ns, &["tcp", &format!("{OUTSIDE_IP}:8080"), "--count", "5"]);
    assert!(
        all_from(&got, 5, "outside"),
        "masqueraded egress: {got:?}\n{}",
        agent.log()
    );
    if let Attempt::Ok { peer, .. } = &got[0] {
        assert!(peer.starts_with(&format!("{NODE_IP}:")), "outside saw {peer}");
    }

    // A crash loses no allocation: the next pod gets a fresh address; delivery state is kept.
    agent.kill();
    agent = w.start_agent(true);
    let (_c_ns, c_ip) = w.add_pod("c");
    assert_eq!(c_ip.to_string(), "10.244.1.4");
    w.wait_pods(3, &agent);
    let got = probe(&a_ns, &["tcp", &format!("{c_ip}:8080"), "--count", "5"]);
    assert!(all_from(&got, 5, "c"), "a -> c after restart: {got:?}");

    // Removing a pod releases its address and its endpoint; the address is not reused at once.
    let out = w.agent_cmd(&[
        "pod-net",
        "del",
        "--state-dir",
        &w.state.display().to_string(),
        "--pod",
        "default/b",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    w.wait_pods(2, &agent);
    let (_d_ns, d_ip) = w.add_pod("d");
    assert_eq!(d_ip.to_string(), "10.244.1.5");
    assert!(
        unanswered(&a_ns, &format!("{b_ip}:8080")),
        "removed pod still answers"
    );

    // With masquerade off the outside sees pod addresses, and without a route back cannot answer.
    agent.kill();
    let _agent = w.start_agent(false);
    assert!(
        unanswered(&a_ns, &format!("{OUTSIDE_IP}:8080")),
        "egress without masquerade was answered"
    );
}

/// Whether the node's namespace holds berth's nftables table (the fallback masquerade).
fn has_nft_table(node: &Netns) -> bool {
    let out = node
        .command(std::path::Path::new("nft"))
        .args(["list", "tables"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).contains("berth")
}

#[test]
fn pod_egress_is_masqueraded_in_ebpf_without_netfilter() {
    let mut w = world("ebpfmasq");
    let agent = w.start_agent(true);
    let (a_ns, a_ip) = w.add_pod("a");
    w.wait_pods(1, &agent);
    let before = w.counter("masqueraded");
    // TCP, UDP (a new socket per datagram: five flows) and ICMP echo (one identifier: one flow) reach
    // the outside from the node's address, and their answers find the pod.
    let tcp = probe(&a_ns, &["tcp", &format!("{OUTSIDE_IP}:8080"), "--count", "5"]);
    let udp = probe(&a_ns, &["udp", &format!("{OUTSIDE_IP}:5353"), "--count", "5"]);
    for (what, got) in [("TCP", &tcp), ("UDP", &udp)] {
        assert!(all_from(got, 5, "outside"), "{what}: {got:?}\n{}", agent.log());
        for a in got {
            if let Attempt::Ok { peer, .. } = a {
                assert!(
                    peer.starts_with(&format!("{NODE_IP}:")),
                    "{what}: outside saw {peer}"
                );
            }
        }
    }
    let ping = probe(&a_ns, &["ping", OUTSIDE_IP, "--count", "3"]);
    assert!(
        ping.len() == 3 && ping.iter().all(|a| a.id() == Some("icmp")),
        "ICMP echo: {ping:?}"
    );
    assert_eq!(w.counter("masqueraded") - before, 11, "flows masqueraded in eBPF");
    // An ICMP error about a masqueraded flow (the outside's "port unreachable" quotes the node's
    // address and port) reaches the pod's socket, translated back: refused at once, not a timeout.
    let closed = probe(
        &a_ns,
        &[
            "udp",
            &format!("{OUTSIDE_IP}:5999"),
            "--connected",
            "--count",
            "2",
        ],
    );
    assert!(
        closed.len() == 2
            && closed
                .iter()
                .all(|a| matches!(a, Attempt::Err { kind, .. } if kind == "refused")),
        "port unreachable through the masquerade: {closed:?}"
    );
    assert!(w.counter("icmp_errors") >= 2);
    let before = before + 2;
    // The outside pinging the pod (given a route): the pod's echo replies answer, they start no flow of
    // their own, so they leave with the pod's address.
    w.outside
        .ip(&["route", "add", "10.244.1.0/24", "via", NODE_IP])
        .expect("route to pods");
    let answers = probe(&w.outside, &["ping", &a_ip.to_string(), "--count", "2"]);
    assert!(
        answers.len() == 2
            && answers
                .iter()
                .all(|a| matches!(a, Attempt::Ok { peer, .. } if *peer == a_ip.to_string())),
        "echo replies from the pod: {answers:?}"
    );
    assert_eq!(w.counter("masqueraded") - before, 11, "no echo reply masqueraded");
    let ct = String::from_utf8_lossy(&w.agent_cmd(&["lb", "ct", "--node", NODE]).stdout).into_owned();
    assert!(ct.contains("masquerade"), "{ct}");
    // No netfilter table: nothing in the node's namespace asks for connection tracking.
    assert!(!has_nft_table(&w.node), "eBPF mode installs no nftables table");

    // The fallback: netfilter masquerades, with berth's table.
    drop(agent);
    let agent = w.start_agent_with(true, &["--masquerade-mode", "nftables"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !has_nft_table(&w.node) {
        assert!(std::time::Instant::now() < deadline, "no table:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = w.counter("masqueraded");
    let tcp = probe(&a_ns, &["tcp", &format!("{OUTSIDE_IP}:8080"), "--count", "5"]);
    assert!(all_from(&tcp, 5, "outside"), "nftables mode: {tcp:?}");
    assert_eq!(w.counter("masqueraded"), before, "eBPF stays out of it");
}
