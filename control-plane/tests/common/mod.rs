//! The control plane as a process, for the integration tests: started on a port it picks, with
//! kubectl and curl pointed at it. Each test file uses part of it.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub struct Server {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl Server {
    /// Starts the server on a port it picks (port 0, so concurrent tests never collide) and waits
    /// until it has written `admin.kubeconfig` naming that port and accepts connections there.
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    /// [`Server::start`] with extra arguments (`--hollow-nodes 2`...).
    pub fn start_with(dir: &Path, args: &[&str]) -> Server {
        let kubeconfig = dir.join("admin.kubeconfig");
        let _ = std::fs::remove_file(&kubeconfig);
        let child = Command::new(env!("CARGO_BIN_EXE_berth-control-plane"))
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("server.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("berth-control-plane");
        let deadline = Instant::now() + Duration::from_secs(40);
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
            assert!(
                Instant::now() < deadline,
                "the server did not come up: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Server {
            child,
            dir: dir.to_path_buf(),
            port,
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
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
    /// says in its OpenAPI that it validates fields itself): what kubectl printed.
    pub fn apply(&self, manifest: &str) -> String {
        self.kubectl_stdin(&["apply", "-f", "-"], manifest).1
    }

    /// `kubectl ARGS` with `input` on stdin: (success, stdout + stderr).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> (bool, String) {
        use std::io::Write;
        let home = self.dir.join("home");
        let _ = std::fs::create_dir_all(&home);
        let mut child = Command::new("kubectl")
            .env("HOME", &home)
            .arg("--kubeconfig")
            .arg(self.dir.join("admin.kubeconfig"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).expect("stdin");
        }
        let out = child.wait_with_output().expect("kubectl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `kubectl get KIND NAME -n NAMESPACE -o jsonpath=PATH`.
    pub fn jsonpath(&self, kind: &str, name: &str, namespace: &str, path: &str) -> String {
        self.ok(&[
            "get",
            kind,
            name,
            "-n",
            namespace,
            "-o",
            &format!("jsonpath={path}"),
        ])
    }

    pub fn ok(&self, args: &[&str]) -> String {
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

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.token"))
            .expect("token")
            .trim()
            .to_string()
    }

    /// `curl` with the CA and the admin token, over HTTP/1.1 (curl 7.88 reports an HTTP/2 stream reset
    /// after an early 413 as its own error instead of showing the answer; kubectl covers HTTP/2);
    /// returns (HTTP code, body).
    pub fn curl(&self, method: &str, path: &str, body: Option<&Path>, content_type: &str) -> (u16, String) {
        let mut extra = vec![
            "-X".to_string(),
            method.to_string(),
            "-H".to_string(),
            format!("Content-Type: {content_type}"),
        ];
        if let Some(file) = body {
            extra.push("--data-binary".into());
            extra.push(format!("@{}", file.display()));
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        self.curl_as(&self.token(), &extra, path)
    }

    /// `curl` over HTTP/1.1 with the CA, bearer `token` and `extra` arguments: (HTTP code, body).
    pub fn curl_as(&self, token: &str, extra: &[&str], path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--http1.1", "--max-time", "10", "--cacert"])
            .arg(self.dir.join("ca.crt"))
            .args([
                "-H",
                &format!("Authorization: Bearer {token}"),
                "-w",
                "\n%{http_code}",
            ])
            .args(extra)
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Sends `body` with `method` and `content_type` as the admin (over curl, from a file in the
    /// server's directory): (HTTP code, body).
    pub fn send(&self, method: &str, content_type: &str, path: &str, body: &[u8]) -> (u16, String) {
        let file = self.dir.join("request-body");
        std::fs::write(&file, body).expect("body");
        let data = format!("@{}", file.display());
        let ct = format!("Content-Type: {content_type}");
        self.curl_as(
            &self.token(),
            &["-X", method, "-H", &ct, "--data-binary", &data],
            path,
        )
    }

    /// The server's peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kib| kib / 1024)
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new P-256 key at `key` and a certificate request for `subject` (`/O=.../CN=...`), as the
/// base64 of its PEM: what a CertificateSigningRequest's `spec.request` holds.
pub fn certificate_request(key: &Path, subject: &str) -> String {
    use base64::Engine;
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(key)
        .args(["-subj", subject])
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    base64::engine::general_purpose::STANDARD.encode(&out.stdout)
}

/// A fresh directory for one test's data (removed by the test).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-cp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// An etcd member of its own (Debian's `etcd`), on free loopback ports, with
/// its data in `dir`; stopped and removed on drop.
pub struct Etcd {
    child: Child,
    pub url: String,
    dir: PathBuf,
}

/// Certificates for an etcd served over TLS that checks its clients' certificates, written to a
/// directory: `ca.crt`, `server.crt`/`server.key` (for 127.0.0.1), `client.crt`/`client.key`. The
/// server certificate is also good for client authentication: etcd's HTTP gateway presents it to
/// etcd's own gRPC server.
fn write_etcd_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "etcd-ca");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).expect("ca.crt");
    for (name, sans, usages) in [
        (
            "server",
            vec!["127.0.0.1".to_string(), "localhost".to_string()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        ),
        ("client", Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth]),
    ] {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(sans).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("etcd-{name}"));
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &issuer).expect("signed");
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("crt");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("key");
    }
}

impl Etcd {
    /// etcd over TLS with client certificate authentication; returns it and the control plane's
    /// arguments to reach it.
    pub fn start_tls(dir: &Path) -> (Etcd, Vec<String>) {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("etcd dir");
        write_etcd_certificates(dir);
        let file = |f: &str| dir.join(f).display().to_string();
        let etcd = Etcd::launch(
            dir,
            "https",
            &[
                "--cert-file".into(),
                file("server.crt"),
                "--key-file".into(),
                file("server.key"),
                "--client-cert-auth".into(),
                "--trusted-ca-file".into(),
                file("ca.crt"),
            ],
        );
        let args = vec![
            "--etcd-servers".into(),
            etcd.url.clone(),
            "--etcd-cafile".into(),
            file("ca.crt"),
            "--etcd-certfile".into(),
            file("client.crt"),
            "--etcd-keyfile".into(),
            file("client.key"),
        ];
        (etcd, args)
    }

    pub fn start(dir: &Path) -> Etcd {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("etcd dir");
        Etcd::launch(dir, "http", &[])
    }

    fn launch(dir: &Path, scheme: &str, extra: &[String]) -> Etcd {
        // Ports the kernel just found free (etcd cannot be given port 0), so concurrent tests and
        // whatever else runs here do not collide.
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let (client, peer) = (free_port(), free_port());
        let url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--name",
                "t",
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("etcd.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("etcd (apt install etcd-server)");
        let deadline = Instant::now() + Duration::from_secs(40);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not come up: {}",
                std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Etcd {
            child,
            url,
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
