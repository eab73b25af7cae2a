//! etcd as the durable half of the store, for several control planes sharing one cluster state.
//!
//! Spoken through etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`, plain HTTP/1.1),
//! which every etcd 3.4+ serves on its client port: no gRPC stack or protobuf compiler in the build,
//! and the calls are few. Each write is one transaction that compares the key's create or modify
//! revision (etcd does the compare-and-swap, so writers in different processes cannot lose each
//! other's updates); one long-lived watch per process mirrors every change into the store's memory,
//! in revision order, which is what reads, lists and API watches are served from (as kube-apiserver's
//! watch cache does). A writer returns once the mirror has caught up with its own revision, so a
//! client reads its writes.
//!
//! TLS (`https://` client URLs) as kube-apiserver does it: etcd's serving certificate checked against
//! a given CA, and a client certificate for etcd's `--client-cert-auth`. Not supported: etcd's own
//! user/password authentication.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    sync::Arc,
    time::Duration,
};

use base64::Engine;
use serde_json::{Value, json};

use super::{KeyValue, StoreError};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: Option<&Value>) -> Vec<u8> {
    v.and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

/// etcd's int64 fields come as JSON strings.
fn num(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The end of the key range of a prefix, as etcd wants it (the prefix with its last byte plus one).
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A key-value pair as etcd sends it.
pub fn kv_of(v: &Value) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(&unb64(v.get("key"))).into_owned(),
        value: unb64(v.get("value")).into(),
        create_revision: num(v.get("create_revision")),
        mod_revision: num(v.get("mod_revision")),
    }
}

/// TLS to etcd: the CA that signed etcd's serving certificate and, for etcd's `--client-cert-auth`,
/// a client certificate and key (kube-apiserver's `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    config: Arc<rustls::ClientConfig>,
}

impl EtcdTls {
    /// Loads the PEM files.
    pub fn load(ca: &Path, client: Option<(&Path, &Path)>) -> Result<EtcdTls, StoreError> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let bad =
            |what: &Path, e: &dyn std::fmt::Display| StoreError::Etcd(format!("{}: {e}", what.display()));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(ca, &e))? {
            roots
                .add(cert.map_err(|e| bad(ca, &e))?)
                .map_err(|e| bad(ca, &e))?;
        }
        let builder =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(ca, &e))?
                .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| bad(cert, &e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(cert, &e))?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| bad(cert, &e))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(EtcdTls {
            config: Arc::new(config),
        })
    }
}

/// A byte stream to etcd: plain TCP or TLS over it.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}
type Conn = Box<dyn Stream>;

/// The client of an etcd cluster: its members' client URLs, tried in turn from the last one that
/// answered, so the control plane carries on when a member dies (etcd forwards writes to its leader).
#[derive(Clone, Debug)]
pub struct Etcd {
    /// `host:port` of each member's client URL.
    members: Arc<Vec<String>>,
    /// The member that answered last.
    preferred: Arc<std::sync::atomic::AtomicUsize>,
    tls: Option<EtcdTls>,
}

/// How long connecting to one member may take before the next is tried.
const MEMBER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One change the watch delivered.
pub struct WatchedEvent {
    pub deleted: bool,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

/// What a watch stream says next.
pub enum WatchMessage {
    Events(Vec<WatchedEvent>),
    /// The watch started after a compaction: history from before it is gone.
    Compacted(u64),
    /// Created, progress notifications and the like.
    Other,
}

/// An open watch.
pub struct WatchStream {
    reader: BufReader<Conn>,
    /// Bytes of a message not complete yet (a message may span chunks).
    pending: Vec<u8>,
}

impl Etcd {
    /// `endpoints`: comma-separated client URLs, `http://host:port`, `host:port`, or
    /// `https://host:port` with `tls` (as kube-apiserver's `--etcd-servers`).
    pub fn new(endpoints: &str, tls: Option<EtcdTls>) -> Result<Etcd, StoreError> {
        let mut members = Vec::new();
        for endpoint in endpoints.split(',').map(str::trim) {
            let secure = endpoint.starts_with("https://");
            let address = endpoint
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string();
            if address.is_empty() {
                return Err(StoreError::Etcd(format!(
                    "{endpoint:?}: give each etcd client URL as http(s)://host:port"
                )));
            }
            match (secure, &tls) {
                (true, None) => {
                    return Err(StoreError::Etcd(format!(
                        "{endpoint}: an https etcd needs the CA that signed its certificate (--etcd-cafile)"
                    )));
                }
                (false, Some(_)) => {
                    return Err(StoreError::Etcd(format!(
                        "{endpoint}: TLS files were given for a plain http etcd URL; use https://"
                    )));
                }
                _ => members.push(address),
            }
        }
        Ok(Etcd {
            members: Arc::new(members),
            preferred: Arc::default(),
            tls,
        })
    }

    /// A connection to the first member that accepts one (from the last that did) and its address.
    fn connect(&self, read_timeout: Option<Duration>) -> Result<(Conn, String), StoreError> {
        use std::sync::atomic::Ordering;
        let start = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.members.len() {
            let index = (start + i) % self.members.len();
            let address = &self.members[index];
            match self.connect_to(address, read_timeout) {
                Ok(conn) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((conn, address.clone()));
                }
                Err(e) => failures.push(e),
            }
        }
        Err(StoreError::Etcd(format!(
            "no etcd member answered: {}",
            failures
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )))
    }

    fn connect_to(&self, address: &str, read_timeout: Option<Duration>) -> Result<Conn, StoreError> {
        let failed =
            |e: &dyn std::fmt::Display| StoreError::Etcd(format!("connecting to etcd at {address}: {e}"));
        let socket = std::net::ToSocketAddrs::to_socket_addrs(address)
            .map_err(|e| failed(&e))?
            .next()
            .ok_or_else(|| failed(&"no address"))?;
        let stream = TcpStream::connect_timeout(&socket, MEMBER_CONNECT_TIMEOUT).map_err(|e| failed(&e))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(read_timeout);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(stream));
        };
        let host = address
            .rsplit_once(':')
            .map_or(address, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| failed(&e))?;
        let conn = rustls::ClientConnection::new(Arc::clone(&tls.config), name).map_err(|e| failed(&e))?;
        Ok(Box::new(rustls::StreamOwned::new(conn, stream)))
    }

    fn send(stream: &mut Conn, host: &str, path: &str, body: &Value) -> Result<(), StoreError> {
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| StoreError::Etcd(format!("etcd {path}: {e}")))
    }

    /// One JSON request and its answer.
    pub fn call(&self, path: &str, body: &Value) -> Result<Value, StoreError> {
        let (mut stream, host) = self.connect(Some(Duration::from_secs(30)))?;
        Etcd::send(&mut stream, &host, path, body)?;
        let mut reader = BufReader::new(stream);
        let (status, chunked, length) = read_head(&mut reader, path)?;
        let body = if chunked {
            let mut all = Vec::new();
            while let Some(chunk) = read_chunk(&mut reader, path)? {
                all.extend(chunk);
            }
            all
        } else {
            let mut buf = vec![0u8; length.unwrap_or(0)];
            reader
                .read_exact(&mut buf)
                .map_err(|e| StoreError::Etcd(format!("etcd {path}: {e}")))?;
            buf
        };
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| StoreError::Etcd(format!("etcd {path}: bad answer: {e}")))?;
        if status != 200 {
            let message = doc
                .get("message")
                .or_else(|| doc.get("error"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if message.contains("compacted") {
                return Err(StoreError::Compacted {
                    requested: 0,
                    oldest: 0,
                });
            }
            return Err(StoreError::Etcd(format!("etcd {path}: HTTP {status}: {message}")));
        }
        Ok(doc)
    }

    /// Every key under `prefix` (at `revision`, or now) and the revision of the answer.
    pub fn range(&self, prefix: &str, revision: Option<u64>) -> Result<(Vec<KeyValue>, u64), StoreError> {
        let mut body = json!({"key": b64(prefix.as_bytes()), "range_end": b64(&range_end(prefix))});
        if let Some(r) = revision {
            body["revision"] = json!(r.to_string());
        }
        let doc = self.call("/v3/kv/range", &body).map_err(|e| match e {
            StoreError::Compacted { .. } => StoreError::Compacted {
                requested: revision.unwrap_or(0),
                oldest: 0,
            },
            other => other,
        })?;
        let kvs = doc
            .get("kvs")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(kv_of).collect())
            .unwrap_or_default();
        Ok((kvs, num(doc.pointer("/header/revision"))))
    }

    /// A transaction: `compare` on `key`, `put` (a value) or delete it on success, read it on failure.
    /// Returns (succeeded, header revision, the previous value on success or the current on failure).
    pub fn txn(
        &self,
        key: &str,
        compare: Value,
        put: Option<&[u8]>,
    ) -> Result<(bool, u64, Option<KeyValue>), StoreError> {
        let k = b64(key.as_bytes());
        let op = match put {
            Some(v) => json!({"request_put": {"key": k, "value": b64(v), "prev_kv": true}}),
            None => json!({"request_delete_range": {"key": k, "prev_kv": true}}),
        };
        let mut compare = compare;
        compare["key"] = json!(k);
        let body = json!({"compare": [compare], "success": [op], "failure": [{"request_range": {"key": k}}]});
        let doc = self.call("/v3/kv/txn", &body)?;
        let succeeded = doc.get("succeeded").and_then(Value::as_bool).unwrap_or(false);
        let response = doc.pointer("/responses/0").cloned().unwrap_or(Value::Null);
        let kv = if succeeded {
            response
                .pointer("/response_put/prev_kv")
                .or_else(|| response.pointer("/response_delete_range/prev_kvs/0"))
                .map(kv_of)
        } else {
            response.pointer("/response_range/kvs/0").map(kv_of)
        };
        Ok((succeeded, num(doc.pointer("/header/revision")), kv))
    }

    /// Compacts history up to `revision`.
    pub fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.call(
            "/v3/kv/compaction",
            &json!({"revision": revision.to_string(), "physical": false}),
        )
        .map(|_| ())
    }

    /// Watches `prefix` from `start` (inclusive), with previous values.
    pub fn watch(&self, prefix: &str, start: u64) -> Result<WatchStream, StoreError> {
        let (mut stream, host) = self.connect(None)?;
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&range_end(prefix)),
            "start_revision": start.to_string(),
            "prev_kv": true,
            "progress_notify": true,
        }});
        Etcd::send(&mut stream, &host, "/v3/watch", &body)?;
        let mut reader = BufReader::new(stream);
        let (status, _, _) = read_head(&mut reader, "/v3/watch")?;
        if status != 200 {
            return Err(StoreError::Etcd(format!("etcd watch: HTTP {status}")));
        }
        Ok(WatchStream {
            reader,
            pending: Vec::new(),
        })
    }
}

impl WatchStream {
    /// The next message (blocks); an error when the stream ended.
    pub fn next_message(&mut self) -> Result<WatchMessage, StoreError> {
        // Messages are newline-delimited JSON; a chunk may hold part of one or several.
        let line = loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                break line;
            }
            let chunk = read_chunk(&mut self.reader, "/v3/watch")?
                .ok_or_else(|| StoreError::Etcd("etcd ended the watch".into()))?;
            self.pending.extend(chunk);
        };
        let doc: Value = serde_json::from_slice(&line)
            .map_err(|e| StoreError::Etcd(format!("etcd watch: bad message: {e}")))?;
        let result = doc.get("result").cloned().unwrap_or(Value::Null);
        if result.get("canceled").and_then(Value::as_bool) == Some(true) {
            let compacted = num(result.get("compact_revision"));
            if compacted > 0 {
                return Ok(WatchMessage::Compacted(compacted));
            }
            return Err(StoreError::Etcd(format!(
                "etcd canceled the watch: {}",
                result
                    .get("cancel_reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )));
        }
        let Some(events) = result.get("events").and_then(Value::as_array) else {
            return Ok(WatchMessage::Other);
        };
        Ok(WatchMessage::Events(
            events
                .iter()
                .map(|e| WatchedEvent {
                    // PUT is the enum's zero value, which the gateway leaves out.
                    deleted: e.get("type").and_then(Value::as_str) == Some("DELETE"),
                    kv: kv_of(e.get("kv").unwrap_or(&Value::Null)),
                    prev: e.get("prev_kv").map(kv_of),
                })
                .collect(),
        ))
    }
}

/// Reads a response head: (status, chunked, content length).
fn read_head(reader: &mut BufReader<Conn>, path: &str) -> Result<(u16, bool, Option<usize>), StoreError> {
    let io = |e: std::io::Error| StoreError::Etcd(format!("etcd {path}: {e}"));
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Etcd(format!("etcd {path}: no HTTP answer ({line:?})")))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(io)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        } else if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
    }
    Ok((status, chunked, length))
}

/// Reads one chunk of a chunked body (`None` at the end).
fn read_chunk(reader: &mut BufReader<Conn>, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let io = |e: std::io::Error| StoreError::Etcd(format!("etcd {path}: {e}"));
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
        .map_err(|_| StoreError::Etcd(format!("etcd {path}: bad chunk size {line:?}")))?;
    if size == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; size + 2];
    reader.read_exact(&mut buf).map_err(io)?;
    buf.truncate(size);
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_tried_in_turn() {
        // Port 1 on loopback refuses at once; the second member is the one that answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let live = listener.local_addr().expect("address");
        let etcd = Etcd::new(&format!("http://127.0.0.1:1,http://{live}"), None).expect("members");
        let (_, address) = etcd.connect(None).expect("the live member");
        assert_eq!(address, live.to_string());
        assert_eq!(etcd.preferred.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(listener);
        let err = Etcd::new("127.0.0.1:1", None)
            .expect("one member")
            .connect(None)
            .err()
            .expect("nothing listens");
        assert!(err.to_string().contains("no etcd member answered"), "{err}");
    }

    #[test]
    fn urls_and_tls_must_agree() {
        assert!(Etcd::new("http://127.0.0.1:2379", None).is_ok());
        assert!(Etcd::new("127.0.0.1:2379", None).is_ok());
        let err = Etcd::new("https://127.0.0.1:2379", None).expect_err("no CA");
        assert!(err.to_string().contains("--etcd-cafile"), "{err}");
        assert!(Etcd::new("http://", None).is_err());
        let missing = EtcdTls::load(Path::new("/nonexistent/ca.crt"), None).expect_err("no file");
        assert!(missing.to_string().contains("/nonexistent/ca.crt"), "{missing}");
    }

    #[test]
    fn prefix_range_ends() {
        assert_eq!(range_end("/registry/"), b"/registry0".to_vec());
        assert_eq!(range_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
