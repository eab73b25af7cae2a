//! The pod network between nodes: two berth nodes on an underlay bridge, a pod on each; pods reach each
//! other through the eBPF-programmed VXLAN overlay (VNI 1, UDP 8472), configured from Node objects with
//! flannel's annotations.

use std::{net::Ipv4Addr, time::Duration};

use berth_tests::{
    agent::AgentProc,
    probe::Attempt,
    testbed::{Netns, TestBed},
    workspace_bin,
};

struct Node {
    ns: Netns,
    underlay: Ipv4Addr,
    pod_ns: Netns,
    pod_ip: Ipv4Addr,
    manifests: std::path::PathBuf,
    vtep_mac: String,
}

fn node_yaml(name: &str, index: u8, underlay: Ipv4Addr, vtep_mac: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    flannel.alpha.coreos.com/backend-type: vxlan\n    flannel.alpha.coreos.com/backend-data: '{{\"VNI\":1,\"VtepMAC\":\"{vtep_mac}\"}}'\n    flannel.alpha.coreos.com/public-ip: {underlay}\nspec:\n  podCIDR: 10.244.{index}.0/24\n---\n"
    )
}

fn build_node(bed: &mut TestBed, underlay_ns: &Netns, index: u8) -> Node {
    let ns = bed.netns(&format!("n{index}")).expect("node ns");
    ns.sysctl("net.ipv4.ip_forward", "1").expect("forwarding");
    ns.sysctl("net.ipv4.conf.all.rp_filter", "0").expect("rp_filter");
    ns.sysctl("net.ipv4.conf.default.rp_filter", "0")
        .expect("rp_filter");
    let underlay = Ipv4Addr::new(192, 168, 60, index);
    bed.veth(&ns, "eth0", underlay_ns, &format!("p{index}"))
        .expect("uplink");
    underlay_ns
        .ip(&["link", "set", &format!("p{index}"), "master", "br0"])
        .expect("bridge port");
    ns.ip(&["addr", "add", &format!("{underlay}/24"), "dev", "eth0"])
        .expect("underlay address");
    let pod_ns = bed.netns(&format!("n{index}pod")).expect("pod ns");
    let pod_ip = Ipv4Addr::new(10, 244, index, 10);
    let gw = format!("10.244.{index}.1");
    bed.veth(&ns, "vp0", &pod_ns, "eth0").expect("pod veth");
    ns.ip(&["addr", "add", &format!("{gw}/32"), "dev", "vp0"])
        .expect("gateway");
    ns.ip(&["route", "add", &format!("{pod_ip}/32"), "dev", "vp0", "src", &gw])
        .expect("pod route");
    // Other nodes' pods: routed towards the overlay device once it exists (see below).
    pod_ns
        .ip(&["link", "set", "eth0", "mtu", "1450"])
        .expect("pod mtu");
    pod_ns
        .ip(&["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"])
        .expect("pod address");
    pod_ns
        .ip(&["route", "replace", "default", "via", &gw, "dev", "eth0", "onlink"])
        .expect("pod default");
    pod_ns
        .ip(&[
            "route",
            "replace",
            "10.244.0.0/16",
            "via",
            &gw,
            "dev",
            "eth0",
            "onlink",
        ])
        .expect("pod net");
    let mut serve = pod_ns.command(&workspace_bin("berth-probe"));
    serve.args([
        "serve",
        "--id",
        &format!("pod-n{index}"),
        "--tcp",
        "8080",
        "--udp",
        "5353",
    ]);
    bed.spawn(serve, "pod server").expect("server");
    let manifests = bed.scratch().join(format!("manifests-n{index}"));
    std::fs::create_dir_all(&manifests).expect("manifests dir");
    Node {
        ns,
        underlay,
        pod_ns,
        pod_ip,
        manifests,
        vtep_mac: format!("02:be:00:00:00:{index:02x}"),
    }
}

fn probe(from: &Netns, args: &[&str]) -> Vec<Attempt> {
    let out = std::process::Command::new(workspace_bin("berth-probe"))
        .args(["--netns", &from.name])
        .args(args)
        .output()
        .expect("probe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(Attempt::parse)
        .collect()
}

#[test]
fn pods_on_two_nodes_reach_each_other_over_the_overlay() {
    let mut bed = TestBed::new("ovl");
    let underlay = bed.netns("underlay").expect("underlay ns");
    underlay
        .ip(&["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    underlay.ip(&["link", "set", "br0", "up"]).expect("bridge up");
    let nodes = [
        build_node(&mut bed, &underlay, 1),
        build_node(&mut bed, &underlay, 2),
    ];
    let all_nodes: String = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| node_yaml(&format!("node{}", i + 1), i as u8 + 1, n.underlay, &n.vtep_mac))
        .collect();
    let mut agents = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        std::fs::write(n.manifests.join("nodes.yaml"), &all_nodes).expect("nodes manifest");
        agents.push(start_berth(&bed, n, &format!("node{}", i + 1)));
    }
    for (from, to) in [(0, 1), (1, 0)] {
        let target = format!("{}:8080", nodes[to].pod_ip);
        let got = probe(&nodes[from].pod_ns, &["tcp", &target, "--count", "20"]);
        let want = format!("pod-n{}", to + 1);
        assert!(
            got.len() == 20 && got.iter().all(|a| a.id() == Some(want.as_str())),
            "pod on node{} -> pod on node{}: {got:?}\n{}",
            from + 1,
            to + 1,
            agents[from].log()
        );
        if let Attempt::Ok { peer, .. } = &got[0] {
            assert!(
                peer.starts_with(&format!("{}:", nodes[from].pod_ip)),
                "pod addresses kept end to end: {peer}"
            );
        }
        let got = probe(
            &nodes[from].pod_ns,
            &["udp", &format!("{}:5353", nodes[to].pod_ip), "--count", "10"],
        );
        assert!(
            got.iter().all(|a| a.id() == Some(want.as_str())),
            "UDP across nodes: {got:?}"
        );
    }
    // A ClusterIP on node1 whose only backend is node2's pod: translated on node1, carried by the
    // overlay, replies reverse-translated when they come back through node1's VXLAN device.
    let svc = berth_tests::lbworld::service_yaml("web", "10.96.0.20", "", &[("http", 80, 8080, "TCP", 0)]);
    let pod2 = nodes[1].pod_ip.to_string();
    let slice = berth_tests::lbworld::slice_yaml(
        "web-1",
        "web",
        &[berth_tests::lbworld::Ep::ready(&pod2, "node2")],
        &[("http", 8080, "TCP")],
    );
    let tmp = nodes[0].manifests.join(".web.tmp");
    std::fs::write(&tmp, format!("{svc}---\n{slice}")).expect("service manifest");
    std::fs::rename(&tmp, nodes[0].manifests.join("web.yaml")).expect("rename");
    agents[0].wait_frontends(1, 0, Duration::from_secs(10));
    let got = probe(&nodes[0].pod_ns, &["tcp", "10.96.0.20:80", "--count", "20"]);
    assert!(
        got.len() == 20
            && got.iter().all(
                |a| matches!(a, Attempt::Ok { id, from, .. } if id == "pod-n2" && from == "10.96.0.20:80")
            ),
        "cross-node Service: {got:?}\n{}",
        agents[0].log()
    );
    drop(agents);
}

fn start_berth(bed: &TestBed, n: &Node, name: &str) -> AgentProc {
    let args: Vec<String> = [
        "--node",
        name,
        "--node-ip",
        &n.underlay.to_string(),
        "--manifests",
        &n.manifests.display().to_string(),
        "--uplink",
        "eth0",
        "--pod-interfaces",
        "vp*",
        "--overlay-dev",
        "berth.1",
        "--vtep-mac",
        &n.vtep_mac,
        "--poll-ms",
        "50",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = AgentProc::start(&n.ns, &bed.bpffs_root(), bed.scratch(), &args).expect("agent");
    agent.wait_frontends(0, 0, Duration::from_secs(10));
    agent
}

/// Configures `n` exactly as flannel's VXLAN backend configures a node: a kernel VXLAN device
/// `flannel.1` (VNI 1, port 8472) holding the node's /32 of its pod CIDR, and for the remote node one
/// route (via the remote `.0` address, onlink), one permanent neighbour entry (that address -> remote
/// VtepMAC) and one FDB entry (VtepMAC -> remote underlay address).
fn configure_as_flannel(n: &Node, index: u8, remote_index: u8, remote: &Node) -> String {
    n.ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "dstport",
        "8472",
        "dev",
        "eth0",
        "nolearning",
    ])
    .expect("flannel.1");
    n.ns.ip(&["link", "set", "flannel.1", "mtu", "1450", "up"])
        .expect("up");
    n.ns.ip(&["addr", "add", &format!("10.244.{index}.0/32"), "dev", "flannel.1"])
        .expect("address");
    let gw = format!("10.244.{remote_index}.0");
    n.ns.ip(&[
        "route",
        "add",
        &format!("10.244.{remote_index}.0/24"),
        "via",
        &gw,
        "dev",
        "flannel.1",
        "onlink",
    ])
    .expect("route");
    n.ns.ip(&[
        "neigh",
        "add",
        &gw,
        "lladdr",
        &remote.vtep_mac,
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    ])
    .expect("neigh");
    n.ns.exec(
        "bridge",
        &[
            "fdb",
            "append",
            &remote.vtep_mac,
            "dev",
            "flannel.1",
            "dst",
            &remote.underlay.to_string(),
        ],
    )
    .expect("fdb");
    let link =
        n.ns.ip(&["-o", "link", "show", "dev", "flannel.1"])
            .expect("link");
    let text = String::from_utf8_lossy(&link.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("flannel.1 MAC")
        .to_string()
}

#[test]
fn berth_and_flannel_nodes_carry_each_others_pod_traffic() {
    let mut bed = TestBed::new("flanl");
    let underlay = bed.netns("underlay").expect("underlay ns");
    underlay
        .ip(&["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    underlay.ip(&["link", "set", "br0", "up"]).expect("bridge up");
    let berth = build_node(&mut bed, &underlay, 1);
    let flannel = build_node(&mut bed, &underlay, 2);
    let flannel_mac = configure_as_flannel(&flannel, 2, 1, &berth);
    // The berth node learns the flannel node from its Node object, as flannel publishes it.
    let nodes = format!(
        "{}{}",
        node_yaml("node1", 1, berth.underlay, &berth.vtep_mac),
        node_yaml("node2", 2, flannel.underlay, &flannel_mac)
    );
    std::fs::write(berth.manifests.join("nodes.yaml"), nodes).expect("nodes");
    let agent = start_berth(&bed, &berth, "node1");
    for (from, to, want) in [(&berth, &flannel, "pod-n2"), (&flannel, &berth, "pod-n1")] {
        let got = probe(
            &from.pod_ns,
            &["tcp", &format!("{}:8080", to.pod_ip), "--count", "10"],
        );
        assert!(
            got.len() == 10 && got.iter().all(|a| a.id() == Some(want)),
            "{} -> {}: {got:?}\n{}",
            from.pod_ip,
            to.pod_ip,
            agent.log()
        );
        let got = probe(
            &from.pod_ns,
            &["udp", &format!("{}:5353", to.pod_ip), "--count", "5"],
        );
        assert!(
            got.iter().all(|a| a.id() == Some(want)),
            "UDP {} -> {}: {got:?}",
            from.pod_ip,
            to.pod_ip
        );
    }
}
