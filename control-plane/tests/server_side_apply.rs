//! `kubectl apply --server-side` with the real kubectl: objects are created and updated by what their
//! managers apply, ownership is recorded in managedFields, another manager's change to a field is a
//! conflict (kubectl's own message) until it forces it, and a field a manager stops applying goes.
//! Dry runs (`kubectl diff`, `--dry-run=server`) answer what would be and change nothing. Writers
//! through `scale` and `status` are managers of their own, and a status can be applied.

mod common;

use common::{Server, temp_dir};

fn managed_fields(server: &Server) -> String {
    server.ok(&[
        "get",
        "deployment",
        "web",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields}",
    ])
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: busybox:1.36
";

#[test]
fn managers_own_what_they_apply_and_conflict_over_the_rest() {
    let dir = temp_dir("ssa");
    let server = Server::start_with(&dir, &["--no-controllers"]);
    let apply = |args: &[&str], manifest: &str| {
        let mut all = vec!["apply", "--server-side", "-f", "-"];
        all.extend_from_slice(args);
        server.kubectl_stdin(&all, manifest)
    };

    let (ok, out) = apply(&[], DEPLOYMENT);
    assert!(
        ok && out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let (ok, out) = apply(&[], DEPLOYMENT);
    assert!(ok, "applying again changes nothing: {out}");
    let managed = managed_fields(&server);
    for part in [
        r#""manager":"kubectl""#,
        r#""operation":"Apply""#,
        r#""f:replicas":{}"#,
        r#"k:{\"name\":\"c\"}"#,
    ] {
        assert!(managed.contains(part), "{part} in {managed}");
    }

    // A plain patch (kubectl's manager `kubectl-patch`) takes the field it changes: re-applying the
    // old value conflicts with it until forced.
    server.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"metadata":{"labels":{"tier":"back"}}}"#,
    ]);
    let managed = managed_fields(&server);
    assert!(
        managed.contains(r#""manager":"kubectl-patch","operation":"Update""#),
        "{managed}"
    );
    let (ok, out) = apply(&[], DEPLOYMENT);
    assert!(
        !ok && out.contains(r#"conflict with "kubectl-patch" using apps/v1: .metadata.labels.tier"#),
        "{out}"
    );
    let (ok, out) = apply(&["--force-conflicts"], DEPLOYMENT);
    assert!(ok, "{out}");
    assert_eq!(
        server.jsonpath("deployment", "web", "default", "{.metadata.labels.tier}"),
        "front"
    );

    // Another manager setting replicas to another value: kubectl's conflict message.
    let scale = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 5\n";
    let (ok, out) = apply(&["--field-manager", "autoscaler"], scale);
    assert!(!ok, "{out}");
    assert!(
        out.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#),
        "{out}"
    );
    assert_eq!(
        server.jsonpath("deployment", "web", "default", "{.spec.replicas}"),
        "2"
    );
    let (ok, out) = apply(&["--field-manager", "autoscaler", "--force-conflicts"], scale);
    assert!(ok, "{out}");
    assert_eq!(
        server.jsonpath("deployment", "web", "default", "{.spec.replicas}"),
        "5"
    );

    // kubectl's manifest without replicas (given up) and without the tier label: the label goes, the
    // replicas stay the autoscaler's.
    let trimmed = DEPLOYMENT
        .replace("  replicas: 2\n", "")
        .replace("labels: {app: web, tier: front}", "labels: {app: web}");
    let (ok, out) = apply(&[], &trimmed);
    assert!(ok, "{out}");
    assert_eq!(
        server.jsonpath("deployment", "web", "default", "{.metadata.labels}"),
        r#"{"app":"web"}"#
    );
    assert_eq!(
        server.jsonpath("deployment", "web", "default", "{.spec.replicas}"),
        "5"
    );

    // Without kubectl's manifest naming it, a second container stays the other manager's.
    let sidecar = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: log\n        image: busybox:1.36\n";
    let (ok, out) = apply(&["--field-manager", "injector"], sidecar);
    assert!(ok, "{out}");
    let (ok, out) = apply(&[], &trimmed);
    assert!(ok, "{out}");
    assert_eq!(
        server.jsonpath(
            "deployment",
            "web",
            "default",
            "{.spec.template.spec.containers[*].name}"
        ),
        "c log"
    );

    // Dry runs (`kubectl diff`, `--dry-run=server`, a dry-run delete) answer what would be and
    // change nothing.
    let changed = DEPLOYMENT.replace("busybox:1.36", "busybox:1.37");
    let (_, out) = server.kubectl_stdin(&["diff", "-f", "-"], &changed);
    assert!(
        out.contains("-      - image: busybox:1.36") && out.contains("+      - image: busybox:1.37"),
        "{out}"
    );
    // Server-side, with kubectl's manifest as it applies it now (replicas are the autoscaler's).
    let changed = trimmed.replace("busybox:1.36", "busybox:1.37");
    let (_, out) = server.kubectl_stdin(&["diff", "--server-side", "-f", "-"], &changed);
    assert!(out.contains("+      - image: busybox:1.37"), "{out}");
    let (ok, out) = apply(
        &[
            "--dry-run=server",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
        &changed,
    );
    assert!(ok && out == "busybox:1.37", "{out}");
    let (ok, out) = server.kubectl_stdin(
        &["create", "--dry-run=server", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports: [{port: 80}]\n",
    );
    assert!(ok, "{out}");
    assert!(
        !server.kubectl(&["get", "service", "s"]).status.success(),
        "a dry-run create made nothing"
    );
    server.ok(&["delete", "deployment", "web", "--dry-run=server"]);
    assert_eq!(
        server.jsonpath(
            "deployment",
            "web",
            "default",
            "{.spec.template.spec.containers[0].image}"
        ),
        "busybox:1.36"
    );

    // A ConfigMap created by apply in a namespace that does not exist: NotFound, nothing made.
    let (ok, out) = apply(
        &["-n", "nowhere"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata: {a: b}\n",
    );
    assert!(!ok && out.contains("not found"), "{out}");
}

#[test]
fn scale_and_status_writers_are_managers_of_their_own() {
    let dir = temp_dir("ssa-subresources");
    let server = Server::start_with(&dir, &["--no-controllers"]);
    let (ok, out) = server.kubectl_stdin(&["apply", "--server-side", "-f", "-"], DEPLOYMENT);
    assert!(ok, "{out}");

    // `kubectl scale` writes through the scale subresource: its manager owns the replicas there,
    // and kubectl's next apply of its own replicas conflicts with it, named as kube-apiserver does.
    server.ok(&["scale", "deployment", "web", "--replicas=4"]);
    let managed: serde_json::Value =
        serde_json::from_str(&managed_fields(&server)).expect("managedFields are JSON");
    let scaler = managed
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["subresource"] == "scale")
        .unwrap_or_else(|| panic!("no scale manager in {managed}"));
    assert_eq!(scaler["operation"], "Update", "{scaler}");
    assert_eq!(
        scaler["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}}),
        "{scaler}"
    );
    let kubectl_apply = managed
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == "kubectl" && e["operation"] == "Apply")
        .unwrap_or_else(|| panic!("no apply manager in {managed}"));
    assert!(
        kubectl_apply["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "the scaler took the replicas: {kubectl_apply}"
    );
    let (ok, out) = server.kubectl_stdin(&["apply", "--server-side", "-f", "-"], DEPLOYMENT);
    let expected = format!(
        "conflict with {:?} with subresource \"scale\" using apps/v1: .spec.replicas",
        scaler["manager"].as_str().unwrap_or_default()
    );
    assert!(!ok && out.contains(&expected), "{expected} in {out}");
    assert_eq!(
        server.jsonpath("deployment", "web", "default", "{.spec.replicas}"),
        "4"
    );

    // A status applied through the status subresource: only the status changes, owned by its
    // manager there; a status patch by another writer then conflicts with that manager's next apply.
    let status = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 9\nstatus:\n  observedGeneration: 1\n  conditions:\n  - {type: Available, status: \"True\", reason: Probe}\n";
    let health = [
        "apply",
        "--server-side",
        "--subresource=status",
        "--field-manager=health",
        "-f",
        "-",
    ];
    let (ok, out) = server.kubectl_stdin(&health, status);
    assert!(ok, "{out}");
    assert_eq!(
        server.jsonpath(
            "deployment",
            "web",
            "default",
            "{.status.conditions[0].reason} {.spec.replicas}"
        ),
        "Probe 4"
    );
    let managed: serde_json::Value =
        serde_json::from_str(&managed_fields(&server)).expect("managedFields are JSON");
    let health_entry = managed
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == "health")
        .unwrap_or_else(|| panic!("no status applier in {managed}"));
    assert_eq!(
        (&health_entry["operation"], &health_entry["subresource"]),
        (&serde_json::json!("Apply"), &serde_json::json!("status")),
        "{health_entry}"
    );
    let owned: Vec<&String> = health_entry["fieldsV1"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(owned, ["f:status"], "{health_entry}");
    server.ok(&[
        "patch",
        "deployment",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Available","status":"False","reason":"Probe"}]}}"#,
    ]);
    let (ok, out) = server.kubectl_stdin(&health, status);
    assert!(
        !ok && out.contains(
            r#"with subresource "status" using apps/v1: .status.conditions[type="Available"].status"#
        ),
        "{out}"
    );
    let (ok, out) = server.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--subresource=status",
            "--field-manager=health",
            "--force-conflicts",
            "-f",
            "-",
        ],
        status,
    );
    assert!(ok, "{out}");
    assert_eq!(
        server.jsonpath("deployment", "web", "default", "{.status.conditions[0].status}"),
        "True"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ports_are_one_per_number_and_protocol() {
    let dir = temp_dir("ssa-ports");
    let server = Server::start_with(&dir, &["--no-controllers"]);
    // CoreDNS's Service: port 53 over UDP and over TCP are two ports, for apply as for Kubernetes.
    let dns = |ports: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: dns\nspec:\n  selector: {{k8s-app: dns}}\n  ports:\n{ports}"
        )
    };
    let both = "  - {name: dns, port: 53, protocol: UDP}\n  - {name: dns-tcp, port: 53, protocol: TCP}\n";
    let (ok, out) = server.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &dns(both));
    assert!(ok, "{out}");
    assert_eq!(
        server.jsonpath(
            "service",
            "dns",
            "default",
            "{range .spec.ports[*]}{.name}/{.protocol} {end}"
        ),
        "dns/UDP dns-tcp/TCP "
    );
    let managed = server.ok(&[
        "get",
        "service",
        "dns",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[0].fieldsV1}",
    ]);
    assert!(
        managed.contains(r#"k:{\"port\":53,\"protocol\":\"UDP\"}"#),
        "{managed}"
    );
    // The TCP port no longer applied goes; the UDP one stays. A port without a protocol is TCP's.
    let (ok, out) = server.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &dns("  - {name: dns, port: 53, protocol: UDP}\n"),
    );
    assert!(ok, "{out}");
    assert_eq!(
        server.jsonpath(
            "service",
            "dns",
            "default",
            "{range .spec.ports[*]}{.name}/{.protocol} {end}"
        ),
        "dns/UDP "
    );
    let (ok, out) = server.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &dns("  - {name: dns, port: 53, protocol: UDP}\n  - {name: dns-tcp, port: 53}\n"),
    );
    assert!(ok, "{out}");
    assert_eq!(
        server.jsonpath(
            "service",
            "dns",
            "default",
            "{range .spec.ports[*]}{.name}/{.protocol} {end}"
        ),
        "dns/UDP dns-tcp/TCP "
    );
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
