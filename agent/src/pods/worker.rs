//! One task per pod, as kubelet has one pod worker per pod: it brings the pod's sandbox, network and
//! containers to what the pod asks, restarts containers by its restart policy with kubelet's backoff,
//! reports the status through the pod's status subresource, and on deletion stops the containers
//! within the grace period, removes everything the pod had and confirms the deletion.
//!
//! Level-triggered: every pass looks at what exists (runc, the shims' exit records, the sandbox, the
//! address allocations) and acts on the difference, so a restarted agent adopts running pods rather
//! than restarting them.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use berth_datapath::podnet::{self, Ipam, Subnet};
use berth_runtime::{
    container::{Instance, InstanceState},
    image::{ImageRecord, RegistryAuth, normalise},
    sandbox::Sandbox,
    spec::SharedNamespaces,
};
use k8s_openapi::{
    api::core::v1::{Container, Pod},
    jiff::Timestamp,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::{events::PodEvent, source::static_pods};

use super::{
    PodEnv,
    exits::ExitWatch,
    hooks::{self, Hook},
    probes::{ProbeState, Verdict},
    status::{ContainerRun, Current, PodRun, Terminated, pod_status},
    translate::{EnvSources, PodContext, container_spec},
};

/// How often a pod whose containers all run (or are done) is looked at when nothing happens: exits
/// wake the worker as they happen ([`super::exits`]), probes when they are due; this pass is the safety
/// net, as kubelet resyncs each pod every 10 s.
const RESYNC: Duration = Duration::from_secs(10);
/// How soon a pod is looked at again while something is pending (a container waiting to start, an
/// error to retry, a sandbox to make), or every pass when exits cannot be watched.
const RETRY: Duration = Duration::from_secs(1);
/// How soon a container whose process ended is looked at again while its shim writes the record.
const ENDING: Duration = Duration::from_millis(50);
/// kubelet's restart backoff: 10 s doubling to 5 min, forgotten after 10 min of running.
const BACKOFF_FIRST: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// kubelet's one-off extension when a `preStop` hook used the whole grace period.
const PRE_STOP_EXTENSION: Duration = Duration::from_secs(2);

/// What the worker keeps about one container between passes.
#[derive(Default)]
struct Slot {
    /// The number of the current (or next) instance; restarts = this number.
    attempt: u32,
    instance: Option<Instance>,
    started: Option<(Instant, Timestamp)>,
    image: Option<ImageRecord>,
    /// Delay before the next restart (None: the next restart is immediate).
    backoff: Option<Duration>,
    /// Not before this instant (backoff after an exit, or after a failed pull).
    not_before: Option<Instant>,
    pull_backoff: Option<Duration>,
    /// The last pull failure's waiting reason and message: shown as they are while backing off when
    /// retrying cannot help (`InvalidImageName`, `ErrImageNeverPull`), as kubelet does.
    pull_failure: Option<(String, String)>,
    /// The instance ended and is not to be restarted (restart policy).
    done: bool,
    /// The current instance's probes.
    probes: ProbeState,
    /// A failed liveness or startup probe asked for a kill: SIGKILL once this passes.
    kill_after: Option<Instant>,
    /// The last configuration error reported as an Event (each is reported once, not every pass).
    last_error: Option<String>,
    /// Wakes the worker when the current instance's exit is recorded.
    exit_watch: Option<ExitWatch>,
    /// The current instance never started (runc refused it): its status until the next attempt,
    /// which no exit record will give.
    start_failure: Option<Terminated>,
}

impl Slot {
    /// Reports a configuration error as kubelet does (`Failed`, `Error: ...`), once per distinct error.
    fn config_error(&mut self, env: &PodEnv, pod: &Pod, container: &str, message: &str) {
        if self.last_error.as_deref() != Some(message) {
            self.last_error = Some(message.to_string());
            event(
                env,
                pod,
                Some(container),
                "Warning",
                "Failed",
                format!("Error: {message}"),
            );
        }
    }
}

/// Queues an Event about `pod` (and `container`), if the agent writes Events.
fn event(
    env: &PodEnv,
    pod: &Pod,
    container: Option<&str>,
    type_: &'static str,
    reason: &'static str,
    message: String,
) {
    if let Some(sink) = &env.events {
        sink.pod(PodEvent {
            namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            type_,
            reason,
            message,
        });
    }
}

/// The pod's worker.
pub struct Worker {
    env: Arc<PodEnv>,
    uid: String,
    pod: watch::Receiver<Option<Arc<Pod>>>,
    sandbox: Option<Sandbox>,
    pod_ip: Option<String>,
    slots: HashMap<String, Slot>,
    run: PodRun,
    last_reported: Option<serde_json::Value>,
    /// When the configMap, secret and downwardAPI volumes were last brought up to date.
    volumes_synced: Option<Instant>,
    /// The last volume error reported (containers wait while volumes were never written).
    volume_error: Option<String>,
    /// The service-account tokens of projected volumes, renewed before they expire.
    tokens: super::tokens::ServiceAccountTokens,
    /// Woken when a container's exit is recorded.
    wake: Arc<Notify>,
    /// The next pass is due by then (a probe, a kill, a retry); unset: after [`RESYNC`].
    next_pass: Option<Instant>,
}

impl Worker {
    pub fn new(env: Arc<PodEnv>, uid: String, pod: watch::Receiver<Option<Arc<Pod>>>) -> Self {
        Worker {
            env,
            uid,
            pod,
            sandbox: None,
            pod_ip: None,
            slots: HashMap::new(),
            run: PodRun::default(),
            last_reported: None,
            volumes_synced: None,
            volume_error: None,
            tokens: super::tokens::ServiceAccountTokens::default(),
            wake: Arc::new(Notify::new()),
            next_pass: None,
        }
    }

    /// Asks for the next pass by `at` at the latest.
    fn pass_by(&mut self, at: Instant) {
        self.next_pass = Some(self.next_pass.map_or(at, |t| t.min(at)));
    }

    fn pod_dir(&self) -> PathBuf {
        self.env.pods_dir.join(&self.uid)
    }

    /// Runs until the pod is gone and cleaned up.
    pub async fn run(mut self) {
        loop {
            let pod = self.pod.borrow_and_update().clone();
            match pod {
                None => {
                    self.stop_all(None, Duration::ZERO).await;
                    self.teardown().await;
                    return;
                }
                Some(p) if p.metadata.deletion_timestamp.is_some() => {
                    let grace = p
                        .metadata
                        .deletion_grace_period_seconds
                        .or_else(|| p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                        .unwrap_or(30)
                        .max(0) as u64;
                    let mut running: Vec<&String> = self
                        .slots
                        .iter()
                        .filter(|(_, s)| s.instance.is_some() && !s.done)
                        .map(|(n, _)| n)
                        .collect();
                    running.sort();
                    for c in running {
                        event(
                            &self.env,
                            &p,
                            Some(c),
                            "Normal",
                            "Killing",
                            format!("Stopping container {c}"),
                        );
                    }
                    self.stop_all(Some(&p), Duration::from_secs(grace)).await;
                    self.report(&p).await;
                    self.teardown().await;
                    self.confirm_deletion(&p).await;
                    return;
                }
                Some(p) => {
                    self.sync(&p).await;
                    self.report(&p).await;
                }
            }
            let next = self.next_pass.take().unwrap_or_else(|| Instant::now() + RESYNC);
            tokio::select! {
                _ = self.pod.changed() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    /// One pass towards the pod's spec.
    async fn sync(&mut self, pod: &Pod) {
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        if self.run.start_time.is_none() {
            self.run.start_time = Some(
                pod.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map_or_else(Timestamp::now, |t| t.0),
            );
        }
        self.run.host_ip = Some(self.env.node_ip.clone());
        if !self.ensure_sandbox(pod).await || !self.sync_volumes(pod).await {
            // Nothing started yet: the containers wait as kubelet shows them meanwhile.
            if self.run.containers.is_empty() {
                let inits = spec.init_containers.as_deref().unwrap_or_default();
                let waiting = |c: &Container, reason: &str| {
                    let mut r = ContainerRun::new(&c.name, c.image.as_deref().unwrap_or_default());
                    r.current = Current::Waiting {
                        reason: reason.into(),
                        message: None,
                    };
                    r
                };
                let app_reason = if inits.is_empty() {
                    "ContainerCreating"
                } else {
                    "PodInitializing"
                };
                self.run.init = inits.iter().map(|c| waiting(c, "PodInitializing")).collect();
                self.run.containers = spec.containers.iter().map(|c| waiting(c, app_reason)).collect();
            }
            self.pass_by(Instant::now() + RETRY);
            return;
        }
        let policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
        let inits: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
        let apps: Vec<Container> = spec.containers.clone();
        let mut init_runs = Vec::new();
        let mut initialized = true;
        for c in &inits {
            // Init containers: in order, each to success; on failure restarted unless the policy is Never.
            let init_policy = if policy == "Never" { "Never" } else { "OnFailure" };
            let run = self.sync_container(pod, c, init_policy, initialized).await;
            let succeeded = matches!(&run.current, Current::Terminated(t) if t.exit_code == 0);
            initialized &= succeeded;
            init_runs.push(run);
        }
        let mut app_runs = Vec::new();
        for c in &apps {
            app_runs.push(self.sync_container(pod, c, &policy, initialized).await);
        }
        // Anything waiting (to start, to be pulled, after an error, in back-off) is looked at again
        // soon; pods whose containers run or are done rest until an exit, a probe or the resync.
        if init_runs
            .iter()
            .chain(&app_runs)
            .any(|r| matches!(r.current, Current::Waiting { .. }))
        {
            self.pass_by(Instant::now() + RETRY);
        }
        self.run.init = init_runs;
        self.run.containers = app_runs;
    }

    /// The sandbox (pinned namespaces) and the pod's address, made once or adopted.
    async fn ensure_sandbox(&mut self, pod: &Pod) -> bool {
        if self.sandbox.is_some() && self.pod_ip.is_some() {
            return true;
        }
        let dir = self.pod_dir();
        let hostname = pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .or_else(|| pod.metadata.name.clone())
            .unwrap_or_default();
        let uid = self.uid.clone();
        let env = Arc::clone(&self.env);
        let state_dir = self.env.state_dir.clone();
        let cgroup = self.env.pod_cgroup(pod, &uid);
        let limits = super::resources::pod_resources(pod, self.env.pod_max_pids);
        let host_network = host_network(pod);
        let made = tokio::task::spawn_blocking(move || -> Result<(Sandbox, String), String> {
            // The pod's cgroup with its summed limits; runc makes the containers' below it.
            env.engine
                .cgroups
                .ensure(&cgroup, &limits)
                .map_err(|e| e.to_string())?;
            let sandbox =
                Sandbox::create(&dir.join("sandbox"), &hostname, host_network).map_err(|e| e.to_string())?;
            if host_network {
                // The node's network: the node's address, nothing to allocate or wire.
                return Ok((sandbox, env.node_ip.clone()));
            }
            // Adopt the address the pod already has (an agent restart): re-wiring would cut its flows.
            let subnet = Subnet::read(&state_dir).map_err(|e| e.to_string())?;
            let ipam = Ipam::open(&state_dir, subnet.node).map_err(|e| e.to_string())?;
            let existing = ipam
                .allocations()
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|(_, r)| r.pod == uid && !r.host_if.is_empty());
            let ip = match existing {
                Some((ip, _)) => ip,
                None => {
                    let net = sandbox.net().unwrap_or_default().display().to_string();
                    podnet::add(&state_dir, &uid, &net, "eth0")
                        .map_err(|e| e.to_string())?
                        .ip
                }
            };
            Ok((sandbox, ip.to_string()))
        })
        .await;
        match made {
            Ok(Ok((sandbox, ip))) => {
                if let Err(e) = self.write_pod_files(pod, &ip) {
                    warn!(pod = %name(pod), error = %e, "pod files not written");
                    return false;
                }
                info!(pod = %name(pod), %ip, "pod sandbox ready");
                self.sandbox = Some(sandbox);
                self.pod_ip = Some(ip.clone());
                self.run.pod_ip = Some(ip);
                self.run.sandbox_ready = true;
                true
            }
            Ok(Err(e)) => {
                warn!(pod = %name(pod), error = %e, "pod sandbox failed; retrying");
                false
            }
            Err(e) => {
                warn!(pod = %name(pod), error = %e, "pod sandbox task failed");
                false
            }
        }
    }

    /// Writes the configMap, secret and downwardAPI volumes when due (at start, then every 30 s, as
    /// kubelet refreshes them); false while they were never written (the containers wait).
    async fn sync_volumes(&mut self, pod: &Pod) -> bool {
        const REFRESH: Duration = Duration::from_secs(30);
        if self.volumes_synced.is_some_and(|t| t.elapsed() < REFRESH) {
            return true;
        }
        let ctx = PodContext {
            pod_ip: self.pod_ip.clone().unwrap_or_default(),
            host_ip: self.env.node_ip.clone(),
            ..PodContext::default()
        };
        let field = |path: &str| crate::pods::translate::field(pod, path, &ctx).map_err(|e| e.to_string());
        let dir = self.pod_dir().join("volumes");
        let mut failed = None;
        for v in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
        {
            if let Some(h) = &v.host_path
                && let Err(e) = super::host_path::prepare(h)
            {
                failed = Some(format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name));
            }
            match super::volumes::files(self.env.api(), &mut self.tokens, pod, v, field).await {
                None => {}
                Some(Ok(files)) => {
                    if let Err(e) = super::volumes::write(&dir.join(&v.name), &files) {
                        failed = Some(format!("volume {:?}: {e}", v.name));
                    }
                }
                Some(Err(e)) => {
                    failed = Some(format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name))
                }
            }
        }
        match failed {
            None => {
                self.volumes_synced = Some(Instant::now());
                self.volume_error = None;
                true
            }
            Some(message) => {
                if self.volume_error.as_deref() != Some(message.as_str()) {
                    warn!(pod = %name(pod), %message, "pod volume not ready");
                    event(&self.env, pod, None, "Warning", "FailedMount", message.clone());
                    self.volume_error = Some(message);
                }
                // Written before: the containers keep what they have.
                self.volumes_synced.is_some()
            }
        }
    }

    /// `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` as kubelet writes them for the pod.
    fn write_pod_files(&self, pod: &Pod, ip: &str) -> std::io::Result<()> {
        let etc = self.pod_dir().join("etc");
        std::fs::create_dir_all(&etc)?;
        std::fs::create_dir_all(self.pod_dir().join("volumes"))?;
        let spec = pod.spec.as_ref();
        let hostname = spec
            .and_then(|s| s.hostname.clone())
            .or_else(|| pod.metadata.name.clone())
            .unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let domain = &self.env.cluster_domain;
        let fqdn = spec
            .and_then(|s| s.subdomain.clone())
            .map(|sub| format!("{hostname}.{sub}.{namespace}.svc.{domain}\t"))
            .unwrap_or_default();
        let host_network = host_network(pod);
        let mut hosts = if host_network {
            // The node's own hosts file and name, as kubelet gives a hostNetwork pod.
            format!(
                "# Kubernetes-managed hosts file (host network).\n{}",
                std::fs::read_to_string("/etc/hosts").unwrap_or_default()
            )
        } else {
            format!(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n{ip}\t{fqdn}{hostname}\n"
            )
        };
        for alias in spec.and_then(|s| s.host_aliases.as_ref()).into_iter().flatten() {
            hosts.push_str(&format!(
                "\n# Entries added by HostAliases.\n{}\t{}\n",
                alias.ip,
                alias.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
        std::fs::write(etc.join("hosts"), hosts)?;
        let hostname = if host_network {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or(hostname)
        } else {
            hostname
        };
        std::fs::write(etc.join("hostname"), format!("{hostname}\n"))?;
        let policy = spec
            .and_then(|s| s.dns_policy.as_deref())
            .unwrap_or("ClusterFirst");
        // A hostNetwork pod gets cluster DNS only when it asks with ClusterFirstWithHostNet.
        let node_resolver = policy == "Default"
            || (host_network && policy == "ClusterFirst")
            || self.env.cluster_dns.is_empty();
        let resolv = if node_resolver {
            // No cluster DNS configured (kubelet's --cluster-dns): the node's resolver, as kubelet does.
            std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
        } else {
            let servers: String = self
                .env
                .cluster_dns
                .iter()
                .map(|s| format!("nameserver {s}\n"))
                .collect();
            format!("search {namespace}.svc.{domain} svc.{domain} {domain}\n{servers}options ndots:5\n")
        };
        std::fs::write(etc.join("resolv.conf"), resolv)
    }

    /// One container: its state, a start or restart when due, its status.
    async fn sync_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        policy: &str,
        may_start: bool,
    ) -> ContainerRun {
        let mut run = ContainerRun::new(&c.name, c.image.as_deref().unwrap_or_default());
        let env = Arc::clone(&self.env);
        let pod_ip = self.pod_ip.clone().unwrap_or_default();
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64;
        if !self.slots.contains_key(&c.name) {
            let adopted = self.adopt(pod, c);
            self.slots.insert(c.name.clone(), adopted);
        }
        let Some(slot) = self.slots.get_mut(&c.name) else {
            return run;
        };
        run.restart_count = slot.attempt as i32;
        run.image_id = slot.image.as_ref().map(|i| i.repo_digest.clone());
        // What the current instance is doing.
        if let Some(instance) = slot.instance.clone() {
            // Watch for the exit record before reading the state: one written in between is then
            // either read now or announced.
            let mut wake_at: Option<Instant> = None;
            if slot.exit_watch.is_none() {
                match env
                    .exits
                    .as_ref()
                    .map(|w| w.watch(&instance.dir, Arc::clone(&self.wake)))
                {
                    Some(Ok(w)) => slot.exit_watch = Some(w),
                    Some(Err(e)) => {
                        warn!(pod = %name(pod), container = %c.name, error = %e, "exit not watched; polling");
                        wake_at = Some(Instant::now() + RETRY);
                    }
                    None => wake_at = Some(Instant::now() + RETRY),
                }
            }
            // A few small file reads (runc's state is read from its files, not by starting runc):
            // cheaper in place than handed to a blocking thread.
            let state = tokio::task::block_in_place(|| env.engine.state(&instance));
            let id = format!(
                "berth://{}",
                slot.instance.as_ref().map(|i| i.id.as_str()).unwrap_or_default()
            );
            if matches!(state, InstanceState::Ending) {
                wake_at = Some(Instant::now() + ENDING);
            }
            match state {
                InstanceState::Running { .. } | InstanceState::Ending => {
                    let started_at = slot.started.map_or_else(Timestamp::now, |s| s.1);
                    run.current = Current::Running {
                        container_id: id,
                        started_at,
                    };
                    let Some(instance) = slot.instance.clone() else {
                        return run;
                    };
                    if let Some(deadline) = slot.kill_after {
                        // Being killed after a failed probe: not ready; SIGKILL once the grace ends.
                        if Instant::now() >= deadline {
                            let _ = env.engine.signal(&instance, libc::SIGKILL);
                        }
                        let again = deadline.max(Instant::now() + RETRY);
                        self.pass_by(wake_at.map_or(again, |w| w.min(again)));
                        return run;
                    }
                    let since = slot.started.map_or_else(Instant::now, |s| s.0);
                    let verdict = slot.probes.run(c, since, &pod_ip, &env.engine, &instance).await;
                    if let Some(due) = slot.probes.next_due(c, since) {
                        wake_at = Some(wake_at.map_or(due, |w| w.min(due)));
                    }
                    match verdict {
                        Verdict::Continue { ready } => run.ready = ready,
                        Verdict::Kill(message) => {
                            warn!(pod = %name(pod), container = %c.name, %message, "killing the container: it will be restarted");
                            event(&env, pod, Some(&c.name), "Warning", "Unhealthy", message.clone());
                            event(
                                &env,
                                pod,
                                Some(&c.name),
                                "Normal",
                                "Killing",
                                format!("Container {} failed a probe, will be restarted", c.name),
                            );
                            // preStop, then the stop signal, in the background: the pass goes on.
                            let grace = Duration::from_secs(grace);
                            let extension = if Hook::PreStop.handler(c).is_some() {
                                PRE_STOP_EXTENSION
                            } else {
                                Duration::ZERO
                            };
                            slot.kill_after = Some(Instant::now() + grace + extension);
                            let signal = hooks::stop_signal(
                                c,
                                slot.image.as_ref().and_then(|i| i.config.stop_signal.as_deref()),
                            );
                            let (env, pod, c) = (Arc::clone(&env), pod.clone(), c.clone());
                            let (instance, pod_ip) = (instance.clone(), pod_ip.clone());
                            tokio::spawn(async move {
                                if let Some(handler) = Hook::PreStop.handler(&c) {
                                    let r =
                                        hooks::run(handler, &pod_ip, &c, &env.engine, &instance, grace).await;
                                    if let Err(message) = r {
                                        event(
                                            &env,
                                            &pod,
                                            Some(&c.name),
                                            "Warning",
                                            Hook::PreStop.failed_reason(),
                                            format!("PreStopHook failed: {message}"),
                                        );
                                    }
                                }
                                let _ = env.engine.signal(&instance, signal);
                            });
                            // Looked at again when the grace period ends (or the exit is recorded).
                            let deadline = slot.kill_after.unwrap_or_else(|| Instant::now() + RETRY);
                            wake_at = Some(wake_at.map_or(deadline, |w| w.min(deadline)));
                        }
                    }
                    if let Some(at) = wake_at {
                        self.pass_by(at);
                    }
                    return run;
                }
                InstanceState::Exited(exit) => {
                    let term = terminated(id, &exit, slot.started.map(|s| s.1));
                    self.after_exit(pod, c, policy, term, &mut run);
                    return run;
                }
                InstanceState::Lost => {
                    // runc refused the instance (no exit record will come), or it vanished.
                    let term = slot.start_failure.clone().unwrap_or_else(|| Terminated {
                        container_id: id,
                        exit_code: 137,
                        signal: None,
                        reason: "ContainerStatusUnknown".into(),
                        message: None,
                        started_at: slot.started.map(|s| s.1),
                        finished_at: Some(Timestamp::now()),
                    });
                    self.after_exit(pod, c, policy, term, &mut run);
                    return run;
                }
            }
        }
        if !may_start {
            run.current = Current::Waiting {
                reason: "PodInitializing".into(),
                message: None,
            };
            return run;
        }
        self.start(pod, c, &mut run).await;
        run
    }

    /// The current instance ended: record it, and restart it when the policy says so and its backoff
    /// has passed.
    fn after_exit(
        &mut self,
        pod: &Pod,
        c: &Container,
        policy: &str,
        term: Terminated,
        run: &mut ContainerRun,
    ) {
        let Some(slot) = self.slots.get_mut(&c.name) else {
            return;
        };
        let restart = match policy {
            "Always" => true,
            "OnFailure" => term.exit_code != 0,
            _ => false,
        };
        if !restart {
            slot.done = true;
            run.current = Current::Terminated(term);
            return;
        }
        // Decide the delay once per exit: the first restart is immediate, later ones back off.
        if slot.not_before.is_none() {
            let ran_long = slot.started.is_some_and(|s| s.0.elapsed() >= BACKOFF_RESET);
            if ran_long {
                slot.backoff = None;
            }
            let delay = slot.backoff.unwrap_or(Duration::ZERO);
            slot.not_before = Some(Instant::now() + delay);
            slot.backoff = Some(match slot.backoff {
                None => BACKOFF_FIRST,
                Some(d) => (d * 2).min(BACKOFF_MAX),
            });
            info!(pod = %name(pod), container = %c.name, exit_code = term.exit_code, delay_s = delay.as_secs(), "container exited; restarting");
            if !delay.is_zero() {
                event(
                    &self.env,
                    pod,
                    Some(&c.name),
                    "Warning",
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        name(pod)
                    ),
                );
            }
        }
        run.last = Some(term.clone());
        let due = slot.not_before.is_some_and(|t| Instant::now() >= t);
        if !due {
            run.current = Current::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={} pod={}",
                    slot.backoff.map_or(10, |d| d.as_secs() / 2).max(10),
                    c.name,
                    name(pod)
                )),
            };
            return;
        }
        // Release the ended instance; the next one gets the next number.
        slot.exit_watch = None;
        slot.start_failure = None;
        if let Some(old) = slot.instance.take() {
            let engine = self.env.engine.clone();
            if let Err(e) = engine.release(&old) {
                warn!(pod = %name(pod), container = %c.name, error = %e, "ended instance not released");
            }
        }
        slot.attempt += 1;
        slot.not_before = None;
        slot.started = None;
        slot.probes = ProbeState::default();
        slot.kill_after = None;
        run.restart_count = slot.attempt as i32;
        run.current = Current::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
    }

    /// Instance number `attempt` of container `name`: its runc id, directory and log file
    /// (`LOG_DIR/NAMESPACE_NAME_UID/CONTAINER/N.log`, as kubelet lays them out).
    fn instance(&self, pod: &Pod, name: &str, attempt: u32) -> Instance {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        Instance {
            id: instance_id(&self.uid, name, attempt),
            dir: self
                .pod_dir()
                .join("containers")
                .join(name)
                .join(attempt.to_string()),
            log: self
                .env
                .log_dir
                .join(format!(
                    "{namespace}_{}_{}",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    self.uid
                ))
                .join(name)
                .join(format!("{attempt}.log")),
        }
    }

    /// A container's slot as an earlier agent left it: its latest instance on disk, if any.
    fn adopt(&self, pod: &Pod, c: &Container) -> Slot {
        let dir = self.pod_dir().join("containers").join(&c.name);
        let latest = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .max();
        let Some(attempt) = latest else {
            return Slot::default();
        };
        let instance = self.instance(pod, &c.name, attempt);
        let started_at = std::fs::metadata(instance.dir.join("config.json"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| Timestamp::try_from(t).ok())
            .unwrap_or_else(Timestamp::now);
        info!(pod = %name(pod), container = %c.name, attempt, "adopted a container instance");
        Slot {
            attempt,
            instance: Some(instance),
            started: Some((Instant::now(), started_at)),
            ..Slot::default()
        }
    }

    /// Pulls the image if the policy asks, translates the container and starts it.
    async fn start(&mut self, pod: &Pod, c: &Container, run: &mut ContainerRun) {
        let env = Arc::clone(&self.env);
        let pod_dir = self.pod_dir();
        let attempt = self.slots.get(&c.name).map_or(0, |s| s.attempt);
        let instance = self.instance(pod, &c.name, attempt);
        let sandbox = self.sandbox.clone();
        let pod_ip = self.pod_ip.clone();
        let slot = self.slots.entry(c.name.clone()).or_default();
        if slot.done {
            return;
        }
        if slot.not_before.is_some_and(|t| Instant::now() < t) {
            run.current = match &slot.pull_failure {
                Some((reason, message)) if reason == "InvalidImageName" || reason == "ErrImageNeverPull" => {
                    Current::Waiting {
                        reason: reason.clone(),
                        message: Some(message.clone()),
                    }
                }
                _ => Current::Waiting {
                    reason: "ImagePullBackOff".into(),
                    message: Some(format!(
                        "Back-off pulling image {:?}",
                        c.image.as_deref().unwrap_or_default()
                    )),
                },
            };
            return;
        }
        let image_name = c.image.clone().unwrap_or_default();
        let emit = |type_: &'static str, reason: &'static str, message: String| {
            event(&env, pod, Some(&c.name), type_, reason, message);
        };
        let image = match ensure_image(&env, pod, &image_name, c.image_pull_policy.as_deref(), emit).await {
            Ok(i) => i,
            Err((reason, message)) => {
                let delay = slot
                    .pull_backoff
                    .map_or(BACKOFF_FIRST, |d| (d * 2).min(BACKOFF_MAX));
                slot.pull_backoff = Some(delay);
                slot.not_before = Some(Instant::now() + delay);
                warn!(pod = %name(pod), container = %c.name, image = %image_name, %message, "image not available");
                event(
                    &env,
                    pod,
                    Some(&c.name),
                    "Normal",
                    "BackOff",
                    format!("Back-off pulling image {image_name:?}"),
                );
                slot.pull_failure = Some((reason.clone(), message.clone()));
                run.current = Current::Waiting {
                    reason,
                    message: Some(message),
                };
                return;
            }
        };
        slot.pull_failure = None;
        slot.pull_backoff = None;
        slot.not_before = None;
        run.image_id = Some(image.repo_digest.clone());
        slot.image = Some(image.clone());
        let Some(sandbox) = sandbox else {
            return;
        };
        let id = instance.id.clone();
        let ctx = PodContext {
            namespaces: SharedNamespaces {
                network: sandbox.net(),
                ipc: Some(sandbox.ipc()),
                uts: sandbox.uts(),
                pid: None,
                host_network: sandbox.host_network(),
            },
            pod_ip: pod_ip.unwrap_or_default(),
            host_ip: env.node_ip.clone(),
            hosts_file: pod_dir.join("etc/hosts"),
            resolv_file: pod_dir.join("etc/resolv.conf"),
            hostname_file: pod_dir.join("etc/hostname"),
            volumes_dir: pod_dir.join("volumes"),
            cgroups_path: format!("{}/{id}", env.pod_cgroup(pod, &self.uid)),
        };
        let sources = match env_sources(&env, pod, c).await {
            Ok(s) => s,
            Err(message) => {
                slot.config_error(&env, pod, &c.name, &message);
                run.current = Current::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(message),
                };
                return;
            }
        };
        let container = match container_spec(pod, c, &image.config, &ctx, &sources) {
            Ok(s) => s,
            Err(e) => {
                slot.config_error(&env, pod, &c.name, &e.to_string());
                run.current = Current::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(e.to_string()),
                };
                return;
            }
        };
        if let Err(e) = create_volume_dirs(pod, &ctx.volumes_dir) {
            run.current = Current::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: Some(e.to_string()),
            };
            return;
        }
        let engine = env.engine.clone();
        let store = Arc::clone(env.puller.store());
        let inst = instance.clone();
        let started =
            tokio::task::spawn_blocking(move || engine.start(&inst, &store, &image, container)).await;
        slot.instance = Some(instance);
        match started {
            Ok(Ok((pid, clamped))) => {
                if !clamped.capabilities.is_empty() {
                    warn!(pod = %name(pod), container = %c.name, capabilities = ?clamped.capabilities, "capabilities the host lacks were left out");
                }
                info!(pod = %name(pod), container = %c.name, pid, attempt = slot.attempt, "container started");
                slot.last_error = None;
                event(
                    &env,
                    pod,
                    Some(&c.name),
                    "Normal",
                    "Created",
                    format!("Created container: {}", c.name),
                );
                event(
                    &env,
                    pod,
                    Some(&c.name),
                    "Normal",
                    "Started",
                    format!("Started container {}", c.name),
                );
                let now = Timestamp::now();
                slot.started = Some((Instant::now(), now));
                run.current = Current::Running {
                    container_id: format!("berth://{id}"),
                    started_at: now,
                };
                // Ready at once only without readiness or startup probes; else after they succeed.
                run.ready = c.readiness_probe.is_none() && c.startup_probe.is_none();
                if let Some(handler) = Hook::PostStart.handler(c) {
                    // As kubelet: the hook runs before the container counts as started; a failure
                    // kills it and the restart policy takes over.
                    let limit = Duration::from_secs(
                        pod.spec
                            .as_ref()
                            .and_then(|s| s.termination_grace_period_seconds)
                            .unwrap_or(30)
                            .max(1) as u64,
                    );
                    let pod_ip = self.pod_ip.clone().unwrap_or_default();
                    if let Some(slot) = self.slots.get(&c.name)
                        && let Some(instance) = &slot.instance
                        && let Err(message) =
                            hooks::run(handler, &pod_ip, c, &env.engine, instance, limit).await
                    {
                        warn!(pod = %name(pod), container = %c.name, %message, "postStart hook failed");
                        event(
                            &env,
                            pod,
                            Some(&c.name),
                            "Warning",
                            Hook::PostStart.failed_reason(),
                            format!("PostStartHook failed: {message}"),
                        );
                        let _ = env.engine.signal(instance, libc::SIGKILL);
                        run.ready = false;
                    }
                }
            }
            Ok(Err(e)) => {
                warn!(pod = %name(pod), container = %c.name, error = %e, "container did not start");
                event(
                    &env,
                    pod,
                    Some(&c.name),
                    "Warning",
                    "Failed",
                    format!("Error: {e}"),
                );
                // As kubelet: the attempt counts, the pod backs off as after a crash.
                let now = Timestamp::now();
                let term = Terminated {
                    container_id: format!("berth://{id}"),
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(e.to_string()),
                    started_at: Some(now),
                    finished_at: Some(now),
                };
                slot.start_failure = Some(term.clone());
                let policy = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.restart_policy.clone())
                    .unwrap_or_else(|| "Always".into());
                slot.started = Some((Instant::now(), now));
                self.after_exit(pod, c, &policy, term, run);
                if let Current::Waiting { message, .. } = &mut run.current {
                    *message = Some(e.to_string());
                }
                if matches!(run.current, Current::Waiting { .. }) {
                    run.current = Current::Waiting {
                        reason: "RunContainerError".into(),
                        message: Some(e.to_string()),
                    };
                }
            }
            Err(e) => warn!(pod = %name(pod), error = %e, "start task failed"),
        }
    }

    /// Stops every running instance as kubelet does, all in parallel: each container's `preStop` hook
    /// (when the pod is known), its stop signal, then SIGKILL once `grace` has passed (two seconds
    /// more when the hook used the whole grace period).
    async fn stop_all(&mut self, pod: Option<&Pod>, grace: Duration) {
        let pod_ip = self.pod_ip.clone().unwrap_or_default();
        let mut stops = Vec::new();
        for (cname, slot) in &self.slots {
            let Some(instance) = slot.instance.clone() else {
                continue;
            };
            let container = pod.and_then(|p| find_container(p, cname)).cloned();
            let image_signal = slot.image.as_ref().and_then(|i| i.config.stop_signal.clone());
            let (env, pod_ip) = (Arc::clone(&self.env), pod_ip.clone());
            stops.push(async move {
                let start = Instant::now();
                let mut deadline = start + grace;
                let signal = container
                    .as_ref()
                    .map_or(libc::SIGTERM, |c| hooks::stop_signal(c, image_signal.as_deref()));
                let engine = env.engine.clone();
                let probe = instance.clone();
                let running = move || {
                    let engine = engine.clone();
                    let i = probe.clone();
                    async move {
                        tokio::task::spawn_blocking(move || {
                            matches!(
                                engine.state(&i),
                                InstanceState::Running { .. } | InstanceState::Ending
                            )
                        })
                        .await
                        .unwrap_or(false)
                    }
                };
                if !running().await {
                    return;
                }
                if let (Some(c), Some(pod)) = (&container, pod)
                    && let Some(handler) = Hook::PreStop.handler(c)
                    && !grace.is_zero()
                {
                    let result = hooks::run(handler, &pod_ip, c, &env.engine, &instance, grace).await;
                    if let Err(message) = result {
                        warn!(pod = %name(pod), container = %c.name, %message, "preStop hook failed");
                        event(
                            &env,
                            pod,
                            Some(&c.name),
                            "Warning",
                            Hook::PreStop.failed_reason(),
                            format!("PreStopHook failed: {message}"),
                        );
                    }
                    if Instant::now() >= deadline {
                        deadline = Instant::now() + PRE_STOP_EXTENSION;
                    }
                }
                let _ = env.engine.signal(&instance, signal);
                while Instant::now() < deadline && running().await {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if running().await {
                    let _ = env.engine.signal(&instance, libc::SIGKILL);
                    let until = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < until && running().await {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            });
        }
        futures::future::join_all(stops).await;
        for slot in self.slots.values_mut() {
            slot.done = true;
        }
        // The final statuses (terminated) for the report that follows.
        let mut runs = std::mem::take(&mut self.run.containers);
        for r in &mut runs {
            if let Some(slot) = self.slots.get(&r.name)
                && let Some(i) = &slot.instance
                && let InstanceState::Exited(exit) = self.env.engine.state(i)
            {
                r.ready = false;
                r.current = Current::Terminated(terminated(
                    format!("berth://{}", i.id),
                    &exit,
                    slot.started.map(|s| s.1),
                ));
            }
        }
        self.run.containers = runs;
    }

    /// Removes everything of the pod from the node: instances, address, sandbox, files, logs.
    async fn teardown(&mut self) {
        let env = Arc::clone(&self.env);
        let uid = self.uid.clone();
        let dir = self.pod_dir();
        let instances: Vec<Instance> = self.slots.values().filter_map(|s| s.instance.clone()).collect();
        let done = tokio::task::spawn_blocking(move || {
            for i in &instances {
                if let Err(e) = env.engine.release(i) {
                    warn!(pod = %uid, error = %e, "container not released");
                }
            }
            // Instances of earlier agents' attempts, found on disk.
            release_found(&env, &dir);
            if let Err(e) = podnet::del(&env.state_dir, &uid) {
                warn!(pod = %uid, error = %e, "pod address not released");
            }
            if let Err(e) = Sandbox::at(&dir.join("sandbox")).remove() {
                warn!(pod = %uid, error = %e, "pod sandbox not removed");
            }
            for cgroup in env.pod_cgroup_candidates(&uid) {
                if let Err(e) = env.engine.cgroups.remove(&cgroup) {
                    warn!(pod = %uid, error = %e, "pod cgroup not removed");
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
            if let Ok(entries) = std::fs::read_dir(&env.log_dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().ends_with(&format!("_{uid}")) {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        })
        .await;
        if done.is_ok() {
            info!(pod = %self.uid, "pod removed from the node");
        }
    }

    /// The pod's status through the status subresource, when it changed.
    async fn report(&mut self, pod: &Pod) {
        let status = pod_status(pod, &self.run, Timestamp::now());
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        let mut comparable = value.clone();
        strip_times(&mut comparable);
        // A static pod's mirror can be replaced under it (deleted through the API, recreated with an
        // empty status): its status is written on every pass, not only when it changed.
        if self.last_reported.as_ref() == Some(&comparable) && !static_pods::is_static(pod) {
            return;
        }
        let Some(client) = self.env.client.clone() else {
            // Standalone: the status where a user (or a tool) on the node can read it.
            let path = self.pod_dir().join("status.json");
            match write_atomically(&path, &serde_json::to_vec_pretty(&value).unwrap_or_default()) {
                Ok(()) => self.last_reported = Some(comparable),
                Err(e) => warn!(pod = %name(pod), error = %e, "pod status not written"),
            }
            return;
        };
        let api: Api<Pod> = Api::namespaced(client, pod.metadata.namespace.as_deref().unwrap_or("default"));
        let patch = serde_json::json!({ "status": value });
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => self.last_reported = Some(comparable),
            Err(e) => warn!(pod = %name(pod), error = %e, "pod status not written; retrying"),
        }
    }

    /// The last step of a graceful deletion: the node says the pod is gone (grace 0, this uid only).
    async fn confirm_deletion(&self, pod: &Pod) {
        let Some(client) = self.env.client.clone() else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(client, pod.metadata.namespace.as_deref().unwrap_or("default"));
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => info!(pod = %name(pod), "pod deletion confirmed"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => warn!(pod = %name(pod), error = %e, "pod deletion not confirmed"),
        }
    }
}

/// Writes `path` through a temporary file and a rename, so readers see the old or the new content.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Releases instances left on disk by an earlier agent (their runc ids are in their config).
fn release_found(env: &PodEnv, pod_dir: &std::path::Path) {
    let Ok(names) = std::fs::read_dir(pod_dir.join("containers")) else {
        return;
    };
    for name in names.flatten() {
        let Ok(attempts) = std::fs::read_dir(name.path()) else {
            continue;
        };
        for attempt in attempts.flatten() {
            let uid = pod_dir
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            let n: u32 = attempt.file_name().to_string_lossy().parse().unwrap_or(0);
            let instance = Instance {
                id: instance_id(&uid, &name.file_name().to_string_lossy(), n),
                dir: attempt.path(),
                log: PathBuf::new(),
            };
            let _ = env.engine.signal(&instance, libc::SIGKILL);
            let _ = env.engine.release(&instance);
        }
    }
}

/// kubelet's reason for a terminated container.
/// The status of an instance that ended as its shim recorded.
fn terminated(
    container_id: String,
    exit: &berth_runtime::shim::ExitRecord,
    started_at: Option<Timestamp>,
) -> Terminated {
    Terminated {
        container_id,
        exit_code: exit.exit_code,
        signal: exit.signal,
        reason: exit_reason(exit).into(),
        message: None,
        started_at,
        finished_at: exit.finished_at.parse().ok(),
    }
}

fn exit_reason(exit: &berth_runtime::shim::ExitRecord) -> &'static str {
    if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// Timestamps make every status look new; compared without them.
fn strip_times(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("lastTransitionTime");
            m.values_mut().for_each(strip_times);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_times),
        _ => {}
    }
}

/// The container or init container of that name in the pod's spec.
fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// Whether the pod runs in the node's network namespace (`spec.hostNetwork`).
fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
}

fn name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// runc's id of one instance: stable, so a restarted agent finds it again.
pub fn instance_id(uid: &str, container: &str, attempt: u32) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{uid}/{container}/{attempt}").as_bytes(),
    );
    d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The image, pulled or found as `imagePullPolicy` says (`Always` for `:latest` or no tag, else
/// `IfNotPresent`). On failure: (waiting reason, message).
async fn ensure_image(
    env: &PodEnv,
    pod: &Pod,
    image: &str,
    policy: Option<&str>,
    emit: impl Fn(&'static str, &'static str, String),
) -> Result<ImageRecord, (String, String)> {
    let reference = normalise(image).map_err(|e| ("InvalidImageName".to_string(), e.to_string()))?;
    let whole = reference.whole();
    let latest = reference.digest().is_none() && reference.tag().is_none_or(|t| t == "latest");
    let policy = policy.unwrap_or(if latest { "Always" } else { "IfNotPresent" });
    let stored = env.puller.store().lookup(&whole).ok().flatten();
    match (policy, stored) {
        ("IfNotPresent", Some(record)) | ("Never", Some(record)) => {
            emit(
                "Normal",
                "Pulled",
                format!("Container image {image:?} already present on machine"),
            );
            return Ok(record);
        }
        ("Never", None) => {
            return Err((
                "ErrImageNeverPull".into(),
                format!("Container image {image:?} is not present with pull policy of Never"),
            ));
        }
        _ => {}
    }
    let waiting = Instant::now();
    let _serial = env.pull_lock.lock().await;
    emit("Normal", "Pulling", format!("Pulling image {image:?}"));
    let secrets = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    let auths = if secrets.is_empty() {
        vec![RegistryAuth::Anonymous]
    } else {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        match env.api() {
            Ok(client) => {
                super::pull_secrets::for_pull(client, namespace, &secrets, reference.registry()).await
            }
            Err(_) => vec![RegistryAuth::Anonymous],
        }
    };
    // Each credential in turn (kubelet's order), anonymous last; the last failure is the one told.
    let mut pulled = Err(None);
    for auth in &auths {
        match env.puller.pull(image, auth).await {
            Ok(p) => {
                pulled = Ok(p);
                break;
            }
            Err(e) => pulled = Err(Some(e)),
        }
    }
    match pulled {
        Ok(p) => {
            emit(
                "Normal",
                "Pulled",
                format!(
                    "Successfully pulled image {image:?} in {}ms ({}ms including waiting). Image size: {} bytes.",
                    p.took.as_millis(),
                    waiting.elapsed().as_millis(),
                    p.image.size
                ),
            );
            Ok(p.image)
        }
        Err(e) => {
            let e = e.map_or_else(|| "no credentials to try".to_string(), |e| e.to_string());
            emit(
                "Warning",
                "Failed",
                format!("Failed to pull image {image:?}: {e}"),
            );
            emit("Warning", "Failed", "Error: ErrImagePull".into());
            Err(("ErrImagePull".into(), e))
        }
    }
}

/// The ConfigMaps and Secrets the container's environment names, fetched from the pod's namespace
/// (missing ones are left out: the translation decides, by `optional`, whether that is an error).
async fn env_sources(env: &PodEnv, pod: &Pod, c: &Container) -> Result<EnvSources, String> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut config_maps: Vec<String> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    for from in c.env_from.iter().flatten() {
        config_maps.extend(from.config_map_ref.as_ref().map(|r| r.name.clone()));
        secrets.extend(from.secret_ref.as_ref().map(|r| r.name.clone()));
    }
    for var in c.env.iter().flatten() {
        if let Some(from) = &var.value_from {
            config_maps.extend(from.config_map_key_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(from.secret_key_ref.as_ref().map(|r| r.name.clone()));
        }
    }
    let mut out = EnvSources::default();
    if let Some(store) = &env.services {
        let enable = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let services = store.state();
        out.services = super::translate::service_links(services.iter().map(|s| &**s), namespace, enable);
    }
    if config_maps.is_empty() && secrets.is_empty() {
        return Ok(out);
    }
    let client = env.api()?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for n in config_maps {
        match cms.get_opt(&n).await {
            Ok(Some(cm)) => {
                out.config_maps.insert(n, cm.data.unwrap_or_default());
            }
            Ok(None) => {}
            Err(e) => return Err(format!("configmap {n:?}: {e}")),
        }
    }
    let ss: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for n in secrets {
        match ss.get_opt(&n).await {
            Ok(Some(s)) => {
                let data = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                out.secrets.insert(n, data);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("secret {n:?}: {e}")),
        }
    }
    Ok(out)
}

/// The pod's emptyDir volumes as directories (memory-backed ones are mounted by runc).
fn create_volume_dirs(pod: &Pod, dir: &std::path::Path) -> std::io::Result<()> {
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        if v.empty_dir.is_some() {
            std::fs::create_dir_all(dir.join(&v.name))?;
        }
    }
    Ok(())
}
