//! kube-rs 5 (the client Rust controllers are written with) against the server, with the scheduler,
//! the controllers and two hollow nodes running: discovery both ways (per group, and aggregated
//! `apidiscovery.k8s.io/v2`), a Deployment's pods followed by `kube::runtime` watchers (list then
//! watch, with a reflector store; streaming lists), their deletion, and a watch resumed from a
//! resourceVersion. client-go is covered by the kubectl tests; kube-rs makes its own requests (page
//! sizes, `sendInitialEvents`, its own Accept headers and reconnects), so it is tested by itself.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use common::{Server, temp_dir};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api, Client, Config, Discovery,
    api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    discovery::{ApiCapabilities, ApiResource, Scope, verbs},
    runtime::{reflector, watcher},
};

/// Longest wait for one step (the whole test stays well under 15 s when the server keeps up).
const STEP: Duration = Duration::from_secs(10);

/// A client as a controller builds one: from the kubeconfig the server wrote (CA and bearer token).
async fn client(dir: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(dir.join("admin.kubeconfig")).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    Client::try_from(config).expect("kube client")
}

/// What discovery says of one resource, in a form both discovery modes must agree on.
type Summary = (
    String,
    String,
    String,
    bool,
    Vec<String>,
    Vec<(String, String, Vec<String>)>,
);

fn summarize((ar, caps): &(ApiResource, ApiCapabilities)) -> Summary {
    let sorted = |ops: &[String]| {
        let mut ops = ops.to_vec();
        ops.sort();
        ops
    };
    let mut subs: Vec<_> = caps
        .subresources
        .iter()
        .map(|(s, c)| (s.plural.clone(), s.kind.clone(), sorted(&c.operations)))
        .collect();
    subs.sort();
    (
        ar.plural.clone(),
        ar.kind.clone(),
        ar.api_version.clone(),
        caps.scope == Scope::Namespaced,
        sorted(&caps.operations),
        subs,
    )
}

fn summaries(discovery: &Discovery) -> BTreeMap<String, Vec<Summary>> {
    discovery
        .groups()
        .map(|g| {
            let mut list: Vec<Summary> = g.versioned_resources("v1").iter().map(summarize).collect();
            list.sort();
            (g.name().to_string(), list)
        })
        .collect()
}

#[tokio::test]
async fn discovery_finds_deployments_per_group_and_aggregated() {
    let dir = temp_dir("kube-rs-discovery");
    let server = Server::start(&dir);
    let client = client(&dir).await;

    let legacy = Discovery::new(client.clone()).run().await.expect("discovery");
    let aggregated = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .expect("aggregated discovery");
    for discovery in [&legacy, &aggregated] {
        let apps = discovery.get("apps").expect("apps group");
        assert_eq!(apps.preferred_version(), Some("v1"));
        let (ar, caps) = apps.recommended_kind("Deployment").expect("deployments");
        assert_eq!(
            (ar.plural.as_str(), ar.api_version.as_str()),
            ("deployments", "apps/v1")
        );
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(caps.supports_operation(verbs::WATCH) && caps.supports_operation(verbs::PATCH));
        let subs: BTreeSet<&str> = caps.subresources.iter().map(|(s, _)| s.plural.as_str()).collect();
        assert_eq!(subs, BTreeSet::from(["scale", "status"]));
        let core = discovery.get("").expect("core group");
        let (ns, caps) = core.recommended_kind("Namespace").expect("namespaces");
        assert_eq!((ns.plural.as_str(), caps.scope), ("namespaces", Scope::Cluster));
    }
    // One request per root or one per group: the same resources, kinds, scopes, verbs and
    // subresources.
    assert_eq!(summaries(&legacy), summaries(&aggregated));

    // The aggregated documents as kube-rs reads them, and their media type as the server sent it.
    let core = client.list_core_api_versions_aggregated().await.expect("/api");
    assert_eq!(core.items.len(), 1);
    let raw = client
        .send(
            http::Request::get("/apis")
                .header(
                    http::header::ACCEPT,
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
                )
                .body(kube::client::Body::from(Vec::new()))
                .expect("request"),
        )
        .await
        .expect("GET /apis");
    assert_eq!(
        raw.headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a watcher has told so far about the pods it follows.
#[derive(Default)]
struct Seen {
    pods: BTreeMap<String, Pod>,
    deleted: BTreeSet<String>,
    /// `InitDone` events: complete initial lists (one per list, or per streaming list).
    init_done: usize,
}

impl Seen {
    fn apply(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                self.pods.insert(name, p);
            }
            watcher::Event::Delete(p) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                self.pods.remove(&name);
                self.deleted.insert(name);
            }
            watcher::Event::Init => {}
            watcher::Event::InitDone => self.init_done += 1,
        }
    }

    /// Names of the pods running with condition Ready.
    fn running_ready(&self) -> BTreeSet<String> {
        self.pods
            .iter()
            .filter(|(_, p)| running_and_ready(p))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

fn running_and_ready(p: &Pod) -> bool {
    let status = p.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Feeds `stream`'s events into `seen` until `done` holds; any watcher error fails the test (the
/// server should give kube-rs nothing to retry).
async fn follow<S>(what: &str, stream: &mut S, seen: &mut Seen, done: impl Fn(&Seen) -> bool)
where
    S: Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Unpin,
{
    let run = async {
        while !done(seen) {
            match stream.try_next().await {
                Ok(Some(event)) => seen.apply(event),
                Ok(None) => panic!("{what}: the watcher ended"),
                Err(e) => panic!("{what}: {e:?}"),
            }
        }
    };
    if tokio::time::timeout(STEP, run).await.is_err() {
        panic!(
            "{what}: timed out; pods {:?}, running and ready {:?}, deleted {:?}",
            seen.pods.keys().collect::<Vec<_>>(),
            seen.running_ready(),
            seen.deleted
        );
    }
}

fn deployment() -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}
            }
        }
    }))
    .expect("deployment")
}

#[tokio::test]
async fn watchers_follow_a_deployment_s_pods_until_deleted() {
    let dir = temp_dir("kube-rs-watch");
    let server = Server::start_with(&dir, &["--hollow-nodes", "2"]);
    let client = client(&dir).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let selector = "app=web";

    // List then watch, feeding a reflector store; the server ends its watches after a second, so the
    // watcher has to resume from its last resourceVersion (below, before the deletions).
    let (store, writer) = reflector::store::<Pod>();
    let listed = watcher(
        pods.clone(),
        watcher::Config::default().labels(selector).timeout(1),
    );
    let mut listed = reflector(writer, listed).boxed();
    // A streaming list: `sendInitialEvents`, the initial events ending with a bookmark.
    let streamed = watcher(
        pods.clone(),
        watcher::Config::default().labels(selector).streaming_lists(),
    );
    let mut streamed = streamed.boxed();
    let (mut seen_listed, mut seen_streamed) = (Seen::default(), Seen::default());
    // Both start on an empty collection.
    follow("list+watch start", &mut listed, &mut seen_listed, |s| {
        s.init_done == 1
    })
    .await;
    follow("streaming list start", &mut streamed, &mut seen_streamed, |s| {
        s.init_done == 1
    })
    .await;
    assert!(seen_listed.pods.is_empty() && seen_streamed.pods.is_empty());

    deployments
        .create(&PostParams::default(), &deployment())
        .await
        .expect("create deployment");
    let three_ready = |s: &Seen| s.running_ready().len() == 3;
    follow("list+watch", &mut listed, &mut seen_listed, three_ready).await;
    follow("streaming list", &mut streamed, &mut seen_streamed, three_ready).await;
    let running = seen_listed.running_ready();
    assert_eq!(running, seen_streamed.running_ready());
    tokio::time::timeout(STEP, store.wait_until_ready())
        .await
        .expect("store ready in time")
        .expect("store writer");
    let cached: BTreeSet<String> = store
        .state()
        .iter()
        .filter(|p| running_and_ready(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(cached, running);

    // The point to resume from later: everything up to the pods being ready.
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods");
    assert_eq!(list.items.len(), 3);
    let resume_from = list.metadata.resource_version.expect("list resourceVersion");

    // Past the watch timeout: the list+watch watcher's stream has ended, and the deletions reach it
    // through the watch it resumes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .expect("delete deployment");
    let all_deleted = |s: &Seen| running.iter().all(|n| s.deleted.contains(n)) && s.pods.is_empty();
    follow("list+watch deletes", &mut listed, &mut seen_listed, all_deleted).await;
    follow(
        "streaming list deletes",
        &mut streamed,
        &mut seen_streamed,
        all_deleted,
    )
    .await;
    assert!(store.state().is_empty(), "the store still holds pods");
    // The list+watch watcher resumed without listing again (a list would be a second `InitDone`).
    assert_eq!(seen_listed.init_done, 1);

    // A watch resumed from the earlier resourceVersion replays what happened since: the three
    // deletions (after the graceful-deletion updates).
    let wp = WatchParams::default().labels(selector).timeout(5);
    let mut resumed = pods.watch(&wp, &resume_from).await.expect("watch").boxed();
    let mut replayed = BTreeSet::new();
    let replay = async {
        while replayed != running {
            match resumed.try_next().await.expect("watch event") {
                Some(WatchEvent::Deleted(p)) => {
                    replayed.insert(p.metadata.name.unwrap_or_default());
                }
                Some(WatchEvent::Added(p)) => panic!("no pod was added after {resume_from}: {p:?}"),
                Some(WatchEvent::Error(e)) => panic!("watch error: {e:?}"),
                Some(_) => {}
                None => panic!("the watch ended after replaying {replayed:?}"),
            }
        }
    };
    tokio::time::timeout(STEP, replay).await.expect("replay in time");

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
