//! berth as a cluster: the real `berth-control-plane`, agents joined to it with the bootstrap token it
//! printed (`berth-agent run --server --token --ca-cert-hash`), Services and EndpointSlices applied
//! with the real `kubectl`, traffic between pods in network namespaces. One world carries the whole
//! story (joining, following changes, agent restarts, a control-plane outage, a dead node), as building
//! a cluster is the expensive part.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    thread::sleep,
    time::{Duration, Instant},
};

use berth_tests::{
    clusterworld::{ClusterWorld, service_with_endpoints},
    lbworld::hold_from,
    overlayworld::probe,
    probe::Attempt,
    registry::{Format, agent_image, push},
    testbed::Netns,
};

const WEB_IP: &str = "10.96.100.10";
/// The control plane's node-monitor grace period in these tests (kube-controller-manager: 40 s).
const GRACE_SECONDS: u64 = 20;

fn served_by(from: &Netns, n: u32) -> BTreeMap<String, u32> {
    let target = format!("{WEB_IP}:80");
    let got = probe(
        from,
        &["tcp", &target, "--count", &n.to_string(), "--timeout-ms", "500"],
    )
    .expect("probe");
    let mut counts = BTreeMap::new();
    for a in &got {
        *counts
            .entry(a.id().unwrap_or("(failed)").to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// Waits until every one of `n` attempts from `from` is answered by a backend in `ids`, and each of
/// `ids` answered at least once.
fn wait_served_by(from: &Netns, ids: &[&str], timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = served_by(from, 20);
        let only_wanted = counts.keys().all(|k| ids.contains(&k.as_str()));
        let all_seen = ids.iter().all(|id| counts.contains_key(*id));
        if only_wanted && all_seen {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: from {} the Service answered {counts:?}, wanted exactly {ids:?}",
            from.name
        );
        sleep(Duration::from_millis(200));
    }
}

fn wait_ready(world: &ClusterWorld, node: &str, want: bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = world.cp.node_ready(node);
        if (ready.as_deref() == Some("True")) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} Ready={ready:?}, wanted {want}; nodes:\n{}",
            world.cp.kubectl(&["get", "nodes"]).unwrap_or_default()
        );
        sleep(Duration::from_millis(250));
    }
}

#[test]
fn nodes_joined_by_token_follow_the_api() {
    let grace = GRACE_SECONDS.to_string();
    let mut world =
        ClusterWorld::new("cluster", 2, 1, &["--node-monitor-grace-seconds", &grace]).expect("cluster");

    // Joined: each node registered with a podCIDR from the control plane, flannel's annotations, a
    // Lease, Ready; the certificate kept in the state directory with mode 0600.
    for i in 1..=2u8 {
        let name = format!("node{i}");
        wait_ready(&world, &name, true, Duration::from_secs(15));
        let node = world
            .cp
            .kubectl(&["get", "node", &name, "-o", "json"])
            .expect("get node");
        let node: serde_json::Value = serde_json::from_str(&node).expect("node json");
        let cidr = node["spec"]["podCIDR"].as_str().unwrap_or_default();
        assert!(cidr.starts_with("10.244."), "podCIDR allocated: {node}");
        let ann = &node["metadata"]["annotations"];
        assert_eq!(
            ann["flannel.alpha.coreos.com/kube-subnet-manager"], "true",
            "{ann}"
        );
        assert_eq!(ann["flannel.alpha.coreos.com/backend-type"], "vxlan", "{ann}");
        assert_eq!(
            ann["flannel.alpha.coreos.com/public-ip"],
            format!("192.168.70.{i}"),
            "{ann}"
        );
        assert_eq!(
            node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250,
            "{node}"
        );
        let subnet = std::fs::read_to_string(world.node(i).state.join("subnet.env")).expect("subnet.env");
        assert!(
            subnet.contains(&format!("FLANNEL_SUBNET={}", cidr.replace(".0/24", ".1/24"))),
            "{subnet}"
        );
        world
            .cp
            .kubectl(&["get", "lease", "-n", "kube-node-lease", &name])
            .expect("the node's Lease");
        let kubeconfig = world.node(i).state.join("kubeconfig");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&kubeconfig).expect("kubeconfig").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", kubeconfig.display());
    }
    let csrs = world.cp.kubectl(&["get", "csr"]).expect("csr");
    assert!(csrs.contains("Approved,Issued"), "{csrs}");

    // A Service applied with kubectl reaches every node's maps: from a pod on each node, both
    // backends answer (one across the overlay).
    let (p1, p2) = (world.pod(1, 0).clone(), world.pod(2, 0).clone());
    world
        .cp
        .apply(&service_with_endpoints(
            "web",
            WEB_IP,
            &[(p1.ip, "node1"), (p2.ip, "node2")],
        ))
        .expect("apply");
    for p in [&p1, &p2] {
        wait_served_by(
            &p.ns,
            &[&p1.id, &p2.id],
            Duration::from_secs(10),
            "both endpoints",
        );
    }

    // A change of endpoints reaches the maps.
    world
        .cp
        .apply(&service_with_endpoints("web", WEB_IP, &[(p2.ip, "node2")]))
        .expect("apply");
    for p in [&p1, &p2] {
        wait_served_by(&p.ns, &[&p2.id], Duration::from_secs(5), "endpoint removed");
    }

    // An agent killed and restarted: the established flow keeps working throughout, and the restarted
    // agent (reusing its certificate, no new CSR) converges on a change made while it was down.
    let mut held = hold_from(&p1.ns, None, &format!("{WEB_IP}:80"));
    assert!(held.greeting.contains(&p2.id), "{}", held.greeting);
    world.node(1).agent().kill();
    assert_eq!(held.echo("while-dead"), "echo while-dead");
    world
        .cp
        .apply(&service_with_endpoints(
            "web",
            WEB_IP,
            &[(p1.ip, "node1"), (p2.ip, "node2")],
        ))
        .expect("apply");
    world.node(1).agent().restart().expect("restart");
    world.wait_joined(1).expect("rejoined");
    assert!(
        world
            .node(1)
            .agent()
            .log()
            .contains("using the node's credentials"),
        "{}",
        world.node(1).agent().log()
    );
    assert_eq!(held.echo("after-restart"), "echo after-restart");
    wait_served_by(
        &p1.ns,
        &[&p1.id, &p2.id],
        Duration::from_secs(10),
        "converged after restart",
    );
    drop(held);

    // The control plane stopped for 30 s: traffic never stops; once it is back, a change made through
    // it reaches the maps of both nodes.
    world.cp.kill();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        for p in [&p1, &p2] {
            let got = probe(&p.ns, &["tcp", &format!("{WEB_IP}:80"), "--timeout-ms", "1000"]).expect("probe");
            assert!(
                got.first().and_then(Attempt::id).is_some(),
                "traffic stopped {:?} into the control plane's outage: {got:?}\n{}",
                outage.elapsed(),
                world.node(1).agent().log()
            );
        }
        sleep(Duration::from_millis(500));
    }
    world.cp.start().expect("control plane back");
    world
        .cp
        .apply(&service_with_endpoints("web", WEB_IP, &[(p1.ip, "node1")]))
        .expect("apply after the outage");
    for p in [&p1, &p2] {
        wait_served_by(
            &p.ns,
            &[&p1.id],
            Duration::from_secs(15),
            "change after the outage",
        );
    }
    assert!(
        world.node(2).agent().log().contains("watch resumed"),
        "{}",
        world.node(2).agent().log()
    );

    // A node whose agent dies goes NotReady within the grace period (its Lease is no longer
    // renewed) and its pods are evicted once their tolerations run out (here 1 s; berth's node
    // lifecycle deletes them at once so that their controllers replace them); it comes back Ready
    // once the agent runs again.
    world
        .cp
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stranded\nspec:\n  nodeName: node2\n  tolerations:\n  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}\n  - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 1}\n  containers:\n  - {name: c, image: '192.168.70.100:5999/absent:1'}\n",
        )
        .expect("a pod on node2");
    world.node(2).agent().kill();
    let killed = Instant::now();
    wait_ready(&world, "node2", false, Duration::from_secs(GRACE_SECONDS + 15));
    assert!(
        killed.elapsed() <= Duration::from_secs(GRACE_SECONDS + 15),
        "NotReady after {:?}",
        killed.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while world.cp.kubectl(&["get", "pod", "stranded"]).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the pod on the unreachable node was not evicted"
        );
        sleep(Duration::from_millis(250));
    }
    world.node(2).agent().restart().expect("restart");
    wait_ready(&world, "node2", true, Duration::from_secs(20));
}

#[test]
fn a_join_with_a_wrong_token_or_ca_fails_clearly_and_writes_nothing() {
    let mut world = ClusterWorld::new("joinbad", 0, 0, &[]).expect("cluster");
    world.add_node(1).expect("node");
    let good = world.join_args(1).expect("join args");
    let flag = |args: &[String], name: &str| {
        let at = args.iter().position(|a| a == name).expect("flag");
        args[at + 1].clone()
    };
    let (token, hash) = (flag(&good, "--token"), flag(&good, "--ca-cert-hash"));
    let wrong_secret = format!("{}.0123456789abcdef", &token[..6]);
    let wrong_hash = format!("sha256:{}", "0".repeat(64));
    for (from, to, expect) in [
        (token.as_str(), wrong_secret.as_str(), "signature does not match"),
        (
            hash.as_str(),
            wrong_hash.as_str(),
            "does not match --ca-cert-hash",
        ),
        ("192.168.70.100", "192.168.70.99", "cannot reach the API server"),
    ] {
        let args: Vec<String> = good.iter().map(|a| a.replace(from, to)).collect();
        let n = world.node(1);
        // Bounded: an agent that did join would run until stopped.
        let out = std::process::Command::new("timeout")
            .args(["60", "ip", "netns", "exec", &n.ns.name])
            .arg(berth_tests::workspace_bin("berth-agent"))
            .arg("run")
            .args(&args)
            .output()
            .expect("berth-agent");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains(expect),
            "wanted {expect:?} in the last line:\n{stderr}"
        );
        assert!(
            !n.state.join("kubeconfig").exists(),
            "nothing written after a failed join"
        );
    }
}

/// A node for the agent as kube-proxy: its pods wired beforehand (as flannel and kubelet would have).
fn kube_proxy_node(name: &str) -> ClusterWorld {
    let mut world = ClusterWorld::new(name, 0, 0, &[]).expect("cluster");
    world.add_node(1).expect("node");
    let state = world.node(1).state.clone();
    std::fs::create_dir_all(&state).expect("state");
    std::fs::write(
        state.join("subnet.env"),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    )
    .expect("subnet.env");
    world.wire_pods(1, 2).expect("pods");
    world
}

/// The agent's arguments as kube-proxy, credentials aside.
fn kube_proxy_args(world: &mut ClusterWorld) -> Vec<String> {
    let state = world.node(1).state.clone();
    [
        "--node",
        "node1",
        "--node-ip",
        "192.168.70.1",
        "--pod-interfaces",
        "vp*",
        "--state-dir",
        &state.display().to_string(),
        "--masquerade",
        "false",
    ]
    .map(str::to_string)
    .to_vec()
}

#[test]
fn kube_proxy_replacement_with_in_cluster_credentials() {
    // As a DaemonSet's pod runs it: no --kubeconfig and no join flags; the service-account token, CA
    // and namespace under /var/run/secrets/kubernetes.io/serviceaccount/ and KUBERNETES_SERVICE_HOST
    // and _PORT, as kubelet gives a pod. The token is a service account's, with kube-proxy's role
    // (system:node-proxier) and nothing more.
    let mut world = kube_proxy_node("kprpod");
    let sa = world.bed.scratch().join("serviceaccount");
    std::fs::create_dir_all(&sa).expect("sa dir");
    world
        .cp
        .kubectl(&["create", "serviceaccount", "berth-agent", "-n", "kube-system"])
        .expect("service account");
    world
        .cp
        .kubectl(&[
            "create",
            "clusterrolebinding",
            "berth-agent",
            "--clusterrole=system:node-proxier",
            "--serviceaccount=kube-system:berth-agent",
        ])
        .expect("binding");
    let token = world
        .cp
        .kubectl(&["create", "token", "berth-agent", "-n", "kube-system"])
        .expect("token");
    std::fs::write(sa.join("token"), token.trim()).expect("token");
    std::fs::copy(world.cp.dir.join("ca.crt"), sa.join("ca.crt")).expect("ca");
    std::fs::write(sa.join("namespace"), "kube-system").expect("namespace");
    let args = kube_proxy_args(&mut world);
    world.start_agent_in_pod(1, &args, &sa).expect("agent in a pod");
    let (a, b) = (world.pod(1, 0).clone(), world.pod(1, 1).clone());
    let local: &[(Ipv4Addr, &str)] = &[(a.ip, "node1"), (b.ip, "node1")];
    world
        .cp
        .apply(&service_with_endpoints("web", WEB_IP, local))
        .expect("apply");
    wait_served_by(
        &a.ns,
        &[&a.id, &b.id],
        Duration::from_secs(10),
        "kube-proxy replacement with in-cluster credentials",
    );
    // Without those files and variables the agent says what it needs.
    let out = world
        .node(1)
        .ns
        .command(&berth_tests::workspace_bin("berth-agent"))
        .args(["run", "--node", "node1"])
        .output()
        .expect("agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no API server: give --kubeconfig, the join flags"),
        "{stderr}"
    );
}

/// Waits until `kubectl get ARGS -o jsonpath=PATH` prints `want`; panics with the last answer and `log`.
fn wait_jsonpath(world: &ClusterWorld, args: &[&str], path: &str, want: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let jsonpath = format!("jsonpath={path}");
    loop {
        let mut full = args.to_vec();
        full.extend(["-o", &jsonpath]);
        let got = world.cp.kubectl(&full).unwrap_or_default();
        if got.trim() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl get {args:?} {path}: {got:?}, not {want:?}\n{}",
            log()
        );
        sleep(Duration::from_millis(300));
    }
}

#[test]
fn kube_proxy_replacement_as_a_daemonset() {
    // What an operator does: build and push the agent's image, fill in deploy/kube-proxy-replacement.yaml
    // and `kubectl apply` it. The node's kubelet is berth's agent in that role only (pods, no interfaces
    // of its own, no overlay), so the DaemonSet's agent is the node's only Service load balancer: it runs
    // as a privileged hostNetwork pod from the registry, with its ServiceAccount's projected token.
    let mut world = ClusterWorld::new("kprds", 0, 0, &[]).expect("cluster");
    world.add_node(1).expect("node");
    let (_registry, prefix) = world.start_registry().expect("registry");
    let layout = world.bed.scratch().join("agent-oci");
    agent_image(&layout, "dev").expect("agent image");
    let image = format!("{prefix}/berth-agent:dev");
    push(&layout, "dev", &image, Format::Oci, Some(&world.cp.ns)).expect("push");
    let mut kubelet_args = Vec::new();
    let mut join = world.join_args(1).expect("join args").into_iter();
    while let Some(arg) = join.next() {
        if ["--uplink", "--pod-interfaces", "--overlay-dev"].contains(&arg.as_str()) {
            join.next();
        } else {
            kubelet_args.push(arg);
        }
    }
    kubelet_args.extend(["--masquerade".into(), "false".into()]);
    world.start_agent(1, &kubelet_args).expect("kubelet");
    world.wait_joined(1).expect("joined");
    world.wire_pods(1, 2).expect("pods");
    let (a, b) = (world.pod(1, 0).clone(), world.pod(1, 1).clone());

    let pins = world.bed.bpffs_root().join("daemonset");
    let state = world.bed.scratch().join("daemonset-state");
    let mut manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kube-proxy-replacement.yaml"
    ))
    .expect("deploy/kube-proxy-replacement.yaml");
    for (from, to) in [
        ("image: berth-agent:0.1.0", format!("image: {image}")),
        ("https://192.0.2.10:6443", "https://192.168.70.100:6443".into()),
        ("pod-interfaces: \"veth*\"", "pod-interfaces: \"vp*\"".into()),
        // Socket LB on the machine's root cgroup is not for a shared test machine.
        (
            "socket-lb-cgroup: \"/sys/fs/cgroup\"",
            "socket-lb-cgroup: \"\"".into(),
        ),
        (
            "bpffs-root: \"/sys/fs/bpf/berth\"",
            format!("bpffs-root: \"{}\"", pins.display()),
        ),
        ("path: /var/lib/berth\n", format!("path: {}\n", state.display())),
    ] {
        assert!(manifest.contains(from), "the manifest no longer has {from:?}");
        manifest = manifest.replace(from, &to);
    }
    world.cp.apply(&manifest).expect("kubectl apply");
    let agent_log = || {
        let pods = ["-n", "kube-system", "logs", "ds/berth-agent", "--tail", "30"];
        format!(
            "daemonset agent: {}\nkubelet: {}",
            world_log(&world, &pods),
            world.nodes[0].agent.as_ref().map(|a| a.log()).unwrap_or_default()
        )
    };
    let selector = ["-n", "kube-system", "get", "pods", "-l", "k8s-app=berth-agent"];
    wait_jsonpath(
        &world,
        &selector,
        "{.items[0].status.phase}",
        "Running",
        agent_log,
    );
    // In the node's network: its address is the node's.
    wait_jsonpath(
        &world,
        &selector,
        "{.items[0].status.podIP}",
        "192.168.70.1",
        agent_log,
    );
    let local: &[(Ipv4Addr, &str)] = &[(a.ip, "node1"), (b.ip, "node1")];
    world
        .cp
        .apply(&service_with_endpoints("web", WEB_IP, local))
        .expect("apply");
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_served_by(
            &a.ns,
            &[&a.id, &b.id],
            Duration::from_secs(30),
            "the DaemonSet's agent",
        )
    }));
    assert!(served.is_ok(), "{}", agent_log());
    // Its pins are where the ConfigMap put them, and `kubectl logs` reaches it.
    assert!(pins.join("node1").exists(), "no pins under {}", pins.display());
    let logs = world_log(&world, &["-n", "kube-system", "logs", "ds/berth-agent"]);
    assert!(logs.contains("node1"), "{logs}");
    wait_jsonpath(
        &world,
        &selector,
        "{.items[0].status.containerStatuses[0].restartCount}",
        "0",
        agent_log,
    );
    // Removed as it came: the DaemonSet's deletion takes its pod, and the node's kubelet stops it.
    world
        .cp
        .kubectl(&["-n", "kube-system", "delete", "daemonset", "berth-agent"])
        .expect("delete");
    wait_jsonpath(&world, &selector, "{.items[*].metadata.name}", "", agent_log);
}

fn world_log(world: &ClusterWorld, args: &[&str]) -> String {
    world.cp.kubectl(args).unwrap_or_else(|e| e.to_string())
}

#[test]
fn kube_proxy_replacement_with_a_kubeconfig_only() {
    // The agent as kube-proxy beside an existing cluster's kubelet: a kubeconfig, no overlay, no pods
    // of its own to wire; it registers nothing (kubelet owns the Node).
    let mut world = kube_proxy_node("kpr");
    let kubeconfig = world.cp.dir.join("admin.kubeconfig");
    let mut args = kube_proxy_args(&mut world);
    args.extend(["--kubeconfig".to_string(), kubeconfig.display().to_string()]);
    world.start_agent(1, &args).expect("agent");
    let (a, b) = (world.pod(1, 0).clone(), world.pod(1, 1).clone());
    let local: &[(Ipv4Addr, &str)] = &[(a.ip, "node1"), (b.ip, "node1")];
    world
        .cp
        .apply(&service_with_endpoints("web", WEB_IP, local))
        .expect("apply");
    wait_served_by(
        &a.ns,
        &[&a.id, &b.id],
        Duration::from_secs(10),
        "kube-proxy replacement",
    );
    // The `kubernetes` Service is served too, from its EndpointSlice (the API server's address).
    let list = world.lb_list(1);
    assert!(
        list.contains("10.96.0.1:443/TCP") && list.contains("192.168.70.100:6443"),
        "{list}"
    );
    assert!(
        world.cp.kubectl(&["get", "node", "node1"]).is_err(),
        "a kube-proxy replacement registers no Node"
    );
    // A Service the data plane cannot express gets a Warning Event naming why; the others stay.
    world
        .cp
        .apply("apiVersion: v1\nkind: Service\nmetadata: {name: sctp, namespace: default}\nspec:\n  clusterIP: 10.96.100.20\n  ports: [{port: 9000, protocol: SCTP}]\n")
        .expect("apply");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = world
            .cp
            .kubectl(&["get", "events", "-n", "default", "-o", "json"])
            .unwrap_or_default();
        let events: serde_json::Value = serde_json::from_str(&events).unwrap_or_default();
        let found = events["items"].as_array().into_iter().flatten().any(|e| {
            e["involvedObject"]["name"] == "sctp"
                && e["type"] == "Warning"
                && e["message"].as_str().unwrap_or_default().contains("SCTP")
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Warning Event for the SCTP Service: {events}"
        );
        sleep(Duration::from_millis(200));
    }
    wait_served_by(
        &a.ns,
        &[&a.id, &b.id],
        Duration::from_secs(5),
        "other Services stay programmed",
    );
}

/// The pod network follows the underlay's MTU as flannel's does (pods get the uplink's MTU less VXLAN's
/// 50 bytes), and carries small and full-size packets across nodes at 1450 (OpenStack, GCP-like) and
/// 9000 (jumbo frames).
#[test]
fn the_overlay_follows_the_underlay_mtu() {
    for mtu in [1450u32, 9000] {
        let world = ClusterWorld::with_options(&format!("mtu{mtu}"), 2, 1, &[], mtu, &[]).expect("cluster");
        let (a, b) = (world.pod(1, 0).clone(), world.pod(2, 0).clone());
        let link = a.ns.ip(&["-o", "link", "show", "dev", "eth0"]).expect("pod link");
        let link = String::from_utf8_lossy(&link.stdout).to_string();
        assert!(
            link.contains(&format!(" mtu {} ", mtu - 50)),
            "pod MTU at underlay {mtu}: {link}"
        );
        for (from, to) in [(&a, &b), (&b, &a)] {
            let got = probe(&from.ns, &["tcp", &to.tcp().to_string(), "--count", "2"]).expect("tcp");
            assert!(
                got.len() == 2 && got.iter().all(|g| g.id() == Some(to.id.as_str())),
                "TCP across nodes at MTU {mtu}: {got:?}"
            );
            let got = probe(
                &from.ns,
                &[
                    "bulk",
                    &to.tcp().to_string(),
                    "--bytes",
                    "4194304",
                    "--count",
                    "1",
                ],
            )
            .expect("bulk");
            assert!(
                got.len() == 1 && got[0].id() == Some(to.id.as_str()),
                "full-size segments across nodes at MTU {mtu}: {got:?}"
            );
        }
    }
}

/// `--vxlan-port` (flannel's flag of the same name: its Node annotations do not carry the port, so
/// every node is told): the VXLAN device listens there and the programs encapsulate to it.
#[test]
fn the_overlay_runs_on_the_vxlan_port_given() {
    let mut world =
        ClusterWorld::with_options("vxport", 2, 1, &[], 1500, &["--vxlan-port", "4789"]).expect("cluster");
    let dev = world
        .node(1)
        .ns
        .ip(&["-d", "link", "show", "dev", "berth.1"])
        .expect("device");
    let dev = String::from_utf8_lossy(&dev.stdout).to_string();
    assert!(dev.contains("dstport 4789 "), "{dev}");
    let (a, b) = (world.pod(1, 0).clone(), world.pod(2, 0).clone());
    for (from, to) in [(&a, &b), (&b, &a)] {
        let got = probe(&from.ns, &["tcp", &to.tcp().to_string(), "--count", "2"]).expect("tcp");
        assert!(
            got.len() == 2 && got.iter().all(|g| g.id() == Some(to.id.as_str())),
            "TCP across nodes on port 4789: {got:?}"
        );
    }
}

/// The node's certificate is renewed while the agent runs (as kubelet rotates it): a new CSR signed
/// with the node's own identity, the kubeconfig replaced, the agent restarted in place to use it, the
/// node Ready throughout. Renewal is forced early with a testing flag (normally at 70 % of a year).
#[test]
fn the_node_certificate_is_renewed_while_running() {
    let mut world = ClusterWorld::with_options(
        "certrot",
        1,
        0,
        &[],
        1500,
        // The control plane backdates certificates by 5 minutes (clock skew): 6 s after issue.
        &["--renew-certificate-after-secs", "306"],
    )
    .expect("cluster");
    let kubeconfig = world.node(1).state.join("kubeconfig");
    let first = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !world.node(1).agent().log().contains("node certificate renewed") {
        assert!(
            Instant::now() < deadline,
            "no renewal:\n{}",
            world.node(1).agent().log()
        );
        sleep(Duration::from_millis(200));
    }
    // The restarted process reuses the renewed certificate (no token join again) and keeps serving.
    let deadline = Instant::now() + Duration::from_secs(15);
    while world
        .node(1)
        .agent()
        .log()
        .matches("using the node's credentials")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{}", world.node(1).agent().log());
        sleep(Duration::from_millis(200));
    }
    let renewed = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    assert_ne!(first, renewed, "a new certificate");
    assert!(!world.node(1).agent().exited(), "{}", world.node(1).agent().log());
    let csrs = world.cp.kubectl(&["get", "csr", "-o", "json"]).expect("csr");
    let csrs: serde_json::Value = serde_json::from_str(&csrs).expect("json");
    let renewals = csrs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["spec"]["username"] == "system:node:node1")
        .count();
    assert!(renewals >= 1, "a CSR made with the node's own identity: {csrs}");
    wait_ready(&world, "node1", true, Duration::from_secs(15));
}
