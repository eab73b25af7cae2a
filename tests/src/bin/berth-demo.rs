//! `cargo xtask demo`: berth's main job as far as it exists. Builds a local three-node cluster of
//! network namespaces on one underlay bridge, with two pods per node wired by `berth-agent pod-net add`,
//! starts `berth-agent` on every node (the eBPF VXLAN overlay, flannel-compatible; each node publishes
//! its own Node object into a manifests directory the nodes share, standing in for the API server),
//! then deploys a demo workload: a Service whose backends are spread over the three nodes. It shows
//! pod-to-pod traffic across nodes, the Service balanced across nodes from a pod and through a NodePort
//! from outside, and what the data plane holds. Everything is removed at the end.

use std::{collections::BTreeMap, process::Command, time::Duration};

use anyhow::{Context, Result};
use berth_tests::{
    lbworld::{Ep, service_yaml, slice_yaml},
    overlayworld::{OverlayWorld, TCP_PORT, UDP_PORT, probe, wait_reachable},
    probe::Attempt,
    workspace_bin,
};

const NODES: u8 = 3;

fn table(title: &str, attempts: &[Attempt]) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for a in attempts {
        *counts.entry(a.id().unwrap_or("failed").to_string()).or_default() += 1;
    }
    let mut lat: Vec<u64> = attempts
        .iter()
        .filter_map(|a| match a {
            Attempt::Ok { micros, .. } => Some(*micros),
            Attempt::Err { .. } => None,
        })
        .collect();
    lat.sort_unstable();
    let p50 = lat.get(lat.len() / 2).copied().unwrap_or(0);
    println!(
        "\n{title} ({} requests, median {p50} us per connection)",
        attempts.len()
    );
    for (id, n) in counts {
        println!("  {id:<10} {n:>4}  {}", "#".repeat(n / 4));
    }
}

fn agent_cmd(world: &OverlayWorld, args: &[&str]) -> Result<String> {
    let out = Command::new(workspace_bin("berth-agent"))
        .arg("--bpffs-root")
        .arg(world.bed.bpffs_root())
        .args(args)
        .output()
        .context("running berth-agent")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() -> Result<()> {
    println!(
        "berth demo: a {NODES}-node cluster in network namespaces (underlay bridge, 2 pods per node, an outside client)"
    );
    let mut world = OverlayWorld::with_pods("demo", usize::from(NODES), 2)
        .context("building the cluster (run as root)")?;
    let cluster = world.bed.scratch().join("cluster");
    std::fs::create_dir_all(&cluster)?;
    for i in 1..=NODES {
        world
            .start_berth_registered(i, &cluster, 100)
            .context("starting berth-agent")?;
        let n = world.node(i);
        println!(
            "  {} up: pod CIDR {}, node address {}",
            n.name,
            n.pod_cidr(),
            n.underlay
        );
    }
    let published: Vec<String> = std::fs::read_dir(&cluster)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    println!("Node objects the agents published (flannel annotations, real VTEP MACs): {published:?}");

    let (a, b) = (world.pod(1, 0).clone(), world.pod(3, 1).clone());
    wait_reachable(&a.ns, &b, Duration::from_secs(10)).context("pods across nodes")?;
    table(
        &format!(
            "pod {} (node1) -> pod {} (node3) over the eBPF VXLAN overlay",
            a.ip, b.ip
        ),
        &probe(&a.ns, &["tcp", &b.tcp().to_string(), "--count", "50"])?,
    );

    // The demo workload: one backend pod on each node.
    let backends: Vec<(String, String)> = (1..=NODES)
        .map(|i| (world.pod(i, 1).ip.to_string(), format!("node{i}")))
        .collect();
    let eps: Vec<Ep<'_>> = backends.iter().map(|(ip, node)| Ep::ready(ip, node)).collect();
    let manifest = format!(
        "{}---\n{}",
        service_yaml(
            "web",
            "10.96.0.10",
            "  type: NodePort\n",
            &[
                ("http", 80, TCP_PORT, "TCP", 30080),
                ("dns", 53, UDP_PORT, "UDP", 0)
            ]
        ),
        slice_yaml(
            "web-abc12",
            "web",
            &eps,
            &[("http", TCP_PORT, "TCP"), ("dns", UDP_PORT, "UDP")]
        )
    );
    println!("\nService and EndpointSlice written to the shared manifests directory:\n{manifest}");
    let tmp = cluster.join(".web.yaml.tmp");
    std::fs::write(&tmp, &manifest)?;
    std::fs::rename(&tmp, cluster.join("web.yaml"))?;
    for n in &mut world.nodes {
        if let Some(agent) = n.agent.as_mut() {
            agent.wait_frontends(3, 0, Duration::from_secs(10));
        }
    }
    println!(
        "berth-agent lb list --node node1:\n{}",
        agent_cmd(&world, &["lb", "list", "--node", "node1"])?
    );
    println!(
        "berth-agent lb pods --node node1:\n{}",
        agent_cmd(&world, &["lb", "pods", "--node", "node1"])?
    );

    let client = world.pod(1, 0).clone();
    table(
        "pod on node1 -> 10.96.0.10:80 (ClusterIP, backends on all three nodes)",
        &probe(&client.ns, &["tcp", "10.96.0.10:80", "--count", "300"])?,
    );
    table(
        "pod on node1 -> 10.96.0.10:53/UDP (replies from the Service address)",
        &probe(&client.ns, &["udp", "10.96.0.10:53", "--count", "100"])?,
    );
    let ext = world.bed.netns("ext")?;
    world.bed.veth(&ext, "eth0", &world.underlay, "pext")?;
    world.underlay.ip(&["link", "set", "pext", "master", "br0"])?;
    ext.ip(&["addr", "add", "192.168.60.100/24", "dev", "eth0"])?;
    table(
        "outside client -> NodePort 192.168.60.2:30080 (SNAT to node2, backends anywhere)",
        &probe(&ext, &["tcp", "192.168.60.2:30080", "--count", "300"])?,
    );
    let bulk = probe(&a.ns, &["bulk", &b.tcp().to_string(), "--bytes", "16777216"])?;
    if let Some(Attempt::Ok { micros, .. }) = bulk.first() {
        println!(
            "\n16 MiB up and 16 MiB down between nodes, byte-exact: {:.1} ms",
            *micros as f64 / 1000.0
        );
    }
    let ct = agent_cmd(&world, &["lb", "ct", "--node", "node1"])?;
    println!("\nberth-agent lb ct --node node1 (counters):");
    for line in ct.lines().filter(|l| l.starts_with("counter")) {
        println!("  {line}");
    }
    println!("\ndone; removing the cluster");
    Ok(())
}
