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
    /// A certificate signing request asks for something this signer does not give.
    #[error("certificate signing request refused: {0}")]
    Refused(String),
}

/// What the server and the kubeconfig need.
pub struct Credentials {
    pub ca_pem: String,
    /// The CA's key, which signs node client certificates.
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_token: String,
    /// What the API server shows node agents (CN `kube-apiserver-kubelet-client`, O `system:masters`).
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
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
    let (client_key_path, client_cert_path) = (
        dir.join("apiserver-kubelet-client.key"),
        dir.join("apiserver-kubelet-client.crt"),
    );
    let (kubelet_client_cert_pem, kubelet_client_key_pem) =
        match (read(&client_key_path), read(&client_cert_path)) {
            (Some(k), Some(c)) => (c, k),
            _ => {
                let ca_key = KeyPair::from_pem(&read(&ca_key_path).unwrap_or_default())?;
                let issuer = Issuer::new(ca_params()?, ca_key);
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(Vec::<String>::new())?;
                params
                    .distinguished_name
                    .push(DnType::CommonName, "kube-apiserver-kubelet-client");
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, "system:masters");
                params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
                let cert = params.signed_by(&key, &issuer)?;
                write_file(&client_key_path, &key.serialize_pem(), 0o600)?;
                write_file(&client_cert_path, &cert.pem(), 0o644)?;
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
        ca_key_pem: read(&ca_key_path).unwrap_or_default(),
        ca_pem,
        server_cert_pem,
        server_key_pem,
        admin_token,
        kubelet_client_cert_pem,
        kubelet_client_key_pem,
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

/// Where the node join token is written (`<id>.<secret>`, as `kubeadm join --token` takes).
pub fn join_token_path(dir: &Path) -> PathBuf {
    dir.join("join-token")
}

/// Writes `DATA_DIR/join-command` (0600: it holds the token).
pub fn write_join_command(dir: &Path, command: &str) -> Result<(), PkiError> {
    write_file(&dir.join("join-command"), &format!("{command}\n"), 0o600)
}

/// Loads the node join token (`DATA_DIR/join-token`), or makes one: `(id, secret, made now)`.
pub fn ensure_join_token(dir: &Path) -> Result<(String, String, bool), PkiError> {
    let path = join_token_path(dir);
    if let Some(t) = read(&path)
        && let Some((id, secret)) = t.trim().split_once('.')
        && id.len() == 6
        && secret.len() == 16
    {
        return Ok((id.to_string(), secret.to_string(), false));
    }
    let (id, secret) = new_join_token(dir)?;
    Ok((id, secret, true))
}

/// Makes a new node join token and keeps it in `DATA_DIR/join-token` (0600).
pub fn new_join_token(dir: &Path) -> Result<(String, String), PkiError> {
    let (id, secret) = crate::tokens::generate().map_err(|e| PkiError::Refused(e.to_string()))?;
    write_file(&join_token_path(dir), &format!("{id}.{secret}\n"), 0o600)?;
    Ok((id, secret))
}

/// The node certificates the cluster CA signs, by CSR signer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeCertificate {
    /// `kubernetes.io/kube-apiserver-client-kubelet`: the node's identity towards the API server.
    Client,
    /// `kubernetes.io/kubelet-serving`: the certificate kubelet's API is served with.
    Serving,
}

impl NodeCertificate {
    pub fn of_signer(signer: &str) -> Option<Self> {
        match signer {
            "kubernetes.io/kube-apiserver-client-kubelet" => Some(Self::Client),
            "kubernetes.io/kubelet-serving" => Some(Self::Serving),
            _ => None,
        }
    }

    /// The usage that makes the certificate what it is.
    fn purpose(self) -> &'static str {
        match self {
            Self::Client => "client auth",
            Self::Serving => "server auth",
        }
    }
}

/// What a certificate signing request asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsrContents {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    /// Subject alternative names of other kinds (email, URI).
    pub other_names: usize,
}

/// The subject and alternative names of `csr_pem`.
pub fn csr_contents(csr_pem: &str) -> Result<CsrContents, PkiError> {
    let params = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
    let dn = &params.params.distinguished_name;
    let text = |v: &rcgen::DnValue| match v {
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        _ => None,
    };
    let mut out = CsrContents {
        common_name: dn.get(&DnType::CommonName).and_then(text).unwrap_or_default(),
        organizations: dn
            .iter()
            .filter(|(t, _)| **t == DnType::OrganizationName)
            .filter_map(|(_, v)| text(v))
            .collect(),
        ..CsrContents::default()
    };
    for san in &params.params.subject_alt_names {
        match san {
            rcgen::SanType::DnsName(n) => out.dns_names.push(n.as_str().to_string()),
            rcgen::SanType::IpAddress(ip) => out.ips.push(*ip),
            _ => out.other_names += 1,
        }
    }
    Ok(out)
}

/// Checks a node CSR as kube-controller-manager's signers do: the subject `system:node:NAME` in
/// exactly `system:nodes`; usages among digital signature, key encipherment and the kind's own
/// (client auth / server auth), which must be there; a client certificate names no alternative
/// names, a serving one at least one, DNS names and IP addresses only.
pub fn check_node_csr(kind: NodeCertificate, csr: &CsrContents, usages: &[String]) -> Result<(), PkiError> {
    let refused = |m: String| Err(PkiError::Refused(m));
    if csr
        .common_name
        .strip_prefix("system:node:")
        .is_none_or(str::is_empty)
    {
        return refused(format!(
            "subject CN {:?} is not system:node:<name>",
            csr.common_name
        ));
    }
    if csr.organizations != ["system:nodes"] {
        return refused(format!(
            "subject O {:?} is not exactly system:nodes",
            csr.organizations
        ));
    }
    let allowed = ["digital signature", "key encipherment", kind.purpose()];
    if let Some(u) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return refused(format!("usage {u:?} is not allowed for this signer"));
    }
    if !usages.iter().any(|u| u == kind.purpose()) {
        return refused(format!("usages must include {:?}", kind.purpose()));
    }
    let names = csr.dns_names.len() + csr.ips.len();
    match kind {
        NodeCertificate::Client if names + csr.other_names > 0 => {
            refused("a client certificate has no subject alternative names".into())
        }
        NodeCertificate::Serving if csr.other_names > 0 => {
            refused("only DNS names and IP addresses may be subject alternative names".into())
        }
        NodeCertificate::Serving if names == 0 => {
            refused("a serving certificate needs a DNS name or an IP address".into())
        }
        _ => Ok(()),
    }
}

/// Signs the node certificate `csr_pem` asks for with the CA, valid for a year: after
/// [`check_node_csr`], with the kind's extended key usage and, for serving, the requested names.
pub fn sign_node_csr(
    ca_key_pem: &str,
    csr_pem: &str,
    kind: NodeCertificate,
    usages: &[String],
) -> Result<String, PkiError> {
    check_node_csr(kind, &csr_contents(csr_pem)?, usages)?;
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
    let now = time::OffsetDateTime::now_utc();
    csr.params.not_before = now - time::Duration::minutes(5);
    csr.params.not_after = now + time::Duration::days(365);
    csr.params.is_ca = IsCa::NoCa;
    csr.params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    csr.params.extended_key_usages = vec![match kind {
        NodeCertificate::Client => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        NodeCertificate::Serving => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    }];
    if kind == NodeCertificate::Client {
        csr.params.subject_alt_names.clear();
    }
    let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(ca_key_pem)?);
    Ok(csr.signed_by(&issuer)?.pem())
}

/// The pin of the CA that `kubeadm join --discovery-token-ca-cert-hash` takes: `sha256:` and the hex
/// SHA-256 of the CA certificate's DER SubjectPublicKeyInfo.
pub fn ca_cert_hash(ca_pem: &str) -> Result<String, PkiError> {
    let refused = |m: String| PkiError::Refused(m);
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| refused(format!("CA certificate PEM: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents)
        .map_err(|e| refused(format!("CA certificate: {e}")))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// The detached JWS (HS256, keyed with the token's secret, `kid` its id) that kube-controller-manager's
/// bootstrap signer writes into cluster-info as `jws-kubeconfig-<id>`: `header..signature`, the payload
/// (the kubeconfig) left out. A joining node recomputes it to know the server holds its token.
pub fn jws_detached(token_id: &str, token_secret: &str, payload: &str) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = b64(format!(r#"{{"alg":"HS256","kid":"{token_id}"}}"#).as_bytes());
    let signing_input = format!("{header}.{}", b64(payload.as_bytes()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token_secret.as_bytes());
    let signature = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{header}..{}", b64(signature.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(cn: &str, orgs: &[&str], sans: Vec<rcgen::SanType>) -> String {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        params.serialize_request(&key).expect("csr").pem().expect("pem")
    }

    fn usages(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn node_signers_give_only_node_certificates_of_their_kind() {
        let ip = rcgen::SanType::IpAddress("192.168.70.1".parse().expect("ip"));
        let dns = rcgen::SanType::DnsName("n1".try_into().expect("dns"));
        let node = csr("system:node:n1", &["system:nodes"], vec![]);
        let serving = csr("system:node:n1", &["system:nodes"], vec![dns, ip]);
        let client = usages(&["digital signature", "client auth"]);
        let server = usages(&["digital signature", "server auth"]);
        let check =
            |kind, pem: &str, u: &[String]| check_node_csr(kind, &csr_contents(pem).expect("parse"), u);
        assert!(check(NodeCertificate::Client, &node, &client).is_ok());
        assert!(check(NodeCertificate::Serving, &serving, &server).is_ok());
        let contents = csr_contents(&serving).expect("parse");
        assert_eq!(contents.dns_names, ["n1"]);
        assert_eq!(
            contents.ips,
            ["192.168.70.1".parse::<std::net::IpAddr>().expect("ip")]
        );

        let masters = csr("system:node:n1", &["system:masters"], vec![]);
        let admin = csr("admin", &["system:nodes"], vec![]);
        let both = csr("system:node:n1", &["system:nodes", "system:masters"], vec![]);
        for (kind, pem, u, why) in [
            (
                NodeCertificate::Client,
                &masters,
                &client,
                "not exactly system:nodes",
            ),
            (
                NodeCertificate::Client,
                &both,
                &client,
                "not exactly system:nodes",
            ),
            (NodeCertificate::Client, &admin, &client, "is not system:node:"),
            (NodeCertificate::Client, &node, &server, "not allowed"),
            (
                NodeCertificate::Client,
                &serving,
                &client,
                "no subject alternative names",
            ),
            (NodeCertificate::Serving, &node, &server, "needs a DNS name"),
            (
                NodeCertificate::Serving,
                &serving,
                &usages(&["digital signature"]),
                "must include",
            ),
        ] {
            let e = check(kind, pem, u).expect_err(why).to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
