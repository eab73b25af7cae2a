//! Services, EndpointSlices and Nodes from an API server through kube-rs watchers: an initial list,
//! then a watch resumed from the last resourceVersion; a `410 Gone` relists; errors back off
//! (kube-runtime's default: exponential from 800 ms to 30 s, with jitter). While the server is
//! unreachable the stores keep their content and the data plane keeps forwarding.
//!
//! kube-proxy's conventions: Services labelled `service.kubernetes.io/service-proxy-name` belong to
//! another proxy and are not watched (the same selector kube-proxy uses); headless and ExternalName
//! Services are left out by the Service translation ([`crate::lb::desired`]), for every source.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::{Node, Service},
        discovery::v1::EndpointSlice,
    },
    serde::de::DeserializeOwned,
};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tracing::{info, warn};

use super::{FeedWriter, InputWriters, Inputs, Object, inputs};
use crate::lb::desired::SERVICE_PROXY_NAME_LABEL;

/// Starts one watcher per kind on the current tokio runtime; the returned inputs fill as they list.
pub fn start(client: Client) -> Inputs {
    let (writers, inputs) = inputs();
    let InputWriters {
        services,
        endpoint_slices,
        nodes,
    } = writers;
    let not_proxied_elsewhere = watcher::Config::default().labels(&format!("!{SERVICE_PROXY_NAME_LABEL}"));
    tokio::spawn(follow(
        Api::<Service>::all(client.clone()),
        not_proxied_elsewhere,
        services,
    ));
    tokio::spawn(follow(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        endpoint_slices,
    ));
    tokio::spawn(follow(
        Api::<Node>::all(client),
        watcher::Config::default(),
        nodes,
    ));
    inputs
}

/// Feeds one kind's watcher into its store, forever.
async fn follow<K>(api: Api<K>, config: watcher::Config, mut writer: FeedWriter<K>)
where
    K: Object + DeserializeOwned + Debug,
{
    let kind = K::kind(&()).into_owned();
    // managedFields are large and never read here: dropped before they reach the store.
    let mut events = watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .boxed();
    let mut failing = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if failing {
                    info!(%kind, "watch resumed");
                    failing = false;
                }
                writer.apply(&event);
                if matches!(event, watcher::Event::InitDone) {
                    info!(%kind, "listed");
                }
            }
            Err(e) => {
                // The store keeps its content: the data plane goes on serving what it was given.
                if !failing {
                    warn!(%kind, error = %e, "watch failed; retrying with backoff, the data plane keeps its state");
                }
                failing = true;
            }
        }
    }
}
