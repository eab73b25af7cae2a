//! Events, written to the API as kube-proxy and kubelet write theirs, from component `berth-agent` on
//! this node: Warnings about Services the data plane cannot express (more ports or backends than a map
//! value holds, an IPv6-only Service, an SCTP port), each (Service, reason) once per agent run; and
//! what happens to pods (`Pulling`, `Pulled`, `Created`, `Started`, `Killing`, `BackOff`, `Failed`,
//! `Unhealthy`, with kubelet's reasons and messages). Sent from a task of their own through a channel,
//! so a slow API server never holds up a map apply or a pod.

use std::collections::HashSet;

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::mpsc;
use tracing::warn;

/// Reason of the Events berth writes for a Service it does not program.
pub const NOT_PROGRAMMED: &str = "BerthNotProgrammed";

/// A Warning about one Service: `service` is `namespace/name` (optionally `:port`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceWarning {
    pub service: String,
    pub message: String,
}

/// An Event about a pod (or one of its containers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.containers{NAME}` when about a container.
    pub field_path: Option<String>,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

enum Queued {
    Service(ServiceWarning),
    Pod(PodEvent),
}

/// The sending side, held by the subsystems.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Queued>,
}

impl EventSink {
    /// Queues a Warning; dropped (with a log line) if the writer is far behind.
    pub fn warn_service(&self, warning: ServiceWarning) {
        if self.tx.try_send(Queued::Service(warning)).is_err() {
            warn!("Event queue full; a Warning Event is dropped (the log has it)");
        }
    }

    /// Queues an Event about a pod.
    pub fn pod(&self, event: PodEvent) {
        if self.tx.try_send(Queued::Pod(event)).is_err() {
            warn!("Event queue full; a pod Event is dropped");
        }
    }
}

fn pod_event(e: &PodEvent, node: &str) -> Event {
    let now = Time(Timestamp::now());
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", e.name)),
            namespace: Some(e.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(e.namespace.clone()),
            name: Some(e.name.clone()),
            uid: Some(e.uid.clone()),
            field_path: e.field_path.clone(),
            ..ObjectReference::default()
        },
        type_: Some(e.type_.into()),
        reason: Some(e.reason.into()),
        message: Some(e.message.clone()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("berth-agent".into()),
        reporting_instance: Some(node.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    }
}

/// Starts the writer task; its sink.
pub fn start(client: Client, node: String) -> EventSink {
    let (tx, mut rx) = mpsc::channel::<Queued>(1024);
    tokio::spawn(async move {
        let mut reported: HashSet<ServiceWarning> = HashSet::new();
        while let Some(queued) = rx.recv().await {
            let w = match queued {
                Queued::Service(w) => w,
                Queued::Pod(e) => {
                    let api: Api<Event> = Api::namespaced(client.clone(), &e.namespace);
                    if let Err(err) = api.create(&PostParams::default(), &pod_event(&e, &node)).await {
                        warn!(pod = %e.name, reason = e.reason, error = %err, "cannot write the pod Event");
                    }
                    continue;
                }
            };
            if !reported.insert(w.clone()) {
                continue;
            }
            let id = w.service.split(':').next().unwrap_or_default();
            let (namespace, name) = id.split_once('/').unwrap_or(("default", id));
            let now = Time(Timestamp::now());
            let event = Event {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{name}.")),
                    namespace: Some(namespace.into()),
                    ..ObjectMeta::default()
                },
                involved_object: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Service".into()),
                    namespace: Some(namespace.into()),
                    name: Some(name.into()),
                    ..ObjectReference::default()
                },
                type_: Some("Warning".into()),
                reason: Some(NOT_PROGRAMMED.into()),
                message: Some(format!("{}: {}", w.service, w.message)),
                source: Some(EventSource {
                    component: Some("berth-agent".into()),
                    host: Some(node.clone()),
                }),
                reporting_component: Some("berth-agent".into()),
                reporting_instance: Some(node.clone()),
                first_timestamp: Some(now.clone()),
                last_timestamp: Some(now),
                count: Some(1),
                ..Event::default()
            };
            let api: Api<Event> = Api::namespaced(client.clone(), namespace);
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                warn!(service = %w.service, error = %e, "cannot write the Warning Event");
                // Reported again next time it is seen.
                reported.remove(&w);
            }
        }
    });
    EventSink { tx }
}
