//! Warning Events about Services the data plane cannot express (more ports or backends than a map
//! value holds, an IPv6-only Service, an SCTP port), written to the API as kube-proxy and kubelet write
//! theirs: on the Service, from component `berth-agent` on this node. Sent from a task of their own
//! through a channel, so a slow API server never holds up a map apply; each (Service, reason) is
//! reported once per agent run (the log has it every time).

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

/// The sending side, held by the subsystems.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<ServiceWarning>,
}

impl EventSink {
    /// Queues a Warning; dropped (with a log line) if the writer is far behind.
    pub fn warn_service(&self, warning: ServiceWarning) {
        if self.tx.try_send(warning).is_err() {
            warn!("Event queue full; a Warning Event is dropped (the log has it)");
        }
    }
}

/// Starts the writer task; its sink.
pub fn start(client: Client, node: String) -> EventSink {
    let (tx, mut rx) = mpsc::channel::<ServiceWarning>(1024);
    tokio::spawn(async move {
        let mut reported: HashSet<ServiceWarning> = HashSet::new();
        while let Some(w) = rx.recv().await {
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
