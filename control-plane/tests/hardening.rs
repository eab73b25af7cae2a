//! Defects a hostile client or a careless one could use, each fixed and kept fixed: the data
//! directory private to the server, watches whose timeout cannot overflow, the system namespaces
//! undeletable, impersonation checked by RBAC (administrators may; a bootstrap token may not) and honoured with the
//! impersonated user's rights, `/metrics` for administrators only.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Server, temp_dir};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}

#[test]
fn the_data_directory_and_the_store_are_the_servers_alone() {
    let dir = temp_dir("private");
    // A directory an earlier version left open is closed up at start.
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let server = Server::start(&dir);
    server.ok(&["create", "secret", "generic", "s", "--from-literal=k=v"]);
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    // `home` is the test's kubectl's, not the server's.
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .flatten()
        .filter(|f| f.file_name() != "home")
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.file_name().to_string_lossy().starts_with("state.db"))
    );
    for f in files {
        let want = if f.path().is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&f.path()), want, "{}", f.path().display());
    }
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn watches_namespaces_impersonation_and_metrics_are_bounded() {
    let dir = temp_dir("bounded");
    let server = Server::start(&dir);
    let admin = server.token();

    // A watch asking for ~2^64 seconds is served (capped), and the server stays up.
    server.ok(&["create", "configmap", "seen", "--from-literal=k=v"]);
    let (code, events) = server.curl_as(
        &admin,
        &["--max-time", "2"],
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=18446744073709551615",
    );
    assert_eq!(code, 200, "the watch started");
    assert!(
        events.contains("\"ADDED\"") && events.contains("\"seen\""),
        "{events}"
    );
    let (code, _) = server.curl_as(&admin, &[], "/api/v1/namespaces/default/configmaps");
    assert_eq!(code, 200, "still serving");
    let (code, body) = server.curl_as(
        &admin,
        &[],
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=-1",
    );
    assert_eq!(code, 400, "{body}");

    // No deletecollection of namespaces; the system ones are never deleted.
    let (code, body) = server.curl_as(&admin, &["-X", "DELETE"], "/api/v1/namespaces");
    assert_eq!(code, 405, "{body}");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (code, body) = server.curl_as(&admin, &["-X", "DELETE"], &format!("/api/v1/namespaces/{ns}"));
        assert_eq!(code, 403, "{ns}: {body}");
        assert!(body.contains("may not be deleted"), "{body}");
    }
    server.ok(&["get", "namespace", "default", "kube-system"]);
    server.ok(&["get", "service", "kubernetes"]);

    // Impersonation: the administrator acts with the impersonated user's rights (here: none).
    let out = server.kubectl(&["--as", "jane", "get", "configmaps"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("User \"jane\" cannot list"), "{err}");
    server.ok(&[
        "--as",
        "jane",
        "--as-group",
        "system:masters",
        "get",
        "configmaps",
    ]);
    // A bootstrap token may not impersonate, nor read /metrics.
    let join = std::fs::read_to_string(dir.join("join-token")).expect("join token");
    let join = join.trim();
    let (code, body) = server.curl_as(
        join,
        &[
            "-H",
            "Impersonate-User: admin",
            "-H",
            "Impersonate-Group: system:masters",
        ],
        "/api/v1/secrets",
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cannot impersonate"), "{body}");
    let (code, _) = server.curl_as(join, &[], "/metrics");
    assert_eq!(code, 403);
    let (code, _) = server.curl_as(&admin, &[], "/metrics");
    assert_eq!(code, 200);
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn connections_are_capped_and_idle_ones_closed() {
    use std::{
        io::Read,
        net::TcpStream,
        time::{Duration, Instant},
    };
    let dir = temp_dir("capped");
    let server = Server::start_with(&dir, &["--max-connections", "3"]);
    let admin = server.token();
    let list = "/api/v1/namespaces/default/configmaps";
    assert_eq!(server.curl_as(&admin, &[], list).0, 200);
    // Three clients that connect and say nothing take every slot...
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = server.curl_as(&admin, &["--max-time", "2"], list);
    assert_eq!(code, 0, "no slot while three silent clients hold them");
    // ...until the TLS handshake timeout closes them (10 s), and the next client is served.
    let start = Instant::now();
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        assert!(matches!(c.read(&mut buf), Ok(0)), "closed by the server");
    }
    assert!(start.elapsed() < Duration::from_secs(12), "{:?}", start.elapsed());
    assert_eq!(server.curl_as(&admin, &[], list).0, 200);
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn configmap_and_secret_keys_are_file_names_and_data_is_bounded() {
    let dir = temp_dir("datakeys");
    let server = Server::start(&dir);
    let post = |path: &str, body: String| server.send("POST", "application/json", path, body.as_bytes());
    let cms = "/api/v1/namespaces/default/configmaps";
    for key in ["../x", "a/b", "..data", "."] {
        let (code, body) = post(
            cms,
            format!(r#"{{"metadata":{{"name":"k"}},"data":{{"{key}":"v"}}}}"#),
        );
        assert_eq!(code, 422, "{key}: {body}");
        assert!(body.contains("Invalid value"), "{body}");
    }
    let (code, body) = post(
        "/api/v1/namespaces/default/secrets",
        r#"{"metadata":{"name":"s"},"stringData":{"../../etc/shadow":"x"}}"#.into(),
    );
    assert_eq!(code, 422, "{body}");
    let big = "x".repeat(1024 * 1024 + 1);
    let (code, body) = post(
        cms,
        format!(r#"{{"metadata":{{"name":"big"}},"data":{{"k":"{big}"}}}}"#),
    );
    assert_eq!(code, 422, "{}", &body[..body.len().min(300)]);
    assert!(body.contains("must have at most 1048576 bytes"));
    let (code, body) = post(
        cms,
        r#"{"metadata":{"name":"fine"},"data":{"app.properties":"a=b",".hidden":"c"}}"#.into(),
    );
    assert_eq!(code, 201, "{body}");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

use berth_control_plane::api::protobuf::length_delimited as proto_field;

#[test]
fn amplifying_bodies_are_refused_before_they_are_built() {
    let dir = temp_dir("amplify");
    let server = Server::start(&dir);
    let send = |method: &str, content_type: &str, path: &str, body: &[u8]| {
        server.send(method, content_type, path, body)
    };
    let pods = "/api/v1/namespaces/default/pods";
    let pod = r#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    assert_eq!(send("POST", "application/json", pods, pod.as_bytes()).0, 201);
    // 3 MB of empty containerStatuses: a million objects, each defaulted to 67 bytes once built
    // (this took the server to 2.4 GiB). Refused by counting, before any is built.
    let statuses = |n: usize| {
        format!(
            r#"{{"status":{{"containerStatuses":[{}]}}}}"#,
            vec!["{}"; n].join(",")
        )
    };
    let status = format!("{pods}/p/status");
    let (code, body) = send(
        "PATCH",
        "application/merge-patch+json",
        &status,
        statuses(1_000_000).as_bytes(),
    );
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("RequestEntityTooLarge"), "{body}");
    // The same as protobuf: a Pod of 1.4 million empty containers in 2.8 MB.
    let containers: Vec<u8> = std::iter::repeat_n(proto_field(2, b""), 1_400_000)
        .flatten()
        .collect();
    let type_meta = [proto_field(1, b"v1"), proto_field(2, b"Pod")].concat();
    let raw = [proto_field(1, &proto_field(1, b"q")), proto_field(2, &containers)].concat();
    let envelope = [
        b"k8s\0".to_vec(),
        proto_field(1, &type_meta),
        proto_field(2, &raw),
    ]
    .concat();
    let (code, body) = send("POST", "application/vnd.kubernetes.protobuf", pods, &envelope);
    assert_eq!(code, 413, "{body}");
    // An object over 1.5 MiB once stored is refused as etcd would (here: 17 env values of 100 kB).
    let env: Vec<String> = (0..17)
        .map(|i| format!(r#"{{"name":"V{i}","value":"{}"}}"#, "x".repeat(100_000)))
        .collect();
    let big = format!(
        r#"{{"metadata":{{"name":"big"}},"spec":{{"containers":[{{"name":"c","image":"busybox","env":[{}]}}]}}}}"#,
        env.join(",")
    );
    let (code, body) = send("POST", "application/json", pods, big.as_bytes());
    assert_eq!(code, 413, "{}", &body[..body.len().min(300)]);
    assert!(
        body.contains("at most 1572864"),
        "{}",
        &body[..body.len().min(300)]
    );
    // What is within bounds still works, and the server never grew past a modest size.
    let (code, body) = send(
        "PATCH",
        "application/merge-patch+json",
        &status,
        statuses(2).as_bytes(),
    );
    assert_eq!(code, 200, "{body}");
    let peak = server.peak_rss_mib();
    assert!(peak < 150, "peak RSS {peak} MiB");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bodies_are_read_only_from_authenticated_clients() {
    use std::io::{Read, Write};
    let dir = temp_dir("unauth-body");
    let server = Server::start(&dir);
    // A client without credentials declares a 2 MB protobuf body and sends none of it: the answer
    // (401) comes at once, without the server waiting for, reading or decoding the body.
    let tls = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-alpn", "http/1.1", "-connect"])
        .arg(format!("127.0.0.1:{}", server.port))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut tls = tls.expect("openssl");
    let request = "POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.kubernetes.protobuf\r\nContent-Length: 2000000\r\n\r\n";
    tls.stdin
        .as_mut()
        .expect("stdin")
        .write_all(request.as_bytes())
        .expect("write");
    let mut stdout = tls.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut answer = [0u8; 64];
        let n = stdout.read(&mut answer).unwrap_or(0);
        let _ = tx.send(String::from_utf8_lossy(&answer[..n]).to_string());
    });
    // Before the fix the server sat waiting for the body it was promised.
    let answer = rx.recv_timeout(std::time::Duration::from_secs(5));
    let _ = tls.kill();
    let answer = answer.expect("an answer without sending the body");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let _ = tls.wait();
    // Nor does the body's type tell a stranger anything: 401 before 415, as kube-apiserver.
    let body = dir.join("text-body");
    std::fs::write(&body, "metadata: {name: a}").expect("body");
    let data = format!("@{}", body.display());
    let (code, text) = server.curl_as(
        "not-a-token",
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            &data,
        ],
        "/api/v1/namespaces/default/configmaps",
    );
    assert_eq!(code, 401, "{text}");
    // Nor to a known client that may not write there: 403 before 415. The one that may gets 415.
    let account_token = server.ok(&["create", "token", "default"]);
    let text_post = |token: &str| {
        server.curl_as(
            token,
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: text/plain",
                "--data-binary",
                &data,
            ],
            "/api/v1/namespaces/default/configmaps",
        )
    };
    let (code, text) = text_post(account_token.trim());
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("system:serviceaccount:default:default"), "{text}");
    let (code, text) = text_post(&server.token());
    assert_eq!(code, 415, "{text}");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn metadata_and_selectors_are_validated() {
    let dir = temp_dir("metadata");
    let server = Server::start(&dir);
    let admin = server.token();
    let post = |body: String| {
        server.send(
            "POST",
            "application/json",
            "/api/v1/namespaces/default/configmaps",
            body.as_bytes(),
        )
    };
    for (metadata, expected) in [
        (
            r#""labels":{"a b":"x"}"#,
            "metadata.labels: Invalid value: \\\"a b\\\"",
        ),
        (
            r#""labels":{"app":"-web"}"#,
            "metadata.labels.app: Invalid value: \\\"-web\\\"",
        ),
        (r#""labels":{"example.com/a/b":"x"}"#, "metadata.labels"),
        (
            r#""annotations":{"bad key":"x"}"#,
            "metadata.annotations: Invalid value",
        ),
        (
            r#""finalizers":["cleanup"]"#,
            "neither a standard finalizer name nor is it fully qualified",
        ),
    ] {
        let (code, body) = post(format!(r#"{{"metadata":{{"name":"m",{metadata}}}}}"#));
        assert_eq!(code, 422, "{metadata}: {body}");
        assert!(body.contains(expected), "{metadata}: {body}");
    }
    let big = "x".repeat(256 * 1024);
    let (code, body) = post(format!(
        r#"{{"metadata":{{"name":"m","annotations":{{"a":"{big}"}}}}}}"#
    ));
    assert_eq!(code, 422, "{}", &body[..body.len().min(300)]);
    assert!(body.contains("Too long: must have at most 262144 bytes"));
    let fine = r#"{"metadata":{"name":"m","labels":{"app.kubernetes.io/name":"web","tier":""},"annotations":{"Example.com/Note":"x"},"finalizers":["example.com/keep"]}}"#;
    assert_eq!(post(fine.into()).0, 201);
    // A selector that is not one is a 400, not "everything".
    let (code, body) = server.curl_as(
        &admin,
        &[],
        "/api/v1/namespaces/default/configmaps?labelSelector=!!!",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unable to parse requirement"), "{body}");
    let out = server.kubectl(&[
        "get",
        "configmaps",
        "-l",
        "app.kubernetes.io/name=web",
        "-o",
        "name",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "configmap/m");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn join_tokens_expire_and_new_ones_are_made_and_signed() {
    use base64::Engine;
    let dir = temp_dir("tokens");
    let server = Server::start_with(&dir, &["--token-ttl", "2s"]);
    let first = std::fs::read_to_string(dir.join("join-token")).expect("join-token");
    let (id, _) = first.trim().split_once('.').expect("id.secret");
    let expiration = server.ok(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
        "-o",
        "jsonpath={.data.expiration}",
    ]);
    let expiration = base64::engine::general_purpose::STANDARD
        .decode(expiration.trim())
        .expect("base64");
    assert!(
        String::from_utf8_lossy(&expiration).ends_with('Z'),
        "{expiration:?}"
    );

    // `token create` makes another through the API, and cluster-info is signed for it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth-control-plane"))
        .args(["token", "create", "--ttl", "1h", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("token create");
    let join = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{join}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        join.starts_with("berth-agent run --server https://127.0.0.1:"),
        "{join}"
    );
    let token = join
        .split_whitespace()
        .skip_while(|w| *w != "--token")
        .nth(1)
        .expect("--token");
    let (new_id, new_secret) = token.split_once('.').expect("id.secret");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (signature, kubeconfig) = loop {
        let get = |field: &str| cluster_info(&server, &format!(".{field}"));
        let signature = get(&format!("jws-kubeconfig-{new_id}"));
        if !signature.is_empty() {
            break (signature, get("kubeconfig"));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cluster-info never signed for {new_id}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        signature,
        berth_control_plane::pki::jws_detached(new_id, new_secret, &kubeconfig)
    );
    // The new token authenticates; the first has expired (2 s) and does not.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let info_path = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
    assert_eq!(server.curl_as(token, &[], info_path).0, 200);
    assert_eq!(server.curl_as(first.trim(), &[], info_path).0, 401);

    // A restart replaces the expired join token with a new, valid one.
    drop(server);
    let server = Server::start_with(&dir, &["--token-ttl", "1h"]);
    let second = std::fs::read_to_string(dir.join("join-token")).expect("join-token");
    assert_ne!(first, second);
    assert_eq!(server.curl_as(second.trim(), &[], info_path).0, 200);
    let command = std::fs::read_to_string(dir.join("join-command")).expect("join-command");
    assert!(command.contains(second.trim()), "{command}");
    // The token cleaner deletes the expired Secret, and its signature goes with it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let data = cluster_info(&server, "");
        let secret = server.kubectl(&[
            "get",
            "secret",
            "-n",
            "kube-system",
            &format!("bootstrap-token-{id}"),
        ]);
        if !data.contains(&format!("jws-kubeconfig-{id}")) && !secret.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expired token {id} still there: {data}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// `kube-public/cluster-info`'s `.data` (or the field `.NAME` of it) as kubectl's JSONPath prints it.
fn cluster_info(server: &Server, field: &str) -> String {
    server.ok(&[
        "get",
        "configmap",
        "cluster-info",
        "-n",
        "kube-public",
        "-o",
        &format!("jsonpath={{.data{field}}}"),
    ])
}

#[test]
fn kubectl_1_32_and_1_33_approve_and_deny_certificate_requests() {
    let dir = temp_dir("csr-approve");
    let server = Server::start(&dir);
    let request = common::certificate_request(&dir.join("user.key"), "/CN=jane/O=dev");
    for (version, name, verb, condition) in [
        ("1.33", "jane-33", "approve", "Approved"),
        ("1.32", "jane-32", "deny", "Denied"),
    ] {
        server.apply(&format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth]\n"
        ));
        // kubectl's certificate commands send the updated CSR as protobuf.
        let kubectl = format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}");
        let out = std::process::Command::new(&kubectl)
            .env("HOME", dir.join("home"))
            .arg("--kubeconfig")
            .arg(dir.join("admin.kubeconfig"))
            .args(["certificate", verb, name])
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {version} certificate {verb}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let conditions = server.ok(&["get", "csr", name, "-o", "jsonpath={.status.conditions[*].type}"]);
        assert_eq!(conditions.trim(), condition, "kubectl {version}");
    }
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn yaml_bodies_are_objects_and_alias_bombs_are_refused() {
    let dir = temp_dir("yaml");
    let server = Server::start(&dir);
    let cms = "/api/v1/namespaces/default/configmaps";
    let (code, body) = server.send(
        "POST",
        "application/yaml",
        cms,
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  labels: {app: web}\ndata:\n  greeting: hello\n",
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        server.jsonpath("configmap", "from-yaml", "default", "{.data.greeting}"),
        "hello"
    );
    let (code, body) = server.send(
        "PUT",
        "application/yaml",
        &format!("{cms}/from-yaml"),
        b"metadata:\n  name: from-yaml\ndata:\n  greeting: bye\n",
    );
    assert_eq!(code, 200, "{body}");
    // Aliases of aliases: a billion strings once expanded.
    let mut bomb = String::from("metadata: {name: bomb}\na: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        bomb.push_str(&format!(
            "{next}: &{next} [{}]\n",
            vec![format!("*{prev}"); 10].join(",")
        ));
    }
    let (code, body) = server.send("POST", "application/yaml", cms, bomb.as_bytes());
    assert!(matches!(code, 400 | 413), "{code} {body}");
    let (code, _) = server.send("POST", "application/yaml", cms, b"metadata: [unclosed\n");
    assert_eq!(code, 400);
    assert!(server.peak_rss_mib() < 150);
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
