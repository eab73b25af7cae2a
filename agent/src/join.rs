//! Joining a cluster the way `kubeadm join` has kubelet do it, from `--server`, `--token ID.SECRET`
//! and `--ca-cert-hash sha256:HEX`:
//!
//! 1. *Discovery*: `kube-public/cluster-info` is read anonymously, before the server is trusted. Its
//!    `jws-kubeconfig-<id>` signature (HS256 keyed with the token's secret) proves the server knows the
//!    token; the CA it names must match the pinned hash (SHA-256 of the CA's SubjectPublicKeyInfo).
//! 2. *TLS bootstrap*: with the token as bearer and the CA now trusted, a CertificateSigningRequest for
//!    `system:node:NAME` (group `system:nodes`, signer `kubernetes.io/kube-apiserver-client-kubelet`)
//!    with a key generated here; the control plane approves and signs it.
//! 3. The certificate and key are written to `STATE_DIR/kubeconfig` (0600, atomically: nothing is
//!    half-written if any step fails) and reused on every start until 70 % of their lifetime has
//!    passed (kubelet rotates between 70 and 90 %); then the node joins again for a new one.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::Engine;
use k8s_openapi::{
    ByteString,
    api::{
        certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec},
        core::v1::ConfigMap,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, Client, Config, api::PostParams};
use thiserror::Error;
use tracing::info;

/// The signer kubelet's client certificates come from.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// How long the control plane has to sign the request.
const SIGNING_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of joining; each says which step failed and why, in one line.
#[derive(Debug, Error)]
pub enum JoinError {
    /// `--token` is not `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("--token must be ID.SECRET (6 and 16 characters of a-z0-9), as kubeadm prints it")]
    TokenFormat,
    /// A `--ca-cert-hash` is not `sha256:` and 64 hex digits.
    #[error("--ca-cert-hash {0:?} must be sha256: followed by 64 hex digits")]
    HashFormat(String),
    /// `--server` is not an https URL.
    #[error("--server {0:?} must be an https:// URL")]
    ServerUrl(String),
    /// The server could not be reached (connection refused, timeout, TLS failure).
    #[error("cannot reach the API server at {server}: {message}")]
    Unreachable { server: String, message: String },
    /// The server answered discovery with an error.
    #[error("reading kube-public/cluster-info from {server}: {message}")]
    Discovery { server: String, message: String },
    /// cluster-info carries no signature for this token id: the token is unknown to the cluster or
    /// expired.
    #[error(
        "the token is not valid for this cluster: cluster-info has no signature for token id {0:?} (unknown or expired token)"
    )]
    UnknownToken(String),
    /// The signature does not match: the token's secret is wrong.
    #[error(
        "the token is not valid for this cluster: cluster-info's signature does not match the token's secret"
    )]
    WrongToken,
    /// cluster-info's kubeconfig does not parse or names no CA.
    #[error("cluster-info is malformed: {0}")]
    ClusterInfo(String),
    /// The CA of cluster-info is not the pinned one.
    #[error("the cluster's CA does not match --ca-cert-hash: the server's CA hashes to {actual}")]
    CaMismatch { actual: String },
    /// The key or request could not be generated.
    #[error("generating the node's key and request: {0}")]
    Key(#[from] rcgen::Error),
    /// The certificate signing request was refused, denied, failed or not signed in time.
    #[error("certificate signing request {name}: {message}")]
    Csr { name: String, message: String },
    /// The kubeconfig could not be written into the state directory.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `berth-agent run --server --token --ca-cert-hash` was given.
#[derive(Clone, Debug)]
pub struct JoinParams {
    pub server: String,
    pub token: String,
    pub ca_cert_hashes: Vec<String>,
    pub node: String,
    pub state_dir: PathBuf,
    /// Testing aid: renew this long after the certificate's start instead of at 70 % of its lifetime.
    pub renew_after: Option<Duration>,
}

/// Where the node's credentials live.
pub fn kubeconfig_path(state_dir: &Path) -> PathBuf {
    state_dir.join("kubeconfig")
}

/// Returns the node's kubeconfig, joining first when there is none yet or its certificate is due for
/// renewal.
pub async fn ensure_kubeconfig(p: &JoinParams) -> Result<PathBuf, JoinError> {
    let path = kubeconfig_path(&p.state_dir);
    if let Some(left) = certificate_still_fresh(&path, p.renew_after) {
        info!(path = %path.display(), days_left = left.as_secs() / 86_400, "using the node's credentials");
        return Ok(path);
    }
    let (id, secret) = parse_token(&p.token)?;
    let wanted: Vec<String> = p
        .ca_cert_hashes
        .iter()
        .map(|h| normalize_hash(h))
        .collect::<Result<_, _>>()?;
    let server: http::Uri = p
        .server
        .parse()
        .ok()
        .filter(|u: &http::Uri| u.scheme_str() == Some("https"))
        .ok_or_else(|| JoinError::ServerUrl(p.server.clone()))?;
    let ca_pem = discover(&server, &p.server, id, secret, &wanted).await?;
    info!(server = %p.server, "cluster-info verified: token signature and CA pin match");
    let (cert_pem, key_pem) = bootstrap(&server, &p.server, &ca_pem, &p.token, &p.node).await?;
    write_kubeconfig(&path, &p.server, &ca_pem, &cert_pem, &key_pem)?;
    info!(node = %p.node, path = %path.display(), "joined: node certificate signed");
    Ok(path)
}

fn parse_token(token: &str) -> Result<(&str, &str), JoinError> {
    let ok =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    match token.split_once('.') {
        Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok((id, secret)),
        _ => Err(JoinError::TokenFormat),
    }
}

fn normalize_hash(h: &str) -> Result<String, JoinError> {
    let hex = h
        .strip_prefix("sha256:")
        .filter(|x| x.len() == 64 && x.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| JoinError::HashFormat(h.into()))?;
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// `sha256:` and the hex SHA-256 of the certificate's DER SubjectPublicKeyInfo.
pub fn ca_cert_hash(ca_pem: &[u8]) -> Result<String, JoinError> {
    let bad = |e: String| JoinError::ClusterInfo(format!("CA certificate: {e}"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem).map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).map_err(|e| bad(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    Ok(format!(
        "sha256:{}",
        digest
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

/// Checks a detached JWS (`header..signature`, HS256) over `payload` keyed with the token.
fn verify_jws(jws: &str, payload: &str, id: &str, secret: &str) -> Result<(), JoinError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (header_b64, signature_b64) = jws.split_once("..").ok_or(JoinError::WrongToken)?;
    let header: serde_json::Value = b64
        .decode(header_b64)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(JoinError::WrongToken)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256")
        || header.get("kid").and_then(|k| k.as_str()) != Some(id)
    {
        return Err(JoinError::WrongToken);
    }
    let signature = b64.decode(signature_b64).map_err(|_| JoinError::WrongToken)?;
    let signing_input = format!("{header_b64}.{}", b64.encode(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, signing_input.as_bytes(), &signature).map_err(|_| JoinError::WrongToken)
}

fn unreachable_or(server: &str, e: kube::Error) -> JoinError {
    match e {
        kube::Error::Api(status) => JoinError::Discovery {
            server: server.into(),
            message: format!("{} ({})", status.message, status.code),
        },
        other => JoinError::Unreachable {
            server: server.into(),
            message: error_chain(&other),
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads and verifies cluster-info; returns the CA (PEM).
async fn discover(
    server: &http::Uri,
    server_text: &str,
    id: &str,
    secret: &str,
    wanted: &[String],
) -> Result<Vec<u8>, JoinError> {
    let mut config = Config::new(server.clone());
    // Not trusted yet: what is read is checked by the token's signature and the CA pin instead.
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(10));
    let client = Client::try_from(config).map_err(|e| unreachable_or(server_text, e))?;
    let info = Api::<ConfigMap>::namespaced(client, "kube-public")
        .get("cluster-info")
        .await
        .map_err(|e| unreachable_or(server_text, e))?;
    let data = info.data.unwrap_or_default();
    let kubeconfig = data
        .get("kubeconfig")
        .ok_or_else(|| JoinError::ClusterInfo("no kubeconfig".into()))?;
    let jws = data
        .get(&format!("jws-kubeconfig-{id}"))
        .ok_or_else(|| JoinError::UnknownToken(id.into()))?;
    verify_jws(jws, kubeconfig, id, secret)?;
    let parsed: kube::config::Kubeconfig = parse_kubeconfig(kubeconfig).map_err(JoinError::ClusterInfo)?;
    let ca_b64 = parsed
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .ok_or_else(|| JoinError::ClusterInfo("no certificate-authority-data".into()))?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .map_err(|e| JoinError::ClusterInfo(format!("certificate-authority-data: {e}")))?;
    let actual = ca_cert_hash(&ca_pem)?;
    if !wanted.contains(&actual) {
        return Err(JoinError::CaMismatch { actual });
    }
    Ok(ca_pem)
}

/// Parses a kubeconfig document (YAML or JSON) through kube's own types.
fn parse_kubeconfig(text: &str) -> Result<kube::config::Kubeconfig, String> {
    kube::config::Kubeconfig::from_yaml(text).map_err(|e| format!("kubeconfig: {e}"))
}

fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>, JoinError> {
    x509_parser::pem::parse_x509_pem(pem)
        .map(|(_, p)| p.contents)
        .map_err(|e| JoinError::ClusterInfo(format!("CA certificate: {e}")))
}

/// Submits the node's CertificateSigningRequest with the bootstrap token and waits for the
/// certificate. Returns (certificate PEM, key PEM).
async fn bootstrap(
    server: &http::Uri,
    server_text: &str,
    ca_pem: &[u8],
    token: &str,
    node: &str,
) -> Result<(String, String), JoinError> {
    let mut config = Config::new(server.clone());
    config.root_cert = Some(vec![pem_to_der(ca_pem)?]);
    config.auth_info.token = Some(token.to_string().into());
    config.connect_timeout = Some(Duration::from_secs(10));
    let client = Client::try_from(config).map_err(|e| unreachable_or(server_text, e))?;
    request_certificate(client, server_text, node, &NodeCsr::client()).await
}

/// Submits a CertificateSigningRequest for `system:node:NODE` with a key made here, through `client`
/// (the bootstrap token's, or the node's own when renewing), and waits for the certificate. Returns
/// (certificate PEM, key PEM).
/// A certificate the node asks the cluster CA for, by CertificateSigningRequest.
pub struct NodeCsr {
    pub signer: &'static str,
    pub usages: &'static [&'static str],
    /// Subject alternative names (a serving certificate's names and addresses).
    pub names: Vec<rcgen::SanType>,
    /// The CSR's name starts with this (`node-csr`, `node-serving`), then the node and a suffix.
    pub name_prefix: &'static str,
}

impl NodeCsr {
    /// The node's client certificate, its identity towards the API server.
    pub fn client() -> Self {
        NodeCsr {
            signer: KUBELET_CLIENT_SIGNER,
            usages: &["digital signature", "client auth"],
            names: Vec::new(),
            name_prefix: "node-csr",
        }
    }
}

/// Submits `what` for `system:node:NODE` with a key made here and waits for the certificate:
/// `(certificate PEM, key PEM)`.
pub async fn request_certificate(
    client: Client,
    server_text: &str,
    node: &str,
    what: &NodeCsr,
) -> Result<(String, String), JoinError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.subject_alt_names = what.names.clone();
    let request = params.serialize_request(&key)?.pem()?;
    let suffix: String = ring_random_hex(4);
    let name = format!("{}-{node}-{suffix}", what.name_prefix);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: what.signer.into(),
            usages: Some(what.usages.iter().map(|u| u.to_string()).collect()),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let csr_err = |message: String| JoinError::Csr {
        name: name.clone(),
        message,
    };
    let api = Api::<CertificateSigningRequest>::all(client);
    api.create(&PostParams::default(), &csr)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => csr_err(format!("refused: {} ({})", s.message, s.code)),
            other => unreachable_or(server_text, other),
        })?;
    let deadline = Instant::now() + SIGNING_TIMEOUT;
    loop {
        let current = api.get(&name).await.map_err(|e| csr_err(error_chain(&e)))?;
        let status = current.status.unwrap_or_default();
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert = String::from_utf8(cert.0).map_err(|_| csr_err("certificate is not PEM".into()))?;
            return Ok((cert, key.serialize_pem()));
        }
        if let Some(c) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| matches!(c.type_.as_str(), "Denied" | "Failed") && c.status == "True")
        {
            return Err(csr_err(format!(
                "{}: {}",
                c.type_,
                c.message.clone().unwrap_or_default()
            )));
        }
        if Instant::now() >= deadline {
            return Err(csr_err(format!(
                "not signed within {}s (is it approved?)",
                SIGNING_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ring_random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    // The system RNG failing is not recoverable either way; a zero suffix still names a valid object.
    let _ = ring::rand::SystemRandom::new().fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The node's kubeconfig: the server, the cluster CA, the client certificate and key.
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &[u8],
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), JoinError> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let body = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: default-cluster\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: default-auth\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: default-context\n  context:\n    cluster: default-cluster\n    user: default-auth\ncurrent-context: default-context\n",
        b64(ca_pem),
        b64(cert_pem.as_bytes()),
        b64(key_pem.as_bytes()),
    );
    write_private(path, body.as_bytes()).map_err(|source| JoinError::Write {
        path: path.into(),
        source,
    })
}

/// Writes a file only the agent may read (0600), atomically (a temporary file renamed over it), its
/// directory made if missing: a crash leaves the old content or the new, never half of one.
pub fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(body)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Time left before the kubeconfig's client certificate is due for renewal (70 % of its lifetime, or
/// `renew_after` past its start when given: a testing aid), or `None` when there is no usable
/// kubeconfig or it is due.
fn certificate_still_fresh(path: &Path, renew_after: Option<Duration>) -> Option<Duration> {
    let config = kube::config::Kubeconfig::read_from(path).ok()?;
    let user = config.auth_infos.first()?.auth_info.as_ref()?;
    let data = user.client_certificate_data.as_ref()?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()?;
    time_to_renewal(&pem, renew_after)
}

/// Time left before the (first) certificate of `pem` is due for renewal: at 70 % of its lifetime, as
/// kubelet's certificate manager, or `renew_after` past its start when given; `None` when it does not
/// parse or is due.
pub fn time_to_renewal(pem: &[u8], renew_after: Option<Duration>) -> Option<Duration> {
    let der = x509_parser::pem::parse_x509_pem(pem).ok()?.1.contents;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let from = cert.validity().not_before.timestamp();
    let until = cert.validity().not_after.timestamp();
    let renew_at = match renew_after {
        Some(d) => from + d.as_secs() as i64,
        None => from + (until - from) * 7 / 10,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    (renew_at > now).then(|| Duration::from_secs((renew_at - now) as u64))
}

/// Keeps the node's certificate renewed while the agent runs, as kubelet rotates its client
/// certificate: when it is due, a new key and CSR signed with the current certificate (the node's own
/// identity; the control plane approves renewals of `system:node:NAME` by that node), the kubeconfig
/// replaced atomically, then the agent re-executes itself to use it: programs and maps are pinned, so
/// traffic never notices, and the new process reuses the fresh certificate.
pub async fn keep_renewed(path: PathBuf, node: String, renew_after: Option<Duration>, client: Client) {
    loop {
        if let Some(left) = certificate_still_fresh(&path, renew_after) {
            tokio::time::sleep(left.min(Duration::from_secs(3600)) + Duration::from_secs(1)).await;
            continue;
        }
        match renew(&path, &node, client.clone()).await {
            Ok(()) => {
                info!(node = %node, path = %path.display(), "node certificate renewed; restarting the agent to use it (the data plane keeps running)");
                reexec();
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the node certificate; retrying in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

async fn renew(path: &Path, node: &str, client: Client) -> Result<(), JoinError> {
    let bad = |m: &str| JoinError::ClusterInfo(format!("{}: {m}", path.display()));
    let current = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(&e.to_string()))?;
    let cluster = current
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| bad("no cluster"))?;
    let server = cluster.server.clone().ok_or_else(|| bad("no server"))?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(
            cluster
                .certificate_authority_data
                .clone()
                .unwrap_or_default()
                .trim(),
        )
        .map_err(|e| bad(&e.to_string()))?;
    let (cert, key) = request_certificate(client, &server, node, &NodeCsr::client()).await?;
    write_kubeconfig(path, &server, &ca_pem, &cert, &key)
}

/// Replaces this process with a new run of the same command line.
fn reexec() {
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .exec();
    tracing::error!(error = %err, "cannot restart the agent; the renewed certificate is used at the next start");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_hashes_are_checked_before_anything_is_sent() {
        assert!(parse_token("abcdef.0123456789abcdef").is_ok());
        for bad in [
            "abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123",
        ] {
            assert!(matches!(parse_token(bad), Err(JoinError::TokenFormat)), "{bad}");
        }
        let hex = "AB".repeat(32);
        assert_eq!(
            normalize_hash(&format!("sha256:{hex}")).expect("valid"),
            format!("sha256:{}", hex.to_lowercase())
        );
        assert!(normalize_hash("md5:00").is_err());
        assert!(normalize_hash("sha256:00").is_err());
    }

    /// A signature made as kubeadm's bootstrap signer makes it (go-jose HS256, detached payload).
    fn sign(id: &str, secret: &str, payload: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(format!(r#"{{"alg":"HS256","kid":"{id}"}}"#));
        let input = format!("{header}.{}", b64.encode(payload));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        format!(
            "{header}..{}",
            b64.encode(ring::hmac::sign(&key, input.as_bytes()))
        )
    }

    #[test]
    fn the_jws_proves_the_server_knows_the_token() {
        let jws = sign("abcdef", "0123456789abcdef", "payload");
        assert!(verify_jws(&jws, "payload", "abcdef", "0123456789abcdef").is_ok());
        assert!(verify_jws(&jws, "payload", "abcdef", "0123456789abcdeX").is_err());
        assert!(verify_jws(&jws, "changed", "abcdef", "0123456789abcdef").is_err());
        assert!(verify_jws(&jws, "payload", "zzzzzz", "0123456789abcdef").is_err());
        assert!(verify_jws("garbage", "payload", "abcdef", "0123456789abcdef").is_err());
    }
}
