//! Service-account tokens for projected volumes, kept as kubelet's token manager keeps them: asked
//! of the API server with the node's own credentials (a TokenRequest bound to the pod, which is all
//! the Node authorizer lets a node ask for), cached, and renewed once 80 % of their lifetime has
//! passed or after 24 hours, whichever comes first. While the API server is unreachable the cached
//! token is kept for as long as it is valid.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection},
};
use kube::{Api, api::PostParams};
use tracing::{debug, warn};

/// A projected token's lifetime when the volume names none (the API's default).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// Renewed at the latest after this, whatever the token's lifetime (kubelet's maximum TTL).
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

struct Cached {
    token: String,
    requested: Instant,
    lifetime: Duration,
}

impl Cached {
    fn due(&self) -> bool {
        self.requested.elapsed() >= self.lifetime.mul_f64(0.8).min(MAX_AGE)
    }

    fn valid(&self) -> bool {
        self.requested.elapsed() < self.lifetime
    }
}

/// The tokens of one pod's projected volumes, by volume and source.
#[derive(Default)]
pub struct ServiceAccountTokens {
    cached: HashMap<String, Cached>,
}

impl ServiceAccountTokens {
    /// The token for source `key` (volume name and source index) of `pod`: the cached one unless it
    /// is due for renewal.
    pub async fn get(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        key: &str,
        source: &ServiceAccountTokenProjection,
    ) -> Result<String, String> {
        if let Some(c) = self.cached.get(key).filter(|c| !c.due()) {
            return Ok(c.token.clone());
        }
        match request(client, pod, source).await {
            Ok((token, lifetime)) => {
                debug!(pod = ?pod.metadata.name, volume = key, "service-account token renewed");
                self.cached.insert(
                    key.to_string(),
                    Cached {
                        token: token.clone(),
                        requested: Instant::now(),
                        lifetime,
                    },
                );
                Ok(token)
            }
            Err(e) => match self.cached.get(key).filter(|c| c.valid()) {
                Some(c) => {
                    warn!(pod = ?pod.metadata.name, volume = key, error = %e, "service-account token not renewed; keeping the current one");
                    Ok(c.token.clone())
                }
                None => Err(e),
            },
        }
    }
}

/// Asks the API server for a token of the pod's service account, bound to the pod.
async fn request(
    client: &kube::Client,
    pod: &Pod,
    source: &ServiceAccountTokenProjection,
) -> Result<(String, Duration), String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|a| !a.is_empty())
        .unwrap_or("default");
    let expiration = source.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: source
                .audience
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            expiration_seconds: Some(expiration),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let answer = api
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("token for service account {namespace}/{account}: {e}"))?;
    let status = answer
        .status
        .ok_or_else(|| format!("token for service account {namespace}/{account}: no token in the answer"))?;
    // The lifetime granted can be shorter than asked; it is judged from the expiry it names.
    let granted = status
        .expiration_timestamp
        .0
        .duration_since(k8s_openapi::jiff::Timestamp::now())
        .as_secs();
    let lifetime = Duration::from_secs(u64::try_from(granted).unwrap_or(0).min(expiration.max(0) as u64));
    Ok((status.token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_80_percent_or_a_day() {
        let at = |age: u64, lifetime: u64| Cached {
            token: String::new(),
            requested: Instant::now() - Duration::from_secs(age),
            lifetime: Duration::from_secs(lifetime),
        };
        assert!(!at(2000, 3607).due());
        assert!(at(2900, 3607).due());
        assert!(at(2900, 3607).valid());
        assert!(!at(3700, 3607).valid());
        assert!(
            at(24 * 3600 + 1, 365 * 24 * 3600).due(),
            "a year-long token is renewed daily"
        );
    }
}
