//! The kubelet API's serving certificate, as kubelet's `serverTLSBootstrap` gets it: a
//! CertificateSigningRequest to the `kubernetes.io/kubelet-serving` signer for `system:node:NAME`
//! with the node's name and addresses as alternative names, the signed certificate and its key kept
//! in `STATE_DIR/pki/kubelet-server-current.pem` (0600; reused on restart while fresh and covering the
//! node's names) and renewed at 70 % of its lifetime. Until a certificate arrives the API is served
//! with a self-signed one, so `kubectl logs` never waits on an approval; the TLS layer picks up the
//! new certificate for the next handshake, without a restart.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tracing::{info, warn};

use crate::join::{self, NodeCsr};

/// The kubelet-serving signer.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// How long to wait before asking again after a CSR failed or was not signed: doubling from the first
/// to the last, so a cluster where nobody approves serving certificates is not sent a CSR a minute.
const RETRY: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(3600));

/// The certificate handshakes are answered with, replaced when a new one arrives.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// What the node's certificate must cover: its name and its addresses.
#[derive(Clone, Debug)]
pub struct NodeNames {
    pub node: String,
    pub ips: Vec<IpAddr>,
}

impl NodeNames {
    fn sans(&self) -> Vec<rcgen::SanType> {
        let mut sans = Vec::new();
        if let Ok(name) = self.node.clone().try_into() {
            sans.push(rcgen::SanType::DnsName(name));
        }
        sans.extend(self.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        sans
    }

    /// Whether the certificate `pem` names all of them.
    fn covered_by(&self, pem: &[u8]) -> bool {
        let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem) else {
            return false;
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(&pem.contents) else {
            return false;
        };
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return false;
        };
        use x509_parser::extensions::GeneralName;
        let (mut dns, mut ips) = (Vec::new(), Vec::new());
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns.push(n.to_string()),
                GeneralName::IPAddress(b) => ips.extend(ip_of(b)),
                _ => {}
            }
        }
        dns.contains(&self.node) && self.ips.iter().all(|ip| ips.contains(ip))
    }
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A certificate and its key, from PEM.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("key: {e}"))?;
    Ok(CertifiedKey::new(certs, signing))
}

impl ServingCert {
    /// Starts with a self-signed certificate for `names`.
    pub fn self_signed(names: &NodeNames) -> Result<Self, String> {
        let mut subjects = vec![names.node.clone()];
        subjects.extend(names.ips.iter().map(ToString::to_string));
        let made = rcgen::generate_simple_self_signed(subjects).map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| e.to_string())?;
        Ok(ServingCert {
            current: RwLock::new(Arc::new(CertifiedKey::new(
                vec![made.cert.der().clone()],
                signing,
            ))),
        })
    }

    fn install(&self, key: CertifiedKey) {
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
    }
}

/// Where the signed certificate and key are kept, as kubelet names the file.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("pki").join("kubelet-server-current.pem")
}

/// Keeps `serving` on a certificate of the cluster CA for `names`: the kept one while it is fresh
/// and covers them, else a new one by CSR; renewed when due. Runs forever.
pub async fn keep_current(serving: Arc<ServingCert>, client: kube::Client, names: NodeNames, file: PathBuf) {
    let mut retry = RETRY.0;
    loop {
        let kept = std::fs::read(&file).ok().filter(|pem| names.covered_by(pem));
        if let Some(pem) = kept
            && let Some(left) = join::time_to_renewal(&pem, None)
        {
            match certified_key(&pem, &pem) {
                Ok(key) => {
                    serving.install(key);
                    info!(path = %file.display(), "serving kubelet's API with the cluster CA's certificate");
                    tokio::time::sleep(left + Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    warn!(path = %file.display(), error = %e, "kept serving certificate unusable; asking for a new one")
                }
            }
        }
        let csr = NodeCsr {
            signer: KUBELET_SERVING_SIGNER,
            usages: &["digital signature", "server auth"],
            names: names.sans(),
            name_prefix: "node-serving",
        };
        let signed = join::request_certificate(client.clone(), "the API server", &names.node, &csr).await;
        let written = signed.map_err(|e| e.to_string()).and_then(|(cert, key)| {
            join::write_private(&file, format!("{cert}{key}").as_bytes())
                .map_err(|e| format!("{}: {e}", file.display()))
        });
        match written {
            Ok(()) => retry = RETRY.0,
            Err(e) => {
                warn!(error = %e, retry_in = ?retry, "no kubelet serving certificate from the cluster yet (self-signed meanwhile)");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_covers_the_node_only_with_all_its_names() {
        let names = NodeNames {
            node: "n1".into(),
            ips: vec!["192.168.70.1".parse().expect("ip")],
        };
        let cert = |subjects: &[&str]| {
            rcgen::generate_simple_self_signed(subjects.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("cert")
                .cert
                .pem()
        };
        assert!(names.covered_by(cert(&["n1", "192.168.70.1"]).as_bytes()));
        assert!(!names.covered_by(cert(&["n1"]).as_bytes()), "an address missing");
        assert!(
            !names.covered_by(cert(&["n2", "192.168.70.1"]).as_bytes()),
            "another node"
        );
        assert!(!names.covered_by(b"not a certificate"));
        assert!(ServingCert::self_signed(&names).is_ok());
    }
}
