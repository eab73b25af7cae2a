//! `cargo xtask demo`: berth's main job as far as it exists. Builds a small world of network
//! namespaces (a node, four pods, an outside client), starts `berth-agent` on the node, programs a
//! Service from a manifest, and shows requests spread over its backends through every path: socket LB,
//! per-packet TC, NodePort from outside. Everything is removed at the end.

use std::{collections::BTreeMap, net::SocketAddr, process::Command};

use anyhow::{Context, Result};
use berth_tests::{
    lbworld::{Ep, LbWorld, NODE_IP, NODE_NAME, TCP_PORT, UDP_PORT, service_yaml, slice_yaml},
    probe::Attempt,
    workspace_bin,
};

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
        println!("  {id:<8} {n:>4}  {}", "#".repeat(n / 4));
    }
}

fn main() -> Result<()> {
    println!("berth demo: building a test bed of network namespaces (node, 4 pods, external client)");
    let mut world = LbWorld::build("demo", 4).context("building the test bed (run as root)")?;
    world.start_agent(true, &[]).context("starting berth-agent")?;
    let ips: Vec<String> = world.pods[..3].iter().map(|p| p.ip.to_string()).collect();
    let eps: Vec<Ep<'_>> = ips.iter().map(|ip| Ep::ready(ip, NODE_NAME)).collect();
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
    println!("\nmanifest written to the agent's --manifests directory:\n{manifest}");
    world.apply("web.yaml", &manifest, 3);

    let list = Command::new(workspace_bin("berth-agent"))
        .arg("--bpffs-root")
        .arg(world.bed.bpffs_root())
        .args(["lb", "list", "--node", NODE_NAME])
        .output()?;
    println!("berth-agent lb list:\n{}", String::from_utf8_lossy(&list.stdout));

    let svc: SocketAddr = "10.96.0.10:80".parse()?;
    table(
        "pod3 -> 10.96.0.10:80, socket LB (connect() rewritten, no per-packet NAT)",
        &world.tcp_from_pod(3, svc, 300, true),
    );
    table(
        "pod3 -> 10.96.0.10:80, per-packet TC path (client outside the node's cgroup)",
        &world.tcp_from_pod(3, svc, 300, false),
    );
    let np = format!("{NODE_IP}:30080");
    table(
        &format!("external client -> NodePort {np}"),
        &world.probe(&world.ext, None, &["tcp", &np, "--count", "300"]),
    );
    let dns = world.probe(
        &world.pods[3].ns,
        None,
        &["udp", "10.96.0.10:53", "--count", "100"],
    );
    table(
        "pod3 -> 10.96.0.10:53/UDP (replies arrive from the Service address)",
        &dns,
    );

    let ct = Command::new(workspace_bin("berth-agent"))
        .arg("--bpffs-root")
        .arg(world.bed.bpffs_root())
        .args(["lb", "ct", "--node", NODE_NAME])
        .output()?;
    let text = String::from_utf8_lossy(&ct.stdout);
    println!("\nberth-agent lb ct (last lines):");
    for line in text.lines().rev().take(7).collect::<Vec<_>>().into_iter().rev() {
        println!("  {line}");
    }
    println!("\ndone; removing the test bed");
    Ok(())
}
