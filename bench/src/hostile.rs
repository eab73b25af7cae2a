//! The control plane under hostile clients (issue 12): one `berth-control-plane` process, a
//! well-behaved client on its own connection reading an object every 10 ms, and one attack at a
//! time beside it. For each attack: the server's resident memory (before, highest while it runs,
//! after), the good client's p50/p99 while it runs, the server's CPU, what the attackers were
//! answered, and whether the server lived through it. Goals: RSS under 150 MiB, the good client's
//! p99 under 50 ms, no 5xx to the good client, no crash.
//!
//! Attacks, each bounded in count and time:
//! - **amplifying bodies**: 4 clients send 3 MB merge patches of a pod's status holding a million
//!   empty `containerStatuses` (this took the server to 2.4 GiB before bodies were counted);
//! - **protobuf flood, unauthenticated**: 32 clients without credentials send 2 MB protobuf Pods;
//! - **slow clients**: connections that send half a request header and then nothing, up to 90 % of
//!   `--max-connections`;
//! - **fd exhaustion**: raw TCP connections beyond the server's open-file limit (accept fails with
//!   EMFILE; the loop must back off, not spin);
//! - **watch abuse**: 200 watches with `timeoutSeconds` near 2^63 while objects change.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::{
    control_plane::{ServerProcess, TempDir, ms},
    report::{Stats, Table},
};

/// What to run.
pub struct HostileConfig {
    /// How long each attack lasts.
    pub phase: Duration,
    /// The server's `--max-connections`.
    pub max_connections: usize,
    /// The server's open-file limit (below `max_connections`, so fd exhaustion is reachable).
    pub open_files: u64,
}

const GOOD_PATH: &str = "/api/v1/namespaces/default/configmaps/good";

/// Runs every attack against one server; one table.
pub fn run(cfg: &HostileConfig) -> Result<Table> {
    raise_own_open_files();
    let dir = TempDir::new("hostile")?;
    let binary = berth_tests::workspace_bin("berth-control-plane");
    let max = cfg.max_connections.to_string();
    let mut server = ServerProcess::start_with(
        &binary,
        &dir.0,
        0,
        &["--max-connections", &max],
        Some(cfg.open_files),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let table = runtime.block_on(attacks(cfg, &server))?;
    anyhow::ensure!(server.alive(), "the control plane died under attack");
    Ok(table)
}

/// The attackers hold more connections than a default soft limit (1,024) allows: this process
/// may use its hard limit.
fn raise_own_open_files() {
    // SAFETY: getrlimit/setrlimit only read and set this process's own limit.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The good client's latencies and failures over a phase.
struct GoodClient {
    samples: Vec<f64>,
    failures: usize,
}

/// Reads `GOOD_PATH` every 10 ms on one connection (made before the attack) until `stop`.
async fn good_client(server: &ServerProcess, stop: Arc<AtomicBool>) -> Result<GoodClient> {
    let mut client = server.connect().await?;
    let mut out = GoodClient {
        samples: Vec::new(),
        failures: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), client.status_of("GET", GOOD_PATH, None)).await {
            Ok(Ok(200)) => out.samples.push(ms(t.elapsed())),
            _ => {
                out.failures += 1;
                // A broken connection is replaced, as a real client would.
                if let Ok(c) = server.connect().await {
                    client = c;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(out)
}

/// What the attackers were answered: counts by status (0: no HTTP answer: a connection held open by
/// the attack, or closed by the server before an answer was read, as after a 401 to a body it
/// would not read).
#[derive(Default)]
struct Answers(std::sync::Mutex<std::collections::BTreeMap<u16, u64>>);

impl Answers {
    fn add(&self, code: u16) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(code).or_default() += 1;
        }
    }

    fn summary(&self) -> String {
        let Ok(m) = self.0.lock() else {
            return String::new();
        };
        if m.is_empty() {
            return "none".into();
        }
        m.iter()
            .map(|(code, n)| {
                if *code == 0 {
                    format!("{n} without an HTTP answer")
                } else {
                    format!("{n}x {code}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

type Attack =
    fn(&ServerProcess, &HostileConfig, Arc<AtomicBool>, Arc<Answers>) -> Vec<tokio::task::JoinHandle<()>>;

async fn attacks(cfg: &HostileConfig, server: &ServerProcess) -> Result<Table> {
    let mut table = Table::new(
        "The control plane under hostile clients, one attack at a time",
        &[
            "attack",
            "attackers answered",
            "RSS before / peak / after (MiB)",
            "server CPU (%)",
            "good client p50 / p99 (ms)",
            "good client failures",
            "goal",
        ],
    );
    let mut admin = server.connect().await?;
    let cm = json!({"metadata": {"name": "good"}, "data": {"k": "v"}});
    admin
        .call(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(("application/json", cm.to_string().into_bytes())),
        )
        .await?;
    let pod =
        json!({"metadata": {"name": "target"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    admin
        .call(
            "POST",
            "/api/v1/namespaces/default/pods",
            Some(("application/json", pod.to_string().into_bytes())),
        )
        .await?;
    let attacks: [(&str, Attack); 6] = [
        ("none (baseline)", |_, _, _, _| Vec::new()),
        (
            "amplifying bodies: 4 clients, 3 MB status patches of 1M empty objects",
            amplifying,
        ),
        (
            "protobuf flood: 32 unauthenticated clients, 2 MB bodies",
            protobuf_flood,
        ),
        (
            "slow clients: half a header, up to 90 % of --max-connections",
            slow_clients,
        ),
        (
            "fd exhaustion: TCP connections past the open-file limit",
            fd_exhaustion,
        ),
        (
            "watch abuse: 200 watches with timeoutSeconds 2^63-1, objects changing",
            watch_abuse,
        ),
    ];
    for (name, attack) in attacks {
        let (rss_before, _) = server.memory_mib()?;
        let cpu_before = server.cpu_seconds()?;
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Answers::default());
        let good = {
            let stop = Arc::clone(&stop);
            // The good client's connection exists before the attack starts.
            let client_server: &ServerProcess = server;
            let fut = good_client(client_server, stop);
            tokio::time::timeout(cfg.phase + Duration::from_secs(30), fut)
        };
        let tasks = attack(server, cfg, Arc::clone(&stop), Arc::clone(&answers));
        let peak = Arc::new(AtomicU64::new(0));
        let watch_memory = async {
            let started = Instant::now();
            while started.elapsed() < cfg.phase {
                if let Ok((rss, _)) = server.memory_mib() {
                    peak.fetch_max(rss as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stop.store(true, Ordering::Relaxed);
        };
        let (good, ()) = tokio::join!(good, watch_memory);
        let cpu = (server.cpu_seconds()? - cpu_before) / cfg.phase.as_secs_f64() * 100.0;
        for t in tasks {
            t.abort();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss_after, _) = server.memory_mib()?;
        let mut good = good.map_err(|_| anyhow::anyhow!("{name}: the good client never finished"))??;
        let s = Stats::of(&mut good.samples);
        println!(
            "hostile: {name}: p99 {:.2} ms, failures {}, RSS {:.0}/{}/{:.0} MiB, CPU {cpu:.0} %, attackers: {}",
            s.p99,
            good.failures,
            rss_before,
            peak.load(Ordering::Relaxed),
            rss_after,
            answers.summary()
        );
        table.rows.push(vec![
            name.into(),
            answers.summary(),
            format!(
                "{rss_before:.0} / {} / {rss_after:.0}",
                peak.load(Ordering::Relaxed)
            ),
            format!("{cpu:.0}"),
            format!("{:.2} / {:.2}", s.p50, s.p99),
            good.failures.to_string(),
            "RSS < 150 MiB, p99 < 50 ms, no failures".into(),
        ]);
    }
    Ok(table)
}

fn amplifying(
    server: &ServerProcess,
    _: &HostileConfig,
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let body = format!(
        r#"{{"status":{{"containerStatuses":[{}]}}}}"#,
        vec!["{}"; 1_000_000].join(",")
    )
    .into_bytes();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, answers, body) = (Arc::clone(&stop), Arc::clone(&answers), body.clone());
        let connector = server.connector();
        let fut = async move {
            let Ok(mut client) = connector.connect().await else {
                answers.add(0);
                return;
            };
            for _ in 0..1000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let path = "/api/v1/namespaces/default/pods/target/status";
                match client
                    .status_of(
                        "PATCH",
                        path,
                        Some(("application/merge-patch+json", body.clone())),
                    )
                    .await
                {
                    Ok(code) => answers.add(code),
                    Err(_) => {
                        answers.add(0);
                        break;
                    }
                }
            }
        };
        tasks.push(tokio::spawn(fut));
    }
    tasks
}

fn protobuf_flood(
    server: &ServerProcess,
    _: &HostileConfig,
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // A Pod of a million empty containers: `k8s\0` + Unknown{typeMeta, raw}.
    let field = berth_control_plane::api::protobuf::length_delimited;
    let containers: Vec<u8> = std::iter::repeat_n(field(2, b""), 1_000_000).flatten().collect();
    let raw = [field(1, &field(1, b"p")), field(2, &containers)].concat();
    let type_meta = [field(1, b"v1"), field(2, b"Pod")].concat();
    let body = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &raw)].concat();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let connector = server.connector();
        let (stop, answers, body) = (Arc::clone(&stop), Arc::clone(&answers), body.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..1000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // The server answers 401 without reading the body and closes: one request per
                // connection.
                let Ok(mut client) = connector.connect().await else {
                    answers.add(0);
                    continue;
                };
                client.authorization = String::new();
                let path = "/api/v1/namespaces/default/pods";
                match client
                    .status_of(
                        "POST",
                        path,
                        Some(("application/vnd.kubernetes.protobuf", body.clone())),
                    )
                    .await
                {
                    Ok(code) => answers.add(code),
                    Err(_) => answers.add(0),
                }
            }
        }));
    }
    tasks
}

/// Raw TCP connections to the server, up to `n`, each sending `first` (if any) and then holding.
fn hold_connections(
    server: &ServerProcess,
    n: usize,
    first: &'static [u8],
    answers: Arc<Answers>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let port = server.port();
    vec![tokio::spawn(async move {
        let mut held = Vec::with_capacity(n);
        let mut failed_in_a_row = 0;
        while held.len() < n && failed_in_a_row < 3 {
            match tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            {
                Ok(Ok(mut s)) => {
                    if !first.is_empty() {
                        let _ = s.write_all(first).await;
                    }
                    held.push(s);
                    answers.add(0);
                    failed_in_a_row = 0;
                }
                // A full accept queue drops the SYN; the kernel retries it after a second.
                _ => failed_in_a_row += 1,
            }
        }
        // Held until the phase ends and this task is aborted.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(held);
    })]
}

fn slow_clients(
    server: &ServerProcess,
    cfg: &HostileConfig,
    _: Arc<AtomicBool>,
    answers: Arc<Answers>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // The start of a TLS ClientHello record header and nothing more: the handshake never ends.
    let capacity = cfg.max_connections.min(cfg.open_files as usize);
    hold_connections(server, capacity * 9 / 10, &[0x16, 0x03, 0x01], answers)
}

fn fd_exhaustion(
    server: &ServerProcess,
    cfg: &HostileConfig,
    _: Arc<AtomicBool>,
    answers: Arc<Answers>,
) -> Vec<tokio::task::JoinHandle<()>> {
    hold_connections(server, cfg.open_files as usize + 200, b"", answers)
}

fn watch_abuse(
    server: &ServerProcess,
    _: &HostileConfig,
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let connector = server.connector();
        let answers = Arc::clone(&answers);
        tasks.push(tokio::spawn(async move {
            let Ok(mut client) = connector.connect().await else {
                answers.add(0);
                return;
            };
            let path = "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=9223372036854775807";
            // The watch streams until the phase ends (the task is aborted).
            match client.status_of("GET", path, None).await {
                Ok(code) => answers.add(code),
                Err(_) => answers.add(0),
            }
        }));
    }
    // Changes for the watches to carry.
    let connector = server.connector();
    tasks.push(tokio::spawn(async move {
        let Ok(mut client) = connector.connect().await else {
            return;
        };
        for i in 0..10_000u32 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let patch = json!({"data": {"n": i.to_string()}}).to_string().into_bytes();
            let _ = client
                .status_of(
                    "PATCH",
                    "/api/v1/namespaces/default/configmaps/churn",
                    Some(("application/merge-patch+json", patch)),
                )
                .await;
            if i == 0 {
                let cm = json!({"metadata": {"name": "churn"}}).to_string().into_bytes();
                let _ = client
                    .status_of(
                        "POST",
                        "/api/v1/namespaces/default/configmaps",
                        Some(("application/json", cm)),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }));
    tasks
}
