//! Per-packet cost of `berth_from_pod` under `BPF_PROG_TEST_RUN`, at several Service counts.
//!
//! Every sample is one `BPF_PROG_TEST_RUN` with `repeat = 1`: the program rewrites the packet in place,
//! so repeating it would measure a translated packet, not the path under test. The kernel times the
//! program run alone (its own clock reads included, a few ns). Paths:
//! - **established**: a packet of a flow that already has a conntrack entry (the common case);
//! - **new flow**: a SYN with a fresh source port: Service lookup, backend choice, two conntrack inserts;
//! - **not a Service**: pod-to-pod traffic passing through (conntrack miss, Service miss).
//!
//! The bench runs in its own network namespace (a veth with a permanent next-hop neighbour routes the
//! pod network, so the FIB lookup after translation succeeds as on a real node) with its own pins, removed at the end.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Instant};

use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use berth_common::{CFG_F_MASQUERADE, CtEntry, CtKey, NodeConfig, PROTO_TCP, ipv4_to_be, port_to_be};
use berth_datapath::{
    PinDir,
    loader::{self, Capacities},
    maps::ServiceMaps,
    programmer::ServiceProgrammer,
    service::{BackendAddr, DesiredState, Frontend, FrontendKind, FrontendSpec, LbAlgorithm, Protocol},
};
use berth_tests::testbed::TestBed;

use crate::{
    packets::{self, ACK, SYN},
    report::{Stats, Table},
    services::{SERVICE_PORT, cluster_ip},
};

/// One Service count's results (nanoseconds per packet).
pub struct ProgRow {
    pub services: usize,
    pub backends_per_service: usize,
    pub program_ms: f64,
    pub established: Stats,
    pub new_flow: Stats,
    pub miss: Stats,
    /// Timing overhead of a single (`repeat = 1`) run, included in `new_flow`.
    pub single_run_overhead: f64,
}

/// Runs per `BPF_PROG_TEST_RUN` call on repeatable paths.
const REPEAT: u32 = 1000;

/// Backend `j` of Service `i`: 10.244.0.0/16, shared between Services (as pods back several Services).
fn backend(i: usize, j: usize) -> Ipv4Addr {
    let n = (i * 7 + j) % 60_000;
    Ipv4Addr::new(10, 244, (n / 250) as u8, (n % 250) as u8 + 2)
}

/// The desired state for `n` ClusterIP Services with `k` endpoints each.
pub fn desired(n: usize, k: usize) -> DesiredState {
    let mut frontends = BTreeMap::new();
    for i in 0..n {
        let ready = (0..k)
            .map(|j| BackendAddr {
                addr: backend(i, j),
                port: 8080,
                proto: Protocol::Tcp,
                local: true,
            })
            .collect();
        frontends.insert(
            Frontend {
                addr: cluster_ip(i),
                port: SERVICE_PORT,
                proto: Protocol::Tcp,
            },
            FrontendSpec {
                service: format!("bench/svc-{i}"),
                kind: FrontendKind::ClusterIp,
                ready,
                terminating: Vec::new(),
                affinity_timeout: None,
                snat: false,
                local_drop: false,
                algorithm: LbAlgorithm::Random,
            },
        );
    }
    DesiredState { frontends }
}

/// Runs the program on `packet` `repeat` times; the kernel reports the mean time per run.
fn sample(prog: &SchedClassifier, packet: &[u8], repeat: u32) -> Result<f64> {
    let mut out = vec![0u8; packet.len() + 64];
    let opts = TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    let r = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    Ok(r.duration.as_nanos() as f64)
}

/// Cheap deterministic generator (benchmarks must not depend on a crate for randomness).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

fn measure(sizes: &[usize], k: usize, samples: usize, bed: &TestBed) -> Result<Vec<ProgRow>> {
    let mut rows = Vec::new();
    let client = Ipv4Addr::new(10, 244, 250, 7);
    for &n in sizes {
        let pins = PinDir::new(&bed.bpffs_root(), &format!("prog{n}"));
        let caps = Capacities {
            frontends: (n as u32).max(1024) + 1024,
            service_slots: 1024,
            backends: 65_536,
            conntrack: berth_common::capacity::CONNTRACK,
        };
        let mut ebpf = loader::load(&pins, &caps)?;
        // A node's settings as the agent writes them by default: the cluster's pod network known (so
        // pod-to-pod traffic takes its real path) and the eBPF masquerade on.
        berth_datapath::maps::write_node_config(
            &pins,
            NodeConfig {
                snat_addr: ipv4_to_be([192, 168, 50, 1]),
                snat_port_min: 61_000,
                snat_port_max: 65_535,
                cluster_net: ipv4_to_be([10, 244, 0, 0]),
                cluster_mask: ipv4_to_be([255, 255, 0, 0]),
                flags: CFG_F_MASQUERADE,
                ..NodeConfig::default()
            },
        )?;
        let mut programmer = ServiceProgrammer::restore(ServiceMaps::open(&pins)?)?;
        let mut maps = ServiceMaps::open(&pins)?;
        let state = desired(n, k);
        let started = Instant::now();
        programmer.apply(&state, true)?;
        let program_ms = started.elapsed().as_secs_f64() * 1e3;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(loader::programs::FROM_POD)
            .context("program")?
            .try_into()?;
        let mut rng = Lcg(n as u64 + 1);
        // Established: open flows to random Services. The program rewrites the packet in place, so to
        // repeat the established path on one packet each flow also gets a mirror entry that translates
        // the rewritten packet back: every run is then a conntrack hit with a full rewrite and redirect.
        let flows = (samples / 100).clamp(16, 512);
        let mut open = Vec::with_capacity(flows);
        for f in 0..flows {
            let svc = cluster_ip(rng.next(n));
            let sport = 10_000 + f as u16;
            sample(prog, &packets::tcp(client, svc, sport, SERVICE_PORT, SYN), 1)?;
            let key = CtKey {
                saddr: ipv4_to_be(client.octets()),
                daddr: ipv4_to_be(svc.octets()),
                sport: port_to_be(sport),
                dport: port_to_be(SERVICE_PORT),
                proto: PROTO_TCP,
                pad: [0; 3],
            };
            let fwd = maps
                .conntrack
                .get(&key, 0)
                .context("conntrack entry of a new flow")?;
            let mirror_key = CtKey {
                daddr: fwd.nat_daddr,
                dport: fwd.nat_dport,
                ..key
            };
            let mirror = CtEntry {
                nat_saddr: key.saddr,
                nat_daddr: key.daddr,
                nat_sport: key.sport,
                nat_dport: key.dport,
                last_seen_ns: fwd.last_seen_ns,
                ..CtEntry::default()
            };
            maps.conntrack
                .insert(mirror_key, mirror, 0)
                .context("mirror entry")?;
            open.push(packets::tcp(client, svc, sport, SERVICE_PORT, ACK));
        }
        let repeat = REPEAT;
        let mut est = Vec::with_capacity(flows);
        for pkt in &open {
            est.push(sample(prog, pkt, repeat)?);
        }
        // Not a Service: pod-to-pod traffic passing through untouched (repeatable as is).
        let mut miss = Vec::with_capacity(flows);
        let mut miss_single = Vec::with_capacity(flows);
        for f in 0..flows {
            let pkt = packets::tcp(client, backend(rng.next(n), 0), 20_000 + f as u16, 8080, ACK);
            miss.push(sample(prog, &pkt, repeat)?);
            miss_single.push(sample(prog, &pkt, 1)?);
        }
        // New flow: one run per fresh tuple, so `repeat = 1`; the kernel's timing of a single run
        // includes its own clock reads, estimated from the not-a-Service path run both ways.
        let mut new = Vec::with_capacity(samples);
        for s in 0..samples {
            let src = Ipv4Addr::new(10, 245, (s / 50_000) as u8, 1);
            let pkt = packets::tcp(
                src,
                cluster_ip(rng.next(n)),
                1024 + (s % 50_000) as u16,
                SERVICE_PORT,
                SYN,
            );
            new.push(sample(prog, &pkt, 1)?);
        }
        let miss_stats = Stats::of(&mut miss);
        let overhead = (Stats::of(&mut miss_single).p50 - miss_stats.p50).max(0.0);
        rows.push(ProgRow {
            services: n,
            backends_per_service: k,
            program_ms,
            established: Stats::of(&mut est),
            new_flow: Stats::of(&mut new),
            miss: miss_stats,
            single_run_overhead: overhead,
        });
        drop(programmer);
        drop(ebpf);
        let _ = std::fs::remove_dir_all(pins.path());
    }
    Ok(rows)
}

/// Runs the benchmark at `sizes` Services with `k` endpoints each, `samples` packets per path.
pub fn run(sizes: &[usize], k: usize, samples: usize) -> Result<Table> {
    let mut bed = TestBed::new("bprog");
    let ns = bed.netns("node")?;
    let peer = bed.netns("peer")?;
    bed.veth(&ns, "pods", &peer, "eth0")?;
    ns.ip(&["addr", "add", "10.1.0.1/24", "dev", "pods"])?;
    ns.ip(&[
        "neigh",
        "add",
        "10.1.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "pods",
        "nud",
        "permanent",
    ])?;
    ns.ip(&["route", "add", "10.244.0.0/16", "via", "10.1.0.2", "dev", "pods"])?;
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    let sizes = sizes.to_vec();
    let rows = std::thread::scope(|s| {
        s.spawn(|| -> Result<Vec<ProgRow>> {
            // The test run uses the calling thread's network namespace (its loopback device and FIB).
            berth_datapath::netns::enter(&ns.name)?;
            measure(&sizes, k, samples, &bed)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
    })?;
    let mut table = Table::new(
        "TC program cost per packet (BPF_PROG_TEST_RUN, ns)",
        &[
            "Services",
            "endpoints each",
            "program maps (ms)",
            "established p50",
            "established p99",
            "new flow p50 (raw)",
            "new flow p50 (net of timing)",
            "not a Service p50",
        ],
    );
    for r in &rows {
        table.rows.push(vec![
            r.services.to_string(),
            r.backends_per_service.to_string(),
            format!("{:.0}", r.program_ms),
            format!("{:.0}", r.established.p50),
            format!("{:.0}", r.established.p99),
            format!("{:.0}", r.new_flow.p50),
            format!("{:.0}", r.new_flow.p50 - r.single_run_overhead),
            format!("{:.0}", r.miss.p50),
        ]);
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let flat = |a: f64, b: f64| (b - a) / a * 100.0;
        table.notes.push(format!(
            "From {} to {} Services: established p50 {:+.1} %, new flow p50 {:+.1} %. Goal: under 100 ns per packet, flat within 10 %.",
            first.services,
            last.services,
            flat(first.established.p50, last.established.p50),
            flat(first.new_flow.p50, last.new_flow.p50)
        ));
    }
    drop(bed);
    Ok(table)
}
