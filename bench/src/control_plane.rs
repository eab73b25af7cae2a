//! The control plane's benchmarks, the numbers issue 4 names:
//!
//! - **scheduling throughput**: pods bound per second with 100 and 1,000 hollow nodes, measured the
//!   way kube-scheduler's `scheduler_perf` does: nodes registered and Ready, pods created first, then
//!   the scheduler (with every other controller running beside it, as in the real binary) started and
//!   timed until every pod is bound. In process, over the embedded store on disk (every bind is durable
//!   before it counts).
//! - **API latency** at 10,000 pods: the real `berth-control-plane` binary over HTTPS with hollow
//!   nodes that run the pods; create (concurrent clients), get, list, patch, delete, and watch delivery
//!   (from sending a write to its event arriving at a watcher), as p50 / p99.
//! - **resident memory** of that server holding 10,000 running pods.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use berth_control_plane::{
    api::{Api, objects, resources, typed::FieldValidation},
    controllers::{self, Manager},
    sim::HollowNodes,
    store::Store,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};

use crate::report::{Stats, Table};

/// What to run.
pub struct ControlPlaneConfig {
    /// (hollow nodes, pods) per scheduling case.
    pub scheduling: Vec<(usize, usize)>,
    /// Pods the API server holds while its latency and memory are measured.
    pub api_pods: usize,
    /// Hollow nodes running those pods (110 pods fit on each).
    pub api_nodes: usize,
    /// Concurrent clients creating the pods.
    pub create_clients: usize,
    /// Requests per measured operation (get, patch, delete, watch, namespace list).
    pub samples: usize,
}

/// Runs the benchmarks; one table each.
pub fn run(cfg: &ControlPlaneConfig) -> Result<Vec<Table>> {
    let mut tables = vec![scheduling(&cfg.scheduling)?];
    tables.extend(api(cfg)?);
    Ok(tables)
}

/// A directory removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(what: &str) -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("berth-bench-cp-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a stored pod names a node (`"nodeName":"x"`), without parsing it.
fn is_bound(value: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"nodeName\":\"";
    value
        .windows(NEEDLE.len())
        .position(|w| w == NEEDLE)
        .is_some_and(|at| value.get(at + NEEDLE.len()) != Some(&b'"'))
}

fn bench_pod(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{
            "name": "pause",
            "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}
        }]}
    })
}

/// The top of kube-scheduler's published throughput range (100 to 900 pods/s, scheduler_perf).
const KUBE_SCHEDULER_BEST: f64 = 900.0;

/// Scheduling throughput per (nodes, pods) case.
fn scheduling(cases: &[(usize, usize)]) -> Result<Table> {
    let mut table = Table::new(
        "Scheduling throughput (pods bound per second)",
        &[
            "hollow nodes",
            "pods",
            "time to bind all (s)",
            "pods/s",
            "× kube-scheduler's best (900 pods/s)",
            "goal",
        ],
    );
    for &(nodes, pods) in cases {
        let elapsed = schedule_once(nodes, pods)?;
        let rate = pods as f64 / elapsed.as_secs_f64();
        println!("scheduling: {nodes} nodes, {pods} pods: {elapsed:.2?} ({rate:.0} pods/s)");
        table.rows.push(vec![
            nodes.to_string(),
            pods.to_string(),
            format!("{:.2}", elapsed.as_secs_f64()),
            format!("{rate:.0}"),
            format!("{:.1}", rate / KUBE_SCHEDULER_BEST),
            "≥ 1000".into(),
        ]);
    }
    table.notes.push(
        "As kube-scheduler's scheduler_perf measures: nodes registered and Ready (4 CPU, 16 GiB, 110 pods \
         each), pods (10m CPU, 16 MiB requested) created first, then the controller manager started and \
         timed until every pod names a node. Every other controller runs beside the scheduler, and every \
         binding is on disk (SQLite, WAL, synchronous=FULL) before it counts. kube-scheduler's published \
         throughput is 100 to 900 pods/s."
            .into(),
    );
    Ok(table)
}

fn schedule_once(nodes: usize, pods: usize) -> Result<Duration> {
    let dir = TempDir::new("sched")?;
    let store = Arc::new(Store::open(&dir.0.join("state.db"))?);
    let api = Api::new(Arc::clone(&store), "unused".into());
    api.bootstrap("127.0.0.1:6443".parse()?)
        .map_err(|e| anyhow!("bootstrap: {}", e.message))?;
    HollowNodes::register(Arc::clone(&store), "hollow", nodes)
        .map_err(|e| anyhow!("registering hollow nodes: {}", e.message))?;
    let pod_resource = resources::by_plural("pods").ok_or_else(|| anyhow!("no pods resource"))?;
    for i in 0..pods {
        let pod = bench_pod(&format!("pod-{i}"), &format!("app-{}", i % 100));
        objects::create(
            &store,
            pod_resource,
            Some("default"),
            pod.to_string().as_bytes(),
            FieldValidation::Strict,
        )
        .map_err(|e| anyhow!("creating pod-{i}: {}", e.message))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let manager =
        Manager::new(Arc::clone(&store), controllers::Config::default()).spawn(Arc::clone(&stop))?;
    let deadline = started + Duration::from_secs(300);
    let result = loop {
        let page = store.list("/registry/pods/default/", None, None, 0)?;
        let bound = page.items.iter().filter(|kv| is_bound(&kv.value)).count();
        if bound >= pods {
            break Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            break Err(anyhow!("only {bound} of {pods} pods bound after 300 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    stop.store(true, Ordering::Relaxed);
    let _ = manager.join();
    result
}

// ---- The API server over HTTPS ----

/// The control plane as a child process, killed when dropped.
pub(crate) struct ServerProcess {
    child: Child,
    port: u16,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

impl ServerProcess {
    fn start(binary: &Path, dir: &Path, hollow_nodes: usize) -> Result<ServerProcess> {
        ServerProcess::start_with(binary, dir, hollow_nodes, &[], None)
    }

    /// [`ServerProcess::start`] with extra arguments and, if given, a limit on its open files.
    pub(crate) fn start_with(
        binary: &Path,
        dir: &Path,
        hollow_nodes: usize,
        args: &[&str],
        open_files: Option<u64>,
    ) -> Result<ServerProcess> {
        let mut cmd = Command::new(binary);
        cmd.arg("--data-dir")
            .arg(dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--hollow-nodes",
                &hollow_nodes.to_string(),
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(n) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the child being started.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = ServerProcess {
            child,
            port: 0,
            token: String::new(),
            tls: Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let kubeconfig = dir.join("admin.kubeconfig");
        server.port = loop {
            let port = std::fs::read_to_string(&kubeconfig).ok().and_then(|k| {
                k.lines()
                    .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
                    .and_then(|p| p.trim().parse::<u16>().ok())
            });
            if let Some(port) = port
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                break port;
            }
            if Instant::now() > deadline {
                bail!("the control plane did not come up within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        server.token = std::fs::read_to_string(dir.join("admin.token"))?
            .trim()
            .to_string();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(dir.join("ca.crt"))? {
            roots.add(cert?)?;
        }
        server.tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        Ok(server)
    }

    /// Resident and peak resident memory (MiB) from `/proc/<pid>/status`.
    /// The port it serves on (loopback).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// CPU time (user + system) it has used, in seconds.
    pub(crate) fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which is in parentheses and may hold spaces).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok((ticks(11) + ticks(12)) / hz)
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn memory_mib(&self) -> Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> Result<f64> {
            let kib: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("no {name} in /proc/<pid>/status"))?;
            Ok(kib / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    pub(crate) async fn connect(&self) -> Result<Client> {
        self.connector().connect().await
    }

    /// What a task needs to open connections of its own.
    pub(crate) fn connector(&self) -> Connector {
        Connector {
            port: self.port,
            token: self.token.clone(),
            tls: Arc::clone(&self.tls),
        }
    }
}

/// Opens authenticated HTTP/1.1 connections to the server.
#[derive(Clone)]
pub(crate) struct Connector {
    port: u16,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Connector {
    pub(crate) async fn connect(&self) -> Result<Client> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()), tcp)
            .await?;
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Client {
            send,
            authorization: format!("Bearer {}", self.token),
            host: format!("127.0.0.1:{}", self.port),
        })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 connection to the server.
pub(crate) struct Client {
    send: SendRequest<Full<Bytes>>,
    /// The `Authorization` header sent (empty: none that authenticates).
    pub(crate) authorization: String,
    host: String,
}

impl Client {
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<hyper::Request<Full<Bytes>>> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", &self.authorization)
            .header("accept", "application/json");
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header("content-type", content_type);
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        Ok(req.body(body)?)
    }

    /// A JSON merge patch.
    async fn merge_patch(&mut self, path: &str, patch: &Value) -> Result<Bytes> {
        let body = patch.to_string().into_bytes();
        self.call("PATCH", path, Some(("application/merge-patch+json", body)))
            .await
    }

    /// Sends a request and reads the whole answer; returns its status, whatever it is.
    pub(crate) async fn status_of(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<u16> {
        let req = self.request(method, path, body)?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        Ok(status)
    }

    /// Sends a request and reads the whole answer; fails on a non-2xx status.
    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Bytes> {
        let req = self.request(method, path, body)?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{method} {path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(bytes)
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A latency row: operation, requests, clients, p50, p99, mean, goal.
fn latency_row(table: &mut Table, operation: &str, clients: usize, samples: &mut [f64], goal: &str) {
    let s = Stats::of(samples);
    println!(
        "api: {operation}: n={} p50={:.2} ms p99={:.2} ms",
        s.n, s.p50, s.p99
    );
    table.rows.push(vec![
        operation.into(),
        s.n.to_string(),
        clients.to_string(),
        format!("{:.2}", s.p50),
        format!("{:.2}", s.p99),
        format!("{:.2}", s.mean),
        goal.into(),
    ]);
}

/// API latency and memory at `cfg.api_pods` pods.
fn api(cfg: &ControlPlaneConfig) -> Result<Vec<Table>> {
    let dir = TempDir::new("api")?;
    let binary = berth_tests::workspace_bin("berth-control-plane");
    let server = ServerProcess::start(&binary, &dir.0, cfg.api_nodes)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(api_async(cfg, &server))
}

const POD_PATH: &str = "/api/v1/namespaces/bench/pods";

async fn api_async(cfg: &ControlPlaneConfig, server: &ServerProcess) -> Result<Vec<Table>> {
    let mut latency = Table::new(
        &format!(
            "API latency with {} pods on {} hollow nodes",
            cfg.api_pods, cfg.api_nodes
        ),
        &[
            "operation",
            "requests",
            "clients",
            "p50 (ms)",
            "p99 (ms)",
            "mean (ms)",
            "goal",
        ],
    );
    let mut admin = server.connect().await?;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}});
    admin
        .call(
            "POST",
            "/api/v1/namespaces",
            Some(("application/json", ns.to_string().into_bytes())),
        )
        .await?;

    // Create: concurrent clients, each its own connection, splitting the pods between them.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..cfg.create_clients {
        let mut client = server.connect().await?;
        let (clients, total) = (cfg.create_clients, cfg.api_pods);
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for i in (c..total).step_by(clients) {
                let body = bench_pod(&format!("pod-{i}"), &format!("app-{}", i % 100)).to_string();
                let t = Instant::now();
                client
                    .call("POST", POD_PATH, Some(("application/json", body.into_bytes())))
                    .await?;
                samples.push(ms(t.elapsed()));
            }
            anyhow::Ok(samples)
        }));
    }
    let mut create = Vec::new();
    for t in tasks {
        create.extend(t.await??);
    }
    let create_time = started.elapsed();
    println!(
        "api: created {} pods in {create_time:.2?} ({:.0}/s)",
        cfg.api_pods,
        cfg.api_pods as f64 / create_time.as_secs_f64()
    );
    latency_row(
        &mut latency,
        "create pod",
        cfg.create_clients,
        &mut create,
        "p99 < 50 ms",
    );

    // Let the scheduler and the hollow nodes bring every pod to Running.
    let settle_started = Instant::now();
    loop {
        let pending = admin
            .call(
                "GET",
                &format!("{POD_PATH}?fieldSelector=status.phase%21%3DRunning"),
                None,
            )
            .await?;
        let pending: Value = serde_json::from_slice(&pending)?;
        let left = pending["items"].as_array().map_or(0, Vec::len);
        if left == 0 {
            break;
        }
        if settle_started.elapsed() > Duration::from_secs(300) {
            bail!("{left} pods still not Running after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "api: all pods Running {:.2?} after the last create",
        settle_started.elapsed()
    );
    // Give the allocator some quiet time before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, peak) = server.memory_mib()?;

    let mut rng = Lcg(0x5eed);
    let mut get = Vec::new();
    for _ in 0..cfg.samples {
        let path = format!("{POD_PATH}/pod-{}", rng.below(cfg.api_pods));
        let t = Instant::now();
        admin.call("GET", &path, None).await?;
        get.push(ms(t.elapsed()));
    }
    latency_row(&mut latency, "get pod", 1, &mut get, "p99 < 1 s (SLO)");

    let mut list_app = Vec::new();
    for i in 0..cfg.samples {
        let path = format!("{POD_PATH}?labelSelector=app%3Dapp-{}", i % 100);
        let t = Instant::now();
        admin.call("GET", &path, None).await?;
        list_app.push(ms(t.elapsed()));
    }
    latency_row(
        &mut latency,
        &format!("list pods by label ({} of {})", cfg.api_pods / 100, cfg.api_pods),
        1,
        &mut list_app,
        "p99 < 5 s (SLO, namespace)",
    );

    let mut list_all = Vec::new();
    for _ in 0..(cfg.samples / 20).max(5) {
        let t = Instant::now();
        admin.call("GET", "/api/v1/pods", None).await?;
        list_all.push(ms(t.elapsed()));
    }
    latency_row(
        &mut latency,
        &format!("list all {} pods", cfg.api_pods),
        1,
        &mut list_all,
        "p99 < 30 s (SLO, cluster)",
    );

    let mut patch = Vec::new();
    for i in 0..cfg.samples {
        let path = format!("{POD_PATH}/pod-{}", rng.below(cfg.api_pods));
        let body = json!({"metadata": {"labels": {"bench-round": i.to_string()}}});
        let t = Instant::now();
        admin.merge_patch(&path, &body).await?;
        patch.push(ms(t.elapsed()));
    }
    latency_row(&mut latency, "patch pod (merge)", 1, &mut patch, "p99 < 50 ms");

    let mut watch = watch_delivery(server, &mut admin, cfg.samples, cfg.api_pods).await?;
    latency_row(
        &mut latency,
        "watch delivery (write sent → event received)",
        1,
        &mut watch,
        "—",
    );

    let mut delete = Vec::new();
    for i in 0..cfg.samples.min(cfg.api_pods) {
        let t = Instant::now();
        admin.call("DELETE", &format!("{POD_PATH}/pod-{i}"), None).await?;
        delete.push(ms(t.elapsed()));
    }
    latency_row(
        &mut latency,
        "delete pod (graceful)",
        1,
        &mut delete,
        "p99 < 50 ms",
    );
    latency.notes.push(format!(
        "The release binary over HTTPS (HTTP/1.1, one connection per client, JSON), with \
         `--hollow-nodes {}` running the pods. Creates: {} clients at once ({:.0} pods/s, each pod also \
         bound by the scheduler and set Running by its node meanwhile); the other operations one at a \
         time on a quiet server holding every pod Running. Mutations are on disk before the answer. SLOs \
         are Kubernetes' published API call latency SLOs (p99 over a day).",
        cfg.api_nodes,
        cfg.create_clients,
        cfg.api_pods as f64 / create_time.as_secs_f64()
    ));

    let (_, peak_at_end) = server.memory_mib()?;
    let mut memory = Table::new(
        "Control plane memory",
        &[
            "pods (Running)",
            "hollow nodes",
            "RSS (MiB)",
            "peak RSS so far (MiB)",
            "peak RSS after the latency runs (MiB)",
            "× a k3s server (1.6 GB)",
            "goal",
        ],
    );
    memory.rows.push(vec![
        cfg.api_pods.to_string(),
        cfg.api_nodes.to_string(),
        format!("{rss:.0}"),
        format!("{peak:.0}"),
        format!("{peak_at_end:.0}"),
        format!("{:.3}", peak_at_end * 1024.0 * 1024.0 / 1.6e9),
        "< 150 MiB".into(),
    ]);
    memory.notes.push(
        "VmRSS and VmHWM of the berth-control-plane process once every pod is Running (API server, store, \
         scheduler, controllers and the hollow nodes all in that one process), and VmHWM again after the \
         latency runs above (which list all pods fifty times). A k3s server holds about 1.6 GB."
            .into(),
    );
    Ok(vec![latency, memory])
}

/// Watch delivery: a watcher on the bench namespace; each sample patches an annotation on a pod and
/// times from sending the patch to the watcher seeing that annotation.
async fn watch_delivery(
    server: &ServerProcess,
    admin: &mut Client,
    samples: usize,
    pods: usize,
) -> Result<Vec<f64>> {
    let list: Value = serde_json::from_slice(
        &admin
            .call("GET", &format!("{POD_PATH}?labelSelector=app%3Dapp-0"), None)
            .await?,
    )?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .ok_or_else(|| anyhow!("no resourceVersion in a list"))?
        .to_string();
    let mut watcher = server.connect().await?;
    let req = watcher.request(
        "GET",
        &format!("{POD_PATH}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"),
        None,
    )?;
    watcher.send.ready().await?;
    let resp = watcher.send.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("watch: {}", resp.status());
    }
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let reader = tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Some(data) = frame.data_ref() else { continue };
            buffer.extend_from_slice(data);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let at = Instant::now();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                if let Some(seq) = event
                    .pointer("/object/metadata/annotations/bench~1seq")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<usize>().ok())
                    && seen_tx.send((seq, at)).is_err()
                {
                    return;
                }
            }
        }
    });
    let mut rng = Lcg(0xbeef);
    let mut latencies = Vec::new();
    for seq in 0..samples {
        let path = format!("{POD_PATH}/pod-{}", rng.below(pods));
        let body = json!({"metadata": {"annotations": {"bench/seq": seq.to_string()}}});
        let sent = Instant::now();
        admin.merge_patch(&path, &body).await?;
        let arrived = loop {
            match tokio::time::timeout(Duration::from_secs(10), seen_rx.recv()).await {
                Ok(Some((s, at))) if s == seq => break at,
                Ok(Some(_)) => continue,
                Ok(None) => bail!("the watch ended"),
                Err(_) => bail!("the event of write {seq} did not arrive within 10 s"),
            }
        };
        latencies.push(ms(arrived.saturating_duration_since(sent)));
    }
    reader.abort();
    Ok(latencies)
}

/// A small deterministic generator for picking pods (no dependency for one `below`).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}
