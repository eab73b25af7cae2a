//! Services, EndpointSlices and Nodes from an API server through kube-rs watchers: an initial list,
//! then a watch resumed from the last resourceVersion; a `410 Gone` relists; errors back off
//! exponentially from 200 ms to 5 s ([`WatchBackoff`]; kube-runtime's default grows to 30 s, which
//! would leave a node's data plane up to half a minute behind an API server that came back). While the
//! server is unreachable the stores keep their content and the data plane keeps forwarding.
//!
//! kube-proxy's conventions: Services labelled `service.kubernetes.io/service-proxy-name` belong to
//! another proxy and are not watched (the same selector kube-proxy uses); headless and ExternalName
//! Services are left out by the Service translation ([`crate::lb::desired`]), for every source.

use std::{fmt::Debug, time::Duration};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Node, serde::de::DeserializeOwned};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, utils::Backoff, watcher},
};
use tracing::{info, warn};

use super::{FeedWriter, InputWriters, Inputs, Object, inputs};
use crate::{
    lb::desired::SERVICE_PROXY_NAME_LABEL,
    model::{EndpointSlice, Service},
};

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

/// The pods bound to node `node` (field selector `spec.nodeName`, as kubelet watches them).
pub fn pods(client: Client, node: &str) -> super::Feed<k8s_openapi::api::core::v1::Pod> {
    let (writer, feed) = super::feed();
    tokio::spawn(follow(
        Api::all(client),
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        writer,
    ));
    feed
}

/// Feeds one kind's watcher into its store, forever.
async fn follow<K>(api: Api<K>, config: watcher::Config, mut writer: FeedWriter<K>)
where
    K: Object + DeserializeOwned + Debug,
{
    let kind = K::kind(&()).into_owned();
    // What the agent never reads is dropped before it reaches the store (see `Trim`).
    let mut events = watcher(api, config)
        .backoff(WatchBackoff::default())
        .modify(K::trim)
        .boxed();
    let mut failing = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                // A retry starts with `Init` before its list is even sent: only what follows it
                // shows the API answering again.
                if failing && !matches!(event, watcher::Event::Init) {
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

/// Retry delays of a failing watch: doubling from [`WatchBackoff::FIRST`] to [`WatchBackoff::MAX`], each
/// with up to 25 % jitter so a fleet of nodes does not reconnect in step; back to the first delay once
/// the watch delivers again.
#[derive(Debug, Default)]
pub struct WatchBackoff {
    failures: u32,
}

impl WatchBackoff {
    pub const FIRST: Duration = Duration::from_millis(200);
    pub const MAX: Duration = Duration::from_secs(5);
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = Self::FIRST
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
        Some(base + jitter)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = (0..10).filter_map(|_| b.next()).collect();
        assert!(delays[0] >= WatchBackoff::FIRST && delays[0] < WatchBackoff::FIRST * 2);
        assert!(delays[3] >= WatchBackoff::FIRST * 8);
        assert!(delays.iter().all(|d| *d <= WatchBackoff::MAX.mul_f64(1.25)));
        b.reset();
        assert!(b.next().is_some_and(|d| d < WatchBackoff::FIRST * 2));
    }
}
