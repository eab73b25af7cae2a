//! The pod network between nodes: two berth nodes on an underlay bridge, pods on each; pods reach each
//! other through the eBPF-programmed VXLAN overlay (VNI 1, UDP 8472), configured from Node objects with
//! flannel's annotations. The world is `berth_tests::overlayworld` (shared with the overlay benchmark).

use std::time::Duration;

use berth_tests::{
    lbworld::{Ep, service_yaml, slice_yaml},
    overlayworld::{OverlayWorld, probe},
    probe::Attempt,
};

#[test]
fn pods_on_two_nodes_reach_each_other_over_the_overlay() {
    let mut world = OverlayWorld::with_pods("ovl", 2, 2).expect("world");
    for i in [1, 2] {
        world.write_node_manifests(i).expect("nodes manifest");
        world.start_berth(i).expect("agent");
    }
    for (from, to) in [(1, 2), (2, 1)] {
        let (src, dst) = (world.pod(from, 0), world.pod(to, 0));
        let got = probe(&src.ns, &["tcp", &dst.tcp().to_string(), "--count", "20"]).expect("probe");
        assert!(
            got.len() == 20 && got.iter().all(|a| a.id() == Some(dst.id.as_str())),
            "pod on node{from} -> pod on node{to}: {got:?}\n{}",
            world.node(from).agent_log()
        );
        if let Attempt::Ok { peer, .. } = &got[0] {
            assert!(
                peer.starts_with(&format!("{}:", src.ip)),
                "pod addresses kept end to end: {peer}"
            );
        }
        let got = probe(&src.ns, &["udp", &dst.udp().to_string(), "--count", "10"]).expect("probe");
        assert!(
            got.len() == 10 && got.iter().all(|a| a.id() == Some(dst.id.as_str())),
            "UDP across nodes: {got:?}"
        );
    }
    // Bulk data both ways between berth nodes: TCP GSO aggregates arrive at the uplink and are
    // decapsulated whole in eBPF (not left to the VXLAN device), intact.
    let before = world.counter(2, "overlay_decap_gso");
    let (src, dst) = (world.pod(1, 0), world.pod(2, 0));
    let got = probe(&src.ns, &["bulk", &dst.tcp().to_string(), "--bytes", "8388608"]).expect("bulk");
    assert!(
        got.len() == 1 && got[0].id() == Some(dst.id.as_str()),
        "bulk across the overlay: {got:?}"
    );
    assert!(
        world.counter(2, "overlay_decap_gso") > before,
        "aggregates decapsulated in eBPF on node2 during 8 MiB node1 -> node2"
    );
    // UDP GSO aggregates (one send of 8 datagrams) arrive whole too; the pod's UDP splits them into
    // their datagrams, each answered. (Decapsulated in eBPF they would keep their tunnel GSO type and
    // be split as tunnel packets: lost.)
    let got = probe(
        &src.ns,
        &[
            "udp-gso",
            &dst.udp().to_string(),
            "--segment",
            "1000",
            "--segments",
            "8",
        ],
    )
    .expect("udp-gso");
    assert!(
        got.len() == 8 && got.iter().all(|a| a.id() == Some(dst.id.as_str())),
        "UDP GSO across the overlay: {got:?}"
    );
    // Two pods of one node reach each other with the agent running (the same-node path the benchmark
    // measures).
    let (a, b) = (world.pod(1, 0), world.pod(1, 1));
    let got = probe(&a.ns, &["tcp", &b.tcp().to_string(), "--count", "10"]).expect("probe");
    assert!(
        got.len() == 10 && got.iter().all(|x| x.id() == Some(b.id.as_str())),
        "same node: {got:?}\n{}",
        world.node(1).agent_log()
    );
    // A ClusterIP on node1 whose only backend is node2's pod: translated on node1, carried by the
    // overlay, replies reverse-translated when they come back through node1's VXLAN device.
    let svc = service_yaml("web", "10.96.0.20", "", &[("http", 80, 8080, "TCP", 0)]);
    let pod2 = world.pod(2, 0).ip.to_string();
    let slice = slice_yaml(
        "web-1",
        "web",
        &[Ep::ready(&pod2, "node2")],
        &[("http", 8080, "TCP")],
    );
    world
        .write_manifest(1, "web.yaml", &format!("{svc}---\n{slice}"))
        .expect("service manifest");
    world.nodes[0]
        .agent
        .as_mut()
        .expect("agent on node1")
        .wait_frontends(1, 0, Duration::from_secs(10));
    let got = probe(&world.pod(1, 0).ns, &["tcp", "10.96.0.20:80", "--count", "20"]).expect("probe");
    let want = world.pod(2, 0).id.clone();
    assert!(
        got.len() == 20
            && got
                .iter()
                .all(|a| matches!(a, Attempt::Ok { id, from, .. } if *id == want && from == "10.96.0.20:80")),
        "cross-node Service: {got:?}\n{}",
        world.node(1).agent_log()
    );
}

#[test]
fn berth_and_flannel_nodes_carry_each_others_pod_traffic() {
    let mut world = OverlayWorld::new("flanl", 3).expect("world");
    // node3 is configured exactly as flannel configures a node; the berth nodes (node1, node2) learn it
    // from its Node object, as flannel publishes it, and it reaches them through its per-peer route,
    // neighbour and FDB entries.
    world.configure_as_flannel(3).expect("flannel node");
    for i in 1..=2 {
        world.write_node_manifests(i).expect("nodes manifest");
        world.start_berth(i).expect("agent");
    }
    // The hosts too: a berth node reaches the flannel node's pod and the other way round.
    for (from, to) in [(1, 3), (3, 1)] {
        let dst = world.pod(to, 0);
        let got = probe(&world.node(from).ns, &["tcp", &dst.tcp().to_string()]).expect("probe");
        assert!(
            got.len() == 1 && got[0].id() == Some(dst.id.as_str()),
            "node{from} (host) -> {}: {got:?}",
            dst.ip
        );
    }
    for (from, to) in [(1, 3), (3, 1), (2, 3), (3, 2), (1, 2)] {
        let (src, dst) = (world.pod(from, 0), world.pod(to, 0));
        let got = probe(&src.ns, &["tcp", &dst.tcp().to_string(), "--count", "10"]).expect("probe");
        assert!(
            got.len() == 10 && got.iter().all(|a| a.id() == Some(dst.id.as_str())),
            "{} -> {}: {got:?}\n{}",
            src.ip,
            dst.ip,
            world.node(1).agent_log()
        );
        let got = probe(&src.ns, &["udp", &dst.udp().to_string(), "--count", "5"]).expect("probe");
        assert!(
            got.len() == 5 && got.iter().all(|a| a.id() == Some(dst.id.as_str())),
            "UDP {} -> {}: {got:?}",
            src.ip,
            dst.ip
        );
        // Bulk data both ways: GSO aggregates from flannel's kernel device decapsulated by berth's
        // device, and berth's eBPF-encapsulated segments decapsulated by flannel.1.
        let got = probe(&src.ns, &["bulk", &dst.tcp().to_string(), "--bytes", "4194304"]).expect("bulk");
        assert!(
            got.len() == 1 && got[0].id() == Some(dst.id.as_str()),
            "bulk {} -> {}: {got:?}",
            src.ip,
            dst.ip
        );
    }
}
