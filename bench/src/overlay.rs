//! berth's pod network beside flannel's and beside no overlay at all, in one run, on the same
//! namespaces and underlay: the overlay world of the tests (`berth_tests::overlayworld`), two nodes
//! with two pods each. Pod 0 of node 1 is the client; pod 0 of node 2 the server across nodes, pod 1
//! of node 1 the server on the same node. The nodes run in turn as:
//!
//! 1. berth nodes: `berth-agent` with the eBPF VXLAN overlay on both, default settings;
//! 2. flannel nodes: kernel VXLAN `flannel.1` with a route, neighbour and FDB entry per peer, no agent;
//!    once without masquerade, once with flannel's `--ip-masq` rules (netfilter NAT, so conntrack);
//! 3. plainly routed nodes: each pod CIDR via its node's underlay address, no encapsulation (the
//!    ceiling on this underlay).
//!
//! Same-node pod traffic is measured with the agent running (berth) and without (veth + host routing,
//! from the plain round). Between data planes both nodes are reset (agent killed, pins removed,
//! VXLAN devices and routes deleted); the order of the data planes rotates with each round so none
//! always runs first. Measured: TCP throughput (iperf3, one stream), request/response round trips on
//! one established connection (p50/p99), and new connections per second (connect + first response).
//! Everything is bounded in time and count.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use berth_tests::{
    overlayworld::{FLANNEL_DEV, OverlayPod, OverlayWorld, probe, wait_reachable},
    probe::{Attempt, LoadSummary},
    testbed::{Netns, Proc},
    workspace_bin,
};

use crate::report::Table;

/// What to run.
pub struct OverlayConfig {
    /// Seconds of each iperf3 run.
    pub iperf_secs: u32,
    /// Round trips per RTT run.
    pub rtt_count: u32,
    /// Duration of each new-connection run.
    pub load_duration: Duration,
    /// Client threads of the new-connection runs.
    pub threads: usize,
    /// Rounds over all data planes; medians (throughput, connection rate) and the best p50 (round
    /// trips) are reported.
    pub rounds: usize,
}

/// The port iperf3 serves on in the server pods.
const IPERF_PORT: &str = "5201";

/// One measurement of one path.
#[derive(Clone, Copy, Default)]
struct Sample {
    bits_per_second: f64,
    retransmits: u64,
    rtt: LoadSummary,
    conns: LoadSummary,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Plane {
    Berth,
    Flannel,
    FlannelMasq,
    Plain,
}

/// The measured paths, in table order (the order of [`Plane`]).
const CROSS: [&str; 4] = [
    "berth eBPF overlay",
    "flannel-style kernel VXLAN, no --ip-masq",
    "flannel-style kernel VXLAN with --ip-masq",
    "plain routing (no encapsulation)",
];

/// flannel's `--ip-masq` rules (its `MasqRules`: pod traffic within the cluster network is left alone,
/// pod traffic leaving it is masqueraded, outside traffic into another node's pods too), as one
/// nftables table. Any NAT rule makes netfilter track every flow of the node, the VXLAN packets too.
fn flannel_masq_rules(i: u8) -> String {
    format!(
        "table ip flannel-masq {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return
    ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
    ip saddr != 10.244.0.0/16 ip daddr 10.244.{i}.0/24 return
    ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random
  }}
}}
"
    )
}

/// Applies an nftables ruleset in `ns`.
fn nft(ns: &Netns, ruleset: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = ns
        .command(Path::new("nft"))
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(ruleset.as_bytes())?;
    ensure!(child.wait()?.success(), "nft -f failed");
    Ok(())
}
const SAME: [&str; 2] = ["berth agent running", "veth + host routing (no agent)"];

impl Plane {
    fn configure(self, world: &mut OverlayWorld) -> Result<()> {
        for i in [1, 2] {
            match self {
                Plane::Berth => {
                    world.write_node_manifests(i)?;
                    // berth as it runs by default: pod egress masquerade on (in eBPF: no netfilter
                    // conntrack on the node), manifests polled every 200 ms.
                    world.start_berth_with(i, &["--poll-ms", "200"])?;
                }
                Plane::Flannel => world.configure_as_flannel(i)?,
                Plane::FlannelMasq => {
                    world.configure_as_flannel(i)?;
                    nft(&world.node(i).ns, &flannel_masq_rules(i))?;
                }
                Plane::Plain => world.configure_plain_routing(i)?,
            }
        }
        Ok(())
    }

    /// Packets node 1 has encapsulated so far, if the plane encapsulates: berth's eBPF counter (its
    /// programs send without a device), flannel.1's transmit counter.
    fn encapsulated(self, world: &OverlayWorld) -> Result<Option<u64>> {
        match self {
            Plane::Berth => {
                let out = Command::new(workspace_bin("berth-agent"))
                    .arg("--bpffs-root")
                    .arg(world.bed.bpffs_root())
                    .args(["lb", "ct", "--node", &world.node(1).name])
                    .output()
                    .context("berth-agent lb ct")?;
                let text = String::from_utf8_lossy(&out.stdout);
                let n = text
                    .lines()
                    .find_map(|l| l.strip_prefix("counter overlay_encap = "))
                    .and_then(|v| v.trim().parse().ok())
                    .context("no overlay_encap counter")?;
                Ok(Some(n))
            }
            Plane::Flannel | Plane::FlannelMasq => Ok(Some(tx_packets(&world.node(1).ns, FLANNEL_DEV)?)),
            Plane::Plain => Ok(None),
        }
    }
}

/// `timeout` around a command, so no run outlives `limit` whatever happens to the data plane.
fn bounded(limit: Duration, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "2", &limit.as_secs().max(1).to_string()])
        .arg(program)
        .args(args);
    cmd
}

/// Runs `berth-probe --netns NS ARGS` (bounded by `limit`) and parses its summary line.
fn probe_summary(ns: &Netns, args: &[&str], limit: Duration) -> Result<LoadSummary> {
    let mut full = vec!["--netns", ns.name.as_str()];
    full.extend_from_slice(args);
    let out = bounded(limit, &workspace_bin("berth-probe"), &full).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(LoadSummary::parse).with_context(|| {
        format!(
            "berth-probe {args:?} from {}: {text} {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The number after `"key":` following `section` in iperf3's JSON output (a flat scan: the
/// `end.sum_sent` / `end.sum_received` objects hold only numbers and booleans).
fn json_number(json: &str, section: &str, key: &str) -> Option<f64> {
    let rest = &json[json.find(&format!("\"{section}\""))?..];
    let rest = &rest[rest.find(&format!("\"{key}\""))? + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// One iperf3 TCP stream from `client` to `server` for `secs`: (bits per second received, sender
/// retransmits). The server (`-s -1`: one test, then exit) is killed if still there afterwards.
fn iperf(client: &OverlayPod, server: &OverlayPod, secs: u32) -> Result<(f64, u64)> {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &server.ns.name,
        "iperf3",
        "-s",
        "-1",
        "-p",
        IPERF_PORT,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut srv = Proc {
        child: cmd.spawn().context("iperf3 server")?,
        what: "iperf3 server".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = server
            .ns
            .exec("ss", &["-Hltn", &format!("sport = :{IPERF_PORT}")])?;
        if !out.stdout.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "iperf3 server in {} not listening",
            server.ns.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let limit = Duration::from_secs(u64::from(secs) + 15);
    let out = bounded(
        limit,
        Path::new("ip"),
        &[
            "netns",
            "exec",
            &client.ns.name,
            "iperf3",
            "-c",
            &server.ip.to_string(),
            "-p",
            IPERF_PORT,
            "-t",
            &secs.to_string(),
            "--connect-timeout",
            "3000",
            "-J",
        ],
    )
    .output()?;
    srv.terminate(Duration::from_secs(2));
    let json = String::from_utf8_lossy(&out.stdout);
    if let Some(i) = json.find("\"error\"") {
        bail!(
            "iperf3 {} -> {}: {}",
            client.ip,
            server.ip,
            &json[i..json.len().min(i + 200)]
        );
    }
    let bps = json_number(&json, "sum_received", "bits_per_second")
        .with_context(|| format!("iperf3 output: {json} {}", String::from_utf8_lossy(&out.stderr)))?;
    let retransmits = json_number(&json, "sum_sent", "retransmits").unwrap_or(0.0);
    Ok((bps, retransmits as u64))
}

/// Packets sent by `dev` in `ns` so far.
fn tx_packets(ns: &Netns, dev: &str) -> Result<u64> {
    let out = ns.exec("cat", &[&format!("/sys/class/net/{dev}/statistics/tx_packets")])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Checks the path works and keeps pod addresses (no NAT on the way), then measures it.
fn measure(world: &OverlayWorld, server: &OverlayPod, targets: &Path, cfg: &OverlayConfig) -> Result<Sample> {
    let client = world.pod(1, 0);
    wait_reachable(&client.ns, server, Duration::from_secs(10))?;
    let got = probe(&client.ns, &["tcp", &server.tcp().to_string()])?;
    match got.first() {
        Some(Attempt::Ok { peer, .. }) if peer.starts_with(&format!("{}:", client.ip)) => {}
        other => bail!("{} -> {}: {other:?}", client.ip, server.ip),
    }
    let (bits_per_second, retransmits) = iperf(client, server, cfg.iperf_secs)?;
    let target = server.tcp().to_string();
    let rtt = probe_summary(
        &client.ns,
        &["rtt", &target, "--count", &cfg.rtt_count.to_string()],
        Duration::from_secs(30),
    )?;
    let conns = probe_summary(
        &client.ns,
        &[
            "load",
            "--targets-file",
            &targets.display().to_string(),
            "--duration-ms",
            &cfg.load_duration.as_millis().to_string(),
            "--threads",
            &cfg.threads.to_string(),
            "--max",
            "300000",
        ],
        cfg.load_duration + Duration::from_secs(10),
    )?;
    Ok(Sample {
        bits_per_second,
        retransmits,
        rtt,
        conns,
    })
}

fn log_sample(name: &str, s: &Sample) {
    eprintln!(
        "{name}: {:.2} Gbit/s ({} retransmits); rtt p50 {:.1} us p99 {:.1} us; {:.0} conn/s ({} errors) p50 {:.0} us",
        s.bits_per_second / 1e9,
        s.retransmits,
        s.rtt.p50_us,
        s.rtt.p99_us,
        s.conns.rate(),
        s.conns.errors,
        s.conns.p50_us
    );
}

/// Which berth was measured: the workspace's commit at run time, and whether agent/ or ebpf/ then had
/// uncommitted changes (the binaries are built from the working tree, not from the commit).
fn provenance() -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--", "agent", "ebpf"]).is_some_and(|s| !s.is_empty());
    Some(format!(
        "berth-agent and its eBPF programs: the working tree at commit {head}{}.",
        if dirty {
            ", with uncommitted changes in agent/ or ebpf/"
        } else {
            " (agent/ and ebpf/ unmodified)"
        }
    ))
}

/// Runs the comparison; returns the result tables.
pub fn run(cfg: &OverlayConfig) -> Result<Vec<Table>> {
    let mut world = OverlayWorld::with_pods("bovl", 2, 2)?;
    let client = world.pod(1, 0).clone();
    // Tens of thousands of connections per run from one client to one server: TIME_WAIT ports are
    // reused (timestamps keep that safe) and the whole port range is the client's.
    client.ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    client.ns.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
    let (cross, same) = (world.pod(2, 0).clone(), world.pod(1, 1).clone());
    let scratch = world.bed.scratch().to_path_buf();
    let targets_cross = scratch.join("targets-cross");
    let targets_same = scratch.join("targets-same");
    std::fs::write(&targets_cross, cross.tcp().to_string())?;
    std::fs::write(&targets_same, same.tcp().to_string())?;

    let mut cross_samples: [Vec<Sample>; 4] = Default::default();
    let mut same_samples: [Vec<Sample>; 2] = Default::default();
    let planes = [Plane::Berth, Plane::Flannel, Plane::FlannelMasq, Plane::Plain];
    for round in 0..cfg.rounds.max(1) {
        for k in 0..planes.len() {
            let slot = (round + k) % planes.len();
            let plane = planes[slot];
            plane.configure(&mut world)?;
            let before = plane.encapsulated(&world)?;
            let s = measure(&world, &cross, &targets_cross, cfg)
                .with_context(|| format!("{} across nodes", CROSS[slot]))?;
            if let (Some(after), Some(before)) = (plane.encapsulated(&world)?, before) {
                let sent = after - before;
                ensure!(
                    sent > 1000,
                    "{}: only {sent} packets left node 1 encapsulated",
                    CROSS[slot]
                );
            }
            log_sample(CROSS[slot], &s);
            cross_samples[slot].push(s);
            let same_slot = match plane {
                Plane::Berth => Some(0),
                Plane::Plain => Some(1),
                Plane::Flannel | Plane::FlannelMasq => None,
            };
            if let Some(j) = same_slot {
                let s = measure(&world, &same, &targets_same, cfg)
                    .with_context(|| format!("{} on one node", SAME[j]))?;
                log_sample(SAME[j], &s);
                same_samples[j].push(s);
            }
            for i in [1, 2] {
                world.reset_node(i)?;
                if plane == Plane::FlannelMasq {
                    nft(&world.node(i).ns, "delete table ip flannel-masq\n")?;
                }
            }
        }
    }
    Ok(tables(&cross_samples, &same_samples, cfg))
}

/// The aggregate of one path's rounds.
#[derive(Clone, Copy)]
struct Agg {
    /// Median, min, max throughput (bits per second).
    bps: (f64, f64, f64),
    retransmits: u64,
    /// The round trip run with the lowest p50.
    rtt: LoadSummary,
    /// The connection run with the median rate (errors summed over all rounds).
    conns: LoadSummary,
}

fn aggregate(samples: &[Sample]) -> Agg {
    let mut bps: Vec<f64> = samples.iter().map(|s| s.bits_per_second).collect();
    bps.sort_by(|a, b| a.total_cmp(b));
    let mut conns: Vec<LoadSummary> = samples.iter().map(|s| s.conns).collect();
    conns.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let rtt = samples
        .iter()
        .map(|s| s.rtt)
        .min_by(|a, b| a.p50_us.total_cmp(&b.p50_us))
        .unwrap_or_default();
    let mut median_conns = conns.get(conns.len() / 2).copied().unwrap_or_default();
    median_conns.errors = conns.iter().map(|c| c.errors).sum();
    Agg {
        bps: (
            bps.get(bps.len() / 2).copied().unwrap_or(0.0),
            bps.first().copied().unwrap_or(0.0),
            bps.last().copied().unwrap_or(0.0),
        ),
        retransmits: samples.iter().map(|s| s.retransmits).sum(),
        rtt,
        conns: median_conns,
    }
}

const HEADER: [&str; 7] = [
    "data plane",
    "TCP throughput, Gbit/s (median; min-max)",
    "retransmits",
    "round trip p50 / p99 (us)",
    "new connections/s",
    "new connection p50 / p99 (us)",
    "errors",
];

fn row(name: &str, a: &Agg) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{:.2} ({:.2}-{:.2})", a.bps.0 / 1e9, a.bps.1 / 1e9, a.bps.2 / 1e9),
        a.retransmits.to_string(),
        format!("{:.1} / {:.1}", a.rtt.p50_us, a.rtt.p99_us),
        format!("{:.0}", a.conns.rate()),
        format!("{:.0} / {:.0}", a.conns.p50_us, a.conns.p99_us),
        a.conns.errors.to_string(),
    ]
}

fn ratio_row(name: &str, a: &Agg, b: &Agg) -> Vec<String> {
    let r = |x: f64, y: f64| format!("{:.2}x", x / y.max(1e-9));
    vec![
        format!("*{name}*"),
        r(a.bps.0, b.bps.0),
        String::new(),
        format!(
            "{} / {}",
            r(a.rtt.p50_us, b.rtt.p50_us),
            r(a.rtt.p99_us, b.rtt.p99_us)
        ),
        r(a.conns.rate(), b.conns.rate()),
        format!(
            "{} / {}",
            r(a.conns.p50_us, b.conns.p50_us),
            r(a.conns.p99_us, b.conns.p99_us)
        ),
        String::new(),
    ]
}

fn tables(cross: &[Vec<Sample>; 4], same: &[Vec<Sample>; 2], cfg: &OverlayConfig) -> Vec<Table> {
    let c: Vec<Agg> = cross.iter().map(|s| aggregate(s)).collect();
    let s: Vec<Agg> = same.iter().map(|s| aggregate(s)).collect();
    let mut across = Table::new("Pod to pod across two nodes", &HEADER);
    for (name, a) in CROSS.iter().zip(&c) {
        across.rows.push(row(name, a));
    }
    across
        .rows
        .push(ratio_row("berth / flannel-style, no --ip-masq", &c[0], &c[1]));
    across
        .rows
        .push(ratio_row("berth / flannel-style with --ip-masq", &c[0], &c[2]));
    across.rows.push(ratio_row("berth / plain routing", &c[0], &c[3]));
    across.notes.extend(provenance());
    let mut local = Table::new("Pod to pod on one node", &HEADER);
    for (name, a) in SAME.iter().zip(&s) {
        local.rows.push(row(name, a));
    }
    local
        .rows
        .push(ratio_row("berth / veth + host routing", &s[0], &s[1]));
    across.notes.push(format!(
        "{} rounds over all data planes (order rotated each round), on the same namespaces and underlay; \
         both nodes reset between data planes. Throughput: one iperf3 TCP stream for {} s, median of the \
         rounds (retransmits summed). Round trips: {} request/responses on one connection, the round with \
         the lowest p50. New connections: connect + first response, {} client threads for {:.1} s, the \
         round with the median rate (errors summed). Ratios: berth's value over the baseline's (higher \
         is better for throughput and rate, lower for latency).",
        cfg.rounds.max(1),
        cfg.iperf_secs,
        cfg.rtt_count,
        cfg.threads,
        cfg.load_duration.as_secs_f64()
    ));
    across.notes.push(
        "Pods have MTU 1450 in every data plane (flannel's: the underlay's 1500 less VXLAN's 50), so all \
         carry the same segment sizes. berth runs with its defaults, pod egress masquerade included \
         (in eBPF: no netfilter table, so no conntrack on berth nodes) and \
         the manifests directory polled every 200 ms (at 50 ms, as the tests poll, the agent's wakeups \
         alone cost about 8 % of same-node throughput on this 2-CPU VM, for 0.5 % CPU). \
         flannel-style nodes run once without masquerade (no conntrack: the cheapest flannel) and once \
         with flannel's `--ip-masq` rules as nftables NAT rules (conntrack on every flow, VXLAN included: \
         flannel as deployed by default). \
         Pods are wired by `berth-agent pod-net add` in every data plane (routed /32 veth pairs); on berth \
         nodes packets for them are delivered into their namespace from eBPF (`bpf_redirect_peer`), and \
         VXLAN packets for them that are not GSO aggregates are decapsulated in eBPF at the uplink. Client, server, both nodes' data planes and the underlay \
         bridge share a 2-CPU VM (no NIC anywhere): absolute numbers describe the VM, ratios are what to read. Even a bare \
         veth pair retransmits thousands of segments per second here (reordered when the sender moves \
         between CPUs): the retransmit column is not loss in a data plane."
            .into(),
    );
    local.notes.push(
        "The same client pod to a second pod of its node. berth: the agent's programs on both pods' \
         interfaces (and the overlay set up); veth + host routing: the same pods with no agent."
            .into(),
    );
    vec![across, local]
}

#[cfg(test)]
mod tests {
    use super::json_number;

    #[test]
    fn reads_iperf3_sums() {
        let json = r#"{"end": {"streams": [{"receiver": {"bits_per_second": 1}}],
            "sum_sent": {"bytes": 10, "bits_per_second":	9.5e9, "retransmits":	3, "sender": true},
            "sum_received": {"bytes": 10, "bits_per_second":	9.25e9, "sender": true}}}"#;
        assert_eq!(json_number(json, "sum_received", "bits_per_second"), Some(9.25e9));
        assert_eq!(json_number(json, "sum_sent", "retransmits"), Some(3.0));
        assert_eq!(json_number(json, "sum_sent", "nothing"), None);
    }
}
