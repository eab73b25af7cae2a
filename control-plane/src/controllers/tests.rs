//! The controllers and the scheduler over a real store with hollow nodes: a Deployment rolls out,
//! spreads, scales, rolls to a new image within its surge, gets endpoints, and goes with its
//! dependents; a node that stops renewing its lease is tainted and its pods move.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{Config, Manager};
use crate::{
    api::{Api, ApiRequest, kinds},
    sim::HollowNodes,
    store::Store,
};

struct World {
    dir: std::path::PathBuf,
    api: Api,
    stop: Arc<AtomicBool>,
}

impl World {
    fn new(name: &str) -> World {
        let dir = std::env::temp_dir().join(format!("berth-ctrl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Arc::new(Store::open(&dir.join("state.db")).expect("store"));
        let api = Api::new(Arc::clone(&store), "t".into());
        api.bootstrap("127.0.0.1:6443".parse().expect("addr"))
            .expect("bootstrap");
        World {
            dir,
            api,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    fn start(&self, config: Config) {
        Manager::new(Arc::clone(self.api.store()), config)
            .spawn(Arc::clone(&self.stop))
            .expect("controllers");
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let reply = self.api.handle(&ApiRequest {
            method,
            path,
            query,
            token: Some("t"),
            content_type,
            accept: "application/json",
            body: &body,
            client_cert: None,
            impersonation: None,
            user_agent: None,
        });
        assert!(reply.code < 300, "{method} {path}: {} {}", reply.code, reply.body);
        match reply.encoded {
            // Lists come encoded.
            Some(json) => serde_json::from_slice(&json).expect("an encoded answer is JSON"),
            None => reply.body,
        }
    }

    fn wait_for(&self, what: &str, mut check: impl FnMut(&World) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pods(&self, selector: &str) -> Vec<Value> {
        self.call(
            "GET",
            &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"),
            Value::Null,
        )["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn deployment(image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image, "ports": [{"name": "http", "containerPort": 8080}], "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
            }
        }
    })
}

#[test]
fn deployments_roll_out_spread_scale_roll_and_go() {
    let w = World::new("deploy");
    let nodes = HollowNodes::register(Arc::clone(w.api.store()), "n", 3).expect("nodes");
    // The control-plane node as kubeadm taints it: nothing without the toleration lands there.
    w.call("PATCH", "/api/v1/nodes/n-0", json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}));
    nodes.spawn(Arc::clone(&w.stop)).expect("hollow nodes");
    w.start(Config {
        tick: Duration::from_millis(100),
        ..Config::default()
    });

    w.call(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("nginx:1.25", 4),
    );
    w.call("POST", "/api/v1/namespaces/default/services", json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}}));
    w.wait_for("4 available replicas", |w| {
        let d = w.call(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web",
            Value::Null,
        );
        d.pointer("/status/availableReplicas") == Some(&json!(4))
            && d.pointer("/status/observedGeneration") == Some(&json!(1))
    });
    let pods = w.pods("app%3Dweb");
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for p in &pods {
        *per_node
            .entry(p["spec"]["nodeName"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        per_node.get("n-0"),
        None,
        "the tainted node got pods: {per_node:?}"
    );
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [2, 2],
        "{per_node:?}"
    );
    // Endpoints and slices with the named target port resolved.
    w.wait_for("endpoints", |w| {
        let ep = w.call("GET", "/api/v1/namespaces/default/endpoints/web", Value::Null);
        ep.pointer("/subsets/0/addresses")
            .and_then(Value::as_array)
            .map(Vec::len)
            == Some(4)
            && ep.pointer("/subsets/0/ports/0/port") == Some(&json!(8080))
    });
    let slice = w.call(
        "GET",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-0",
        Value::Null,
    );
    assert_eq!(slice["endpoints"].as_array().map(Vec::len), Some(4), "{slice}");

    // Scale through the scale subresource.
    w.call(
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        json!({"spec": {"replicas": 6}}),
    );
    w.wait_for("6 available", |w| {
        w.call(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web",
            Value::Null,
        )
        .pointer("/status/availableReplicas")
            == Some(&json!(6))
    });

    // Roll to a new image: never more than replicas + surge (25% of 6 -> 2) pods at once.
    w.call("PATCH", "/apis/apps/v1/namespaces/default/deployments/web", json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.26", "ports": [{"name": "http", "containerPort": 8080}], "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}}));
    let mut most = 0;
    w.wait_for("the rollout", |w| {
        let pods = w.pods("app%3Dweb");
        most = most.max(
            pods.iter()
                .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
                .count(),
        );
        let d = w.call(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web",
            Value::Null,
        );
        d.pointer("/status/updatedReplicas") == Some(&json!(6))
            && d.pointer("/status/replicas") == Some(&json!(6))
            && d.pointer("/status/availableReplicas") == Some(&json!(6))
            && d.pointer("/status/observedGeneration") == Some(&json!(3))
    });
    assert!(most <= 8, "{most} pods at once");
    let rs = w.call("GET", "/apis/apps/v1/namespaces/default/replicasets", Value::Null);
    let specs: Vec<i64> = rs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.pointer("/spec/replicas").and_then(Value::as_i64))
        .collect();
    assert_eq!(specs.len(), 2, "{specs:?} {rs}");
    assert!(specs.contains(&0) && specs.contains(&6), "{specs:?}");
    let live: Vec<Value> = w
        .pods("app%3Dweb")
        .into_iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    assert_eq!(live.len(), 6);
    assert!(
        live.iter()
            .all(|p| p.pointer("/spec/containers/0/image") == Some(&json!("nginx:1.26")))
    );

    // Deleting the Deployment takes its ReplicaSets and their pods along.
    w.call(
        "DELETE",
        "/apis/apps/v1/namespaces/default/deployments/web",
        Value::Null,
    );
    w.wait_for("the dependents to go", |w| {
        w.pods("app%3Dweb").is_empty()
            && w.call("GET", "/apis/apps/v1/namespaces/default/replicasets", Value::Null)["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
    });
}

#[test]
fn a_silent_node_is_tainted_and_its_pods_move() {
    let w = World::new("lifecycle");
    kinds::set_default_toleration_seconds(1);
    let mut nodes = HollowNodes::register(Arc::clone(w.api.store()), "m", 2).expect("nodes");
    // Renewals well inside the 2 s grace.
    nodes.lease_renew = Duration::from_millis(300);
    let silencer = nodes.silencer();
    nodes.spawn(Arc::clone(&w.stop)).expect("hollow nodes");
    w.start(Config {
        tick: Duration::from_millis(100),
        node_monitor_grace: Duration::from_secs(2),
        ..Config::default()
    });
    w.call(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("nginx:1.25", 4),
    );
    w.wait_for("4 available", |w| {
        w.call(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web",
            Value::Null,
        )
        .pointer("/status/availableReplicas")
            == Some(&json!(4))
    });
    silencer.lock().expect("lock").insert("m-1".into());
    w.wait_for("m-1 NotReady and tainted, its pods replaced on m-0", |w| {
        let node = w.call("GET", "/api/v1/nodes/m-1", Value::Null);
        let unknown = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "Unknown");
        let tainted = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable");
        let pods = w.pods("app%3Dweb");
        unknown
            && tainted
            && pods.len() == 4
            && pods
                .iter()
                .all(|p| p["spec"]["nodeName"] == "m-0" && p["status"]["phase"] == "Running")
    });
    silencer.lock().expect("lock").remove("m-1");
    w.wait_for("m-1 Ready again and untainted", |w| {
        let node = w.call("GET", "/api/v1/nodes/m-1", Value::Null);
        let ready = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready
            && node
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .is_none_or(|t| t.is_empty())
    });
}
