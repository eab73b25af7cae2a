//! The overlay as a cluster: three berth nodes with two pods each, every pod reaching every other over
//! TCP and UDP, large transfers and fragmented datagrams across nodes, nodes leaving, joining and
//! changing address while everything runs, and a NodePort reached from outside on a node without a
//! local backend.

use std::{process::Command, time::Duration};

use berth_tests::{
    lbworld::{Ep, service_yaml, slice_yaml},
    overlayworld::{OverlayPod, OverlayWorld, probe, wait_reachable},
    probe::Attempt,
    testbed::Netns,
    workspace_bin,
};

fn all_ok(got: &[Attempt], n: usize, id: &str) -> bool {
    got.len() == n && got.iter().all(|a| a.id() == Some(id))
}

fn check_pair(w: &OverlayWorld, from: &OverlayPod, to: &OverlayPod) {
    let got = probe(&from.ns, &["tcp", &to.tcp().to_string(), "--count", "2"]).expect("probe");
    assert!(
        all_ok(&got, 2, &to.id),
        "TCP {} -> {}: {got:?}\n{}",
        from.id,
        to.id,
        logs(w)
    );
    if let Attempt::Ok { peer, .. } = &got[0] {
        assert!(peer.starts_with(&format!("{}:", from.ip)), "source kept: {peer}");
    }
    let got = probe(&from.ns, &["udp", &to.udp().to_string(), "--count", "1"]).expect("probe");
    assert!(all_ok(&got, 1, &to.id), "UDP {} -> {}: {got:?}", from.id, to.id);
}

fn logs(w: &OverlayWorld) -> String {
    w.nodes
        .iter()
        .map(|n| format!("--- {} ---\n{}", n.name, n.agent_log()))
        .collect()
}

fn start_cluster(name: &str, nodes: u8, pods: usize) -> OverlayWorld {
    let mut w = OverlayWorld::with_pods(name, usize::from(nodes), pods).expect("world");
    for i in 1..=nodes {
        w.write_node_manifests(i).expect("node manifests");
        w.start_berth(i).expect("berth");
    }
    w
}

#[test]
fn three_nodes_every_pod_reaches_every_pod_with_large_transfers() {
    let w = start_cluster("ovl3", 3, 2);
    let pods: Vec<OverlayPod> = w.nodes.iter().flat_map(|n| n.pods.clone()).collect();
    for from in &pods {
        for to in pods.iter().filter(|p| p.ip != from.ip) {
            check_pair(&w, from, to);
        }
    }
    for i in 1..=3 {
        assert!(
            w.counter(i, "overlay_encap") > 0,
            "node{i} sent nothing through the eBPF overlay"
        );
        // Small packets (handshakes, ACKs, datagrams) for local pods are decapsulated in eBPF.
        assert!(
            w.counter(i, "overlay_decap") > 0,
            "node{i} decapsulated nothing in eBPF"
        );
    }
    // The nodes themselves reach every pod (as with flannel: health checks, hostNetwork pods), from
    // their VXLAN device's address, and get answers back through the overlay.
    for n in &w.nodes {
        for to in &pods {
            let got = probe(&n.ns, &["tcp", &to.tcp().to_string(), "--count", "1"]).expect("probe");
            assert!(all_ok(&got, 1, &to.id), "{} (host) -> {}: {got:?}", n.name, to.id);
        }
    }
    // Large transfers across nodes, each on a fresh connection: 8 MiB up and down, byte-exact (MTU and
    // checksums right; a black-holed full-size segment would stall and time out).
    for (a, b) in [((1, 0), (2, 1)), ((2, 0), (3, 0)), ((3, 1), (1, 1))] {
        let (from, to) = (w.pod(a.0, a.1), w.pod(b.0, b.1));
        let got = probe(
            &from.ns,
            &[
                "bulk",
                &to.tcp().to_string(),
                "--bytes",
                "8388608",
                "--count",
                "2",
            ],
        )
        .expect("bulk");
        assert!(all_ok(&got, 2, &to.id), "bulk {} -> {}: {got:?}", from.id, to.id);
        // A 4000-byte datagram leaves the pod as three IP fragments; all must cross the overlay.
        let got = probe(
            &from.ns,
            &["udp", &to.udp().to_string(), "--size", "4000", "--count", "3"],
        )
        .expect("udp");
        assert!(
            all_ok(&got, 3, &to.id),
            "fragmented UDP {} -> {}: {got:?}",
            from.id,
            to.id
        );
    }
}

fn unreachable(from: &Netns, to: &OverlayPod) -> bool {
    let got = probe(
        from,
        &[
            "tcp",
            &to.tcp().to_string(),
            "--count",
            "1",
            "--timeout-ms",
            "300",
        ],
    )
    .expect("probe");
    got.iter().all(|a| a.id().is_none())
}

fn peers_of(w: &OverlayWorld, node: u8) -> String {
    let out = Command::new(workspace_bin("berth-agent"))
        .arg("--bpffs-root")
        .arg(w.bed.bpffs_root())
        .args(["lb", "pods", "--node", &w.node(node).name])
        .output()
        .expect("berth-agent lb pods");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("peer "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn nodes_join_leave_and_move_without_restarts() {
    let mut w = OverlayWorld::new("ovlchurn", 3).expect("world");
    let two: String = w.nodes[..2]
        .iter()
        .map(|n| berth_tests::overlayworld::node_yaml(&n.name, n.index, n.underlay, &n.vtep_mac))
        .collect();
    for i in 1..=2 {
        w.write_manifest(i, "nodes.yaml", &two).expect("manifest");
        w.start_berth(i).expect("berth");
    }
    let (p1, p2, p3) = (w.pod(1, 0).clone(), w.pod(2, 0).clone(), w.pod(3, 0).clone());
    check_pair(&w, &p1, &p2);
    assert!(unreachable(&p1.ns, &p3), "node3 is not in the cluster yet");

    // node3 joins: its agent starts, the others learn it from the Node objects, nothing restarts.
    for i in 1..=3 {
        w.write_node_manifests(i).expect("manifest");
    }
    w.start_berth(3).expect("berth");
    wait_reachable(&p1.ns, &p3, Duration::from_secs(10)).expect("node1 -> node3 after join");
    for (a, b) in [(&p1, &p3), (&p3, &p1), (&p2, &p3), (&p3, &p2)] {
        check_pair(&w, a, b);
    }

    // node3 leaves: its Node object goes; the others drop it from their maps.
    for i in 1..=2 {
        w.write_manifest(i, "nodes.yaml", &two).expect("manifest");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while peers_of(&w, 1).contains("10.244.3.0/24") || peers_of(&w, 2).contains("10.244.3.0/24") {
        assert!(
            std::time::Instant::now() < deadline,
            "node3 stayed:\n{}",
            peers_of(&w, 1)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(unreachable(&p1.ns, &p3), "node3 left but is still reached");
    check_pair(&w, &p1, &p2);

    // node2 changes its underlay address: its Node object says so and node1 follows.
    let n2 = w.node(2);
    // (Old address first: removing a primary address takes its secondaries with it.)
    n2.ns
        .ip(&["addr", "del", "192.168.60.2/24", "dev", "eth0"])
        .expect("old address");
    n2.ns
        .ip(&["addr", "add", "192.168.60.12/24", "dev", "eth0"])
        .expect("new address");
    let moved = two.replace("public-ip: 192.168.60.2", "public-ip: 192.168.60.12");
    w.write_manifest(1, "nodes.yaml", &moved).expect("manifest");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !peers_of(&w, 1).contains("via 192.168.60.12") {
        assert!(std::time::Instant::now() < deadline, "{}", peers_of(&w, 1));
        std::thread::sleep(Duration::from_millis(50));
    }
    // node1's neighbour entry for the old address may still point at node2's MAC: flush it, so only
    // the new address can carry the traffic.
    w.node(1)
        .ns
        .ip(&["neigh", "flush", "192.168.60.2"])
        .expect("flush");
    wait_reachable(&p1.ns, &p2, Duration::from_secs(10)).expect("node1 -> node2 after the move");
    check_pair(&w, &p1, &p2);
    check_pair(&w, &p2, &p1);

    // node2's underlay interface gets a new MAC (same address): node1's cached next hop towards it
    // expires (NEXTHOP_TTL_NS) and the FIB's new answer carries the traffic.
    w.node(2)
        .ns
        .ip(&["link", "set", "eth0", "address", "02:00:00:00:60:12"])
        .expect("new MAC");
    w.node(1)
        .ns
        .ip(&["neigh", "flush", "192.168.60.12"])
        .expect("flush");
    wait_reachable(&p1.ns, &p2, Duration::from_secs(10)).expect("node1 -> node2 after the new MAC");
    check_pair(&w, &p1, &p2);
}

#[test]
fn node_port_on_a_node_without_local_backend_crosses_the_overlay() {
    node_port_across_the_overlay("ovlnp", &[]);
}

/// The same with the nftables masquerade fallback: node1's SNATed request walks node2's stack after
/// decapsulation (its source is no pod), so netfilter's conntrack sees it and the pod's UDP answer is a
/// reply, not a new flow to masquerade.
#[test]
fn node_port_across_the_overlay_with_the_nftables_masquerade() {
    node_port_across_the_overlay("ovlnpnft", &["--masquerade-mode", "nftables"]);
}

/// NodePort (TCP, bulk, UDP) through node1, whose only backend is node2's pod; `extra` goes to both
/// agents.
fn node_port_across_the_overlay(name: &str, extra: &[&str]) {
    let mut w = OverlayWorld::with_pods(name, 2, 1).expect("world");
    for i in 1..=2 {
        w.write_node_manifests(i).expect("node manifests");
        w.start_berth_with(i, extra).expect("berth");
    }
    // A client outside the cluster, on the underlay.
    let ext = w.bed.netns("ext").expect("ext ns");
    w.bed.veth(&ext, "eth0", &w.underlay, "pext").expect("veth");
    w.underlay
        .ip(&["link", "set", "pext", "master", "br0"])
        .expect("bridge port");
    ext.ip(&["addr", "add", "192.168.60.100/24", "dev", "eth0"])
        .expect("address");
    // The Service's only endpoint is node2's pod; node1 has none.
    let backend = w.pod(2, 0).clone();
    let svc = service_yaml(
        "web",
        "10.96.0.30",
        "  type: NodePort\n",
        &[("http", 80, 8080, "TCP", 30080), ("dns", 53, 5353, "UDP", 30053)],
    );
    let slice = slice_yaml(
        "web-1",
        "web",
        &[Ep::ready(&backend.ip.to_string(), "node2")],
        &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
    );
    for i in 1..=2 {
        w.write_manifest(i, "web.yaml", &format!("{svc}---\n{slice}"))
            .expect("manifest");
    }
    for n in &mut w.nodes {
        if let Some(agent) = n.agent.as_mut() {
            agent.wait_frontends(4, 0, Duration::from_secs(10));
        }
    }
    for node_ip in ["192.168.60.1", "192.168.60.2"] {
        let got = probe(&ext, &["tcp", &format!("{node_ip}:30080"), "--count", "20"]).expect("probe");
        assert!(
            got.len() == 20
                && got.iter().all(|a| matches!(a, Attempt::Ok { id, from, .. }
                    if *id == backend.id && *from == format!("{node_ip}:30080"))),
            "NodePort on {node_ip}: {got:?}\n{}",
            logs(&w)
        );
    }
    // Through node1 the backend sees node1's address (externalTrafficPolicy Cluster SNAT).
    let got = probe(&ext, &["tcp", "192.168.60.1:30080", "--count", "1"]).expect("probe");
    if let Attempt::Ok { peer, .. } = &got[0] {
        assert!(peer.starts_with("192.168.60.1:"), "backend saw {peer}");
    }
    let got = probe(&ext, &["bulk", "192.168.60.1:30080", "--bytes", "4194304"]).expect("bulk");
    assert!(all_ok(&got, 1, &backend.id), "bulk through the NodePort: {got:?}");
    // UDP through node1: the pod's answer goes to node1's address and must leave node2 as it is (a
    // UDP answer has no flag telling it from a new flow, so node2 must not masquerade traffic to its
    // peer nodes), or node1 cannot match it to the flow.
    let got = probe(&ext, &["udp", "192.168.60.1:30053", "--count", "10"]).expect("udp");
    assert!(
        got.len() == 10
            && got.iter().all(|a| matches!(a, Attempt::Ok { id, from, .. }
                if *id == backend.id && from == "192.168.60.1:30053")),
        "UDP NodePort across the overlay: {got:?}\n{}",
        logs(&w)
    );
}

#[test]
fn nodes_find_each_other_through_the_node_objects_they_publish() {
    let mut w = OverlayWorld::new("ovlreg", 2).expect("world");
    // One manifests directory for the whole cluster, standing in for the API server. No VTEP MAC is
    // given: each agent publishes whatever MAC its device got.
    let shared = w.bed.scratch().join("cluster");
    std::fs::create_dir_all(&shared).expect("shared dir");
    for i in 1..=2 {
        w.start_berth_registered(i, &shared, 50).expect("berth");
    }
    let (p1, p2) = (w.pod(1, 0).clone(), w.pod(2, 0).clone());
    wait_reachable(&p1.ns, &p2, Duration::from_secs(10)).expect("node1 -> node2");
    check_pair(&w, &p1, &p2);
    check_pair(&w, &p2, &p1);
    // What node2 published is its device's real MAC, in flannel's annotation.
    let link = w
        .node(2)
        .ns
        .ip(&["-o", "link", "show", "dev", "berth.1"])
        .expect("link");
    let text = String::from_utf8_lossy(&link.stdout).to_string();
    let mac = text
        .split_whitespace()
        .skip_while(|x| *x != "link/ether")
        .nth(1)
        .expect("MAC")
        .to_string();
    let published = std::fs::read_to_string(shared.join("node-node2.yaml")).expect("node2 published");
    assert!(
        published.contains(&format!("\"VtepMAC\":\"{mac}\""))
            && published.contains("flannel.alpha.coreos.com/backend-type: vxlan")
            && published.contains("podCIDR: 10.244.2.0/24"),
        "{published}"
    );
}
