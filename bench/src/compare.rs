//! berth's data plane side by side with kube-proxy's iptables and nftables modes, in one run, on the
//! same namespaces, servers and client: the standard single-node world of the tests with ten backend
//! pods and one client pod per data plane. For each Service count:
//!
//! 1. rounds of berth and the ceiling, back to back: `berth-agent` programs the Services from a
//!    manifest (time to live measured in the first round); the client runs once outside the node's
//!    cgroup (per-packet TC path) and once inside it (socket LB); the agent is stopped and its pins
//!    removed (programs detached); the ceiling client loads the backends directly, with no load
//!    balancer at all (before berth in odd rounds, after it in even ones);
//! 2. the same Services as kube-proxy's iptables mode (`iptables-legacy-restore`), measured, flushed;
//! 3. the same as kube-proxy's nftables mode (`nft -f`), measured, deleted.
//!
//! Load: new TCP connections (connect + first response) to uniformly random Services, bounded in time
//! and count; and request/response round trips on one established connection.

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use berth_tests::{
    lbworld::{LbWorld, NODE_NAME, TCP_PORT},
    probe::LoadSummary,
    testbed::Netns,
    workspace_bin,
};

use crate::{
    kube_proxy::{self, Svc},
    report::Table,
    services::{SERVICE_PORT, cluster_ip},
};

/// What to run.
pub struct CompareConfig {
    pub sizes: Vec<usize>,
    pub endpoints: usize,
    pub duration: Duration,
    pub threads: usize,
    pub rtt_count: u32,
    /// Load runs per data plane and size (rounds of berth and the ceiling); medians are reported.
    pub rounds: usize,
}

/// Data planes measured per size: berth TC, berth socket LB, iptables, nftables, no LB.
const PLANES: usize = 5;

/// Columns of the tables with one value per data plane.
const PLANE_COLUMNS: [&str; 1 + PLANES] = [
    "Services",
    "berth TC",
    "berth socket LB",
    "iptables",
    "nftables",
    "no LB",
];

/// Ratios of rates measured back to back in each round (see `run`), the median over the rounds.
#[derive(Clone, Copy)]
struct Paired {
    tc_ceiling: f64,
    sock_ceiling: f64,
    sock_tc: f64,
}

/// Results of one data plane at one size.
#[derive(Clone, Copy, Default)]
struct Run {
    conns: LoadSummary,
    rtt: LoadSummary,
    program_ms: f64,
    maps_ms: f64,
}

/// One bounded load of new connections from `client` (inside the node's cgroup when `cgroup`, so the
/// socket LB translates its connects) to the addresses in `targets`.
fn load_once(
    world: &LbWorld,
    client: &Netns,
    cgroup: bool,
    targets: &Path,
    cfg: &CompareConfig,
) -> Result<LoadSummary> {
    let mut cmd = Command::new(workspace_bin("berth-probe"));
    cmd.args(["--netns", &client.name]);
    if cgroup {
        cmd.arg("--cgroup").arg(world.node_cgroup());
    }
    let out = cmd
        .arg("load")
        .arg("--targets-file")
        .arg(targets)
        .args([
            "--duration-ms",
            &cfg.duration.as_millis().to_string(),
            "--threads",
            &cfg.threads.to_string(),
        ])
        .args(["--max", "500000"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(LoadSummary::parse)
        .with_context(|| format!("load output: {text} {}", String::from_utf8_lossy(&out.stderr)))
}

/// Request/response round trips on one connection, best of three runs by p50: on 2 vCPUs they are
/// dominated by where the scheduler puts client and server (same CPU: a few us; different CPUs: an
/// idle wake-up, tens of us), so the best p50 compares like with like.
fn best_rtt(
    world: &LbWorld,
    client: &Netns,
    cgroup: bool,
    target: &str,
    cfg: &CompareConfig,
) -> Result<LoadSummary> {
    let mut best: Option<LoadSummary> = None;
    for _ in 0..3 {
        let mut cmd = Command::new(workspace_bin("berth-probe"));
        cmd.args(["--netns", &client.name]);
        if cgroup {
            cmd.arg("--cgroup").arg(world.node_cgroup());
        }
        let out = cmd
            .args(["rtt", target, "--count", &cfg.rtt_count.to_string()])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rtt = text.lines().find_map(LoadSummary::parse).with_context(|| {
            format!(
                "rtt from {} (socket LB {cgroup}): {text} {}",
                client.name,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        if best.is_none_or(|b| rtt.p50_us < b.p50_us) {
            best = Some(rtt);
        }
    }
    Ok(best.unwrap_or_default())
}

/// The load run with the median rate, with the errors of all runs summed.
fn median_run(mut runs: Vec<LoadSummary>) -> LoadSummary {
    let errors = runs.iter().map(|r| r.errors).sum();
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let mut median = runs.get(runs.len() / 2).copied().unwrap_or_default();
    median.errors = errors;
    median
}

/// The median of per-round ratios `a[i] / b[i]` (runs of the same round measured back to back).
fn paired_ratio(a: &[LoadSummary], b: &[LoadSummary]) -> f64 {
    let mut ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.rate() / y.rate().max(1e-9))
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN)
}

fn manifests(n: usize, k: usize, world: &LbWorld) -> String {
    let mut y = String::with_capacity(n * 900);
    for i in 0..n {
        y.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec:\n  clusterIP: {}\n  ports: [{{name: http, port: {SERVICE_PORT}, targetPort: {TCP_PORT}}}]\n---\n",
            cluster_ip(i)
        ));
        y.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-1, namespace: bench, labels: {{kubernetes.io/service-name: svc-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: {TCP_PORT}, protocol: TCP}}]\nendpoints:\n"
        ));
        for p in &world.pods[..k] {
            y.push_str(&format!(
                "- {{addresses: [\"{}\"], nodeName: {NODE_NAME}}}\n",
                p.ip
            ));
        }
        y.push_str("---\n");
    }
    y
}

fn took_ms(log: &str) -> f64 {
    log.lines()
        .rev()
        .find_map(|l| l.split("took_ms=").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(f64::NAN)
}

fn timed(ns: &Netns, program: &str, args: &[&str]) -> Result<f64> {
    let started = Instant::now();
    let out = ns.exec(program, args)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!("{program} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(ms)
}

/// Runs the comparison; returns the result tables.
pub fn run(cfg: &CompareConfig) -> Result<Vec<Table>> {
    let k = cfg.endpoints;
    // One identical, fresh client pod per data plane and size: TIME_WAIT sockets left by one run's
    // tens of thousands of connections must not meet the next run's NAT state (a reused port towards
    // the same Service address collides with conntrack entries of another translation).
    let mut world = LbWorld::build("bcmp", k + PLANES * cfg.sizes.len())?;
    for p in &world.pods[k..] {
        p.ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        p.ns.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
    }
    let bpffs = world.bed.bpffs_root();
    let mut rows: Vec<(usize, [Run; PLANES], Paired)> = Vec::new();
    // The ceiling: the same load straight to the backends (uniformly random), no load balancer at all.
    let direct = world.bed.scratch().join("targets-direct");
    let backends: Vec<String> = world.pods[..k]
        .iter()
        .map(|p| SocketAddr::from((p.ip, TCP_PORT)).to_string())
        .collect();
    std::fs::write(&direct, backends.join("\n"))?;
    let service_rtt = format!("{}:{SERVICE_PORT}", cluster_ip(0));
    for (size_index, &n) in cfg.sizes.iter().enumerate() {
        let first_client = k + PLANES * size_index;
        let clients: Vec<Netns> = world.pods[first_client..first_client + PLANES]
            .iter()
            .map(|p| p.ns.clone())
            .collect();
        let targets = world.bed.scratch().join(format!("targets-{n}"));
        let lines: Vec<String> = (0..n)
            .map(|i| SocketAddr::from((cluster_ip(i), SERVICE_PORT)).to_string())
            .collect();
        std::fs::write(&targets, lines.join("\n"))?;
        let svcs: Vec<Svc> = (0..n)
            .map(|i| Svc {
                name: format!("bench/svc-{i}:http"),
                ip: cluster_ip(i),
                port: SERVICE_PORT,
                endpoints: world.pods[..k].iter().map(|p| (p.ip, TCP_PORT)).collect(),
            })
            .collect();
        let yaml = manifests(n, k, &world);
        let mut loads: [Vec<LoadSummary>; PLANES] = Default::default();
        let mut rtts = [LoadSummary::default(); PLANES];
        let (mut program_ms, mut maps_ms) = (f64::NAN, f64::NAN);

        // berth and the ceiling in alternating rounds (berth's two paths in alternating order), so
        // each round's ratios compare runs made back to back: the VM's drift over minutes (the
        // ceiling alone moved 10 % between runs) cancels out of the paired ratios.
        for round in 0..cfg.rounds.max(1) {
            let ceiling_first = round % 2 == 1;
            if ceiling_first {
                loads[4].push(load_once(&world, &clients[4], false, &direct, cfg)?);
            }
            world.start_agent(true, &["--max-frontends", &(n + 4096).to_string()])?;
            world.agent().wait_frontends(0, 0, Duration::from_secs(30));
            let started = Instant::now();
            world.apply("bench.yaml", &yaml, n);
            if round == 0 {
                program_ms = started.elapsed().as_secs_f64() * 1e3;
                maps_ms = took_ms(&world.agent().log());
            }
            let order = if round % 2 == 0 {
                [(0, false), (1, true)]
            } else {
                [(1, true), (0, false)]
            };
            for (slot, cgroup) in order {
                loads[slot].push(load_once(&world, &clients[slot], cgroup, &targets, cfg)?);
                if round == 0 {
                    rtts[slot] = best_rtt(&world, &clients[slot], cgroup, &service_rtt, cfg)?;
                }
            }
            if let Some(mut agent) = world.agent.take() {
                agent.kill();
            }
            let _ = std::fs::remove_file(world.manifests.join("bench.yaml"));
            std::fs::remove_dir_all(bpffs.join(NODE_NAME))
                .context("removing berth's pins (detaches its programs)")?;
            if !ceiling_first {
                loads[4].push(load_once(&world, &clients[4], false, &direct, cfg)?);
            }
        }
        rtts[4] = best_rtt(&world, &clients[4], false, &backends[0], cfg)?;

        // kube-proxy, iptables mode
        let rules = world.bed.scratch().join("iptables.rules");
        std::fs::write(&rules, kube_proxy::iptables_restore(&svcs, "10.244.0.0/16"))?;
        let iptables_ms = timed(
            &world.node,
            "iptables-legacy-restore",
            &[&rules.display().to_string()],
        )?;
        for _ in 0..cfg.rounds.max(1) {
            loads[2].push(load_once(&world, &clients[2], false, &targets, cfg)?);
        }
        rtts[2] = best_rtt(&world, &clients[2], false, &service_rtt, cfg)?;
        let empty = world.bed.scratch().join("iptables.empty");
        std::fs::write(&empty, "*nat\nCOMMIT\n")?;
        timed(
            &world.node,
            "iptables-legacy-restore",
            &[&empty.display().to_string()],
        )?;
        // Each data plane starts from empty state (berth gets fresh maps): the baselines' TIME_WAIT
        // conntrack entries would otherwise fill the node's table (262,144) within two runs.
        timed(&world.node, "conntrack", &["-F"])?;

        // kube-proxy, nftables mode
        let nft = world.bed.scratch().join("kube-proxy.nft");
        std::fs::write(&nft, kube_proxy::nft_ruleset(&svcs, "10.244.0.0/16"))?;
        let nft_ms = timed(&world.node, "nft", &["-f", &nft.display().to_string()])?;
        for _ in 0..cfg.rounds.max(1) {
            loads[3].push(load_once(&world, &clients[3], false, &targets, cfg)?);
        }
        rtts[3] = best_rtt(&world, &clients[3], false, &service_rtt, cfg)?;
        timed(&world.node, "nft", &["delete", "table", "ip", "kube-proxy"])?;
        timed(&world.node, "conntrack", &["-F"])?;

        let paired = Paired {
            tc_ceiling: paired_ratio(&loads[0], &loads[4]),
            sock_ceiling: paired_ratio(&loads[1], &loads[4]),
            sock_tc: paired_ratio(&loads[1], &loads[0]),
        };
        let programmed = [program_ms, program_ms, iptables_ms, nft_ms, f64::NAN];
        let runs: [Run; PLANES] = std::array::from_fn(|i| Run {
            conns: median_run(std::mem::take(&mut loads[i])),
            rtt: rtts[i],
            program_ms: programmed[i],
            maps_ms: if i < 2 { maps_ms } else { f64::NAN },
        });
        for (name, r) in ["berth TC", "berth socket LB", "iptables", "nftables", "no LB"]
            .iter()
            .zip(&runs)
        {
            eprintln!(
                "{n} Services, {name}: {:.0} conn/s ({} errors), p50 {:.0} us, p99 {:.0} us; rtt p50 {:.1} us; program {:.0} ms",
                r.conns.rate(),
                r.conns.errors,
                r.conns.p50_us,
                r.conns.p99_us,
                r.rtt.p50_us,
                r.program_ms
            );
        }
        rows.push((n, runs, paired));
    }
    Ok(tables(&rows, cfg))
}

fn tables(rows: &[(usize, [Run; PLANES], Paired)], cfg: &CompareConfig) -> Vec<Table> {
    let mut rate = Table::new(
        "New connections per second (connect + first response, uniformly random Service)",
        &[
            "Services",
            "berth TC",
            "berth socket LB",
            "iptables",
            "nftables",
            "no LB (ceiling)",
            "berth TC / ceiling",
            "socket LB / ceiling",
            "socket LB / berth TC",
            "berth TC / iptables",
            "berth TC / nftables",
            "socket LB / iptables",
        ],
    );
    let mut lat = Table::new("Latency of a new connection, p50 / p99 (us)", &PLANE_COLUMNS);
    let mut rtt = Table::new(
        "Request/response on an established connection, p50 / p99 (us, best of 3 runs by p50)",
        &PLANE_COLUMNS,
    );
    let mut prog = Table::new(
        "Time to program all Services (ms)",
        &[
            "Services",
            "endpoints each",
            "berth maps",
            "berth manifest to live",
            "iptables-restore",
            "nft -f",
        ],
    );
    for (n, r, paired) in rows {
        let ratio = |a: &Run, b: &Run| format!("{:.2}x", a.conns.rate() / b.conns.rate().max(1e-9));
        rate.rows.push(vec![
            n.to_string(),
            format!("{:.0}", r[0].conns.rate()),
            format!("{:.0}", r[1].conns.rate()),
            format!("{:.0}", r[2].conns.rate()),
            format!("{:.0}", r[3].conns.rate()),
            format!("{:.0}", r[4].conns.rate()),
            format!("{:.2}x", paired.tc_ceiling),
            format!("{:.2}x", paired.sock_ceiling),
            format!("{:.2}x", paired.sock_tc),
            ratio(&r[0], &r[2]),
            ratio(&r[0], &r[3]),
            ratio(&r[1], &r[2]),
        ]);
        let pair = |s: &LoadSummary| format!("{:.0} / {:.0}", s.p50_us, s.p99_us);
        lat.rows.push(vec![
            n.to_string(),
            pair(&r[0].conns),
            pair(&r[1].conns),
            pair(&r[2].conns),
            pair(&r[3].conns),
            pair(&r[4].conns),
        ]);
        let pair1 = |s: &LoadSummary| format!("{:.1} / {:.1}", s.p50_us, s.p99_us);
        rtt.rows.push(vec![
            n.to_string(),
            pair1(&r[0].rtt),
            pair1(&r[1].rtt),
            pair1(&r[2].rtt),
            pair1(&r[3].rtt),
            pair1(&r[4].rtt),
        ]);
        prog.rows.push(vec![
            n.to_string(),
            cfg.endpoints.to_string(),
            format!("{:.0}", r[0].maps_ms),
            format!("{:.0}", r[0].program_ms),
            format!("{:.0}", r[2].program_ms),
            format!("{:.0}", r[3].program_ms),
        ]);
        let errors: u64 = r.iter().map(|x| x.conns.errors).sum();
        if errors > 0 {
            rate.notes
                .push(format!("{n} Services: {errors} failed connections in total."));
        }
    }
    rate.notes.push(
        "No LB (ceiling): the same client load straight to the backends' addresses (uniformly random), \
         no agent and no rules: what a load balancer costs is the distance to it. Goal: berth (TC and \
         socket LB) at least 0.95x of it, and the socket LB never below TC. Ratios to the ceiling and \
         socket LB / TC are paired: the median over the rounds of each round's ratio, berth and the \
         ceiling measured back to back in every round (alternating which goes first); the ratios to \
         iptables and nftables divide the medians."
            .into(),
    );
    rate.notes.push(format!(
        "Rates: the median of {} runs of {} s per data plane and size (errors summed over all runs), {} client threads in a fresh client pod per data plane and size, {} backend pods, all on a 2-CPU VM that also runs the servers.",
        cfg.rounds,
        cfg.duration.as_secs_f64(),
        cfg.threads,
        cfg.endpoints
    ));
    prog.notes.push("berth maps: the agent's own measurement of writing the maps; manifest to live: from writing the YAML (parse included) to the agent reporting the state live.".into());
    vec![rate, lat, rtt, prog]
}
