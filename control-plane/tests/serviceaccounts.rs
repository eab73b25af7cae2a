//! Service-account tokens with the real kubectl and curl: `kubectl create token` (TokenRequest),
//! the tokens authenticating as their account (RBAC decides the rest), expiring with what they are
//! bound to, refused when forged or meant for another audience; the OIDC discovery document and its
//! key; the ServiceAccount admission plugin's volume; `kube-root-ca.crt` in every namespace; and a
//! node asking only for tokens of its own pods.

mod common;

use std::process::Command;

use common::{Server, temp_dir};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A client certificate for `system:node:NAME`, signed with the cluster CA by openssl.
fn node_certificate(server: &Server, name: &str) -> (String, String) {
    let dir = &server.dir;
    let (key, csr, crt) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.crt")),
    );
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |p: &std::path::Path| p.display().to_string();
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &p(&key),
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        &p(&key),
        "-subj",
        &format!("/O=system:nodes/CN=system:node:{name}"),
        "-out",
        &p(&csr),
    ]);
    // An X.509 v3 client certificate (webpki refuses v1 certificates).
    let ext = dir.join("client-ext.cnf");
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").expect("extension file");
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&dir.join("ca.crt")),
        "-CAkey",
        &p(&dir.join("ca.key")),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&crt),
    ]);
    (p(&crt), p(&key))
}

/// `curl` as node `cert`: POST `body` to `path`; (HTTP code, body).
fn post_as_node(server: &Server, (cert, key): &(String, String), path: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--http1.1", "--max-time", "10", "--cacert"])
        .arg(server.dir.join("ca.crt"))
        .args([
            "--cert",
            cert,
            "--key",
            key,
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "--data-binary",
            body,
        ])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let body = format!("{body}{}", String::from_utf8_lossy(&out.stderr));
    (code.trim().parse().unwrap_or(0), body)
}

#[test]
fn tokens_authenticate_their_account_while_what_they_are_bound_to_lives() {
    let dir = temp_dir("sa-tokens");
    let server = Server::start(&dir);
    let pods = "/api/v1/namespaces/default/pods";

    // An unbound token: the account's identity, and RBAC's answer for it.
    let token = server.ok(&["create", "token", "default"]).trim().to_string();
    let who = server.ok(&["auth", "whoami", "--token", &token, "-o", "json"]);
    let who = json(&who);
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:serviceaccounts:default"), "{groups}");
    assert_eq!(server.curl_as(&token, &[], pods).0, 403, "no role yet");
    server.ok(&[
        "create",
        "rolebinding",
        "v",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    let (code, body) = server.curl_as(&token, &[], pods);
    assert_eq!(code, 200, "{body}");
    let create = ["-X", "POST", "-H", "Content-Type: application/json", "-d", "{}"];
    assert_eq!(server.curl_as(&token, &create, pods).0, 403, "view only");

    // Forged, for another audience, or of nobody: 401.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(server.curl_as(&forged, &[], pods).0, 401);
    let vault = server
        .ok(&["create", "token", "default", "--audience", "vault"])
        .trim()
        .to_string();
    assert_eq!(
        server.curl_as(&vault, &[], pods).0,
        401,
        "a token for another audience"
    );
    let missing = server.kubectl(&["create", "token", "nobody"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("NotFound")
            || String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let short = server.kubectl(&["create", "token", "default", "--duration", "5m"]);
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("may not specify a duration less than 10 minutes"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );

    // A token bound to a pod dies with the pod; any token dies with its account.
    server.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n");
    let uid = server.jsonpath("pod", "p", "default", "{.metadata.uid}");
    let bound_to = |uid: &str| {
        server.kubectl(&[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p",
            "--bound-object-uid",
            uid,
        ])
    };
    let bound = String::from_utf8_lossy(&bound_to(&uid).stdout).trim().to_string();
    assert_eq!(server.curl_as(&bound, &[], pods).0, 200);
    let stale = bound_to("0000");
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&stale.stderr)
    );
    server.ok(&["delete", "pod", "p", "--grace-period=0", "--force"]);
    assert_eq!(server.curl_as(&bound, &[], pods).0, 401, "its pod is gone");
    assert_eq!(server.curl_as(&token, &[], pods).0, 200);
    server.ok(&["delete", "serviceaccount", "default"]);
    // The serviceaccount controller makes a new `default`: another UID, so the old token is dead.
    for _ in 0..50 {
        if server
            .kubectl(&["get", "serviceaccount", "default"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        server.curl_as(&token, &[], pods).0,
        401,
        "its account was deleted"
    );

    // TokenReview: what kube-rbac-proxy asks.
    let fresh = server.ok(&["create", "token", "default"]).trim().to_string();
    let review = server.send(
        "POST",
        "application/json",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        format!(
            r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{fresh}"}}}}"#
        )
        .as_bytes(),
    );
    assert_eq!(review.0, 201, "{}", review.1);
    let review = json(&review.1);
    assert_eq!(review["status"]["authenticated"], true);
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );

    // Impersonation by RBAC's `impersonate` verb: this account may act as jane and nobody else, and
    // may not add groups; acting as jane, it has jane's rights (none).
    server.ok(&["create", "serviceaccount", "impersonator"]);
    server.ok(&[
        "create",
        "clusterrole",
        "as-jane",
        "--verb=impersonate",
        "--resource=users",
        "--resource-name=jane",
    ]);
    server.ok(&[
        "create",
        "clusterrolebinding",
        "as-jane",
        "--clusterrole=as-jane",
        "--serviceaccount=default:impersonator",
    ]);
    let impersonator = server.ok(&["create", "token", "impersonator"]).trim().to_string();
    let (code, body) = server.curl_as(&impersonator, &["-H", "Impersonate-User: jane"], pods);
    assert!(
        code == 403 && body.contains(r#"User \"jane\" cannot list"#),
        "{code} {body}"
    );
    let (code, body) = server.curl_as(&impersonator, &["-H", "Impersonate-User: bob"], pods);
    assert!(
        code == 403 && body.contains("cannot impersonate resource \\\"users\\\""),
        "{code} {body}"
    );
    let (code, body) = server.curl_as(
        &impersonator,
        &[
            "-H",
            "Impersonate-User: jane",
            "-H",
            "Impersonate-Group: system:masters",
        ],
        pods,
    );
    assert!(
        code == 403 && body.contains("cannot impersonate resource \\\"groups\\\""),
        "{code} {body}"
    );
    // An administrator may impersonate a service account, which then has its groups.
    let who = server.ok(&[
        "auth",
        "whoami",
        "--as",
        "system:serviceaccount:default:impersonator",
        "-o",
        "json",
    ]);
    let groups = json(&who)["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:serviceaccounts:default"), "{groups}");

    // OIDC discovery, for service accounts (the default policy) and not for anonymous callers; the
    // token's key is the one published.
    let (code, body) = server.curl_as(&fresh, &[], "/.well-known/openid-configuration");
    assert_eq!(code, 200, "{body}");
    let discovery = json(&body);
    assert_eq!(
        discovery["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    assert_eq!(
        discovery["jwks_uri"],
        "https://kubernetes.default.svc.cluster.local/openid/v1/jwks"
    );
    let (code, body) = server.curl_as(&fresh, &[], "/openid/v1/jwks");
    assert_eq!(code, 200, "{body}");
    let kid = json(&body)["keys"][0]["kid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(fresh.split('.').next().unwrap_or_default())
        .expect("header");
    assert_eq!(json(&String::from_utf8_lossy(&header))["kid"], kid.as_str());
    let anonymous = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(dir.join("ca.crt"))
        .arg(format!("https://127.0.0.1:{}/openid/v1/jwks", server.port))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");

    // Tokens outlive a restart of the control plane (the key is kept in the data directory, 0600).
    drop(server);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("sa.key"))
        .expect("sa.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let server = Server::start(&dir);
    assert_eq!(server.curl_as(&fresh, &[], pods).0, 200, "after a restart");
}

#[test]
fn pods_get_their_account_volume_and_nodes_tokens_only_for_their_own_pods() {
    let dir = temp_dir("sa-admission");
    let server = Server::start_with(&dir, &["--hollow-nodes", "2"]);
    server.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: hollow-0\n  initContainers:\n  - name: init\n    image: busybox\n  containers:\n  - name: a\n    image: busybox\n  - name: b\n    image: busybox\n    volumeMounts:\n    - name: own\n      mountPath: /var/run/secrets/kubernetes.io/serviceaccount\n  volumes:\n  - name: own\n    emptyDir: {}\n",
    );
    let pod = json(&server.ok(&["get", "pod", "web", "-o", "json"]));
    let volume = pod["spec"]["volumes"]
        .as_array()
        .and_then(|v| {
            v.iter().find(|v| {
                v["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kube-api-access-"))
            })
        })
        .cloned()
        .expect("the kube-api-access volume");
    let sources = volume["projected"]["sources"].to_string();
    for part in [
        r#""expirationSeconds":3607"#,
        r#""kube-root-ca.crt""#,
        r#""metadata.namespace""#,
    ] {
        assert!(sources.contains(part), "{part} in {sources}");
    }
    let mount_of = |list: &str, i: usize| pod["spec"][list][i]["volumeMounts"].to_string();
    assert!(mount_of("initContainers", 0).contains("kube-api-access-"));
    assert!(mount_of("containers", 0).contains(r#""readOnly":true"#));
    assert!(
        !mount_of("containers", 1).contains("kube-api-access-"),
        "b mounts its own there"
    );

    // Opting out, on the pod or on the account; a missing account refuses the pod.
    server.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: quiet\nspec:\n  automountServiceAccountToken: false\n  containers:\n  - name: a\n    image: busybox\n");
    assert_eq!(server.jsonpath("pod", "quiet", "default", "{.spec.volumes}"), "");
    server.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: robot\nautomountServiceAccountToken: false\n");
    server.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: robot\nspec:\n  serviceAccountName: robot\n  containers:\n  - name: a\n    image: busybox\n");
    assert_eq!(server.jsonpath("pod", "robot", "default", "{.spec.volumes}"), "");
    let refused = server.kubectl(&[
        "run",
        "ghost",
        "--image=busybox",
        "--overrides",
        r#"{"spec":{"serviceAccountName":"ghost"}}"#,
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("error looking up service account default/ghost"),
        "{err}"
    );

    // Every namespace has the cluster CA as kube-root-ca.crt, put back when deleted.
    let ca = std::fs::read_to_string(dir.join("ca.crt")).expect("ca");
    server.ok(&["create", "namespace", "team"]);
    let published = |ns: &str| {
        server
            .kubectl(&[
                "get",
                "configmap",
                "kube-root-ca.crt",
                "-n",
                ns,
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ])
            .stdout
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        for _ in 0..100 {
            if f() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("{what}");
    };
    wait("kube-root-ca.crt in a new namespace", &|| {
        published("team") == ca.as_bytes()
    });
    server.ok(&["delete", "configmap", "kube-root-ca.crt", "-n", "team"]);
    wait("kube-root-ca.crt put back", &|| {
        published("team") == ca.as_bytes()
    });

    // A node gets tokens for its own pods' accounts, bound to the pod; nothing else.
    let request = |pod: &str| {
        format!(
            r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{{"boundObjectRef":{{"apiVersion":"v1","kind":"Pod","name":"{pod}"}}}}}}"#
        )
    };
    let path = "/api/v1/namespaces/default/serviceaccounts/default/token";
    let one = node_certificate(&server, "hollow-0");
    let two = node_certificate(&server, "hollow-1");
    let (code, body) = post_as_node(&server, &one, path, &request("web"));
    assert_eq!(code, 201, "{body}");
    let token = json(&body)["status"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(server.curl_as(&token, &[], "/api").0, 200);
    // The kubelet's volume token (3607 s) is issued for a year, marked with when to replace it,
    // and answered with the lifetime asked for (kube-apiserver's extended expiration).
    let volume_request = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3607,"boundObjectRef":{"apiVersion":"v1","kind":"Pod","name":"web"}}}"#;
    let (code, body) = post_as_node(&server, &one, path, volume_request);
    assert_eq!(code, 201, "{body}");
    let answer = json(&body);
    let claims = |token: &str| {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap_or_default())
            .expect("payload");
        json(&String::from_utf8_lossy(&payload))
    };
    let volume = claims(answer["status"]["token"].as_str().unwrap_or_default());
    let iat = volume["iat"].as_i64().unwrap_or_default();
    assert_eq!(volume["exp"].as_i64(), Some(iat + 365 * 24 * 3600), "{volume}");
    assert_eq!(
        volume["kubernetes.io"]["warnafter"].as_i64(),
        Some(iat + 3607),
        "{volume}"
    );
    assert_eq!(answer["spec"]["expirationSeconds"], 3607);
    let stated = answer["status"]["expirationTimestamp"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(stated, rfc3339_of(iat + 3607));
    // Any other lifetime is what it says.
    let (_, body) = post_as_node(&server, &one, path, &request("web"));
    let short = claims(json(&body)["status"]["token"].as_str().unwrap_or_default());
    assert_eq!(
        short["exp"].as_i64().unwrap_or_default() - short["iat"].as_i64().unwrap_or_default(),
        3600
    );
    assert!(short["kubernetes.io"].get("warnafter").is_none(), "{short}");
    let (code, body) = post_as_node(&server, &two, path, &request("web"));
    assert!(
        code == 403 && body.contains("scheduled on a different node"),
        "{code} {body}"
    );
    let (code, body) = post_as_node(
        &server,
        &one,
        path,
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#,
    );
    assert!(
        code == 403 && body.contains("not bound to a pod"),
        "{code} {body}"
    );
    let robot = "/api/v1/namespaces/default/serviceaccounts/robot/token";
    let (code, body) = post_as_node(&server, &one, robot, &request("web"));
    assert!(code == 403, "another account than the pod's: {code} {body}");
}

#[test]
fn token_secrets_made_by_hand_get_a_long_lived_token_that_dies_with_the_secret() {
    // Kubernetes' documented way to a long-lived token: a Secret of type
    // kubernetes.io/service-account-token naming the account; the control plane fills it in.
    let dir = temp_dir("sa-secrets");
    let server = Server::start(&dir);
    let pods = "/api/v1/namespaces/default/pods";
    server.ok(&["create", "serviceaccount", "ci"]);
    server.ok(&[
        "create",
        "rolebinding",
        "ci",
        "--clusterrole=view",
        "--serviceaccount=default:ci",
    ]);
    server.apply(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: ci-token\n  annotations: {kubernetes.io/service-account.name: ci}\ntype: kubernetes.io/service-account-token\n",
    );
    let mut token = String::new();
    for _ in 0..100 {
        token = server.jsonpath("secret", "ci-token", "default", "{.data.token}");
        if !token.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    use base64::Engine;
    let decode = |b: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .expect("base64"),
        )
        .expect("utf-8")
    };
    let token = decode(&token);
    assert!(!token.is_empty(), "the controller filled in no token");
    let ca = decode(&server.jsonpath("secret", "ci-token", "default", "{.data.ca\\.crt}"));
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    let uid = server.jsonpath("serviceaccount", "ci", "default", "{.metadata.uid}");
    let annotated = server.jsonpath(
        "secret",
        "ci-token",
        "default",
        "{.metadata.annotations.kubernetes\\.io/service-account\\.uid}",
    );
    assert_eq!(annotated.trim(), uid.trim());
    let who = json(&server.ok(&["auth", "whoami", "--token", &token, "-o", "json"]));
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:default:ci"
    );
    let (code, body) = server.curl_as(&token, &[], pods);
    assert_eq!(code, 200, "{body}");
    // Deleting the Secret revokes the token at once.
    server.ok(&["delete", "secret", "ci-token"]);
    assert_eq!(server.curl_as(&token, &[], pods).0, 401, "its Secret is gone");
    // A token Secret of an account that does not exist is removed, as Kubernetes does.
    server.apply(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: orphan\n  annotations: {kubernetes.io/service-account.name: nobody}\ntype: kubernetes.io/service-account-token\n",
    );
    let mut gone = false;
    for _ in 0..100 {
        if !server.kubectl(&["get", "secret", "orphan"]).status.success() {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(gone, "the orphan token Secret stayed");
    // One that names no account is refused, as kube-apiserver refuses it.
    let (ok, out) = server.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata: {name: nameless}\ntype: kubernetes.io/service-account-token\n",
    );
    assert!(!ok && out.contains("kubernetes.io/service-account.name"), "{out}");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// `secs` since the epoch as RFC 3339 (by `date -u`).
fn rfc3339_of(secs: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
