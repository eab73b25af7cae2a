//! `imagePullSecrets`: registry credentials from the pod's Secrets of type
//! `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`: `{"auths": {REGISTRY: {...}}}`) or the older
//! `kubernetes.io/dockercfg` (`.dockercfg`: `{REGISTRY: {...}}`). An entry has `username` and
//! `password`, or `auth` (base64 of `user:password`). As kubelet does, every matching credential is
//! tried in order, then the pull goes anonymous.

use base64::Engine as _;
use berth_runtime::image::RegistryAuth;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret};
use kube::Api;
use tracing::warn;

/// Docker Hub's names for itself, as they appear in docker config files.
const DOCKER_HUB: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

/// `host[:port]` of a docker config key (`https://host:port/v1/`, `host:port`, `host`).
fn key_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or_default().to_ascii_lowercase()
}

fn same_registry(key: &str, registry: &str) -> bool {
    let (key, registry) = (key_host(key), registry.to_ascii_lowercase());
    key == registry || (DOCKER_HUB.contains(&key.as_str()) && DOCKER_HUB.contains(&registry.as_str()))
}

/// The credentials for `registry` in one docker config (either format), in file order.
pub fn credentials_in(config: &[u8], registry: &str) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(config) else {
        return Vec::new();
    };
    let entries = v.get("auths").unwrap_or(&v);
    let Some(map) = entries.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter(|(key, _)| same_registry(key, registry))
        .filter_map(|(_, e)| {
            let field = |n: &str| e.get(n).and_then(|x| x.as_str()).unwrap_or_default().to_string();
            let (user, password) = (field("username"), field("password"));
            if !user.is_empty() || !password.is_empty() {
                return Some((user, password));
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(field("auth"))
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, password) = text.split_once(':')?;
            Some((user.to_string(), password.to_string()))
        })
        .collect()
}

/// The credentials the pod's `imagePullSecrets` hold for `registry`, then anonymous. Secrets that
/// cannot be read are skipped with a warning (kubelet goes on without them too).
pub async fn for_pull(
    client: &kube::Client,
    namespace: &str,
    secrets: &[LocalObjectReference],
    registry: &str,
) -> Vec<RegistryAuth> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut auths = Vec::new();
    for r in secrets {
        let name = r.name.as_str();
        let secret = match api.get(name).await {
            Ok(s) => s,
            Err(e) => {
                warn!(%namespace, secret = name, error = %e, "image pull secret not read");
                continue;
            }
        };
        let data = secret.data.unwrap_or_default();
        for key in [".dockerconfigjson", ".dockercfg"] {
            if let Some(bytes) = data.get(key) {
                auths.extend(
                    credentials_in(&bytes.0, registry)
                        .into_iter()
                        .map(|(u, p)| RegistryAuth::Basic(u, p)),
                );
            }
        }
    }
    auths.push(RegistryAuth::Anonymous);
    auths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_with_password_or_auth_match_their_registry_only() {
        let json = br#"{"auths": {
            "https://reg.example:5000/v1/": {"username": "u1", "password": "p1"},
            "other.example": {"username": "nope", "password": "nope"},
            "reg.example:5000": {"auth": "dTI6cDI6d2l0aC1jb2xvbg=="}
        }}"#;
        assert_eq!(
            credentials_in(json, "reg.example:5000"),
            vec![
                ("u1".to_string(), "p1".to_string()),
                ("u2".to_string(), "p2:with-colon".to_string())
            ]
        );
        assert!(credentials_in(json, "reg.example").is_empty());
        let legacy = br#"{"https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="}}"#;
        assert_eq!(
            credentials_in(legacy, "docker.io"),
            vec![("hub".to_string(), "secret".to_string())]
        );
        assert!(credentials_in(b"not json", "docker.io").is_empty());
    }
}
