//! The cluster's certificates and the admin's credentials, generated on first start into the data
//! directory and reused after: a self-signed CA, the API server's serving certificate (signed by it,
//! for the names and addresses clients use), an admin bearer token, and `admin.kubeconfig` so the real
//! `kubectl --kubeconfig DIR/admin.kubeconfig` just works.
//!
//! Key files are written with mode 0600. The serving certificate is re-issued when the names it must
//! cover change (another listen address), by the same CA, so kubeconfigs stay valid.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use thiserror::Error;

/// Errors of generating or reading the credentials.
#[derive(Debug, Error)]
pub enum PkiError {
    /// A file of the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Key or certificate generation failed (or a stored key does not parse).
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// What the server and the kubeconfig need.
pub struct Credentials {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_token: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `body` to `path` atomically with `mode`.
fn write_file(path: &Path, body: &str, mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(body.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The CA's parameters: fixed, so the issuer can be rebuilt from its key alone.
fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "berth-ca");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// Random bytes from the kernel, hex-encoded.
fn random_hex(bytes: usize) -> Result<String, PkiError> {
    let path = Path::new("/dev/urandom");
    let mut buf = vec![0u8; bytes];
    std::io::Read::read_exact(&mut std::fs::File::open(path).map_err(io(path))?, &mut buf)
        .map_err(io(path))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Loads or creates the credentials in `dir`; the serving certificate covers `names` (DNS names and
/// IP addresses).
pub fn ensure(dir: &Path, names: &[String]) -> Result<Credentials, PkiError> {
    let (ca_key_path, ca_path) = (dir.join("ca.key"), dir.join("ca.crt"));
    let (ca_key, ca_pem) = match (read(&ca_key_path), read(&ca_path)) {
        (Some(k), Some(c)) => (KeyPair::from_pem(&k)?, c),
        _ => {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write_file(&ca_key_path, &key.serialize_pem(), 0o600)?;
            write_file(&ca_path, &cert.pem(), 0o644)?;
            (key, cert.pem())
        }
    };
    let (key_path, cert_path, names_path) = (
        dir.join("apiserver.key"),
        dir.join("apiserver.crt"),
        dir.join("apiserver.names"),
    );
    let wanted = names.join(",");
    let (server_cert_pem, server_key_pem) = match (read(&key_path), read(&cert_path), read(&names_path)) {
        (Some(k), Some(c), Some(n)) if n == wanted => (c, k),
        _ => {
            let issuer = Issuer::new(ca_params()?, ca_key);
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names.to_vec())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "berth-apiserver");
            let cert = params.signed_by(&key, &issuer)?;
            write_file(&key_path, &key.serialize_pem(), 0o600)?;
            write_file(&cert_path, &cert.pem(), 0o644)?;
            write_file(&names_path, &wanted, 0o644)?;
            (cert.pem(), key.serialize_pem())
        }
    };
    let token_path = dir.join("admin.token");
    let admin_token = match read(&token_path) {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = random_hex(32)?;
            write_file(&token_path, &t, 0o600)?;
            t
        }
    };
    Ok(Credentials {
        ca_pem,
        server_cert_pem,
        server_key_pem,
        admin_token,
    })
}

/// Writes `dir/admin.kubeconfig` for `server` (an `https://` URL).
pub fn write_admin_kubeconfig(dir: &Path, server: &str, creds: &Credentials) -> Result<PathBuf, PkiError> {
    let ca = base64::engine::general_purpose::STANDARD.encode(creds.ca_pem.as_bytes());
    let body = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: berth-admin\n  context:\n    cluster: berth\n    user: admin\ncurrent-context: berth-admin\n",
        creds.admin_token
    );
    let path = dir.join("admin.kubeconfig");
    write_file(&path, &body, 0o600)?;
    Ok(path)
}
