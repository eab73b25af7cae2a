//! Defects a hostile client or a careless one could use, each fixed and kept fixed: the data
//! directory private to the server, watches whose timeout cannot overflow, the system namespaces
//! undeletable, impersonation refused to all but administrators and honoured for them with the
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
    let admin = server.token();
    let post = |path: &str, body: String| {
        let file = dir.join("body.json");
        std::fs::write(&file, body).expect("body");
        let data = format!("@{}", file.display());
        server.curl_as(
            &admin,
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &data,
            ],
            path,
        )
    };
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
