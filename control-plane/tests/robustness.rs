//! The server under abuse, over real HTTPS (curl): malformed, oversized and invalid requests get 4xx
//! `Status` answers and the server stays up; `kill -9` during a stream of writes loses no acknowledged
//! write, and a watch from before the crash resumes after it.

mod common;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Server, temp_dir};

#[test]
fn bad_requests_get_4xx_statuses_and_the_server_stays_up() {
    let dir = temp_dir("abuse");
    let server = Server::start(&dir);
    let file = |name: &str, body: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("body file");
        p
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    let (bad_labels, bad_fields, missing) = (
        format!("{cms}?labelSelector=a%20in%20b"),
        format!("{cms}?fieldSelector=spec.x%3Dy"),
        format!("{cms}/missing"),
    );
    let cases: Vec<(&str, &str, Option<PathBuf>, &str, u16)> = vec![
        (
            "POST",
            cms,
            Some(file("big", &vec![b'x'; 4 << 20])),
            "application/json",
            413,
        ),
        (
            "POST",
            cms,
            Some(file("broken", b"{\"metadata\": {")),
            "application/json",
            400,
        ),
        (
            "POST",
            cms,
            Some(file("array", b"[1,2,3]")),
            "application/json",
            400,
        ),
        (
            "POST",
            cms,
            Some(file(
                "wrongkind",
                b"{\"kind\":\"Secret\",\"metadata\":{\"name\":\"a\"}}",
            )),
            "application/json",
            400,
        ),
        (
            "POST",
            cms,
            Some(file(
                "wrongtype",
                b"{\"metadata\":{\"name\":\"a\"},\"data\":{\"k\":1}}",
            )),
            "application/json",
            400,
        ),
        (
            "POST",
            cms,
            Some(file("badname", b"{\"metadata\":{\"name\":\"A B\"}}")),
            "application/json",
            422,
        ),
        (
            "POST",
            cms,
            Some(file("proto", b"k8s\x00\x0a\x0b")),
            "application/vnd.kubernetes.protobuf",
            400,
        ),
        (
            "POST",
            cms,
            Some(file("yaml", b"metadata: {name: a}")),
            "text/plain",
            415,
        ),
        (
            "POST",
            "/api/v1/namespaces/nope/configmaps",
            Some(file("nons", b"{\"metadata\":{\"name\":\"a\"}}")),
            "application/json",
            404,
        ),
        ("PUT", cms, None, "application/json", 405),
        (
            "POST",
            "/api/v1/namespaces/default/services",
            Some(file("svctype", b"{\"metadata\":{\"name\":\"s\"},\"spec\":{\"type\":\"Bogus\",\"ports\":[{\"port\":70000}]}}")),
            "application/json",
            422,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/services",
            Some(file("svcip", b"{\"metadata\":{\"name\":\"s\"},\"spec\":{\"clusterIP\":\"10.96.0.1\",\"ports\":[{\"port\":80}]}}")),
            "application/json",
            422,
        ),
        (
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            Some(file("deploysel", b"{\"metadata\":{\"name\":\"d\"},\"spec\":{\"selector\":{\"matchLabels\":{\"app\":\"a\"}},\"template\":{\"metadata\":{\"labels\":{\"app\":\"b\"}},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"x\"}]}}}}")),
            "application/json",
            422,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            Some(file("podnoimage", b"{\"metadata\":{\"name\":\"p\"},\"spec\":{\"containers\":[{\"name\":\"c\"}]}}")),
            "application/json",
            422,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/none/binding",
            Some(file("binding", b"{\"target\":{\"name\":\"n\"}}")),
            "application/json",
            404,
        ),
        (
            "PUT",
            "/apis/apps/v1/namespaces/default/deployments/none/scale",
            Some(file("scale", b"{\"spec\":{\"replicas\":-1}}")),
            "application/json",
            404,
        ),
        ("GET", "/api/v1/pods-and-more", None, "application/json", 404),
        ("GET", &bad_labels, None, "application/json", 400),
        ("GET", &bad_fields, None, "application/json", 400),
        (
            "PATCH",
            &missing,
            Some(file("patch", b"{}")),
            "application/merge-patch+json",
            404,
        ),
        // Server-side apply needs a field manager, and a configuration of the right kind.
        (
            "PATCH",
            "/api/v1/namespaces/default",
            Some(file("applypatch", b"{}")),
            "application/apply-patch+yaml",
            422,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default?fieldManager=t",
            Some(file("applykind", b"kind: Pod")),
            "application/apply-patch+yaml",
            400,
        ),
        // A dry run of an unknown kind is refused, never made for real.
        (
            "DELETE",
            "/api/v1/namespaces/default/configmaps/kube-root-ca.crt?dryRun=Some",
            None,
            "application/json",
            400,
        ),
    ];
    for (method, path, body, content_type, want) in cases {
        let (code, text) = server.curl(method, path, body.as_deref(), content_type);
        assert_eq!(code, want, "{method} {path}: {text}");
        let status: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(status["kind"], "Status", "{method} {path}: {text}");
        assert!(
            status["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
    }
    let (code, _) = server.curl("GET", "/healthz", None, "application/json");
    assert_eq!(code, 200, "the server survived");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_write_and_watches_resume() {
    let dir = temp_dir("kill9");
    let server = Server::start(&dir);
    // One curl process sends 400 creates back to back; each answer line says whether it was
    // acknowledged (201). The server is killed while they run.
    let mut config = String::new();
    for i in 0..400 {
        config.push_str(&format!(
            "url = \"https://127.0.0.1:{}/api/v1/namespaces/default/configmaps?n=cm-{i:04}\"\nrequest = \"POST\"\nheader = \"Authorization: Bearer {}\"\nheader = \"Content-Type: application/json\"\ndata = \"{{\\\"metadata\\\":{{\\\"name\\\":\\\"cm-{i:04}\\\"}},\\\"data\\\":{{\\\"i\\\":\\\"{i}\\\"}}}}\"\ncacert = \"{}\"\nwrite-out = \"%{{http_code}} %{{url_effective}}\\n\"\noutput = \"/dev/null\"\nmax-time = 5\n",
            server.port,
            server.token(),
            dir.join("ca.crt").display()
        ));
        if i < 399 {
            config.push_str("next\n");
        }
    }
    let config_path = dir.join("writes.curl");
    std::fs::write(&config_path, config).expect("curl config");
    let mut writer = Command::new("curl")
        .args(["-sS", "--http1.1", "-K"])
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl");
    // Read the answers as they come; kill the server once 100 writes were acknowledged.
    let stdout = writer.stdout.take().expect("curl stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines.iter().filter(|l: &&String| l.starts_with("201 ")).count() < 100 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("writes stalled: {lines:?}"),
        }
    }
    server.kill9();
    let _ = writer.wait();
    let _ = reader.join();
    lines.extend(rx.try_iter());
    let acknowledged: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("201 "))
        .filter_map(|l| l.rsplit_once("?n=").map(|(_, n)| n.to_string()))
        .collect();
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < 400,
        "the crash should land mid-stream: {} acknowledged",
        acknowledged.len()
    );

    let server = Server::start(&dir);
    let (code, list) = server.curl(
        "GET",
        "/api/v1/namespaces/default/configmaps",
        None,
        "application/json",
    );
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&list).expect("list JSON");
    let names: Vec<&str> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|o| o["metadata"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for name in &acknowledged {
        assert!(
            names.contains(&name.as_str()),
            "{name} was acknowledged but is gone"
        );
    }
    // A watch from the first acknowledged write's revision replays what came after it.
    let (_, first) = server.curl(
        "GET",
        &format!("/api/v1/namespaces/default/configmaps/{}", acknowledged[0]),
        None,
        "application/json",
    );
    let first: serde_json::Value = serde_json::from_str(&first).expect("object JSON");
    let rv = first["metadata"]["resourceVersion"].as_str().expect("rv");
    let (code, events) = server.curl(
        "GET",
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        None,
        "application/json",
    );
    assert_eq!(code, 200);
    let added = events.lines().filter(|l| l.contains("\"ADDED\"")).count();
    assert!(added + 1 >= acknowledged.len(), "{added} events after {rv}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
