//! The real `kubectl` against `berth-control-plane`: the server runs as a process on a loopback port
//! with a fresh data directory; kubectl uses the `admin.kubeconfig` it writes (and a fresh `HOME`, so no
//! cached discovery). A restart on the same directory must keep every object.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::Server;

#[test]
fn kubectl_creates_reads_and_deletes_objects_that_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("berth-cp-kubectl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    let server = Server::start(&dir);

    let version = server.ok(&["version", "-o", "json"]);
    assert!(version.contains("\"minor\": \"33\""), "{version}");
    let created = server.apply(concat!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n---\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: demo\n",
        "  labels: {app: web}\ndata:\n  greeting: hello\n---\n",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: pw\n  namespace: demo\ndata:\n  p: czNjcmV0\n",
    ));
    for what in [
        "namespace/demo created",
        "configmap/cfg created",
        "secret/pw created",
    ] {
        assert!(created.contains(what), "{created}");
    }
    let selected = server.ok(&["get", "configmaps", "-A", "-l", "app=web", "-o", "name"]);
    assert_eq!(selected.trim(), "configmap/cfg");
    // Tables: the columns the real API server prints.
    let table = server.ok(&["get", "secrets", "-n", "demo"]);
    assert!(
        table.contains("TYPE") && table.contains("DATA") && table.contains("Opaque"),
        "{table}"
    );
    let table = server.ok(&["get", "namespaces"]);
    assert!(table.contains("STATUS") && table.contains("Active"), "{table}");
    let names = server.ok(&["get", "namespaces", "-o", "name"]);
    assert!(names.contains("namespace/demo"), "{names}");
    // Chunked lists (`limit` and `continue`), as a table and as objects: the same namespaces.
    let chunked = server.ok(&["get", "namespaces", "-o", "name", "--chunk-size=1"]);
    assert_eq!(chunked, names);
    let table = server.ok(&["get", "namespaces", "--chunk-size=2", "--no-headers"]);
    assert_eq!(table.lines().count(), names.lines().count(), "{table}");
    assert_eq!(
        server.jsonpath("configmap", "cfg", "demo", "{.data.greeting}"),
        "hello"
    );
    // A watch (`kubectl get -w`) sees the changes that follow.
    let home = dir.join("home");
    let watcher = Command::new("timeout")
        .arg("6")
        .arg("kubectl")
        .env("HOME", &home)
        .arg("--kubeconfig")
        .arg(dir.join("admin.kubeconfig"))
        .args(["get", "configmaps", "-n", "demo", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    std::thread::sleep(Duration::from_millis(1500));
    // Applying again: unchanged, then changed (a strategic merge patch of the live object).
    let same = server.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n");
    assert!(same.contains("namespace/demo unchanged"), "{same}");
    let changed = server.apply(concat!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: demo\n",
        "  labels: {app: web}\ndata:\n  greeting: bonjour\n  extra: x\n",
    ));
    assert!(changed.contains("configmap/cfg configured"), "{changed}");
    assert_eq!(
        server.jsonpath("configmap", "cfg", "demo", "{.data.greeting}/{.data.extra}"),
        "bonjour/x"
    );
    server.ok(&["delete", "configmap", "cfg", "-n", "demo"]);
    let watched = watcher.wait_with_output().expect("watch output");
    let watched = String::from_utf8_lossy(&watched.stdout).to_string();
    for event in ["ADDED      cfg", "MODIFIED   cfg", "DELETED    cfg"] {
        assert!(watched.contains(event), "{watched}");
    }
    server.apply(concat!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: demo\n",
        "  labels: {app: web}\ndata:\n  greeting: bonjour\n  extra: x\n",
    ));
    // Errors come back as Status objects kubectl understands: unknown fields (strict validation) and
    // invalid names.
    let unknown =
        server.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\n  namespace: demo\nspec: {}\n");
    assert!(unknown.contains("unknown field \"spec\""), "{unknown}");
    let invalid =
        server.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n  namespace: demo\n");
    assert!(
        invalid.contains("is invalid") && invalid.contains("RFC 1123"),
        "{invalid}"
    );
    let missing = server.kubectl(&["get", "configmap", "nope", "-n", "demo"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // A restart on the same directory keeps every object and the same credentials.
    drop(server);
    let server = Server::start(&dir);
    assert_eq!(server.jsonpath("secret", "pw", "demo", "{.data.p}"), "czNjcmV0");
    server.ok(&["delete", "configmap", "cfg", "-n", "demo"]);
    let gone = server.kubectl(&["get", "configmap", "cfg", "-n", "demo"]);
    assert!(!gone.status.success());
    server.ok(&["delete", "namespace", "demo"]);
    assert!(
        !server
            .kubectl(&["get", "secret", "pw", "-n", "demo"])
            .status
            .success()
    );

    // Without the token: 401.
    let anonymous = Command::new("kubectl")
        .env("HOME", dir.join("home"))
        .args([
            "--server",
            &format!("https://127.0.0.1:{}", server.port),
            "--insecure-skip-tls-verify",
            "--token",
            "wrong",
            "get",
            "namespaces",
        ])
        .output()
        .expect("kubectl");
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&anonymous.stderr)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The store forgets old history on its own: with a one-second compaction interval, a watch from the
/// first revision soon ends with an in-stream 410 Expired, and `/metrics` shows the compacted revision.
#[test]
fn history_is_compacted_periodically() {
    let dir = std::env::temp_dir().join(format!("berth-cp-compaction-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    let server = Server::start_with(&dir, &["--compaction-interval-seconds", "1", "--no-controllers"]);
    for i in 0..3 {
        server.ok(&["create", "configmap", &format!("c{i}"), "--from-literal=k=v"]);
    }
    let compacted = |server: &Server| -> u64 {
        server
            .ok(&["get", "--raw", "/metrics"])
            .lines()
            .find_map(|l| l.strip_prefix("berth_store_compact_revision "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while compacted(&server) == 0 {
        assert!(std::time::Instant::now() < deadline, "no compaction within 15 s");
        server.ok(&["annotate", "configmap", "c0", "--overwrite", "touched=yes"]);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let watched = server.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=1&timeoutSeconds=2",
    ]);
    assert!(
        watched.contains("\"type\":\"ERROR\"") && watched.contains("\"code\":410"),
        "{watched}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_namespace_is_terminating_while_its_content_is_deleted() {
    let dir = common::temp_dir("ns-lifecycle");
    let server = Server::start(&dir);
    let manifest = concat!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  namespace: shop\n---\n",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n",
        "spec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n",
        "  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n---\n",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    let manifest_file = dir.join("shop.yaml");
    std::fs::write(&manifest_file, manifest).expect("manifest");
    let file = manifest_file.to_str().expect("path");
    server.ok(&["apply", "-f", file]);
    assert_eq!(
        server.jsonpath("namespace", "shop", "", "{.spec.finalizers}"),
        "[\"kubernetes\"]"
    );
    // `kubectl delete -f` of the whole manifest: the namespace first, then everything in it, each
    // deleted (or already going) rather than NotFound; --wait returns once the namespace is gone.
    let out = server.kubectl(&["delete", "-f", file, "--timeout", "30s"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("NotFound") && !text.contains("not found"),
        "{text}"
    );
    for what in [
        "namespace \"shop\" deleted",
        "deployment.apps \"web\" deleted",
        "service \"web\" deleted",
    ] {
        assert!(text.contains(what), "{what}: {text}");
    }
    assert!(!server.kubectl(&["get", "namespace", "shop"]).status.success());

    // An object with a finalizer holds its namespace in Terminating, with conditions saying why,
    // and nothing new may be created there meanwhile.
    server.apply(concat!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: held\n---\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\n  namespace: held\n  finalizers: [example.com/hold]\n",
    ));
    server.ok(&["delete", "namespace", "held", "--wait=false"]);
    let phase = wait_for(&server, "{.status.phase}", "Terminating");
    assert_eq!(phase, "Terminating");
    let message = wait_for(
        &server,
        "{.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].message}",
        "example.com/hold in 1 resource instances",
    );
    assert!(message.contains("example.com/hold"), "{message}");
    let refused = server.kubectl(&["create", "configmap", "new", "-n", "held"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("because it is being terminated"), "{stderr}");
    server.ok(&[
        "patch",
        "configmap",
        "keep",
        "-n",
        "held",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while server.kubectl(&["get", "namespace", "held"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "the namespace stayed");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// Polls `held`'s JSONPath until it contains `wanted` (or 15 s pass); returns the last value.
fn wait_for(server: &Server, path: &str, wanted: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let value = String::from_utf8_lossy(
            &server
                .kubectl(&["get", "namespace", "held", "-o", &format!("jsonpath={path}")])
                .stdout,
        )
        .to_string();
        if value.contains(wanted) || std::time::Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn load_balancers_with_local_traffic_get_a_health_check_node_port() {
    let dir = common::temp_dir("hcnp");
    let server = Server::start(&dir);
    server.ok(&["create", "service", "loadbalancer", "lb", "--tcp=80:8080"]);
    let check = |name: &str| server.jsonpath("service", name, "default", "{.spec.healthCheckNodePort}");
    assert_eq!(check("lb"), "", "Cluster traffic policy: none");
    server.ok(&[
        "patch",
        "service",
        "lb",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    let port: u16 = check("lb").parse().expect("a health-check node port");
    assert!((30000..=32767).contains(&port), "{port}");
    let node_port = server.jsonpath("service", "lb", "default", "{.spec.ports[0].nodePort}");
    assert_ne!(node_port, port.to_string());
    // Taken: another Service cannot have it.
    let other = |name: &str, policy: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: {policy}\n  healthCheckNodePort: {port}\n  ports: [{{port: 80}}]\n"
        )
    };
    let (ok, out) = server.kubectl_stdin(&["create", "-f", "-"], &other("second", "Local"));
    assert!(!ok && out.contains("is already allocated"), "{out}");
    // Back to Cluster: the port goes and is free again.
    server.ok(&[
        "patch",
        "service",
        "lb",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#,
    ]);
    assert_eq!(check("lb"), "");
    let (ok, out) = server.kubectl_stdin(&["create", "-f", "-"], &other("second", "Local"));
    assert!(ok, "{out}");
    assert_eq!(check("second"), port.to_string());
    // Only where it means something.
    let (ok, out) = server.kubectl_stdin(&["create", "-f", "-"], &other("third", "Cluster"));
    assert!(
        !ok && out.contains("spec.healthCheckNodePort") && out.contains("may only be set when"),
        "{out}"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
