//! The key that signs service-account tokens, and the JSON Web Tokens it signs and verifies.
//!
//! Tokens are compact JWS with `alg: ES256` (ECDSA over P-256 with SHA-256), which kube-apiserver
//! accepts for `--service-account-signing-key-file` beside RSA; ring signs and verifies it without an
//! RSA key generator. The key lives in `DATA_DIR/sa.key` (PKCS#8 PEM, 0600) so tokens outlive a
//! restart; control planes sharing one etcd must share that file, as kube-apiserver's replicas share
//! their signing key. The key id (`kid`) is the base64url SHA-256 of the public key's
//! SubjectPublicKeyInfo, as kube-apiserver computes it, so a JWKS consumer can pick the key.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use base64::Engine;
use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, KeyPair},
};
use serde_json::{Value, json};
use thiserror::Error;

/// Errors of loading the key or of checking a token.
#[derive(Debug, Error)]
pub enum JwtError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The key file holds no P-256 PKCS#8 key, or the system's random source failed.
    #[error("service-account signing key: {0}")]
    Key(String),
    /// The token is not a compact JWS of three base64url parts with JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token names another algorithm or key, or its signature does not verify.
    #[error("token not signed by this issuer")]
    Signature,
}

/// DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64url(s: &str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwtError::Malformed("a part is not base64url"))
}

/// The ES256 key that signs service-account tokens.
pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// The key in `path`, made (0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Signer, JwtError> {
        let io = |source| JwtError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let der = pem_body(&pem).ok_or_else(|| JwtError::Key("not a PEM PRIVATE KEY".into()))?;
                Signer::from_pkcs8(&der)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = new_pkcs8()?;
                let pem = to_pem(&der);
                let tmp = path.with_extension("tmp");
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io)?;
                f.write_all(pem.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io)?;
                std::fs::rename(&tmp, path).map_err(io)?;
                Signer::from_pkcs8(&der)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A key held in memory only (tests, benchmarks, `Api::new`): its tokens die with the process.
    pub fn ephemeral() -> Result<Signer, JwtError> {
        Signer::from_pkcs8(&new_pkcs8()?)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Signer, JwtError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| JwtError::Key(e.to_string()))?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let kid = b64url(ring::digest::digest(&ring::digest::SHA256, &spki).as_ref());
        Ok(Signer { key, rng, kid })
    }

    /// The key id tokens carry in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `claims` as a signed compact JWS.
    pub fn sign(&self, claims: &Value) -> Result<String, JwtError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(format!("{input}.{}", b64url(sig.as_ref())))
    }

    /// The claims of `token` if this key signed it (times and audiences are the caller's to judge).
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three parts"));
        };
        let header: Value = serde_json::from_slice(&unb64url(header)?)
            .map_err(|_| JwtError::Malformed("header is not JSON"))?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256")
            || header
                .get("kid")
                .and_then(Value::as_str)
                .is_some_and(|k| k != self.kid)
        {
            return Err(JwtError::Signature);
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        let signed = &token[..token.len() - sig.len() - 1];
        public
            .verify(signed.as_bytes(), &unb64url(sig)?)
            .map_err(|_| JwtError::Signature)?;
        let claims: Value = serde_json::from_slice(&unb64url(claims)?)
            .map_err(|_| JwtError::Malformed("claims are not JSON"))?;
        if !claims.is_object() {
            return Err(JwtError::Malformed("claims are not a JSON object"));
        }
        Ok(claims)
    }

    /// The public key as a JSON Web Key (RFC 7517), for `/openid/v1/jwks`.
    pub fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        // Uncompressed: 0x04, then x and y of 32 bytes each.
        let (x, y) = point[1..].split_at(32);
        json!({"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256", "x": b64url(x), "y": b64url(y)})
    }
}

/// Whether `token` has the shape of a JWT (three dot-separated parts, a JSON header first), so that
/// other bearer tokens are not taken for one.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|&b| b == b'.').count() == 2
}

fn new_pkcs8() -> Result<Vec<u8>, JwtError> {
    let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|e| JwtError::Key(e.to_string()))?;
    Ok(doc.as_ref().to_vec())
}

fn to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = pem.find("-----END PRIVATE KEY-----")?;
    let b64: String = pem.get(start..end)?.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_refuses_tampering() {
        let signer = Signer::ephemeral().expect("key");
        let token = signer
            .sign(&json!({"sub": "system:serviceaccount:a:b"}))
            .expect("sign");
        assert!(looks_like_jwt(&token));
        assert_eq!(
            signer.verify(&token).expect("valid")["sub"],
            "system:serviceaccount:a:b"
        );
        // Claims changed after signing.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64url(br#"{"sub":"system:masters"}"#),
            parts[2]
        );
        assert!(matches!(signer.verify(&forged), Err(JwtError::Signature)));
        // Another key's token.
        let other = Signer::ephemeral().expect("key");
        assert!(other.verify(&token).is_err());
        // "alg": "none" is never accepted.
        let none = format!("{}.{}.", b64url(br#"{"alg":"none"}"#), parts[1]);
        assert!(signer.verify(&none).is_err());
        assert!(matches!(signer.verify("a.b"), Err(JwtError::Malformed(_))));
    }

    #[test]
    fn the_key_file_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("berth-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("sa.key");
        let first = Signer::load_or_create(&path).expect("made");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = first.sign(&json!({"x": 1})).expect("sign");
        let again = Signer::load_or_create(&path).expect("loaded");
        assert_eq!(again.kid(), first.kid());
        assert!(again.verify(&token).is_ok());
        let jwk = again.jwk();
        assert_eq!(jwk["kid"], first.kid());
        assert_eq!(
            unb64url(jwk["x"].as_str().unwrap_or_default())
                .map(|x| x.len())
                .ok(),
            Some(32)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
