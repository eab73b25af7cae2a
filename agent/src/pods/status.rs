//! A pod's status as kubelet reports it, computed from what the worker knows of its containers: the
//! phase (kubelet's `getPhase`), the conditions, one containerStatus per container. Pure, so each rule
//! has a test.

use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

/// How one instance of a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    pub container_id: String,
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, `ContainerStatusUnknown`, `StartError`.
    pub reason: String,
    /// Why, when the runtime says (a start failure's error).
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// The current instance of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Current {
    /// Not running: why (`ContainerCreating`, `ErrImagePull`, `CrashLoopBackOff`, ...).
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        container_id: String,
        started_at: Timestamp,
    },
    Terminated(Terminated),
}

/// Everything the status says about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRun {
    pub name: String,
    /// The image as the pod names it.
    pub image: String,
    /// `REGISTRY/REPO@sha256:...` once pulled.
    pub image_id: Option<String>,
    pub restart_count: i32,
    pub current: Current,
    pub last: Option<Terminated>,
    pub ready: bool,
}

impl ContainerRun {
    /// A container nothing has been done for yet.
    pub fn new(name: &str, image: &str) -> Self {
        ContainerRun {
            name: name.into(),
            image: image.into(),
            image_id: None,
            restart_count: 0,
            current: Current::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            ready: false,
        }
    }

    fn succeeded(&self) -> bool {
        matches!(&self.current, Current::Terminated(t) if t.exit_code == 0)
    }
}

/// What the pod's status is computed from.
#[derive(Clone, Debug, Default)]
pub struct PodRun {
    pub init: Vec<ContainerRun>,
    pub containers: Vec<ContainerRun>,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub start_time: Option<Timestamp>,
    /// The sandbox (namespaces, network) is ready.
    pub sandbox_ready: bool,
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn terminated_state(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: Some(t.container_id.clone()),
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        started_at: t.started_at.map(time),
        finished_at: t.finished_at.map(time),
        message: t.message.clone(),
    }
}

fn container_status(c: &ContainerRun) -> ContainerStatus {
    let (state, container_id, started) = match &c.current {
        Current::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            None,
            false,
        ),
        Current::Running {
            container_id,
            started_at,
        } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(*started_at)),
                }),
                ..Default::default()
            },
            Some(container_id.clone()),
            true,
        ),
        Current::Terminated(t) => (
            ContainerState {
                terminated: Some(terminated_state(t)),
                ..Default::default()
            },
            Some(t.container_id.clone()),
            false,
        ),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone().unwrap_or_default(),
        container_id,
        ready: c.ready,
        restart_count: c.restart_count,
        started: Some(started),
        state: Some(state),
        last_state: c.last.as_ref().map(|t| ContainerState {
            terminated: Some(terminated_state(t)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// kubelet's phase: Pending until every container has started once, then Running while any runs or
/// will be restarted, Succeeded or Failed when all have ended for good.
pub fn phase(pod: &Pod, run: &PodRun) -> &'static str {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let init_failed_for_good = policy == "Never"
        && run
            .init
            .iter()
            .any(|c| matches!(&c.current, Current::Terminated(t) if t.exit_code != 0));
    if init_failed_for_good {
        return "Failed";
    }
    if !run.init.iter().all(ContainerRun::succeeded) {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &run.containers {
        match &c.current {
            Current::Running { .. } => running += 1,
            Current::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            // Restarting after an exit counts as stopped; never started as waiting.
            Current::Waiting { .. } if c.last.is_some() => stopped += 1,
            Current::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            "Always" => "Running",
            _ if succeeded == stopped => "Succeeded",
            "OnFailure" => "Running",
            _ => "Failed",
        }
    } else {
        "Pending"
    }
}

fn condition(
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    previous: Option<&PodStatus>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status changes.
    let last = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        last_transition_time: Some(last),
        reason: if ok { None } else { reason.map(str::to_string) },
        ..Default::default()
    }
}

/// The full status; `previous` keeps condition transition times and the QoS class the API server set.
pub fn pod_status(pod: &Pod, run: &PodRun, now: Timestamp) -> PodStatus {
    let previous = pod.status.as_ref();
    let initialized = run.init.iter().all(ContainerRun::succeeded);
    let containers_ready =
        initialized && !run.containers.is_empty() && run.containers.iter().all(|c| c.ready);
    let phase = phase(pod, run);
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            run.sandbox_ready,
            None,
            previous,
            now,
        ),
        condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            previous,
            now,
        ),
        condition(
            "Ready",
            containers_ready,
            Some("ContainersNotReady"),
            previous,
            now,
        ),
        condition(
            "ContainersReady",
            containers_ready,
            Some("ContainersNotReady"),
            previous,
            now,
        ),
        condition("PodScheduled", true, None, previous, now),
    ];
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: run.host_ip.clone(),
        host_ips: run.host_ip.clone().map(|ip| vec![HostIP { ip }]),
        pod_ip: run.pod_ip.clone(),
        pod_ips: run.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: run.start_time.map(time),
        init_container_statuses: (!run.init.is_empty())
            .then(|| run.init.iter().map(container_status).collect()),
        container_statuses: Some(run.containers.iter().map(container_status).collect()),
        qos_class: previous
            .and_then(|s| s.qos_class.clone())
            .or_else(|| Some(super::resources::qos_class(pod).into())),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str) -> Pod {
        serde_norway::from_str(&format!(
            "metadata: {{name: p}}\nspec: {{restartPolicy: {policy}, containers: [{{name: c, image: i}}]}}"
        ))
        .expect("pod")
    }

    fn running() -> ContainerRun {
        ContainerRun {
            current: Current::Running {
                container_id: "berth://a".into(),
                started_at: Timestamp::UNIX_EPOCH,
            },
            ready: true,
            ..ContainerRun::new("c", "i")
        }
    }

    fn exited(code: i32) -> ContainerRun {
        ContainerRun {
            current: Current::Terminated(Terminated {
                container_id: "berth://a".into(),
                exit_code: code,
                signal: None,
                message: None,
                reason: if code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                },
                started_at: None,
                finished_at: None,
            }),
            ..ContainerRun::new("c", "i")
        }
    }

    #[test]
    fn phases_follow_kubelet() {
        let run = |containers: Vec<ContainerRun>, init: Vec<ContainerRun>| PodRun {
            init,
            containers,
            ..Default::default()
        };
        assert_eq!(
            phase(&pod("Always"), &run(vec![ContainerRun::new("c", "i")], vec![])),
            "Pending"
        );
        assert_eq!(phase(&pod("Always"), &run(vec![running()], vec![])), "Running");
        assert_eq!(phase(&pod("Always"), &run(vec![exited(0)], vec![])), "Running");
        assert_eq!(phase(&pod("Never"), &run(vec![exited(0)], vec![])), "Succeeded");
        assert_eq!(phase(&pod("Never"), &run(vec![exited(1)], vec![])), "Failed");
        assert_eq!(phase(&pod("OnFailure"), &run(vec![exited(1)], vec![])), "Running");
        assert_eq!(
            phase(&pod("OnFailure"), &run(vec![exited(0)], vec![])),
            "Succeeded"
        );
        // Crash-looping: waiting with a last state counts as stopped, so the pod stays Running.
        let mut looping = ContainerRun::new("c", "i");
        looping.current = Current::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        looping.last = match exited(1).current {
            Current::Terminated(t) => Some(t),
            _ => None,
        };
        assert_eq!(phase(&pod("Always"), &run(vec![looping], vec![])), "Running");
        // Init containers gate everything.
        assert_eq!(
            phase(
                &pod("Always"),
                &run(vec![ContainerRun::new("c", "i")], vec![running()])
            ),
            "Pending"
        );
        assert_eq!(
            phase(
                &pod("Never"),
                &run(vec![ContainerRun::new("c", "i")], vec![exited(2)])
            ),
            "Failed"
        );
    }

    #[test]
    fn conditions_and_container_statuses() {
        let p = pod("Always");
        let now = Timestamp::UNIX_EPOCH;
        let status = pod_status(
            &p,
            &PodRun {
                containers: vec![running()],
                pod_ip: Some("10.244.1.5".into()),
                sandbox_ready: true,
                ..Default::default()
            },
            now,
        );
        let cond = |t: &str| {
            status
                .conditions
                .as_ref()
                .and_then(|cs| cs.iter().find(|c| c.type_ == t))
                .map(|c| c.status.clone())
        };
        assert_eq!(cond("Ready").as_deref(), Some("True"));
        assert_eq!(cond("Initialized").as_deref(), Some("True"));
        assert_eq!(
            status.pod_ips.as_ref().map(|v| v[0].ip.clone()).as_deref(),
            Some("10.244.1.5")
        );
        let cs = &status.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(cs.container_id.as_deref(), Some("berth://a"));
        assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
        assert_eq!(cs.started, Some(true));
    }
}
