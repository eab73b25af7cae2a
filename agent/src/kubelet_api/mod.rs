//! kubelet's HTTPS API, the part the API server uses: `GET /containerLogs/NAMESPACE/POD/CONTAINER`
//! (what `kubectl logs` becomes), `/exec/NAMESPACE/POD/CONTAINER` over WebSocket (`kubectl exec`,
//! [`exec`]), `/portForward/NAMESPACE/POD` (`kubectl port-forward`, [`portforward`] over [`spdy`]) and
//! `/healthz`, on the port the Node advertises.
//!
//! Only the API server may ask: clients must present a certificate of the cluster CA whose subject is
//! the API server's kubelet client (`CN=kube-apiserver-kubelet-client`) or in `system:masters`, as
//! kubelet with client-certificate authentication and its authorizer admits it. The serving
//! certificate comes from the cluster CA through a kubelet-serving CSR ([`serving`]); until it is
//! signed, a self-signed one serves (kube-apiserver does not verify kubelets' certificates without
//! `--kubelet-certificate-authority`, but metrics scrapers and `curl --cacert` do).

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::runtime::reflector::Store;
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::{
    pods::logs::{self, LogOptions},
    source::static_pods,
};

pub mod exec;
pub mod portforward;
pub mod serving;
pub mod spdy;

/// Errors of starting the server.
#[derive(Debug, Error)]
pub enum KubeletApiError {
    /// The serving certificate could not be made or the TLS configuration built.
    #[error("kubelet API TLS: {0}")]
    Tls(String),
    /// The port could not be bound.
    #[error("kubelet API on port {port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// What the server reads.
pub struct KubeletApi {
    pub node_name: String,
    pub node_ips: Vec<Ipv4Addr>,
    pub port: u16,
    /// The cluster CA (DER) that client certificates must chain to.
    pub client_ca: Vec<Vec<u8>>,
    pub log_dir: PathBuf,
    pub pods_dir: PathBuf,
    pub pods: Store<Pod>,
    /// Runs the processes of `kubectl exec`.
    pub engine: berth_runtime::container::Engine,
    /// Asks the cluster for the serving certificate (None: self-signed only).
    pub client: Option<kube::Client>,
    /// Where the serving certificate is kept.
    pub state_dir: PathBuf,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A request header as text ("" when absent or not text).
fn header_value(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())).boxed_unsync());
    *r.status_mut() = status;
    r
}

impl KubeletApi {
    fn tls(&self, serving: Arc<serving::ServingCert>) -> Result<TlsAcceptor, KubeletApiError> {
        let tls = |e: &dyn std::fmt::Display| KubeletApiError::Tls(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in &self.client_ca {
            roots.add(CertificateDer::from(ca.clone())).map_err(|e| tls(&e))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| tls(&e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(serving);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Binds and serves until the agent ends.
    pub async fn serve(self) -> Result<(), KubeletApiError> {
        let names = serving::NodeNames {
            node: self.node_name.clone(),
            ips: self.node_ips.iter().map(|ip| IpAddr::from(*ip)).collect(),
        };
        let cert = Arc::new(serving::ServingCert::self_signed(&names).map_err(KubeletApiError::Tls)?);
        if let Some(client) = self.client.clone() {
            let file = serving::path(&self.state_dir);
            tokio::spawn(serving::keep_current(Arc::clone(&cert), client, names, file));
        }
        let acceptor = self.tls(cert)?;
        let port = self.port;
        let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .map_err(|source| KubeletApiError::Bind { port, source })?;
        info!(port, "serving kubelet's API (containerLogs)");
        let api = Arc::new(self);
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                // Out of descriptors or similar: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let (acceptor, api) = (acceptor.clone(), Arc::clone(&api));
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(t)) => t,
                    _ => {
                        debug!(%peer, "kubelet API: TLS handshake failed");
                        return;
                    }
                };
                let allowed = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .is_some_and(|c| api_server_client(c.as_ref()));
                let service = hyper::service::service_fn(move |req| {
                    let api = Arc::clone(&api);
                    async move { Ok::<_, Infallible>(api.handle(req, allowed).await) }
                });
                if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await
                {
                    debug!(%peer, error = %e, "kubelet API connection ended");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>, allowed: bool) -> Response<Body> {
        if !allowed {
            return text(
                StatusCode::FORBIDDEN,
                "Forbidden: only the API server's kubelet client may ask\n",
            );
        }
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        if path == "/healthz" {
            return text(StatusCode::OK, "ok");
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["containerLogs", namespace, pod, container] => {
                self.container_logs(namespace, pod, container, &query)
            }
            ["exec", namespace, pod, container] => {
                let (namespace, pod, container) =
                    (namespace.to_string(), pod.to_string(), container.to_string());
                self.exec(req, &namespace, &pod, &container, &query).await
            }
            ["portForward", namespace, pod] => {
                let (namespace, pod) = (namespace.to_string(), pod.to_string());
                self.port_forward(req, &namespace, &pod).await
            }
            _ => text(StatusCode::NOT_FOUND, format!("404 page not found: {path}\n")),
        }
    }

    /// `kubectl port-forward`: the WebSocket or SPDY upgrade, then [`portforward::session`].
    async fn port_forward(&self, mut req: Request<Incoming>, namespace: &str, pod: &str) -> Response<Body> {
        let header = |name: &str| header_value(&req, name);
        let upgrade = header("upgrade");
        let offers = |name: &str, wanted: &str| {
            header(name)
                .split(',')
                .any(|o| o.trim().eq_ignore_ascii_case(wanted))
        };
        let transport = if upgrade.eq_ignore_ascii_case("websocket")
            && offers("sec-websocket-protocol", portforward::WEBSOCKET_PROTOCOL)
        {
            portforward::Transport::WebSocket
        } else if upgrade.eq_ignore_ascii_case("SPDY/3.1")
            && offers("x-stream-protocol-version", portforward::SPDY_PROTOCOL)
        {
            portforward::Transport::Spdy
        } else {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "berth forwards ports over WebSocket ({}) or SPDY/3.1 ({})\n",
                    portforward::WEBSOCKET_PROTOCOL,
                    portforward::SPDY_PROTOCOL
                ),
            );
        };
        let key = header("sec-websocket-key");
        if matches!(transport, portforward::Transport::WebSocket) && key.is_empty() {
            return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
        }
        let Some(uid) = self.pod_uid(namespace, pod) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("pod {namespace}/{pod} is not on this node\n"),
            );
        };
        let netns = self.pods_dir.join(&uid).join("sandbox").join("net");
        if !netns.exists() {
            return text(
                StatusCode::BAD_REQUEST,
                format!("pod {namespace}/{pod} has no network namespace yet\n"),
            );
        }
        info!(pod = %format!("{namespace}/{pod}"), "port-forward");
        let target = portforward::Target {
            pod: format!("{namespace}/{pod}"),
            netns,
        };
        let answer = match transport {
            portforward::Transport::WebSocket => Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "Upgrade")
                .header(
                    "sec-websocket-accept",
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
                )
                .header("sec-websocket-protocol", portforward::WEBSOCKET_PROTOCOL),
            portforward::Transport::Spdy => Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "SPDY/3.1")
                .header("connection", "Upgrade")
                .header("x-stream-protocol-version", portforward::SPDY_PROTOCOL),
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(&mut req).await {
                Ok(upgraded) => portforward::session(upgraded, transport, target).await,
                Err(e) => debug!(error = %e, "port-forward upgrade failed"),
            }
        });
        answer
            .body(Full::new(Bytes::new()).boxed_unsync())
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "building the answer\n"))
    }

    /// The uid the node runs pod `namespace/name` under: the API's, or for a mirror pod its static
    /// pod's (the mirror's hash).
    fn pod_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.pods
            .state()
            .iter()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.name.as_deref() == Some(name)
            })
            .and_then(|p| {
                let annotations = p.metadata.annotations.as_ref();
                let mirrored = annotations
                    .and_then(|a| a.get(static_pods::CONFIG_MIRROR))
                    .cloned();
                mirrored.or_else(|| p.metadata.uid.clone())
            })
    }

    /// The running instance of a container: its newest attempt, if runc runs it.
    async fn running_instance(
        &self,
        uid: &str,
        container: &str,
    ) -> Option<berth_runtime::container::Instance> {
        let dir = self.pods_dir.join(uid).join("containers").join(container);
        let attempt = std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .max()?;
        let instance = berth_runtime::container::Instance {
            id: crate::pods::worker::instance_id(uid, container, attempt),
            dir: dir.join(attempt.to_string()),
            log: PathBuf::new(),
        };
        let (engine, probe) = (self.engine.clone(), instance.clone());
        let state = tokio::task::spawn_blocking(move || engine.state(&probe))
            .await
            .ok()?;
        matches!(state, berth_runtime::container::InstanceState::Running { .. }).then_some(instance)
    }

    /// `kubectl exec`: the WebSocket upgrade, then [`exec::session`].
    async fn exec(
        &self,
        mut req: Request<Incoming>,
        namespace: &str,
        pod: &str,
        container: &str,
        query: &str,
    ) -> Response<Body> {
        let options = match exec::ExecOptions::parse(query) {
            Ok(o) => o,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        };
        let header = |name: &str| header_value(&req, name);
        if !header("upgrade").eq_ignore_ascii_case("websocket") {
            return text(
                StatusCode::BAD_REQUEST,
                "berth serves exec over WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) only\n",
            );
        }
        let offered = header("sec-websocket-protocol");
        let Some(protocol) = exec::PROTOCOLS
            .iter()
            .find(|p| offered.split(',').any(|o| o.trim() == **p))
        else {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "no supported stream protocol among {offered:?}; berth speaks {}\n",
                    exec::PROTOCOLS.join(", ")
                ),
            );
        };
        let key = header("sec-websocket-key");
        if key.is_empty() {
            return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
        }
        let Some(uid) = self.pod_uid(namespace, pod) else {
            return text(
                StatusCode::NOT_FOUND,
                format!("pod {namespace}/{pod} is not on this node\n"),
            );
        };
        let Some(instance) = self.running_instance(&uid, container).await else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("container {container} of pod {namespace}/{pod} is not running\n"),
            );
        };
        info!(pod = %format!("{namespace}/{pod}"), %container, command = ?options.command, tty = options.tty, "exec");
        let runc = self.engine.runc.clone();
        let v5 = *protocol == exec::PROTOCOLS[0];
        tokio::spawn(async move {
            match hyper::upgrade::on(&mut req).await {
                Ok(upgraded) => exec::session(upgraded, v5, runc, instance, options).await,
                Err(e) => debug!(error = %e, "exec upgrade failed"),
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept)
            .header("sec-websocket-protocol", *protocol)
            .body(Full::new(Bytes::new()).boxed_unsync())
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "building the answer\n"))
    }

    fn container_logs(&self, namespace: &str, pod: &str, container: &str, query: &str) -> Response<Body> {
        let options = match LogOptions::parse(query, Timestamp::now()) {
            Ok(o) => o,
            Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let uid = self.pod_uid(namespace, pod);
        let found = logs::find(&self.log_dir, namespace, pod, uid.as_deref(), container)
            .and_then(|l| l.file(&options, pod, container).map(|f| (l, f)));
        let (found, file) = match found {
            Ok(f) => f,
            Err(e) => return text(StatusCode::NOT_FOUND, e.to_string()),
        };
        let (head, offset) = match logs::read(&file, &options) {
            Ok(r) => r,
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        if !options.follow || options.previous {
            return text(StatusCode::OK, head);
        }
        // Following: what there is, then what comes, until the instance has ended and said all.
        let exit_file = found
            .dir
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit('_').next())
            .map(|uid| {
                self.pods_dir
                    .join(uid)
                    .join("containers")
                    .join(container)
                    .join(found.current.to_string())
                    .join("exit.json")
            });
        let state = (Some(head), offset, file, exit_file, options);
        let stream = futures::stream::unfold(state, |(head, offset, file, exit_file, options)| async move {
            if let Some(h) = head {
                return Some((
                    Ok::<_, Infallible>(Frame::data(Bytes::from(h))),
                    (None, offset, file, exit_file, options),
                ));
            }
            loop {
                let ended = exit_file.as_ref().is_none_or(|f| f.exists()) || !file.exists();
                match logs::read_from(&file, offset, &options) {
                    Ok((more, next)) if !more.is_empty() => {
                        return Some((
                            Ok(Frame::data(Bytes::from(more))),
                            (None, next, file, exit_file, options),
                        ));
                    }
                    Ok(_) if ended => return None,
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "following a log");
                        return None;
                    }
                }
                tokio::time::sleep(logs::FOLLOW_POLL).await;
            }
        });
        Response::new(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())))
    }
}

/// Whether a verified client certificate is the API server's (kubelet client, or system:masters).
fn api_server_client(der: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let subject = cert.subject();
    let cn_ok = subject
        .iter_common_name()
        .any(|c| c.as_str() == Ok("kube-apiserver-kubelet-client"));
    let masters = subject
        .iter_organization()
        .any(|o| o.as_str() == Ok("system:masters"));
    cn_ok || masters
}
