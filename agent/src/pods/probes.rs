//! Container probes as kubelet runs them: startup, liveness and readiness, each `exec` (a command in
//! the container through `runc exec`), `httpGet` (2xx and 3xx succeed) or `tcpSocket` (a connection
//! succeeds) or `grpc` (the gRPC health check, [`super::grpc_probe`]), with their initial delay,
//! period, timeout and success/failure thresholds.
//!
//! A container without a readiness probe is ready once running (and started); with one, only after it
//! succeeds. A liveness or startup probe that reaches its failure threshold gets the container killed,
//! and the restart policy does the rest.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use berth_runtime::container::{Engine, Instance};
use k8s_openapi::{
    api::core::v1::{Container, ExecAction, HTTPGetAction, Probe, TCPSocketAction},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// Consecutive results and timing of one probe of one container instance.
#[derive(Clone, Debug, Default)]
struct Track {
    successes: i32,
    failures: i32,
    last: Option<Instant>,
    /// Whether the probe currently counts as succeeding (thresholds applied).
    ok: bool,
}

/// The probes of one container instance (reset when a new instance starts).
#[derive(Clone, Debug, Default)]
pub struct ProbeState {
    startup: Track,
    liveness: Track,
    readiness: Track,
    /// The startup probe succeeded (or there is none).
    pub started: bool,
}

/// What the worker should do after a round of probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ready or not (for the container status and the endpoints).
    Continue { ready: bool },
    /// Liveness or startup failed for good: kill the container (with this message).
    Kill(String),
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

impl ProbeState {
    /// Runs the probes that are due for the instance running since `started`; returns the verdict.
    pub async fn run(
        &mut self,
        c: &Container,
        started: Instant,
        pod_ip: &str,
        engine: &Engine,
        instance: &Instance,
    ) -> Verdict {
        if !self.started {
            match &c.startup_probe {
                None => self.started = true,
                Some(p) => {
                    if let Some(failed) =
                        step(&mut self.startup, p, started, pod_ip, c, engine, instance).await
                    {
                        return Verdict::Kill(format!("Startup probe failed: {failed}"));
                    }
                    self.started = self.startup.ok;
                    if !self.started {
                        return Verdict::Continue { ready: false };
                    }
                }
            }
        }
        if let Some(p) = &c.liveness_probe
            && let Some(failed) = step(&mut self.liveness, p, started, pod_ip, c, engine, instance).await
        {
            return Verdict::Kill(format!("Liveness probe failed: {failed}"));
        }
        let ready = match &c.readiness_probe {
            None => true,
            Some(p) => {
                let _ = step(&mut self.readiness, p, started, pod_ip, c, engine, instance).await;
                self.readiness.ok
            }
        };
        Verdict::Continue { ready }
    }
}

impl ProbeState {
    /// When the next probe of the instance running since `started` is due (None: it has no probes
    /// left to run), so that the worker can sleep until then.
    pub fn next_due(&self, c: &Container, started: Instant) -> Option<Instant> {
        let tracks: Vec<(&Track, &Probe)> = if self.started {
            [
                (&self.liveness, &c.liveness_probe),
                (&self.readiness, &c.readiness_probe),
            ]
            .into_iter()
            .filter_map(|(t, p)| p.as_ref().map(|p| (t, p)))
            .collect()
        } else {
            c.startup_probe.iter().map(|p| (&self.startup, p)).collect()
        };
        tracks.into_iter().map(|(t, p)| due(t, p, started)).min()
    }
}

/// When `probe` is next due: after its initial delay, then every period (at least a second).
fn due(track: &Track, probe: &Probe, started: Instant) -> Instant {
    let first = started + secs(probe.initial_delay_seconds, 0);
    match track.last {
        None => first,
        Some(l) => first.max(l + period(probe)),
    }
}

fn period(probe: &Probe) -> Duration {
    secs(probe.period_seconds, 10).max(Duration::from_secs(1))
}

/// Runs `probe` if due; returns the failure message when its failure threshold is reached (the track
/// says whether it counts as succeeding).
async fn step(
    track: &mut Track,
    probe: &Probe,
    started: Instant,
    pod_ip: &str,
    c: &Container,
    engine: &Engine,
    instance: &Instance,
) -> Option<String> {
    let now = Instant::now();
    if now < due(track, probe, started) {
        return None;
    }
    track.last = Some(now);
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    match check(probe, pod_ip, c, engine, instance, timeout).await {
        Ok(()) => {
            track.failures = 0;
            track.successes += 1;
            if track.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                track.ok = true;
            }
            None
        }
        Err(message) => {
            track.successes = 0;
            track.failures += 1;
            if track.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                track.ok = false;
                track.failures = 0;
                return Some(message);
            }
            None
        }
    }
}

/// A named or numbered port of the container.
fn port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("no port named {name:?}")),
    }
}

async fn check(
    probe: &Probe,
    pod_ip: &str,
    c: &Container,
    engine: &Engine,
    instance: &Instance,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        return exec_action(exec, engine, instance, timeout).await;
    }
    if let Some(http) = &probe.http_get {
        return http_get_action(http, pod_ip, c, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        return tcp_socket_action(tcp, pod_ip, c, timeout).await;
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| format!("invalid grpc port {}", grpc.port))?;
        let ip: std::net::IpAddr = pod_ip.parse().map_err(|_| format!("pod address {pod_ip:?}"))?;
        let service = grpc.service.as_deref().unwrap_or_default();
        return super::grpc_probe::check(std::net::SocketAddr::new(ip, port), service, timeout).await;
    }
    Err("the probe has no handler".into())
}

/// A command in the container (`runc exec`): succeeds on exit status 0. Shared with lifecycle hooks.
pub(super) async fn exec_action(
    exec: &ExecAction,
    engine: &Engine,
    instance: &Instance,
    timeout: Duration,
) -> Result<(), String> {
    let argv = exec.command.clone().unwrap_or_default();
    let (engine, instance) = (engine.clone(), instance.clone());
    let code = tokio::task::spawn_blocking(move || engine.exec(&instance, &argv, timeout))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if code == 0 {
        Ok(())
    } else {
        Err(format!("command exited with {code}"))
    }
}

/// `GET` on the pod's address (or `host`): 2xx and 3xx succeed. Shared with lifecycle hooks.
pub(super) async fn http_get_action(
    http: &HTTPGetAction,
    pod_ip: &str,
    c: &Container,
    timeout: Duration,
) -> Result<(), String> {
    let host = http.host.clone().unwrap_or_else(|| pod_ip.to_string());
    let addr: SocketAddr = format!("{host}:{}", port(&http.port, c)?)
        .parse()
        .map_err(|e| format!("{host}: {e}"))?;
    let path = http.path.clone().unwrap_or_else(|| "/".into());
    let headers: String = http
        .http_headers
        .iter()
        .flatten()
        .map(|h| format!("{}: {}\r\n", h.name, h.value))
        .collect();
    let status = tokio::time::timeout(timeout, http_status(addr, &path, &headers))
        .await
        .map_err(|_| format!("Get \"http://{addr}{path}\": timeout"))??;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

/// A TCP connection to the port succeeds. Shared with lifecycle hooks.
pub(super) async fn tcp_socket_action(
    tcp: &TCPSocketAction,
    pod_ip: &str,
    c: &Container,
    timeout: Duration,
) -> Result<(), String> {
    let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_string());
    let addr: SocketAddr = format!("{host}:{}", port(&tcp.port, c)?)
        .parse()
        .map_err(|e| format!("{host}: {e}"))?;
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
        Err(_) => Err(format!("dial tcp {addr}: timeout")),
    }
}

/// The status code of `GET path` (HTTP/1.1, as kubelet's prober sends it).
async fn http_status(addr: SocketAddr, path: &str, headers: &str) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())
}
