//! The real `kubectl` against `berth-control-plane`: the server runs as a process on a loopback port
//! with a fresh data directory; kubectl uses the `admin.kubeconfig` it writes (and a fresh `HOME`, so no
//! cached discovery). A restart on the same directory must keep every object.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Server {
    /// Starts the server on a port it picks (port 0, so concurrent tests never collide) and waits
    /// until it has written `admin.kubeconfig` naming that port and accepts connections there.
    fn start(dir: &Path) -> Server {
        let kubeconfig = dir.join("admin.kubeconfig");
        let _ = std::fs::remove_file(&kubeconfig);
        let child = Command::new(env!("CARGO_BIN_EXE_berth-control-plane"))
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth-control-plane");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let port = std::fs::read_to_string(&kubeconfig).ok().and_then(|k| {
                k.lines()
                    .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
                    .and_then(|p| p.trim().parse::<u16>().ok())
            });
            if let Some(port) = port
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                break port;
            }
            assert!(Instant::now() < deadline, "the server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        };
        Server {
            child,
            dir: dir.to_path_buf(),
            port,
        }
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let home = self.dir.join("home");
        let _ = std::fs::create_dir_all(&home);
        Command::new("kubectl")
            .env("HOME", &home)
            .arg("--kubeconfig")
            .arg(self.dir.join("admin.kubeconfig"))
            .args(["--request-timeout", "10s"])
            .args(args)
            .output()
            .expect("kubectl")
    }

    /// `kubectl apply -f -` with `manifest` on stdin, with kubectl's default validation (the server
    /// says in its OpenAPI that it validates fields itself). kubectl's typed `create <kind>` commands
    /// send protobuf, which the server does not read yet.
    fn apply(&self, manifest: &str) -> String {
        use std::io::Write;
        let home = self.dir.join("home");
        let _ = std::fs::create_dir_all(&home);
        let mut child = Command::new("kubectl")
            .env("HOME", &home)
            .arg("--kubeconfig")
            .arg(self.dir.join("admin.kubeconfig"))
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(manifest.as_bytes()).expect("stdin");
        }
        let out = child.wait_with_output().expect("kubectl");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    assert_eq!(
        server.ok(&[
            "get",
            "configmap",
            "cfg",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.greeting}"
        ]),
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
        server.ok(&[
            "get",
            "configmap",
            "cfg",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.greeting}/{.data.extra}"
        ]),
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
    assert_eq!(
        server.ok(&["get", "secret", "pw", "-n", "demo", "-o", "jsonpath={.data.p}"]),
        "czNjcmV0"
    );
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
