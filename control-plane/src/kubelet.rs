//! The control plane as a client of node agents' kubelet API, for `pods/log` and the upgraded
//! streams of `pods/exec`, `attach` and `portforward`: HTTPS with the
//! `kube-apiserver-kubelet-client` certificate (CN `kube-apiserver-kubelet-client`, group
//! `system:masters`, signed by the cluster CA, as kubeadm issues it), so an agent can tell the API
//! server from anyone else. The agent's serving certificate is not verified, which is kube-apiserver's
//! behaviour without `--kubelet-certificate-authority`: agents' serving certificates are self-signed
//! until they are issued by the cluster (kubelet-serving CSRs).

use std::{sync::Arc, time::Duration};

use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::{Request, Response, body::Bytes};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use thiserror::Error;

/// Why an agent could not be asked.
#[derive(Debug, Error)]
pub enum KubeletError {
    /// The client certificate or key did not load.
    #[error("the kubelet client certificate: {0}")]
    Certificate(String),
    /// The agent could not be reached within the time allowed.
    #[error("connecting to the node's agent at {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The agent's HTTP answer failed.
    #[error("asking the node's agent at {address}: {reason}")]
    Http { address: String, reason: String },
}

/// How long reaching an agent may take (kube-apiserver dials kubelets with a 30 s timeout; a log
/// request that cannot connect in 10 s will not).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS client configuration for talking to agents.
pub fn client_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ClientConfig>, KubeletError> {
    let bad = |e: &dyn std::fmt::Display| KubeletError::Certificate(e.to_string());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(certs, key)
        .map_err(|e| bad(&e))?;
    Ok(Arc::new(config))
}

/// Accepts any server certificate, but still checks the handshake signatures with it (so the peer
/// holds the key of the certificate it shows).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection to the agent at `address` (`host:port`), HTTP/1.1 from there.
async fn connect(
    config: Arc<rustls::ClientConfig>,
    address: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, KubeletError> {
    let connect_err = |reason: String| KubeletError::Connect {
        address: address.to_string(),
        reason,
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| connect_err(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_string()).map_err(|e| connect_err(e.to_string()))?;
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| connect_err("no TLS handshake within the timeout".into()))?
    .map_err(|e| connect_err(format!("TLS: {e}")))
}

fn http_error(address: &str) -> impl Fn(&dyn std::fmt::Display) -> KubeletError + '_ {
    move |e| KubeletError::Http {
        address: address.to_string(),
        reason: e.to_string(),
    }
}

/// An HTTP/1 connection to the agent at `address`, driven in the background (upgrades allowed).
async fn open(
    config: Arc<rustls::ClientConfig>,
    address: &str,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, KubeletError> {
    let tls = connect(config, address).await?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| http_error(address)(&e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(send)
}

/// GETs `path_and_query` from the agent at `address` (`host:port`); the answer's body streams as the
/// agent sends it.
pub async fn get(
    config: Arc<rustls::ClientConfig>,
    address: &str,
    path_and_query: &str,
) -> Result<Response<BoxBody<Bytes, hyper::Error>>, KubeletError> {
    let http_err = http_error(address);
    let mut send = open(config, address).await?;
    let req = Request::get(path_and_query)
        .header("host", address)
        .body(Empty::<Bytes>::new())
        .map_err(|e| http_err(&e))?;
    let resp = send.send_request(req).await.map_err(|e| http_err(&e))?;
    Ok(resp.map(|b| b.boxed()))
}

/// The request headers an upgrade carries on to the agent (WebSocket and SPDY stream negotiation).
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// Hands the client's upgrade request (`pods/exec`, `attach`, `portforward`) to the agent at `address`
/// as `path_and_query`. When the agent switches protocols, so does the client, and the two upgraded
/// connections are joined byte for byte; any other answer of the agent goes back as it is.
pub async fn upgrade(
    config: Arc<rustls::ClientConfig>,
    address: &str,
    path_and_query: &str,
    mut client: Request<hyper::body::Incoming>,
) -> Result<Response<BoxBody<Bytes, hyper::Error>>, KubeletError> {
    let http_err = http_error(address);
    let mut send = open(config, address).await?;
    let mut req = Request::get(path_and_query).header("host", address);
    for name in UPGRADE_HEADERS {
        for value in client.headers().get_all(*name) {
            req = req.header(*name, value);
        }
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| http_err(&e))?;
    let mut resp = send.send_request(req).await.map_err(|e| http_err(&e))?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp.map(|b| b.boxed()));
    }
    let agent_side = hyper::upgrade::on(&mut resp);
    let client_side = hyper::upgrade::on(&mut client);
    let address = address.to_string();
    tokio::spawn(async move {
        let (agent, client) = match tokio::join!(agent_side, client_side) {
            (Ok(a), Ok(c)) => (a, c),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(%address, error = %e, "stream upgrade failed");
                return;
            }
        };
        let mut agent = hyper_util::rt::TokioIo::new(agent);
        let mut client = hyper_util::rt::TokioIo::new(client);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
            tracing::debug!(%address, error = %e, "stream ended");
        }
    });
    let mut answer = Response::builder().status(hyper::StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in resp.headers() {
        answer = answer.header(name, value);
    }
    answer
        .body(Empty::<Bytes>::new().map_err(|never| match never {}).boxed())
        .map_err(|e| http_err(&e))
}
