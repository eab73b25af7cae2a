//! Per-packet cost of `berth_from_pod` under `BPF_PROG_TEST_RUN`, at several Service counts.
//!
//! The program rewrites the packet in place, so a repeated run would see the translated packet. Paths:
//! - **established**: a packet of a flow that already has a conntrack entry (the common case); each
//!   measured flow also gets a mirror entry that translates the rewritten packet back, so `repeat` runs
//!   alternate between the two entries and every run is the real established path;
//! - **new flow**: a SYN with a fresh source port: Service lookup, backend choice, two conntrack
//!   inserts; one run per call (`repeat = 1`), so the kernel's timing includes its clock reads;
//! - **not a Service**: pod-to-pod traffic passing through (conntrack miss, Service miss).
//!
//! The bench runs in its own network namespace with its own pins, removed at the end. A veth with a
//! permanent next-hop neighbour routes the pod network and the ClusterIP range, so the FIB lookup after
//! translation succeeds as on a real node, in both directions of a mirrored flow (a real reply's
//! destination, a client pod, is routed; without the ClusterIP route every other established run
//! paid a failed FIB lookup that no real packet pays). [`crate::floor`] measures what the machine
//! costs before the program does anything, reported beside.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Instant};

use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use berth_common::{CFG_F_MASQUERADE, CtEntry, CtKey, NodeConfig, PROTO_TCP, ipv4_to_be, names, port_to_be};
use berth_datapath::{
    PinDir,
    loader::{self, Capacities},
    maps::ServiceMaps,
    programmer::ServiceProgrammer,
    service::{BackendAddr, DesiredState, Frontend, FrontendKind, FrontendSpec, LbAlgorithm, Protocol},
};
use berth_tests::testbed::TestBed;

use crate::{
    floor,
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
    /// Kernel memory (fdinfo `memlock`) of the maps that grow with Services (frontends, outer slots,
    /// Maglev tables; allocated per element) with this many Services programmed.
    pub service_map_bytes: u64,
    /// Timing overhead of a single (`repeat = 1`) run, included in `new_flow`.
    pub single_run_overhead: f64,
}

/// Title of the floors table, and the first cells of its rows (the headline reads them).
pub const FLOORS: &str = "What this machine costs before the program does anything";
pub const FLOOR_EMPTY_REPEATED: &str = "empty TC program";
pub const FLOOR_EMPTY_SINGLE: &str = "empty TC program, single run";
pub const FLOOR_CT_OPS: &str = "conntrack work of a new flow";
pub const FLOOR_CT_OPS_SINGLE: &str = "conntrack work of a new flow, single run, net of timing";
pub const FLOOR_CACHED_LOAD: &str = "load that hits a cache";
pub const FLOOR_COLD_LOAD: &str = "load that misses every cache";

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

/// Kernel memory of the map pinned as `name` (the `memlock` line of its fdinfo: the whole map for
/// preallocated ones, the elements in use for `BPF_F_NO_PREALLOC` ones).
fn memlock(pins: &PinDir, name: &str) -> Result<u64> {
    use std::os::fd::{AsFd, AsRawFd};
    let map = aya::maps::MapData::from_pin(pins.map(name)).with_context(|| format!("open {name}"))?;
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no memlock for {name}"))
}

/// How the choice of backend holds when one of 10 backends leaves: the same flows balanced before and
/// after, with conntrack flushed in between (as on a node that never saw them, or once their entries
/// expired). Returns (algorithm, share of the remaining backends' flows that moved, share of all
/// flows that moved).
fn persistence(bed: &TestBed, flows: usize) -> Result<Vec<(&'static str, f64, f64)>> {
    let mut out = Vec::new();
    for (name, algorithm) in [("Maglev", LbAlgorithm::Maglev), ("random", LbAlgorithm::Random)] {
        let pins = PinDir::new(&bed.bpffs_root(), &format!("persist-{name}"));
        let mut ebpf = loader::load(&pins, &Capacities::default())?;
        let mut programmer = ServiceProgrammer::restore(ServiceMaps::open(&pins)?)?;
        let mut maps = ServiceMaps::open(&pins)?;
        let mut state = desired(1, 10);
        for spec in state.frontends.values_mut() {
            spec.algorithm = algorithm;
        }
        programmer.apply(&state, true)?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(loader::programs::FROM_POD)
            .context("program")?
            .try_into()?;
        let svc = cluster_ip(0);
        let choose = |prog: &SchedClassifier| -> Result<Vec<[u8; 6]>> {
            (0..flows)
                .map(|f| {
                    let src = Ipv4Addr::new(10, 245, (f / 250) as u8, (f % 250) as u8 + 1);
                    let pkt = packets::tcp(src, svc, 1024 + (f % 60_000) as u16, SERVICE_PORT, SYN);
                    let out = run_out(prog, &pkt)?;
                    // Destination address and port as translated.
                    let mut backend = [0u8; 6];
                    backend[..4].copy_from_slice(&out[30..34]);
                    backend[4..].copy_from_slice(&out[36..38]);
                    Ok(backend)
                })
                .collect()
        };
        let before = choose(prog)?;
        let removed = {
            let spec = state.frontends.values_mut().next().context("frontend")?;
            let gone = spec.ready.pop().context("backend")?;
            let mut b = [0u8; 6];
            b[..4].copy_from_slice(&gone.addr.octets());
            b[4..].copy_from_slice(&gone.port.to_be_bytes());
            b
        };
        programmer.apply(&state, true)?;
        let keys: Vec<CtKey> = maps.conntrack.keys().filter_map(|k| k.ok()).collect();
        for k in &keys {
            let _ = maps.conntrack.remove(k);
        }
        let after = choose(prog)?;
        let stayed: Vec<usize> = (0..flows).filter(|&i| before[i] != removed).collect();
        let moved_remaining = stayed.iter().filter(|&&i| after[i] != before[i]).count();
        let moved_all = (0..flows).filter(|&i| after[i] != before[i]).count();
        out.push((
            name,
            moved_remaining as f64 / stayed.len().max(1) as f64,
            moved_all as f64 / flows as f64,
        ));
        drop(programmer);
        drop(ebpf);
        let _ = std::fs::remove_dir_all(pins.path());
    }
    Ok(out)
}

/// Runs the program once on `packet` and returns the packet as it left.
fn run_out(prog: &SchedClassifier, packet: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; packet.len() + 64];
    let opts = TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    };
    prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    Ok(out)
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
pub(crate) struct Lcg(pub(crate) u64);
impl Lcg {
    pub(crate) fn next(&mut self, n: usize) -> usize {
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
        let service_map_bytes = memlock(&pins, names::FRONTENDS)?
            + memlock(&pins, names::SLOTS)?
            + memlock(&pins, names::MAGLEV)?;
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
            service_map_bytes,
            single_run_overhead: overhead,
        });
        drop(programmer);
        drop(ebpf);
        let _ = std::fs::remove_dir_all(pins.path());
    }
    Ok(rows)
}

/// Runs the benchmark at `sizes` Services with `k` endpoints each, `samples` packets per path: the
/// cost table, then flow persistence when a backend leaves, then map memory.
pub fn run(sizes: &[usize], k: usize, samples: usize) -> Result<Vec<Table>> {
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
    ns.ip(&["route", "add", "10.96.0.0/12", "via", "10.1.0.2", "dev", "pods"])?;
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    let sizes = sizes.to_vec();
    let (rows, moves, ct_bytes, harness, ct_ops) = std::thread::scope(|s| {
        s.spawn(|| -> Result<_> {
            // The test run uses the calling thread's network namespace (its loopback device and FIB).
            berth_datapath::netns::enter(&ns.name)?;
            let packet = packets::tcp(
                Ipv4Addr::new(10, 244, 250, 7),
                Ipv4Addr::new(10, 244, 1, 2),
                20_000,
                8080,
                ACK,
            );
            let harness = floor::harness(&packet, REPEAT, (samples / 100).clamp(16, 512))?;
            // As many flows as the new-flow path below inserts, so both fill their maps alike.
            let ct_ops = floor::conntrack_ops(&packet, REPEAT, (samples / REPEAT as usize).max(2), samples)?;
            let rows = measure(&sizes, k, samples, &bed)?;
            let moves = persistence(&bed, (samples / 5).clamp(1000, 10_000))?;
            let pins = PinDir::new(&bed.bpffs_root(), "memory");
            let ebpf = loader::load(&pins, &Capacities::default())?;
            let ct_bytes = memlock(&pins, names::CONNTRACK)?;
            drop(ebpf);
            let _ = std::fs::remove_dir_all(pins.path());
            Ok((rows, moves, ct_bytes, harness, ct_ops))
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
            "Service maps (KiB)",
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
            format!("{:.0}", r.service_map_bytes as f64 / 1024.0),
        ]);
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let flat = |a: f64, b: f64| (b - a) / a * 100.0;
        table.notes.push(format!(
            "From {} to {} Services: established p50 {:+.1} %, new flow p50 {:+.1} %. Goal: under 100 ns per packet, flat within 10 % (an empty program costs {:.0} ns per run in the same harness).",
            first.services,
            last.services,
            flat(first.established.p50, last.established.p50),
            flat(first.new_flow.p50, last.new_flow.p50),
            harness.repeated,
        ));
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && last.services > first.services
    {
        table.notes.push(format!(
            "Service maps grow by {:.0} bytes per Service of {k} endpoints (frontend value with 16 inline backend slots, kernel element overhead included; preallocated maps not counted: see the memory table).",
            (last.service_map_bytes - first.service_map_bytes) as f64
                / (last.services - first.services) as f64
        ));
    }
    let mut persist = Table::new(
        "Flows that change backend when 1 of 10 backends leaves (same flows, conntrack flushed)",
        &[
            "algorithm",
            "flows of the other 9 backends moved",
            "all flows moved",
        ],
    );
    for (name, remaining, all) in &moves {
        persist.rows.push(vec![
            name.to_string(),
            format!("{:.1} %", remaining * 100.0),
            format!("{:.1} %", all * 100.0),
        ]);
    }
    persist.notes.push(
        "Ideal: 0 % of the other backends' flows and 10 % of all (the leaving backend's own). Maglev is what every node computes alike, so a flow whose node changes (or whose entry expired) keeps its backend; established flows keep theirs either way (conntrack).".into(),
    );
    let capacity = berth_common::capacity::CONNTRACK as u64;
    let mut memory = Table::new(
        "Conntrack memory (preallocated LRU, default capacity)",
        &["entries", "MiB", "bytes per entry", "bytes per flow (2 entries)"],
    );
    memory.rows.push(vec![
        capacity.to_string(),
        format!("{:.1}", ct_bytes as f64 / (1 << 20) as f64),
        format!("{:.0}", ct_bytes as f64 / capacity as f64),
        format!("{:.0}", 2.0 * ct_bytes as f64 / capacity as f64),
    ]);
    drop(bed);
    let chase = (samples * 40).clamp(200_000, 4_000_000);
    let cached = floor::dependent_load_ns(256 << 10, chase)?;
    let cold = floor::dependent_load_ns(ct_bytes as usize, chase)?;
    let mut floors = Table::new(FLOORS, &["what", "ns", "how"]);
    floors.rows.push(vec![
        FLOOR_EMPTY_REPEATED.into(),
        format!("{:.0}", harness.repeated),
        format!("BPF_PROG_TEST_RUN repeat {REPEAT}, per run (as the established and not-a-Service paths)"),
    ]);
    floors.rows.push(vec![
        FLOOR_EMPTY_SINGLE.into(),
        format!("{:.0}", harness.single),
        "one run per call, the kernel's clock reads included (as the new-flow path)".into(),
    ]);
    floors.rows.push(vec![
        FLOOR_CT_OPS.into(),
        format!("{:.0}", ct_ops.repeated),
        format!(
            "a new flow's conntrack work alone: a lookup that misses, an exclusive insert, an insert (LRU of BERTH_CT's shape: {capacity} entries), repeat {REPEAT}, per run"
        ),
    ]);
    // Net of the same timing estimate as the new-flow column (the first size's), so the two compare.
    let timing = rows.first().map_or(0.0, |r| r.single_run_overhead);
    floors.rows.push(vec![
        FLOOR_CT_OPS_SINGLE.into(),
        format!("{:.0}", ct_ops.single - timing),
        format!(
            "the same, one run per call ({:.0} ns), less the {timing:.0} ns of timing the new-flow column subtracts",
            ct_ops.single
        ),
    ]);
    floors.rows.push(vec![
        FLOOR_CACHED_LOAD.into(),
        format!("{cached:.1}"),
        "dependent loads of random lines of a 256 KiB buffer".into(),
    ]);
    floors.rows.push(vec![
        FLOOR_COLD_LOAD.into(),
        format!("{cold:.1}"),
        format!(
            "dependent loads of random lines of a {:.0} MiB buffer, the conntrack map's size",
            ct_bytes as f64 / (1 << 20) as f64
        ),
    ]);
    if let Some(first) = rows.first() {
        floors.notes.push(format!(
            "A new flow at {} Service: {:.0} ns a single run ({:.0} net of timing). Its conntrack work alone, in the same harness: {:.0} ns a single run ({:.0} net of timing), {:.0} ns repeated. That is {:.0} % of a new flow: the kernel's LRU map work (bucket locks, LRU lists, fresh elements) that any data plane keeping two conntrack entries per flow in such a map pays.",
            first.services,
            first.new_flow.p50,
            first.new_flow.p50 - first.single_run_overhead,
            ct_ops.single,
            ct_ops.single - timing,
            ct_ops.repeated,
            100.0 * ct_ops.single / first.new_flow.p50.max(1.0),
        ));
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && last.services > first.services
    {
        let growth = last.new_flow.p50 - first.new_flow.p50;
        floors.notes.push(format!(
            "From {} to {} Services a new flow grows by {growth:.0} ns, {:.1} cold loads: the frontend's bucket and value lines in Service maps of {:.0} MiB (and, for backends spread over 60,000 addresses, next-hop cache misses) are no more cached than conntrack's.",
            first.services,
            last.services,
            growth / cold.max(1.0),
            last.service_map_bytes as f64 / (1 << 20) as f64,
        ));
    }
    Ok(vec![table, persist, memory, floors])
}
