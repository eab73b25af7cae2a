//! Where the agent's picture of the cluster comes from: one interface, two implementations.
//!
//! The interface is kube-runtime's: every source turns what it reads into watcher [`Event`]s (`Init`,
//! `InitApply`, `InitDone`, `Apply`, `Delete`) and applies them to a reflector [`Store`] per kind; a
//! subsystem reads the store and is told through its [`Feed`] that something changed. The store is
//! *ready* once the source has delivered a complete initial list (`InitDone`); until then subsystems
//! change nothing, so a restarted agent keeps serving what its pinned maps hold instead of withdrawing
//! objects it has not read yet. A relist (after a `410 Gone`, a reconnect) swaps the store's content
//! at its `InitDone` in one step: subsystems then diff against what they programmed and write only
//! what changed, never flushing.
//!
//! - [`api`]: kube-rs watchers against an API server (berth's or any Kubernetes).
//! - [`manifests`]: a directory of YAML manifests (standalone mode, like kubelet's static pods).
//! - [`static_pods`]: Pod manifests of this node (kubelet's `--pod-manifest-path`), a pod store of
//!   their own.
//!
//! Writes to the API (the Node, its Lease, Events) never go through an input: they have a writer of
//! their own ([`crate::node`]).

pub mod api;
pub mod manifests;
pub mod static_pods;

use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, store::Writer};
pub use kube::runtime::{reflector::Store, watcher::Event};

use crate::model::{EndpointSlice, Service, Trim};
use std::sync::Arc;
use tokio::sync::watch;

/// A kind the agent follows: any built-in Kubernetes type.
pub trait Object: kube::Resource<DynamicType = ()> + Trim + Clone + Send + Sync + 'static {}
impl<K: kube::Resource<DynamicType = ()> + Trim + Clone + Send + Sync + 'static> Object for K {}

/// Versions of a feed: bumped on every change a reader can see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedState {
    /// Visible changes so far.
    pub generation: u64,
    /// The store holds a complete list (the source delivered `InitDone` at least once).
    pub ready: bool,
}

/// The read side of one kind: a reflector store and change notifications.
pub struct Feed<K: Object> {
    store: Store<K>,
    state: watch::Receiver<FeedState>,
}

impl<K: Object> Clone for Feed<K> {
    fn clone(&self) -> Self {
        Feed {
            store: self.store.clone(),
            state: self.state.clone(),
        }
    }
}

impl<K: Object> Feed<K> {
    /// Every object, once the initial list is complete; `None` before.
    pub fn snapshot(&mut self) -> Option<Vec<Arc<K>>> {
        let ready = self.state.borrow_and_update().ready;
        ready.then(|| self.store.state())
    }

    /// Whether the initial list is complete.
    pub fn is_ready(&self) -> bool {
        self.state.borrow().ready
    }

    /// Waits for the next visible change (returns at once if one happened since the last
    /// [`snapshot`](Self::snapshot) or `changed`). Never returns once the source is gone.
    pub async fn changed(&mut self) {
        if self.state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The store (for lookups by key).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }
}

/// The write side of one kind, held by its source.
pub struct FeedWriter<K: Object> {
    writer: Writer<K>,
    state: watch::Sender<FeedState>,
}

impl<K: Object> FeedWriter<K> {
    /// Applies one event to the store and tells readers when it changed what they see: `Init` and
    /// `InitApply` only fill the store's buffer; `InitDone` swaps it in.
    pub fn apply(&mut self, event: &Event<K>) {
        self.writer.apply_watcher_event(event);
        let visible = match event {
            Event::Init | Event::InitApply(_) => false,
            Event::InitDone => true,
            Event::Apply(_) | Event::Delete(_) => self.state.borrow().ready,
        };
        if visible {
            let ready = self.state.borrow().ready || matches!(event, Event::InitDone);
            self.state.send_modify(|s| {
                s.generation += 1;
                s.ready = ready;
            });
        }
    }
}

/// A new store for one kind: the writer for its source, the feed for its readers.
pub fn feed<K: Object>() -> (FeedWriter<K>, Feed<K>) {
    let (store, writer) = reflector::store();
    let (state, receiver) = watch::channel(FeedState::default());
    (
        FeedWriter { writer, state },
        Feed {
            store,
            state: receiver,
        },
    )
}

/// The kinds the agent follows, as one source delivers them.
#[derive(Clone)]
pub struct Inputs {
    pub services: Feed<Service>,
    pub endpoint_slices: Feed<EndpointSlice>,
    pub nodes: Feed<Node>,
}

/// The writers matching an [`Inputs`].
pub struct InputWriters {
    pub services: FeedWriter<Service>,
    pub endpoint_slices: FeedWriter<EndpointSlice>,
    pub nodes: FeedWriter<Node>,
}

/// Empty stores for every kind the agent follows.
pub fn inputs() -> (InputWriters, Inputs) {
    let (services_w, services) = feed();
    let (slices_w, endpoint_slices) = feed();
    let (nodes_w, nodes) = feed();
    (
        InputWriters {
            services: services_w,
            endpoint_slices: slices_w,
            nodes: nodes_w,
        },
        Inputs {
            services,
            endpoint_slices,
            nodes,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            ..Service::default()
        }
    }

    #[test]
    fn nothing_is_visible_before_the_initial_list_is_done() {
        let (mut w, mut f) = feed::<Service>();
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(svc("a")));
        assert!(f.snapshot().is_none(), "not ready during the initial list");
        w.apply(&Event::InitDone);
        assert_eq!(f.snapshot().map(|s| s.len()), Some(1));
        w.apply(&Event::Apply(svc("b")));
        assert_eq!(f.snapshot().map(|s| s.len()), Some(2));
    }

    #[test]
    fn a_relist_swaps_the_content_at_its_end_and_stays_ready() {
        let (mut w, mut f) = feed::<Service>();
        for e in [Event::Init, Event::InitApply(svc("a")), Event::InitDone] {
            w.apply(&e);
        }
        let before = f.state.borrow().generation;
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(svc("b")));
        assert_eq!(
            f.state.borrow().generation,
            before,
            "no change visible mid-relist"
        );
        let names: Vec<_> = f
            .snapshot()
            .expect("still ready")
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(names, ["a"], "old content served during the relist");
        w.apply(&Event::InitDone);
        let names: Vec<_> = f
            .snapshot()
            .expect("ready")
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(names, ["b"]);
    }
}
