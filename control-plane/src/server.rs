//! HTTPS in front of [`crate::api::Api`]: TLS (rustls, with the generated serving certificate; ALPN
//! `h2` and `http/1.1`, since client-go speaks HTTP/2), HTTP/1.1 and HTTP/2 (hyper), a bearer token
//! from the `Authorization` header, and a body limit, so an oversized request gets a 413 `Status`
//! instead of filling memory.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::{
    Request, Response,
    body::{Bytes, Frame, Incoming},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::{
    api::{self, Api, ApiError, ApiRequest, Reply, logs, protobuf, watch},
    kubelet, metrics,
    pki::Credentials,
};

type Body = BoxBody<Bytes, Infallible>;

/// A response body fed by a channel: each watch event is sent (and flushed) as it happens.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

/// Streams a watch: the initial events, then every change after the plan's revision, until the
/// timeout, the client leaving, or the history being compacted (in-stream 410).
fn stream_watch(api: Arc<Api>, plan: watch::WatchPlan, labels: metrics::RequestLabels) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let started = Instant::now();
    metrics::global().watch_open(&labels, 1);
    tokio::spawn(async move {
        stream_events(api, plan, tx).await;
        metrics::global().watch_open(&labels, -1);
        metrics::global().request(labels, 200, started.elapsed());
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(ChannelBody(rx).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// Sends a watch's events into `tx` until it ends.
async fn stream_events(api: Arc<Api>, plan: watch::WatchPlan, tx: tokio::sync::mpsc::Sender<Bytes>) {
    let store = Arc::clone(api.store());
    let mut changed = store.subscribe();
    let deadline = Instant::now() + plan.timeout;
    for line in &plan.initial {
        if tx.send(Bytes::from(line.clone())).await.is_err() {
            return;
        }
    }
    let mut position = plan.after;
    loop {
        changed.borrow_and_update();
        let (lines, next) = {
            let (store, plan) = (Arc::clone(&store), &plan);
            tokio::task::block_in_place(|| watch::next_lines(&store, plan, position))
        };
        for line in lines {
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
        let Some(next) = next else { return };
        let caught_up = next >= store.revision();
        position = next;
        if caught_up {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let wait = match plan.bookmark_kind {
                Some(_) => left.min(watch::BOOKMARK_INTERVAL),
                None => left,
            };
            // A client that left ends the watch now, not at the next event it would have got.
            let next_change = tokio::select! {
                changed = tokio::time::timeout(wait, changed.changed()) => changed,
                () = tx.closed() => return,
            };
            match next_change {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    // Idle: a bookmark keeps the client's resume point recent.
                    if let Some(kind) = plan.bookmark_kind {
                        let line = watch::bookmark(kind, position, false);
                        if tx.send(Bytes::from(line)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// A proxied body whose failure ends it: a broken agent connection ends the log the client reads,
/// with what came so far.
struct EndOnError(BoxBody<Bytes, hyper::Error>);

impl hyper::body::Body for EndOnError {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                debug!(error = %e, "the node's agent broke off a log");
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A pod's log, from its node's agent, streamed back as the agent sends it (a followed log until
/// either side leaves). The agent's own error answers pass through with their status, as
/// kube-apiserver passes kubelet's.
async fn pod_log(kubelet: Arc<rustls::ClientConfig>, source: logs::LogSource) -> Response<Body> {
    let (address, path_and_query) = match source {
        logs::LogSource::Hollow => {
            return Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()));
        }
        logs::LogSource::Node {
            address,
            path_and_query,
        } => (address, path_and_query),
    };
    match kubelet::get(kubelet, &address, &path_and_query).await {
        Ok(resp) => {
            let status = resp.status();
            let content_type = resp
                .headers()
                .get("content-type")
                .cloned()
                .unwrap_or_else(|| hyper::header::HeaderValue::from_static("text/plain"));
            let body = EndOnError(resp.into_body()).boxed();
            Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(body)
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
        }
        Err(e) => to_response(Reply::error(ApiError::new(500, "InternalError", e.to_string()))),
    }
}

/// Largest request body accepted (etcd's default request limit is 1.5 MiB; objects are smaller).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Errors of starting the server.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key did not load into rustls.
    #[error("TLS setup: {0}")]
    Tls(String),
}

fn tls_acceptor(creds: &Credentials) -> Result<TlsAcceptor, ServerError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let certs = CertificateDer::pem_slice_iter(creds.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(creds.server_key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Client certificates are optional (tokens work too) but, when sent, must chain to the cluster
    // CA: that is how a node proves who it is after joining.
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(creds.ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn too_large() -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLarge",
        format!("the request body is larger than {MAX_BODY} bytes"),
    )
}

/// A protobuf body as the JSON it stands for; one that does not decode is a 400 saying why.
fn protobuf_to_json(body: &[u8]) -> Result<Bytes, ApiError> {
    let object = protobuf::decode(body).map_err(|e| match e {
        protobuf::ProtobufError::TooLarge => ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: {e}"),
        ),
        e => ApiError::new(
            400,
            "BadRequest",
            format!("the protobuf body could not be decoded: {e}"),
        ),
    })?;
    Ok(Bytes::from(object.to_string()))
}

/// A YAML body (`application/yaml`, as `kubectl create --raw` or curl may send) as the JSON it
/// stands for; counted first, so aliases cannot expand it past the body budget.
fn yaml_to_json(body: &[u8]) -> Result<Bytes, ApiError> {
    api::limits::check_yaml(body)?;
    let value: serde_json::Value = serde_norway::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the YAML body does not parse: {e}")))?;
    Ok(Bytes::from(value.to_string()))
}

fn to_response(reply: Reply) -> Response<Body> {
    let (body, content_type) = if reply.plain {
        (
            reply.body.as_str().unwrap_or_default().as_bytes().to_vec(),
            reply.content_type.unwrap_or("text/plain; charset=utf-8"),
        )
    } else {
        (
            reply
                .encoded
                .unwrap_or_else(|| reply.body.to_string().into_bytes()),
            reply.content_type.unwrap_or("application/json"),
        )
    };
    let mut builder = Response::builder().status(reply.code);
    for w in &reply.warnings {
        builder = builder.header("warning", format!("299 - {w:?}"));
    }
    builder
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// Answers a request and records it in the metrics (a watch when it ends, in [`stream_watch`]).
async fn serve_request(
    api: Arc<Api>,
    kubelet: Arc<rustls::ClientConfig>,
    client_cert: Option<Arc<[u8]>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let labels = api::request_labels(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query().unwrap_or_default(),
    );
    let streaming = labels.verb == "watch";
    let response = answer(api, kubelet, client_cert, req, labels.clone()).await;
    if !streaming || !response.status().is_success() {
        metrics::global().request(labels, response.status().as_u16(), started.elapsed());
    }
    response
}

async fn answer(
    api: Arc<Api>,
    kubelet: Arc<rustls::ClientConfig>,
    client_cert: Option<Arc<[u8]>>,
    req: Request<Incoming>,
    labels: metrics::RequestLabels,
) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    // Bodies are JSON, or Kubernetes protobuf (kubectl's typed commands send it and do not fall
    // back to JSON), which is turned into JSON once read. A patch is never protobuf.
    let header = |name: &str, default: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(default)
            .to_string()
    };
    let impersonation = impersonation(req.headers());
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut content_type = header("content-type", "application/json");
    let accept = header("accept", "application/json");
    let protobuf =
        matches!(method.as_str(), "POST" | "PUT") && content_type.starts_with(protobuf::MEDIA_TYPE);
    let apply = method == "PATCH" && content_type.starts_with("application/apply-patch+yaml");
    let yaml =
        apply || (matches!(method.as_str(), "POST" | "PUT") && content_type.starts_with("application/yaml"));
    let head = ApiRequest {
        method: &method,
        path: &path,
        query: &query,
        token: token.as_deref(),
        content_type: &content_type,
        accept: &accept,
        body: &[],
        client_cert: client_cert.as_deref(),
        impersonation: impersonation.as_ref(),
        user_agent: user_agent.as_deref(),
    };
    if let Some(plan) = api.watch_plan(&head) {
        return match plan {
            Ok(plan) => stream_watch(Arc::clone(&api), plan, labels),
            Err(reply) => to_response(reply),
        };
    }
    if let Some(plan) = api.stream_plan(&head) {
        return match plan {
            Ok((address, path_and_query)) => {
                match kubelet::upgrade(kubelet, &address, &path_and_query, req).await {
                    Ok(resp) => resp.map(|b| EndOnError(b).boxed()),
                    Err(e) => to_response(Reply::error(ApiError::new(500, "InternalError", e.to_string()))),
                }
            }
            Err(reply) => to_response(reply),
        };
    }
    if let Some(plan) = api.log_plan(&head) {
        return match plan {
            Ok(plan) => pod_log(kubelet, plan).await,
            Err(reply) => to_response(reply),
        };
    }
    // Nobody's body is read before they are known: an unauthenticated client gets its 401 without
    // the server reading, let alone decoding, what it sends. The user found is handed to the API.
    let known = if matches!(method.as_str(), "GET" | "HEAD") {
        None
    } else {
        match api.authenticate_request(&head) {
            Ok(user) => Some(user),
            Err(e) => return to_response(Reply::error(e)),
        }
    };
    // Authentication and authorization come first (kube-apiserver answers 401 and 403 before it
    // looks at the body's type).
    if matches!(method.as_str(), "POST" | "PUT" | "PATCH")
        && !content_type.contains("json")
        && !protobuf
        && !yaml
    {
        if let Some(user) = &known
            && let Err(e) = api.authorize_without_body(&head, user)
        {
            return to_response(Reply::error(e));
        }
        let e = ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, {} (got {content_type})",
                protobuf::MEDIA_TYPE
            ),
        );
        return to_response(Reply::error(e));
    }
    // A declared length over the limit is refused before any of the body is read (a client waiting
    // on `Expect: 100-continue` gets the answer instead of sending megabytes).
    let declared: Option<usize> = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return to_response(Reply::error(too_large()));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return to_response(Reply::error(too_large())),
    };
    // Decoding and the store's writes (which wait for the disk) run off the async workers, so a
    // flood of large bodies does not stall everyone's GETs.
    let reply = tokio::task::spawn_blocking(move || {
        let converted = if protobuf {
            Some(protobuf_to_json(&body))
        } else if yaml {
            Some(yaml_to_json(&body))
        } else {
            None
        };
        let body = match converted {
            Some(Ok(json)) => {
                // An applied configuration stays one (now in JSON); other bodies are plain JSON.
                if !apply {
                    content_type = "application/json".into();
                }
                json
            }
            Some(Err(e)) => return Reply::error(e),
            None => body,
        };
        let req = ApiRequest {
            method: &method,
            path: &path,
            query: &query,
            token: token.as_deref(),
            content_type: &content_type,
            accept: &accept,
            body: &body,
            client_cert: client_cert.as_deref(),
            impersonation: impersonation.as_ref(),
            user_agent: user_agent.as_deref(),
        };
        api.handle_as(&req, known)
    })
    .await
    .unwrap_or_else(|e| Reply::error(ApiError::new(500, "InternalError", e.to_string())));
    to_response(reply)
}

/// The `Impersonate-User` / `Impersonate-Group` headers (`kubectl --as`, `--as-group`), if any.
fn impersonation(headers: &hyper::HeaderMap) -> Option<crate::api::auth::Impersonation> {
    let text = |v: &hyper::header::HeaderValue| v.to_str().ok().map(str::to_string);
    let user = headers.get("impersonate-user").and_then(text);
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(text)
        .collect();
    (user.is_some() || !groups.is_empty()).then_some(crate::api::auth::Impersonation { user, groups })
}

/// Binds the listen address (port 0: any free port; the bound address is returned by
/// `local_addr`), before anything tells clients where to connect.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok(listener)
}

/// A TLS handshake must be done within this (a client that connects and sends nothing is closed).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/1.1 request's headers must arrive within this, also between requests of a kept-alive
/// connection (kube-apiserver's `ReadHeaderTimeout`).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(32);
/// HTTP/2 connections are pinged this often and closed when a ping goes unanswered this long.
const H2_KEEPALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(20));
/// Streams one HTTP/2 connection may have open (Go's net/http2 default, kube-apiserver's too).
const H2_MAX_STREAMS: u32 = 250;

/// Serves on `listener` until the process ends, at most `max_connections` connections at a time (the
/// next waits in the listen backlog until one ends).
pub async fn serve(
    listener: std::net::TcpListener,
    creds: &Credentials,
    api: Arc<Api>,
    max_connections: usize,
) -> Result<(), ServerError> {
    let acceptor = tls_acceptor(creds)?;
    let kubelet = kubelet::client_config(&creds.kubelet_client_cert_pem, &creds.kubelet_client_key_pem)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let listener = TcpListener::from_std(listener).map_err(|source| ServerError::Bind { addr, source })?;
    info!(%addr, max_connections, "serving the Kubernetes API");
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let mut backoff = Duration::ZERO;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return Ok(()); // the semaphore is never closed
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(e) => {
                // Out of file descriptors (or memory): wait instead of spinning on the same error,
                // from 10 ms doubling to a second.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                warn!(error = %e, retry_in = ?backoff, "accepting a connection failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        // Answers go out in several writes (TLS records, chunked lists, watch events): without
        // TCP_NODELAY, Nagle's algorithm holds the last one back until the client's delayed ACK (40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(%peer, error = %e, "TCP_NODELAY");
        }
        let (acceptor, api, kubelet) = (acceptor.clone(), Arc::clone(&api), Arc::clone(&kubelet));
        tokio::spawn(async move {
            let _slot = slot; // held for the connection's life
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "no TLS handshake within the timeout; closed");
                    return;
                }
            };
            let tls_state = tls.get_ref().1;
            let client_cert: Option<Arc<[u8]>> = tls_state
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| Arc::from(c.as_ref()));
            // The protocol is the one ALPN agreed on: no sniffing of a preface a slow client may
            // never send.
            let h2 = tls_state.alpn_protocol() == Some(b"h2");
            let service = service_fn(move |req| {
                let (api, cert, kubelet) = (Arc::clone(&api), client_cert.clone(), Arc::clone(&kubelet));
                async move { Ok::<_, std::convert::Infallible>(serve_request(api, kubelet, cert, req).await) }
            });
            let io = TokioIo::new(tls);
            let served = if h2 {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .keep_alive_interval(Some(H2_KEEPALIVE.0))
                    .keep_alive_timeout(H2_KEEPALIVE.1)
                    .max_concurrent_streams(H2_MAX_STREAMS)
                    .serve_connection(io, service)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(io, service)
                    .with_upgrades()
                    .await
            };
            if let Err(e) = served {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
