//! RBAC with the real kubectl: `kubectl auth can-i` (SelfSubjectAccessReview), bindings to the
//! default aggregated roles, namespaced grants, the escalation check, SubjectAccessReview. Users are
//! impersonated by the administrator (`--as`), which runs each request with exactly their rights.

mod common;

use common::{Server, temp_dir};

/// `kubectl auth can-i ARGS --as jane --as-group dev`: the answer (`yes`/`no`).
fn can_jane(server: &Server, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--as", "jane", "--as-group", "dev"]);
    let out = server.kubectl(&all);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn as_jane(server: &Server, args: &[&str]) -> (bool, String) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--as", "jane", "--as-group", "dev"]);
    let out = server.kubectl(&all);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn rbac_grants_what_bindings_say_and_no_more() {
    let dir = temp_dir("rbac");
    let server = Server::start(&dir);
    assert_eq!(
        server.ok(&["auth", "can-i", "create", "clusterroles"]).trim(),
        "yes"
    );
    // Jane, authenticated but bound to nothing: discovery and health, nothing else.
    assert_eq!(can_jane(&server, &["create", "deployments"]), "no");
    assert_eq!(can_jane(&server, &["get", "/healthz"]), "yes");
    let (ok, out) = as_jane(&server, &["get", "pods"]);
    assert!(!ok && out.contains("forbidden"), "{out}");

    // `edit` in default (aggregated from system:aggregate-to-edit and -view by the controller).
    wait_until("edit aggregated", || {
        server
            .ok(&[
                "get",
                "clusterrole",
                "edit",
                "-o",
                "jsonpath={.rules[*].resources}",
            ])
            .contains("deployments")
    });
    server.ok(&[
        "create",
        "rolebinding",
        "jane-edit",
        "--clusterrole",
        "edit",
        "--user",
        "jane",
        "-n",
        "default",
    ]);
    assert_eq!(
        can_jane(&server, &["create", "deployments", "-n", "default"]),
        "yes"
    );
    assert_eq!(
        can_jane(&server, &["create", "deployments", "-n", "kube-system"]),
        "no"
    );
    assert_eq!(
        can_jane(&server, &["create", "rolebindings", "-n", "default"]),
        "no"
    );
    let (ok, out) = as_jane(
        &server,
        &["create", "deployment", "web", "--image", "nginx", "-n", "default"],
    );
    assert!(ok, "{out}");
    let (ok, out) = as_jane(&server, &["get", "secrets", "-n", "kube-system"]);
    assert!(!ok && out.contains("forbidden"), "{out}");

    // A group binding through a namespaced Role; `admin` in "team" lets jane manage roles there,
    // but only to grant what she holds herself.
    server.ok(&["create", "namespace", "team"]);
    server.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb",
        "get,list",
        "--resource",
        "pods",
        "-n",
        "team",
    ]);
    server.ok(&[
        "create",
        "rolebinding",
        "devs-read",
        "--role",
        "pod-reader",
        "--group",
        "dev",
        "-n",
        "team",
    ]);
    assert_eq!(can_jane(&server, &["list", "pods", "-n", "team"]), "yes");
    assert_eq!(can_jane(&server, &["delete", "pods", "-n", "team"]), "no");
    server.ok(&[
        "create",
        "rolebinding",
        "jane-admin",
        "--clusterrole",
        "admin",
        "--user",
        "jane",
        "-n",
        "team",
    ]);
    let (ok, out) = as_jane(
        &server,
        &[
            "create",
            "role",
            "reader2",
            "--verb",
            "get",
            "--resource",
            "pods",
            "-n",
            "team",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = as_jane(
        &server,
        &[
            "create",
            "role",
            "everything",
            "--verb",
            "*",
            "--resource",
            "*",
            "-n",
            "team",
        ],
    );
    assert!(
        !ok && out.contains("attempting to grant RBAC permissions not currently held"),
        "{out}"
    );
    let (ok, out) = as_jane(
        &server,
        &[
            "create",
            "rolebinding",
            "jane-root",
            "--clusterrole",
            "cluster-admin",
            "--user",
            "jane",
            "-n",
            "team",
        ],
    );
    assert!(!ok && out.contains("not currently held"), "{out}");
    let (ok, out) = as_jane(
        &server,
        &[
            "create",
            "clusterrolebinding",
            "jane-root",
            "--clusterrole",
            "cluster-admin",
            "--user",
            "jane",
        ],
    );
    assert!(!ok && out.contains("forbidden"), "{out}");
    assert_eq!(can_jane(&server, &["get", "secrets", "-A"]), "no");

    // SubjectAccessReview: the administrator asks about jane.
    let review = r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"jane","groups":["dev"],"resourceAttributes":{"namespace":"team","verb":"list","resource":"pods"}}}"#;
    let (code, body) = server.send(
        "POST",
        "application/json",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        review.as_bytes(),
    );
    assert_eq!(code, 201, "{body}");
    assert!(body.contains(r#""allowed":true"#), "{body}");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
