//! `berth-bench`: runs the benchmarks and records their results (see bench/README.md).

use anyhow::Result;
use std::time::Duration;

use berth_bench::{agent_sync, compare, control_plane, headline, hostile, overlay, pods, prog_cost, report};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// Short pass with small sizes (CI); results go to target/bench-smoke/.
    #[arg(long)]
    smoke: bool,
    /// Only these benchmarks (prog, compare, overlay, controlplane, hostile, agent, pods); default all.
    #[arg(long)]
    only: Vec<String>,
    /// Override the Service counts of the comparison.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Override the seconds per data plane and size of the comparison.
    #[arg(long)]
    seconds: Option<f64>,
    /// Only regenerate README.md's headline table from bench/results/ (full runs do it at their end).
    #[arg(long)]
    headline: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let update_headline = || headline::update_readme(&root.join("../README.md"), &root.join("results"));
    if cli.headline {
        return update_headline();
    }
    let want = |name: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == name);
    if want("prog") {
        let (sizes, samples): (&[usize], usize) = if cli.smoke {
            (&[1, 1000], 2000)
        } else {
            (&[1, 1000, 10_000, 100_000], 50_000)
        };
        let tables = prog_cost::run(sizes, 10, samples)?;
        report::write(
            cli.smoke,
            "service-lb-prog.md",
            "## berth Service LB: per-packet cost of the TC program\n\nCommand: `cargo xtask bench` (prog).",
            &tables,
        )?;
    }
    if want("compare") {
        let cfg = if cli.smoke {
            compare::CompareConfig {
                sizes: vec![100],
                endpoints: 10,
                duration: Duration::from_millis(1000),
                threads: 2,
                rtt_count: 500,
                rounds: 1,
            }
        } else {
            compare::CompareConfig {
                sizes: vec![100, 1000, 10_000],
                endpoints: 10,
                duration: Duration::from_secs(3),
                threads: 2,
                rtt_count: 5000,
                rounds: 5,
            }
        };
        let mut cfg = cfg;
        if !cli.sizes.is_empty() {
            cfg.sizes = cli.sizes.clone();
        }
        if let Some(s) = cli.seconds {
            cfg.duration = Duration::from_secs_f64(s);
        }
        let tables = compare::run(&cfg)?;
        report::write(
            cli.smoke,
            "service-lb-compare.md",
            "## berth Service LB side by side with kube-proxy (iptables and nftables modes)\n\nCommand: `cargo xtask bench` (compare).",
            &tables,
        )?;
    }
    if want("overlay") {
        let cfg = if cli.smoke {
            overlay::OverlayConfig {
                iperf_secs: 1,
                rtt_count: 300,
                load_duration: Duration::from_millis(500),
                threads: 2,
                rounds: 1,
            }
        } else {
            overlay::OverlayConfig {
                iperf_secs: 5,
                rtt_count: 5000,
                load_duration: Duration::from_secs(3),
                threads: 2,
                // Runs on this VM vary by about 5 %: five rounds make the medians steadier.
                rounds: 5,
            }
        };
        let tables = overlay::run(&cfg)?;
        report::write(
            cli.smoke,
            "overlay.md",
            "## berth pod network: the eBPF overlay beside flannel-style kernel VXLAN and plain routing\n\nCommand: `cargo xtask bench` (overlay).",
            &tables,
        )?;
    }
    if want("controlplane") {
        let cfg = if cli.smoke {
            control_plane::ControlPlaneConfig {
                scheduling: vec![(100, 500)],
                api_pods: 300,
                api_nodes: 5,
                create_clients: 4,
                samples: 50,
            }
        } else {
            control_plane::ControlPlaneConfig {
                scheduling: vec![(100, 5000), (1000, 5000)],
                api_pods: 10_000,
                api_nodes: 100,
                create_clients: 8,
                samples: 1000,
            }
        };
        let tables = control_plane::run(&cfg)?;
        report::write(
            cli.smoke,
            "control-plane.md",
            "## berth control plane: scheduling throughput, API latency and memory\n\nCommand: `cargo xtask bench` (controlplane).",
            &tables,
        )?;
    }
    if want("hostile") {
        let cfg = if cli.smoke {
            hostile::HostileConfig {
                phase: Duration::from_secs(2),
                max_connections: 256,
                open_files: 192,
            }
        } else {
            hostile::HostileConfig {
                phase: Duration::from_secs(10),
                max_connections: 1024,
                open_files: 768,
            }
        };
        let table = hostile::run(&cfg)?;
        report::write(
            cli.smoke,
            "control-plane-hostile.md",
            "## berth control plane under hostile clients: memory, a well-behaved client's latency, CPU\n\nCommand: `cargo xtask bench` (hostile).",
            &[table],
        )?;
    }
    if want("agent") {
        let cfg = if cli.smoke {
            agent_sync::AgentSyncConfig {
                services: 300,
                endpoints: 10,
                changes: 200,
                writers: 4,
                idle: std::time::Duration::from_secs(3),
            }
        } else {
            agent_sync::AgentSyncConfig {
                services: 10_000,
                endpoints: 10,
                changes: 200,
                writers: 8,
                idle: std::time::Duration::from_secs(30),
            }
        };
        let tables = agent_sync::run(&cfg)?;
        report::write(
            cli.smoke,
            "agent-sync.md",
            "## berth agent following the API: initial sync, change latency, memory\n\nCommand: `cargo xtask bench` (agent).",
            &tables,
        )?;
    }
    if want("pods") {
        let cfg = if cli.smoke {
            pods::PodsConfig {
                pods: 10,
                rate: 5.0,
                idle: Duration::from_secs(3),
            }
        } else {
            pods::PodsConfig {
                pods: 100,
                rate: 5.0,
                idle: Duration::from_secs(30),
            }
        };
        let tables = pods::run(&cfg)?;
        report::write(
            cli.smoke,
            "pods.md",
            "## berth pod runtime: startup latency, agent memory and idle CPU with 100 pods\n\nCommand: `cargo xtask bench` (pods).",
            &tables,
        )?;
    }
    if !cli.smoke {
        update_headline()?;
    }
    Ok(())
}
