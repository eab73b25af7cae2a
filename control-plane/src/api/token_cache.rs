//! Service-account tokens whose signature was verified, remembered with their claims: a workload's
//! next requests cost a hash lookup instead of an ECDSA verification (the expensive part of
//! authenticating them). Everything that can change is still checked on every request: the token's
//! lifetime, and that its service account and bound object are still the ones it was issued for, so
//! a deleted pod's token stops working at once (kube-apiserver caches the whole answer for 10 s).

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use serde_json::Value;

/// Entries kept at most; past it, those of expired tokens go, then everything (a flood of distinct
/// valid tokens costs verifications, never memory).
const CAPACITY: usize = 10_000;

/// Verified claims by the SHA-256 of the token (the token itself is not kept).
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Arc<Value>>>,
}

fn key(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

impl TokenCache {
    /// The claims of `token`, from memory or from `verify` (the signature check); failures are not
    /// remembered. `now` (Unix seconds) decides which entries are stale when the cache is full.
    pub fn claims(
        &self,
        token: &str,
        now: i64,
        verify: impl FnOnce() -> Option<Value>,
    ) -> Option<Arc<Value>> {
        let key = key(token);
        if let Some(claims) = self.entries.lock().ok().and_then(|e| e.get(&key).cloned()) {
            return Some(claims);
        }
        let claims = Arc::new(verify()?);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                entries.retain(|_, c| c.get("exp").and_then(Value::as_i64).is_some_and(|exp| exp > now));
                if entries.len() >= CAPACITY {
                    entries.clear();
                }
            }
            entries.insert(key, Arc::clone(&claims));
        }
        Some(claims)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn verified_claims_are_remembered_failures_are_not() {
        let cache = TokenCache::default();
        let mut calls = 0;
        let mut verify = |answer: Option<Value>| {
            calls += 1;
            answer
        };
        let claims = json!({"exp": 100});
        assert_eq!(
            cache.claims("a", 0, || verify(Some(claims.clone()))).as_deref(),
            Some(&claims)
        );
        assert_eq!(
            cache.claims("a", 0, || verify(None)).as_deref(),
            Some(&claims),
            "remembered"
        );
        assert_eq!(cache.claims("b", 0, || verify(None)), None);
        assert!(
            cache.claims("b", 0, || verify(Some(json!({})))).is_some(),
            "a failure is not kept"
        );
        assert_eq!(calls, 3);
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first() {
        let cache = TokenCache::default();
        for i in 0..CAPACITY {
            let exp = if i % 2 == 0 { 10 } else { 1000 };
            cache.claims(&i.to_string(), 0, || Some(json!({"exp": exp})));
        }
        cache.claims("new", 500, || Some(json!({"exp": 1000})));
        let kept = cache.entries.lock().map(|e| e.len()).unwrap_or(0);
        assert_eq!(kept, CAPACITY / 2 + 1);
    }
}
