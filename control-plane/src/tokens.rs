//! Bootstrap tokens, as kubeadm makes them: `<id>.<secret>` (6 and 16 of `[a-z0-9]`) kept as a
//! `kube-system/bootstrap-token-<id>` Secret, expiring after a TTL (kubeadm's default 24 h). The
//! control plane makes one at start (`--token-ttl`); `berth-control-plane token create` makes more
//! through the API, as `kubeadm token create --print-join-command` does. The bootstrap controller
//! (`controllers::bootstrap`) signs cluster-info for each and deletes expired ones.

use std::{path::Path, sync::Arc, time::Duration};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use thiserror::Error;

/// Errors of making a token through the API.
#[derive(Debug, Error)]
pub enum TokenError {
    /// A file of the data directory is missing or unreadable.
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    /// The admin kubeconfig names no `https://` server.
    #[error("{0} names no https:// server")]
    NoServer(String),
    /// The API server could not be reached or refused the TLS connection.
    #[error("connecting to {server}: {reason}")]
    Connect { server: String, reason: String },
    /// The API server answered with an error.
    #[error("the API server refused the token ({code}): {message}")]
    Refused { code: u16, message: String },
    /// Random bytes could not be read.
    #[error("no randomness: {0}")]
    Random(String),
}

/// A new token `(id, secret)`.
pub fn generate() -> Result<(String, String), TokenError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 22];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| TokenError::Random(e.to_string()))?;
    // 252 = 7 * 36: values from 252 on would favour the first letters, so they are drawn again
    // from the rest of a fresh draw rather than folded.
    let mut chars = String::with_capacity(22);
    let mut pool: Vec<u8> = bytes.to_vec();
    while chars.len() < 22 {
        match pool.pop() {
            Some(b) if b < 252 => chars.push(char::from(ALPHABET[usize::from(b) % 36])),
            Some(_) => {}
            None => {
                let mut more = [0u8; 22];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut more))
                    .map_err(|e| TokenError::Random(e.to_string()))?;
                pool.extend_from_slice(&more);
            }
        }
    }
    Ok((chars[..6].to_string(), chars[6..].to_string()))
}

/// Parses a TTL as kubeadm's `--ttl` takes it (a Go duration: `24h`, `1h30m`, `90s`; `0`: never
/// expires).
pub fn parse_ttl(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(None);
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("{s:?} is not a duration like 24h, 1h30m or 90s")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 24h, 1h30m or 90s"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(format!(
            "{s:?} is not a duration like 24h, 1h30m or 90s (0: never expires)"
        ));
    }
    Ok(Some(Duration::from_secs(total)))
}

/// When a token made now with `ttl` expires, as its Secret's `expiration` says it.
pub fn expiration(ttl: Option<Duration>) -> Option<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ttl.map(|ttl| crate::api::times::rfc3339_at(now + ttl.as_secs()))
}

/// The Secret of a token that authenticates nodes joining and signs cluster-info for them.
pub fn secret(id: &str, secret: &str, expiration: Option<&str>, description: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let mut data = json!({
        "token-id": b64(id),
        "token-secret": b64(secret),
        "usage-bootstrap-authentication": b64("true"),
        "usage-bootstrap-signing": b64("true"),
        "description": b64(description),
    });
    if let Some(when) = expiration {
        data["expiration"] = json!(b64(when));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": data,
    })
}

fn read(path: &Path) -> Result<String, TokenError> {
    std::fs::read_to_string(path).map_err(|e| TokenError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// `berth-control-plane token create`: makes a token through the API server of `data_dir` (its
/// admin kubeconfig, token and CA) and returns the join command that uses it.
pub async fn create(data_dir: &Path, ttl: Option<Duration>, description: &str) -> Result<String, TokenError> {
    let kubeconfig_path = data_dir.join("admin.kubeconfig");
    let kubeconfig = read(&kubeconfig_path)?;
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .map(str::trim)
        .filter(|s| s.starts_with("https://"))
        .ok_or_else(|| TokenError::NoServer(kubeconfig_path.display().to_string()))?
        .to_string();
    let admin_token = read(&data_dir.join("admin.token"))?.trim().to_string();
    let ca_pem = read(&data_dir.join("ca.crt"))?;
    let (id, token_secret) = generate()?;
    let body = secret(&id, &token_secret, expiration(ttl).as_deref(), description);
    let (code, answer) = post(
        &server,
        &ca_pem,
        &admin_token,
        "/api/v1/namespaces/kube-system/secrets",
        &body,
    )
    .await?;
    if code != 201 {
        let message = serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|s| s.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
        return Err(TokenError::Refused { code, message });
    }
    let hash = crate::pki::ca_cert_hash(&ca_pem).map_err(|e| TokenError::Read {
        path: data_dir.join("ca.crt").display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(format!(
        "berth-agent run --server {server} --token {id}.{token_secret} --ca-cert-hash {hash}"
    ))
}

/// One HTTPS POST of JSON to the API server, verified against the cluster CA.
async fn post(
    server: &str,
    ca_pem: &str,
    token: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, Bytes), TokenError> {
    let connect_err = |reason: String| TokenError::Connect {
        server: server.to_string(),
        reason,
    };
    let authority = server.trim_start_matches("https://").trim_end_matches('/');
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| connect_err(e.to_string()))?;
        roots.add(ca).map_err(|e| connect_err(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| connect_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| connect_err(e.to_string()))?;
    let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", authority)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| connect_err(e.to_string()))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let code = resp.status().as_u16();
    let answer = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| connect_err(e.to_string()))?
        .to_bytes();
    Ok((code, answer))
}

/// A token Secret's fields, decoded: what the signer and the cleaner need.
pub struct TokenSecret {
    pub id: String,
    pub secret: String,
    /// Seconds since the epoch; `Some(i64::MIN)` for an expiration that does not parse (expired).
    pub expires: Option<i64>,
    /// `usage-bootstrap-signing`: cluster-info is signed with it.
    pub signing: bool,
    /// `usage-bootstrap-authentication`: it authenticates as `system:bootstrap:<id>`.
    pub authentication: bool,
    /// `auth-extra-groups`, as written.
    pub extra_groups: Option<String>,
}

impl TokenSecret {
    /// Reads a `bootstrap.kubernetes.io/token` Secret (`None` for other Secrets and malformed ones).
    pub fn of(obj: &Value) -> Option<TokenSecret> {
        if obj.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token") {
            return None;
        }
        let field = |k: &str| {
            obj.pointer(&format!("/data/{k}"))
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
        };
        Some(TokenSecret {
            id: field("token-id")?,
            secret: field("token-secret")?,
            expires: field("expiration").map(|e| crate::api::times::epoch_seconds(&e).unwrap_or(i64::MIN)),
            signing: field("usage-bootstrap-signing").as_deref() == Some("true"),
            authentication: field("usage-bootstrap-authentication").as_deref() == Some("true"),
            extra_groups: field("auth-extra-groups"),
        })
    }

    /// Whether it has expired by `now` (seconds since the epoch).
    pub fn expired(&self, now: i64) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_ttls_and_secrets() {
        let (id, secret_part) = generate().expect("token");
        assert_eq!((id.len(), secret_part.len()), (6, 16));
        assert!(
            format!("{id}{secret_part}")
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_eq!(parse_ttl("24h"), Ok(Some(Duration::from_secs(86_400))));
        assert_eq!(parse_ttl("1h30m"), Ok(Some(Duration::from_secs(5_400))));
        assert_eq!(parse_ttl("0"), Ok(None));
        assert!(parse_ttl("tomorrow").is_err());
        assert!(parse_ttl("10").is_err());
        let s = secret("abcdef", "0123456789abcdef", Some("2030-01-01T00:00:00Z"), "test");
        let t = TokenSecret::of(&s).expect("a token secret");
        assert_eq!((t.id.as_str(), t.signing), ("abcdef", true));
        assert!(!t.expired(0) && t.expired(2_000_000_000));
        let mut bad = s.clone();
        bad["data"]["expiration"] = json!(base64::engine::general_purpose::STANDARD.encode("soon"));
        assert!(
            TokenSecret::of(&bad).expect("parsed").expired(0),
            "unparseable means expired"
        );
    }
}
