//! kube-controller-manager's tokens controller, for the Secrets people still make by hand: a Secret of
//! type `kubernetes.io/service-account-token` annotated `kubernetes.io/service-account.name: SA` gets
//! a non-expiring token of that account (`data.token`), the cluster CA (`ca.crt`) and the namespace,
//! and the account's UID as `kubernetes.io/service-account.uid` (Kubernetes' documented way to a
//! long-lived token for CI systems and dashboards). The token lives as long as the Secret: the
//! authenticator checks that the Secret still holds it. A Secret whose account is gone, or was
//! replaced (another UID), is deleted, as Kubernetes does.

use base64::Engine;
use serde_json::{Value, json};

use super::{
    Change, Controller, ControllerError, Ctx,
    cache::{Cache, str_at},
    objects::{DeleteOptions, Part},
};
use crate::api::serviceaccounts::{
    LEGACY_ISSUER, LEGACY_TOKEN_ACCOUNT_ANNOTATION as NAME_ANNOTATION, LEGACY_TOKEN_TYPE,
};

/// The annotation that ties the Secret to its account's UID (its name's is the API's).
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

pub struct LegacyTokenController;

impl Controller for LegacyTokenController {
    fn name(&self) -> &'static str {
        "tokens"
    }

    fn observe(&mut self, change: &Change<'_>, _cache: &Cache, keys: &mut Vec<String>) {
        let is_token = |v: Option<&Value>| {
            v.is_some_and(|s| s.get("type").and_then(Value::as_str) == Some(LEGACY_TOKEN_TYPE))
        };
        match change.plural {
            "secrets" if is_token(change.new) => keys.push(change.key.to_string()),
            // An account deleted or replaced: its namespace's token Secrets are looked at again
            // (a new account has none yet that are not queued already by their own event).
            "serviceaccounts" => {
                let uid = |v: Option<&Value>| v.and_then(|a| a.pointer("/metadata/uid")).cloned();
                if change.old.is_some() && uid(change.old) != uid(change.new) {
                    keys.push(change.key.to_string());
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, ctx: &mut Ctx<'_>) -> Result<(), ControllerError> {
        let Some((resource, Some(namespace), name)) = super::parse_key(key) else {
            return Ok(());
        };
        match resource.plural {
            "serviceaccounts" => {
                for secret in super::list(ctx.store, "secrets", Some(namespace))? {
                    if secret.get("type").and_then(Value::as_str) == Some(LEGACY_TOKEN_TYPE)
                        && secret
                            .pointer(&format!(
                                "/metadata/annotations/{}",
                                pointer_escape(NAME_ANNOTATION)
                            ))
                            .and_then(Value::as_str)
                            == Some(name)
                    {
                        sync_secret(ctx, namespace, &str_at(&secret, "/metadata/name"))?;
                    }
                }
                Ok(())
            }
            "secrets" => sync_secret(ctx, namespace, name),
            _ => Ok(()),
        }
    }
}

/// `/` and `~` in a JSON pointer segment.
fn pointer_escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn sync_secret(ctx: &mut Ctx<'_>, namespace: &str, name: &str) -> Result<(), ControllerError> {
    let Some(secret) = super::read(ctx.store, &format!("/registry/secrets/{namespace}/{name}")) else {
        return Ok(());
    };
    if secret.get("type").and_then(Value::as_str) != Some(LEGACY_TOKEN_TYPE)
        || secret.pointer("/metadata/deletionTimestamp").is_some()
    {
        return Ok(());
    }
    let annotation = |a: &str| str_at(&secret, &format!("/metadata/annotations/{}", pointer_escape(a)));
    let account_name = annotation(NAME_ANNOTATION);
    let account = super::read(
        ctx.store,
        &format!("/registry/serviceaccounts/{namespace}/{account_name}"),
    );
    let account_uid = account.as_ref().map(|a| str_at(a, "/metadata/uid"));
    let recorded_uid = annotation(UID_ANNOTATION);
    let gone = match &account_uid {
        None => true,
        Some(uid) => !recorded_uid.is_empty() && *uid != recorded_uid,
    };
    if gone {
        return super::delete(
            ctx.store,
            "secrets",
            Some(namespace),
            name,
            &DeleteOptions::default(),
        );
    }
    let has_token = secret
        .pointer("/data/token")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if has_token && !recorded_uid.is_empty() {
        return Ok(());
    }
    let (Some(signer), Some(uid)) = (ctx.config.token_signer.as_ref(), account_uid) else {
        return Ok(());
    };
    let claims = json!({
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/secret.name": name,
        "kubernetes.io/serviceaccount/service-account.name": account_name,
        "kubernetes.io/serviceaccount/service-account.uid": uid,
        "sub": format!("system:serviceaccount:{namespace}:{account_name}"),
    });
    let token = signer.sign(&claims).map_err(ControllerError::Signing)?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut data = json!({"token": b64(&token), "namespace": b64(namespace)});
    if let Some(ca) = &ctx.config.ca_pem {
        data["ca.crt"] = json!(b64(ca));
    }
    let patch = json!({"metadata": {"annotations": {UID_ANNOTATION: uid}}, "data": data});
    super::patch(ctx.store, "secrets", Some(namespace), name, &patch, Part::Main).map(|_| ())
}
