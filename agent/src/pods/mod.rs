//! Pods: kubelet's job. The pods bound to this node (from the API) and its static pods (from a
//! directory, [`crate::source::static_pods`]) each get a [`worker::Worker`]
//! task; this module keeps one worker per pod uid, hands each the latest version of its pod, and
//! finds what earlier agents left on disk for pods that no longer exist.
//!
//! - [`translate`]: a Kubernetes container in runtime terms (pure).
//! - [`status`]: the pod status kubelet would report (pure).
//! - [`worker`]: one pod's lifecycle.
//! - [`exits`]: container exits as the shims record them (workers sleep between events).
//! - [`grpc_probe`]: the gRPC health check of `grpc` probes.
//! - [`probes`], [`hooks`]: startup/liveness/readiness probes; postStart/preStop hooks, stop signal.
//! - [`volumes`], [`host_path`]: configMap/secret/downwardAPI files; hostPath types.
//! - [`pull_secrets`]: registry credentials from `imagePullSecrets`.
//! - [`resources`]: requests and limits as cgroup settings, QoS class.
//! - [`logs`]: the CRI log files, read as `kubectl logs` asks.
//! - [`mirror`]: static pods published in the API as mirror pods.

pub mod exits;
pub mod grpc_probe;
pub mod hooks;
pub mod host_path;
pub mod logs;
pub mod mirror;
pub mod probes;
pub mod pull_secrets;
pub mod resources;
pub mod status;
pub mod tokens;
pub mod translate;
pub mod volumes;
pub mod worker;

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
};

use berth_runtime::{container::Engine, image::Puller};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use crate::source::{Feed, static_pods};

/// What every pod worker of the node shares.
pub struct PodEnv {
    pub node_name: String,
    /// The node's address (`status.hostIP`).
    pub node_ip: String,
    /// Node state: `subnet.env` and the address allocations.
    pub state_dir: PathBuf,
    /// Per-pod directories (`UID/`: sandbox, files, volumes, container instances).
    pub pods_dir: PathBuf,
    /// Container logs (`/var/log/pods` by default).
    pub log_dir: PathBuf,
    /// cgroup parent of all pods (kubelet's `--cgroup-root`).
    pub cgroup_root: String,
    /// Processes allowed in one pod's cgroup (kubelet's `--pod-max-pids`; None: unlimited).
    pub pod_max_pids: Option<i64>,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub engine: Engine,
    pub puller: Puller,
    /// The API server (None: standalone, static pods only; their status goes to `UID/status.json`).
    pub client: Option<kube::Client>,
    /// One pull at a time, as kubelet's default `serializeImagePulls`.
    pub pull_lock: Mutex<()>,
    /// Where pod Events go.
    pub events: Option<crate::events::EventSink>,
    /// Wakes workers when containers exit (None: inotify unavailable; workers look every second).
    pub exits: Option<exits::ExitWatcher>,
    /// The Services the data plane follows, for containers' service link variables.
    pub services: Option<crate::source::Store<crate::model::Service>>,
}

impl PodEnv {
    /// The API client, or why a pod cannot read API objects without one.
    pub fn api(&self) -> Result<&kube::Client, String> {
        self.client
            .as_ref()
            .ok_or_else(|| "the node has no API server: a static pod cannot use ConfigMaps or Secrets".into())
    }

    /// `path` below the node's cgroup root.
    fn cgroup(&self, path: &str) -> String {
        format!("{}/{path}", self.cgroup_root.trim_end_matches('/'))
    }

    /// The pod's cgroup (its QoS parent's child `podUID`), which holds its containers' cgroups.
    pub fn pod_cgroup(&self, pod: &Pod, uid: &str) -> String {
        self.cgroup(&resources::pod_cgroup(pod, uid))
    }

    /// Every place a pod's cgroup can be (one per QoS class), for removing a pod whose spec is gone.
    pub fn pod_cgroup_candidates(&self, uid: &str) -> [String; 3] {
        ["", "burstable/", "besteffort/"].map(|qos| self.cgroup(&format!("kubepods/{qos}pod{uid}")))
    }

    /// Makes the QoS parents as kubelet's QoS container manager does: `kubepods` weighted by the
    /// node's CPUs, `kubepods/besteffort` at the minimum weight, `kubepods/burstable` at the sum of
    /// its pods' requests.
    fn ensure_qos_parents(&self, burstable_shares: u64) -> Result<(), berth_runtime::cgroups::CgroupError> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let with_shares = |shares| berth_runtime::spec::Resources {
            cpu_shares: Some(shares),
            ..Default::default()
        };
        let cgroups = &self.engine.cgroups;
        cgroups.ensure(&self.cgroup("kubepods"), &with_shares(cpus * 1024))?;
        cgroups.ensure(&self.cgroup("kubepods/besteffort"), &with_shares(2))?;
        cgroups.ensure(&self.cgroup("kubepods/burstable"), &with_shares(burstable_shares))
    }
}

/// How often mirror pods are compared with the static pods when nothing else happens.
const MIRROR_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Where the node's pods come from: the API (pods bound to the node) and the static pods directory.
pub struct PodSources {
    pub api: Option<Feed<Pod>>,
    pub static_pods: Option<Feed<Pod>>,
}

/// One look at both sources.
struct PodsSeen {
    /// Pods to run: bound to this node in the API (mirror pods aside), and the static ones.
    to_run: Vec<Arc<Pod>>,
    static_pods: Vec<Arc<Pod>>,
    /// The API's mirror pods bound to this node.
    mirrors: Vec<Arc<Pod>>,
}

impl PodSources {
    /// Both sources, once each has listed completely.
    fn snapshot(&mut self, node: &str) -> Option<PodsSeen> {
        let api = match &mut self.api {
            Some(feed) => feed.snapshot()?,
            None => Vec::new(),
        };
        let static_pods = match &mut self.static_pods {
            Some(feed) => feed.snapshot()?,
            None => Vec::new(),
        };
        let (mirrors, api): (Vec<_>, Vec<_>) = api
            .into_iter()
            .filter(|pod| pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .partition(|pod| static_pods::is_mirror(pod));
        Some(PodsSeen {
            to_run: api.into_iter().chain(static_pods.iter().cloned()).collect(),
            static_pods,
            mirrors,
        })
    }

    /// The next change of either source.
    async fn changed(&mut self) {
        async fn of(feed: &mut Option<Feed<Pod>>) {
            match feed {
                Some(f) => f.changed().await,
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = of(&mut self.api) => {}
            () = of(&mut self.static_pods) => {}
        }
    }
}

/// Keeps one worker per pod of this node.
pub struct PodManager {
    pub env: Arc<PodEnv>,
}

impl PodManager {
    /// Runs forever.
    pub async fn run(self, mut sources: PodSources) {
        let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
        let mut swept = false;
        let mut burstable_shares = None;
        let mut mirrors = self.env.client.clone().map(mirror::Mirrors::new);
        let mut mirrored = false;
        loop {
            if let Some(seen) = sources.snapshot(&self.env.node_name) {
                if let Some(m) = &mut mirrors {
                    m.reconcile(&seen.static_pods, &seen.mirrors);
                    mirrored = !seen.static_pods.is_empty() || !seen.mirrors.is_empty();
                }
                let all = seen.to_run;
                let shares = resources::burstable_shares(all.iter().map(|p| &**p));
                if burstable_shares != Some(shares) {
                    burstable_shares = Some(shares);
                    let env = Arc::clone(&self.env);
                    match tokio::task::spawn_blocking(move || env.ensure_qos_parents(shares)).await {
                        Ok(Err(e)) => {
                            warn!(error = %e, "QoS cgroups not made; pods get theirs below the root")
                        }
                        Err(e) => warn!(error = %e, "QoS cgroup task failed"),
                        Ok(Ok(())) => {}
                    }
                }
                let mut seen = HashSet::new();
                for pod in all {
                    let Some(uid) = pod.metadata.uid.clone() else {
                        continue;
                    };
                    seen.insert(uid.clone());
                    match workers.get(&uid) {
                        Some(tx) => {
                            tx.send_if_modified(|cur| {
                                let changed = cur.as_ref().is_none_or(|c| !Arc::ptr_eq(c, &pod));
                                *cur = Some(Arc::clone(&pod));
                                changed
                            });
                        }
                        None => {
                            info!(
                                pod = %format!(
                                    "{}/{}",
                                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                                    pod.metadata.name.as_deref().unwrap_or_default()
                                ),
                                %uid,
                                "pod bound to this node"
                            );
                            let (tx, rx) = watch::channel(Some(pod));
                            tokio::spawn(worker::Worker::new(Arc::clone(&self.env), uid.clone(), rx).run());
                            workers.insert(uid, tx);
                        }
                    }
                }
                // Pods gone from the API: their workers tear down and end.
                workers.retain(|uid, tx| {
                    if seen.contains(uid) {
                        return true;
                    }
                    tx.send_replace(None);
                    false
                });
                // Once, after the first complete list: pods earlier agents ran that no longer exist.
                if !swept {
                    swept = true;
                    for uid in self.leftover_pods(&seen) {
                        info!(pod = %uid, "removing a pod that no longer exists");
                        let (_tx, rx) = watch::channel(None);
                        tokio::spawn(worker::Worker::new(Arc::clone(&self.env), uid, rx).run());
                    }
                }
            }
            // With mirror pods to keep, look again now and then even when nothing changes: a mirror
            // whose create failed (the API server away) is retried without waiting for an event.
            let retry = mirrored.then_some(MIRROR_RETRY);
            tokio::select! {
                () = sources.changed() => {}
                () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
            }
        }
    }

    fn leftover_pods(&self, live: &HashSet<String>) -> Vec<String> {
        std::fs::read_dir(&self.env.pods_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|uid| !live.contains(uid))
            .collect()
    }
}
