//! `kubectl logs` through the control plane to the pod's node: the API server asks the agent at the
//! address and port the Node reports (kubelet's `GET /containerLogs/...`), over TLS with its
//! `kube-apiserver-kubelet-client` certificate, and streams the answer back. The agent here is a small
//! kubelet-compatible log endpoint that accepts only that certificate (the real agent is tested in
//! the workspace's pod tests); it records what it was asked. `kubectl exec` is refused by the same
//! checks before any node is asked.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use common::{Server, temp_dir};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Serves `GET /containerLogs/<ns>/<pod>/<container>` on 127.0.0.1 to clients whose certificate the
/// cluster CA signed; records each request's path, query and client CN.
fn start_agent(ca_pem: &str, asked: Arc<Mutex<Vec<String>>>) -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed agent certificate");
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.expect("CA")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key"),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, asked) = (acceptor.clone(), Arc::clone(&asked));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let client = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
                    .map(|(_, c)| c.subject().to_string())
                    .unwrap_or_default();
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let entry = format!(
                        "{} {} {}",
                        client,
                        req.uri().path(),
                        req.uri().query().unwrap_or_default()
                    );
                    asked.lock().expect("log").push(entry);
                    let (code, body) = if req.uri().path() == "/containerLogs/demo/app/web" {
                        (200, "starting\nserving on :8080\n")
                    } else {
                        (404, "no such container\n")
                    };
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(code)
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from(body)))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, runtime)
}

#[test]
fn kubectl_logs_reads_the_log_from_the_pod_s_node() {
    let dir = temp_dir("logs");
    let server = Server::start_with(&dir, &["--no-controllers"]);
    let ca = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (agent, _runtime) = start_agent(&ca, Arc::clone(&asked));

    // A node whose agent listens at `agent`, and a pod bound to it.
    let applied = server.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\nstatus:\n  addresses:\n  - {{type: InternalIP, address: 127.0.0.1}}\n  daemonEndpoints:\n    kubeletEndpoint: {{Port: {}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  namespace: demo\nspec:\n  nodeName: node-a\n  containers:\n  - {{name: web, image: nginx}}\n  - {{name: sidecar, image: busybox}}\n",
        agent.port()
    ));
    assert!(applied.contains("pod/app created"), "{applied}");
    // `apply` may leave status out of a created Node: report the endpoint as a node agent would.
    server.ok(&[
        "patch",
        "node",
        "node-a",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(
            "{{\"status\":{{\"addresses\":[{{\"type\":\"InternalIP\",\"address\":\"127.0.0.1\"}}],\"daemonEndpoints\":{{\"kubeletEndpoint\":{{\"Port\":{}}}}}}}}}",
            agent.port()
        ),
    ]);

    let log = server.ok(&[
        "logs",
        "-n",
        "demo",
        "app",
        "-c",
        "web",
        "--tail=5",
        "--timestamps",
    ]);
    assert_eq!(log, "starting\nserving on :8080\n");
    let seen = asked.lock().expect("log").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].contains("CN=kube-apiserver-kubelet-client")
            && seen[0].contains("/containerLogs/demo/app/web")
            && seen[0].contains("tailLines=5")
            && seen[0].contains("timestamps=true"),
        "{seen:?}"
    );

    // What the API server refuses before asking the node, and what the node says passes through.
    let refused = |args: &[&str], want: &str| {
        let out = server.kubectl(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success() && text.contains(want), "{args:?}: {text}");
    };
    refused(
        &["logs", "-n", "demo", "app", "-c", "nope"],
        "container nope is not valid for pod app",
    );
    // The agent's 404 reaches kubectl as its own.
    refused(&["logs", "-n", "demo", "app", "-c", "sidecar"], "NotFound");
    refused(&["logs", "-n", "demo", "missing"], "not found");
    // kubectl exec: the same checks before the node is asked.
    refused(
        &["exec", "-n", "demo", "app", "-c", "nope", "--", "ls"],
        "container nope is not valid for pod app",
    );
    server.ok(&[
        "patch",
        "pod",
        "app",
        "-n",
        "demo",
        "--subresource=status",
        "--type=merge",
        "-p",
        "{\"status\":{\"phase\":\"Succeeded\"}}",
    ]);
    refused(
        &["exec", "-n", "demo", "app", "-c", "web", "--", "ls"],
        "a completed pod; current phase is Succeeded",
    );
    server.ok(&["delete", "node", "node-a"]);
    refused(
        &["logs", "-n", "demo", "app", "-c", "web"],
        "pod app is bound to node node-a, which does not exist",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
