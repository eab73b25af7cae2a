//! Workloads through the real `kubectl`, with the scheduler and controllers running and two hollow
//! nodes "running" the pods: apply a Deployment + Service + ConfigMap, `rollout status`, `describe`,
//! `scale`, `set image`, re-apply a changed manifest (strategic merge patch of the pod template),
//! `get -w` while `delete --wait` removes it all.

mod common;

use std::process::{Command, Stdio};

use common::{Etcd, Server, temp_dir};

const MANIFEST: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - {name: http, containerPort: 80}
        env:
        - name: GREETING
          valueFrom:
            configMapKeyRef: {name: web-config, key: greeting}
        resources:
          requests: {cpu: 100m, memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {port: 80, targetPort: http}
";

fn rolled_out(server: &Server) {
    let out = server.ok(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[test]
fn kubectl_runs_a_deployment_behind_a_service_through_its_life() {
    let dir = temp_dir("workloads");
    let server = Server::start_with(&dir, &["--hollow-nodes", "2"]);
    workload_suite(&server, &dir);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Over etcd, as production etcd runs: TLS, with a client certificate etcd checks.
#[test]
fn the_same_over_etcd() {
    let dir = temp_dir("workloads-etcd");
    let (etcd, etcd_args) = Etcd::start_tls(&dir.join("etcd"));
    let mut args: Vec<&str> = vec!["--hollow-nodes", "2"];
    args.extend(etcd_args.iter().map(String::as_str));
    let server = Server::start_with(&dir, &args);
    workload_suite(&server, &dir);
    drop(server);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two control planes over one etcd: the first leads the controllers; killed (-9), the second
/// takes the leader Lease over and carries on (a scale-up it never saw start is completed).
#[test]
fn a_second_control_plane_takes_over_when_the_leader_dies() {
    let dir = temp_dir("failover");
    let etcd = Etcd::start(&dir.join("etcd"));
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a_dir).expect("a");
    std::fs::create_dir_all(&b_dir).expect("b");
    // The first "member" listed refuses connections: the control planes go on to the next.
    let members = format!("http://127.0.0.1:1,{}", etcd.url);
    let fast = ["--etcd-servers", &members, "--leader-lease-seconds", "2"];
    let a = Server::start_with(&a_dir, &[&fast[..], &["--id", "a"]].concat());
    // The second shares the cluster's CA and admin token, as control planes of one cluster do; the
    // hollow nodes run beside it, so they outlive the first.
    for f in ["ca.crt", "ca.key", "admin.token", "join-token"] {
        std::fs::copy(a_dir.join(f), b_dir.join(f)).expect("copy credentials");
    }
    let b = Server::start_with(
        &b_dir,
        &[&fast[..], &["--id", "b", "--hollow-nodes", "2"]].concat(),
    );
    wait(
        || {
            a.ok(&[
                "get",
                "lease",
                "-n",
                "kube-system",
                "berth-controller-manager",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ]) == "a"
        },
        "a to lead",
    );
    // The kubernetes Endpoints name both API servers (one subset per port, both on 127.0.0.1).
    let api_ports = |s: &Server| {
        let mut ports: Vec<u16> = s
            .ok(&[
                "get",
                "endpoints",
                "kubernetes",
                "-o",
                "jsonpath={.subsets[*].ports[0].port}",
            ])
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        ports.sort();
        ports
    };
    let mut both = vec![a.port, b.port];
    both.sort();
    wait(|| api_ports(&a) == both, "the Endpoints to name both API servers");
    a.ok(&["create", "deployment", "web", "--image=nginx", "--replicas=2"]);
    wait(
        || a.jsonpath("deployment", "web", "default", "{.status.availableReplicas}") == "2",
        "2 replicas",
    );
    a.kill9();
    b.ok(&["scale", "deployment/web", "--replicas=4"]);
    wait(
        || b.jsonpath("deployment", "web", "default", "{.status.availableReplicas}") == "4",
        "b to finish the scale-up",
    );
    assert_eq!(
        b.ok(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "berth-controller-manager",
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}"
        ]),
        "b 1"
    );
    wait(
        || api_ports(&b) == vec![b.port],
        "the dead API server to leave the Endpoints",
    );
    drop(b);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}

fn wait(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The kubectl session every store must pass.
fn workload_suite(server: &Server, dir: &std::path::Path) {
    let applied = server.apply(MANIFEST);
    for what in [
        "configmap/web-config created",
        "deployment.apps/web created",
        "service/web created",
    ] {
        assert!(applied.contains(what), "{applied}");
    }
    rolled_out(server);
    // Three pods running, spread over both nodes.
    let nodes = server.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase}{\"\\n\"}{end}",
    ]);
    let lines: Vec<&str> = nodes.lines().collect();
    assert_eq!(lines.len(), 3, "{nodes}");
    assert!(lines.iter().all(|l| l.ends_with("Running")), "{nodes}");
    assert!(
        lines.iter().any(|l| l.starts_with("hollow-0")) && lines.iter().any(|l| l.starts_with("hollow-1")),
        "{nodes}"
    );
    let table = server.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        table.contains("1/1") && table.contains("Running") && table.contains("10.244."),
        "{table}"
    );
    // The Service got a ClusterIP and a NodePort, and endpoints at the named target port.
    let ip = server.jsonpath("service", "web", "default", "{.spec.clusterIP}");
    assert!(ip.starts_with("10.") && ip != "10.96.0.1", "{ip}");
    let node_port: u16 = server
        .jsonpath("service", "web", "default", "{.spec.ports[0].nodePort}")
        .parse()
        .expect("a nodePort");
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    let endpoints = server.ok(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[0].addresses[*].ip} {.subsets[0].ports[0].port}",
    ]);
    assert_eq!(endpoints.split_whitespace().count(), 4, "{endpoints}");
    assert!(endpoints.ends_with(" 80"), "{endpoints}");
    let slices = server.ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web"]);
    assert!(slices.contains("web-0") && slices.contains("IPv4"), "{slices}");
    let described = server.ok(&["describe", "deployment", "web"]);
    assert!(
        described.contains("3 desired | 3 updated | 3 total | 3 available"),
        "{described}"
    );
    assert!(described.contains("NewReplicaSetAvailable"), "{described}");
    // Hollow containers print nothing: their logs are empty, not an error.
    assert_eq!(server.ok(&["logs", "deployment/web"]), "");

    // Scale, then roll to a new image.
    server.ok(&["scale", "deployment/web", "--replicas=5"]);
    rolled_out(server);
    assert_eq!(
        server.jsonpath("deployment", "web", "default", "{.status.availableReplicas}"),
        "5"
    );
    server.ok(&["set", "image", "deployment/web", "web=nginx:1.26"]);
    rolled_out(server);
    let sets = server.ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.spec.replicas}{\" \"}{end}",
    ]);
    let mut counts: Vec<&str> = sets.split_whitespace().collect();
    counts.sort();
    assert_eq!(counts, ["0", "5"], "{sets}");
    // Re-applying the manifest with another image: a strategic merge patch of the template.
    let changed = server.apply(&MANIFEST.replace("nginx:1.25", "nginx:1.27"));
    assert!(changed.contains("deployment.apps/web configured"), "{changed}");
    rolled_out(server);
    assert_eq!(
        server.jsonpath(
            "deployment",
            "web",
            "default",
            "{.spec.template.spec.containers[0].image} {.status.updatedReplicas}"
        ),
        "nginx:1.27 3"
    );
    assert_eq!(
        server.jsonpath(
            "deployment",
            "web",
            "default",
            "{.spec.template.spec.containers[0].env[0].name}"
        ),
        "GREETING"
    );
    // `kubectl patch --type=json` (RFC 6902): an env var added to the template, a label tested and
    // replaced; a failed test changes nothing and says why.
    let json_patch = r#"[{"op":"add","path":"/spec/template/spec/containers/0/env/-","value":{"name":"MODE","value":"json"}},{"op":"test","path":"/metadata/labels/app","value":"web"},{"op":"add","path":"/metadata/labels/patched","value":"yes"}]"#;
    server.ok(&["patch", "deployment", "web", "--type=json", "-p", json_patch]);
    assert_eq!(
        server.jsonpath(
            "deployment",
            "web",
            "default",
            "{.spec.template.spec.containers[0].env[1].value} {.metadata.labels.patched}"
        ),
        "json yes"
    );
    let failed = server.kubectl(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":99},{"op":"remove","path":"/metadata/labels/patched"}]"#,
    ]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("testing value /spec/replicas failed"));
    assert_eq!(
        server.jsonpath("deployment", "web", "default", "{.metadata.labels.patched}"),
        "yes"
    );

    // A watch sees the pods go while `delete --wait` waits for the Deployment.
    let watcher = Command::new("timeout")
        .arg("8")
        .arg("kubectl")
        .env("HOME", dir.join("home"))
        .arg("--kubeconfig")
        .arg(dir.join("admin.kubeconfig"))
        .args(["get", "pods", "-l", "app=web", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    std::thread::sleep(std::time::Duration::from_millis(800));
    let deleted = server.ok(&["delete", "deployment", "web", "--wait", "--timeout=30s"]);
    assert!(deleted.contains("deployment.apps \"web\" deleted"), "{deleted}");
    let gone = |what: &str| {
        server
            .ok(&["get", what, "-l", "app=web", "-o", "name"])
            .trim()
            .is_empty()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !(gone("pods") && gone("rs")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the ReplicaSets and pods did not go"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let watched = watcher.wait_with_output().expect("watch output");
    let events = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(
        events.lines().filter(|l| l.starts_with("DELETED")).count(),
        3,
        "{events}"
    );
    server.ok(&["delete", "service", "web", "--wait"]);
    server.ok(&["delete", "configmap", "web-config"]);
    wait(
        || {
            server
                .ok(&["get", "endpoints", "web", "--ignore-not-found"])
                .trim()
                .is_empty()
        },
        "the Endpoints to go with their Service",
    );

    // What all that looked like in /metrics (Prometheus text, kube-apiserver's metric names).
    let metrics = server.ok(&["get", "--raw", "/metrics"]);
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for line in [
        "# TYPE apiserver_request_total counter",
        "# TYPE apiserver_request_duration_seconds histogram",
        "# TYPE process_resident_memory_bytes gauge",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(
        value(
            "apiserver_request_total{verb=\"CREATE\",group=\"apps\",version=\"v1\",resource=\"deployments\",subresource=\"\",code=\"201\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        value("apiserver_request_total{verb=\"WATCH\"") >= 1.0,
        "{metrics}"
    );
    assert!(
        value("scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"}")
            >= 11.0,
        "{metrics}"
    );
    assert!(
        value("apiserver_storage_objects{resource=\"namespaces\"}") >= 4.0,
        "{metrics}"
    );
    assert!(value("process_resident_memory_bytes") > 1e6, "{metrics}");
}
