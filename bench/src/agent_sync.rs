//! The agent following the API: `berth-control-plane` holding N Services with 10 endpoints each (a
//! hand-written EndpointSlice per Service), and one agent in kube-proxy-replacement mode
//! (`--kubeconfig`) on a node namespace. Measured:
//!
//! - initial sync: from starting the agent to every frontend programmed (its status file), and the
//!   apply alone (the agent's own `took_ms`);
//! - change latency: from sending an EndpointSlice update (an endpoint added, then removed again) to
//!   the Service's header in the pinned `BERTH_FRONTENDS` map carrying the new count, polled every 50 µs;
//! - the agent's resident memory once it follows everything.
//!
//! The writes are made from a thread inside the control plane's namespace (its address is reachable
//! only there and from the nodes); pinned maps are read the same way from anywhere.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use berth_common::{FrontendKey, ipv4_to_be, port_to_be};
use berth_datapath::{PinDir, maps::ServiceMaps, netns};
use berth_tests::{agent::AgentProc, clusterworld::ClusterWorld};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

use crate::report::{Stats, Table};

/// Sizes of one run.
pub struct AgentSyncConfig {
    pub services: usize,
    pub endpoints: usize,
    /// Updates measured (each an add and a remove).
    pub changes: usize,
    /// Concurrent writers while populating.
    pub writers: usize,
    /// How long the agent's CPU is measured with nothing changing.
    pub idle: Duration,
}

const NODE: &str = "node1";

fn cluster_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 100, (k / 256) as u8, (k % 256) as u8)
}

fn endpoint_ip(k: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200 + j as u8, (k / 256) as u8, (k % 256) as u8)
}

fn service(k: usize) -> Result<Service> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{k}"), "namespace": "default"},
        "spec": {"clusterIP": cluster_ip(k).to_string(), "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))?)
}

fn endpoints(k: usize, n: usize) -> serde_json::Value {
    json!((0..n)
        .map(|j| json!({"addresses": [endpoint_ip(k, j).to_string()], "conditions": {"ready": true}, "nodeName": "elsewhere"}))
        .collect::<Vec<_>>())
}

fn slice(k: usize, n: usize) -> Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{k}-1"), "namespace": "default", "labels": {"kubernetes.io/service-name": format!("svc-{k}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints(k, n)
    }))?)
}

/// Runs the benchmark; one table.
pub fn run(cfg: &AgentSyncConfig) -> Result<Vec<Table>> {
    if cfg.services > 200 * 256 || cfg.endpoints > 50 {
        bail!("at most 51,200 Services and 50 endpoints each (address plan)");
    }
    let mut world = ClusterWorld::new("bagent", 0, 0, &[]).map_err(|e| anyhow!("{e}"))?;
    world.add_node(1).map_err(|e| anyhow!("{e}"))?;
    let kubeconfig = world.cp.dir.join("admin.kubeconfig");
    let cp_ns = world.cp.ns.name.clone();

    let started = Instant::now();
    in_netns(&cp_ns, || populate(&kubeconfig, cfg))?;
    let populate_s = started.elapsed().as_secs_f64();
    println!(
        "agent sync: {} Services x {} endpoints written in {populate_s:.1} s",
        cfg.services, cfg.endpoints
    );

    let state = world.node(1).state.clone();
    let args: Vec<String> = [
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--node",
        NODE,
        "--state-dir",
        &state.display().to_string(),
        "--masquerade",
        "false",
    ]
    .map(str::to_string)
    .to_vec();
    let total = cfg.services + 1; // and the kubernetes Service
    let bpffs = world.bed.bpffs_root();
    let ns = world.node(1).ns.clone();
    let scratch = world.bed.scratch().to_path_buf();
    let t0 = Instant::now();
    let mut agent = AgentProc::start(&ns, &bpffs, &scratch, &args).map_err(|e| anyhow!("{e}"))?;
    loop {
        if agent.status().is_some_and(|(_, n)| n == total) {
            break;
        }
        if agent.exited() || t0.elapsed() > Duration::from_secs(120) {
            bail!("the agent did not program {total} frontends:\n{}", agent.log());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let initial = t0.elapsed();
    let apply_ms = agent
        .log()
        .lines()
        .find(|l| l.contains("Services synced"))
        .and_then(|l| l.split("took_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN);

    let pins = PinDir::new(&bpffs, NODE);
    let (adds, removes) = in_netns(&cp_ns, || measure_changes(&kubeconfig, &pins, cfg))?;
    let rss = agent.pid().map(rss_mib).transpose()?.unwrap_or(f64::NAN);
    // Idle: everything followed, nothing changing (watches open, conntrack GC and renewals on
    // their timers).
    let idle_cpu = match agent.pid() {
        Some(pid) => {
            std::thread::sleep(Duration::from_secs(2));
            let before = crate::pods::cpu_seconds(pid)?;
            std::thread::sleep(cfg.idle);
            (crate::pods::cpu_seconds(pid)? - before) / cfg.idle.as_secs_f64() * 100.0
        }
        None => f64::NAN,
    };

    let mut adds = adds;
    let mut removes = removes;
    let mut all: Vec<f64> = adds.iter().chain(removes.iter()).copied().collect();
    let (a, r, both) = (Stats::of(&mut adds), Stats::of(&mut removes), Stats::of(&mut all));
    let mut table = Table::new(
        &format!(
            "Agent following the API: {} Services x {} endpoints (kube-proxy replacement mode)",
            cfg.services, cfg.endpoints
        ),
        &["measure", "p50", "p99", "goal"],
    );
    table.rows.push(vec![
        "initial sync, agent start to all frontends programmed".into(),
        format!("{:.0} ms", initial.as_secs_f64() * 1e3),
        "-".into(),
        "< 2 s".into(),
    ]);
    table.rows.push(vec![
        "  of which the first apply into the maps".into(),
        format!("{apply_ms:.0} ms"),
        "-".into(),
        "-".into(),
    ]);
    for (label, s) in [
        ("EndpointSlice update to map: endpoint added", a),
        ("EndpointSlice update to map: endpoint removed", r),
        ("EndpointSlice update to map: all", both),
    ] {
        table.rows.push(vec![
            format!("{label} (n = {})", s.n),
            format!("{:.1} ms", s.p50),
            format!("{:.1} ms", s.p99),
            "p99 < 50 ms".into(),
        ]);
    }
    table.rows.push(vec![
        "agent resident memory following everything".into(),
        format!("{rss:.1} MiB"),
        "-".into(),
        "< 64 MiB".into(),
    ]);
    table.rows.push(vec![
        format!(
            "agent CPU while idle, following everything ({} s)",
            cfg.idle.as_secs()
        ),
        format!("{idle_cpu:.2} % of a core"),
        "-".into(),
        "< 1 %".into(),
    ]);
    table.notes.push(format!(
        "The control plane, the agent and the writer share a 2-CPU VM. Latency is from sending the PATCH (over HTTPS, from the control plane's namespace) until the pinned BERTH_FRONTENDS header shows the new count: API write, watch delivery, the recomputation of the changed Service, the programmer's comparison of all {} frontends, the map writes. Populating took {populate_s:.1} s with {} writers.",
        total, cfg.writers
    ));
    table.notes.push(
        "Memory, how it came under the goal (measured with `cargo run --release -p berth-agent --example memory_profile -- 10000 10`, which counts the heap): the stores hold slim mirrors of the API types (agent/src/model.rs; 115 MiB resident with the full k8s-openapi structs, 81 MiB with the mirrors); every object is trimmed on arrival to the name and namespace of its metadata (labels, annotations, uids, resource versions dropped; an EndpointSlice's Service name kept in a field: 37 -> 25 MiB of heap in the stores); an endpoint holds its first address as four bytes and a shared node name, as kube-proxy reads only the first address (25 -> 20 MiB); the incremental state keeps one entry per Service instead of four indexes (12 -> 5.5 MiB). About 19 MiB is the baseline of an agent following nothing (runtime, TLS, the loaded eBPF object)."
            .into(),
    );
    println!("{}", table.markdown());
    drop(agent);
    Ok(vec![table])
}

/// Runs `f` on a thread inside network namespace `ns`.
pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter(ns).with_context(|| format!("entering {ns}"))?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("the benchmark thread panicked"))?
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) async fn client(kubeconfig: &Path) -> Result<Client> {
    let config =
        Config::from_custom_kubeconfig(Kubeconfig::read_from(kubeconfig)?, &KubeConfigOptions::default())
            .await?;
    Ok(Client::try_from(config)?)
}

fn populate(kubeconfig: &Path, cfg: &AgentSyncConfig) -> Result<()> {
    runtime()?.block_on(async {
        let client = client(kubeconfig).await?;
        let mut tasks = Vec::new();
        for w in 0..cfg.writers {
            let client = client.clone();
            let (services, endpoints, writers) = (cfg.services, cfg.endpoints, cfg.writers);
            tasks.push(tokio::spawn(async move {
                let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
                let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
                let pp = PostParams::default();
                for k in (w..services).step_by(writers) {
                    svcs.create(&pp, &service(k)?).await?;
                    slices.create(&pp, &slice(k, endpoints)?).await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    })
}

/// Reads the count of ready backends in the header of Service `k`'s frontend.
fn header_count(maps: &ServiceMaps, k: usize) -> Option<u16> {
    let key = FrontendKey {
        addr: ipv4_to_be(cluster_ip(k).octets()),
        port: port_to_be(80),
        proto: berth_common::PROTO_TCP,
        pad: 0,
    };
    maps.frontends.get(&key, 0).ok().map(|v| v.header.count)
}

/// For `cfg.changes` Services (spread over all): one endpoint added, then removed; the time until the
/// map shows each. Returns (adds, removes) in milliseconds.
fn measure_changes(kubeconfig: &Path, pins: &PinDir, cfg: &AgentSyncConfig) -> Result<(Vec<f64>, Vec<f64>)> {
    let maps = ServiceMaps::open(pins)?;
    runtime()?.block_on(async {
        let slices: Api<EndpointSlice> = Api::namespaced(client(kubeconfig).await?, "default");
        let (mut adds, mut removes) = (Vec::new(), Vec::new());
        let stride = (cfg.services / cfg.changes.max(1)).max(1);
        for i in 0..cfg.changes {
            let k = (i * stride + i % 7) % cfg.services;
            for (n, out) in [(cfg.endpoints + 1, &mut adds), (cfg.endpoints, &mut removes)] {
                let patch = json!({"endpoints": endpoints(k, n)});
                let t0 = Instant::now();
                slices
                    .patch(
                        &format!("svc-{k}-1"),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                loop {
                    if header_count(&maps, k) == Some(n as u16) {
                        out.push(t0.elapsed().as_secs_f64() * 1e3);
                        break;
                    }
                    if t0.elapsed() > Duration::from_secs(10) {
                        bail!("Service {k} never showed {n} endpoints in the map");
                    }
                    tokio::time::sleep(Duration::from_micros(50)).await;
                }
            }
        }
        Ok((adds, removes))
    })
}

pub(crate) fn rss_mib(pid: u32) -> Result<f64> {
    proc_mib(pid, "status", "VmRSS:")
}

/// A `KEY: N kB` line of `/proc/PID/FILE`, in MiB.
pub(crate) fn proc_mib(pid: u32, file: &str, key: &str) -> Result<f64> {
    let text = std::fs::read_to_string(PathBuf::from(format!("/proc/{pid}/{file}")))?;
    let kib: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/{file}"))?;
    Ok(kib / 1024.0)
}
