//! Watches: what a `?watch=true` request on a collection streams. [`plan`] checks the request and
//! gathers the initial events (for `resourceVersion` unset or `0`: the current objects as `ADDED`);
//! [`next_lines`] turns the store's changes after a revision into watch-event lines
//! (`{"type":"ADDED|MODIFIED|DELETED","object":...}`), or the in-stream `ERROR` with a `410 Expired`
//! `Status` once the revision is compacted, which makes clients list again.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ApiError, objects, selector::LabelSelector};
use crate::store::{EventKind, Store, StoreError};

/// A watch ready to stream.
pub struct WatchPlan {
    /// Store prefix of the collection.
    pub prefix: String,
    /// Revision after which changes are streamed.
    pub after: u64,
    /// Lines to send first (initial `ADDED` events).
    pub initial: Vec<String>,
    pub selector: LabelSelector,
    /// When the server ends the stream (`timeoutSeconds`, else 30 minutes).
    pub timeout: Duration,
}

fn line(kind: &str, object: &Value) -> String {
    format!("{}\n", json!({"type": kind, "object": object}))
}

/// Prepares a watch of `r` (in `namespace`, or everywhere).
pub fn plan(
    store: &Store,
    r: &objects::Resource,
    namespace: Option<&str>,
    resource_version: Option<&str>,
    selector: LabelSelector,
    timeout_seconds: Option<&str>,
) -> Result<WatchPlan, ApiError> {
    let timeout = match timeout_seconds {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("timeoutSeconds {t:?} is not a number")))?,
        ),
        None => Duration::from_secs(1800),
    };
    let prefix = objects::prefix(r, namespace);
    let (after, initial) = match resource_version.filter(|v| !v.is_empty() && *v != "0") {
        Some(v) => (
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion {v:?} is not a resource version"))
            })?,
            Vec::new(),
        ),
        None => {
            let list = objects::list(store, r, namespace, &selector)?;
            let after = list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let items = list["items"].as_array().cloned().unwrap_or_default();
            (after, items.iter().map(|o| line("ADDED", o)).collect())
        }
    };
    Ok(WatchPlan {
        prefix,
        after,
        initial,
        selector,
        timeout,
    })
}

/// The event lines after `after` (and the new position), or the final `ERROR` line when that history
/// is gone (`Ok((lines, None))`).
pub fn next_lines(store: &Store, plan: &WatchPlan, after: u64) -> (Vec<String>, Option<u64>) {
    match store.events_after(&plan.prefix, after, 256) {
        Ok((events, position)) => {
            let mut lines = Vec::new();
            for e in events {
                let Ok(obj) = objects::render(&e.kv) else {
                    continue;
                };
                if !plan.selector.matches(obj.pointer("/metadata/labels")) {
                    continue;
                }
                let kind = match (e.kind, &e.prev) {
                    (EventKind::Delete, _) => "DELETED",
                    (EventKind::Put, None) => "ADDED",
                    (EventKind::Put, Some(_)) => "MODIFIED",
                };
                lines.push(line(kind, &obj));
            }
            (lines, Some(position))
        }
        Err(e @ StoreError::Compacted { .. }) => {
            let status = ApiError::from_store(e, "", "").to_json();
            (vec![line("ERROR", &status)], None)
        }
        Err(e) => (
            vec![line(
                "ERROR",
                &ApiError::new(500, "InternalError", e.to_string()).to_json(),
            )],
            None,
        ),
    }
}
