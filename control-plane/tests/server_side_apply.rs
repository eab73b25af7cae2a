//! `kubectl apply --server-side` with the real kubectl: objects are created and updated by what their
//! managers apply, ownership is recorded in managedFields, another manager's change to a field is a
//! conflict (kubectl's own message) until it forces it, and a field a manager stops applying goes.
//! Dry runs (`kubectl diff`, `--dry-run=server`) answer what would be and change nothing.

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
        out.contains(
            r#"Apply failed with 1 conflict: conflict with "kubectl" using apps/v1: .spec.replicas"#
        ),
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
