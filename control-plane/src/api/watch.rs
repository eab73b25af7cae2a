//! Watches: what a `?watch=true` request on a collection streams. [`plan`] checks the request and
//! gathers the initial events (for `resourceVersion` unset or `0`: the current objects as `ADDED`);
//! [`next_lines`] turns the store's changes after a revision into watch-event lines
//! (`{"type":"ADDED|MODIFIED|DELETED","object":...}`), or the in-stream `ERROR` with a `410 Expired`
//! `Status` once the revision is compacted, which makes clients list again.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ApiError, objects, selector::Selectors};
use crate::store::{EventKind, Store, StoreError};

/// A watch ready to stream.
/// The longest a watch lasts, whatever `timeoutSeconds` asks.
const MAX_WATCH_SECONDS: u64 = 24 * 3600;

pub struct WatchPlan {
    /// Store prefix of the collection.
    pub prefix: String,
    /// Revision after which changes are streamed.
    pub after: u64,
    /// Lines to send first (initial `ADDED` events).
    pub initial: Vec<String>,
    pub selector: Selectors,
    /// When the server ends the stream (`timeoutSeconds`, else 30 minutes).
    pub timeout: Duration,
    /// The kind, for `BOOKMARK` events; `None` unless the client allowed bookmarks.
    pub bookmark_kind: Option<&'static str>,
    /// Events carry one-row Tables (the client listed as a Table) of this kind.
    pub table_kind: Option<&'static str>,
}

/// How often an idle watch that allows bookmarks gets one (kube-apiserver sends them about once a
/// minute), so a client resuming after a disconnect starts from a recent revision.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// A `BOOKMARK` event line at `revision`; `initial_end` marks the end of the initial events of a
/// `sendInitialEvents` watch.
pub fn bookmark(kind: &str, revision: u64, initial_end: bool) -> String {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        "BOOKMARK",
        &json!({"kind": kind, "apiVersion": "v1", "metadata": meta}),
    )
}

/// The watch parameters of a request.
pub struct WatchParams<'a> {
    pub resource_version: Option<&'a str>,
    pub resource_version_match: Option<&'a str>,
    pub timeout_seconds: Option<&'a str>,
    pub allow_bookmarks: bool,
    pub send_initial_events: bool,
}

fn line(kind: &str, object: &Value) -> String {
    format!("{}\n", json!({"type": kind, "object": object}))
}

/// Prepares a watch of `r` (in `namespace`, or everywhere).
pub fn plan(
    store: &Store,
    r: &'static objects::Resource,
    namespace: Option<&str>,
    params: &WatchParams<'_>,
    selector: Selectors,
    as_table: bool,
) -> Result<WatchPlan, ApiError> {
    let table_kind = as_table.then_some(r.kind);
    if params.send_initial_events && params.resource_version_match != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            "WatchOptions",
            "",
            "resourceVersionMatch",
            "Forbidden: sendInitialEvents requires resourceVersionMatch=NotOlderThan",
        ));
    }
    // A day at most: a deadline beyond what a clock can hold would overflow (and no client waits
    // that long without reconnecting).
    let timeout = match params.timeout_seconds {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("timeoutSeconds {t:?} is not a number")))?
                .min(MAX_WATCH_SECONDS),
        ),
        None => Duration::from_secs(1800),
    };
    let prefix = objects::prefix(r, namespace);
    let from_list =
        params.send_initial_events || params.resource_version.is_none_or(|v| v.is_empty() || v == "0");
    let (after, initial) = match params.resource_version.filter(|_| !from_list) {
        Some(v) => (
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion {v:?} is not a resource version"))
            })?,
            Vec::new(),
        ),
        None => {
            // One object decoded at a time: the initial events of 10,000 pods cost their text.
            let mut lines = Vec::new();
            let end = objects::list_each(
                store,
                r,
                namespace,
                &selector,
                &objects::ListOptions::default(),
                &mut |o| {
                    lines.push(line("ADDED", &event_object(table_kind, &o)));
                    Ok(())
                },
            )?;
            let after = end.revision;
            if params.send_initial_events {
                lines.push(bookmark(r.kind, after, true));
            }
            (after, lines)
        }
    };
    Ok(WatchPlan {
        prefix,
        after,
        initial,
        selector,
        timeout,
        bookmark_kind: (params.allow_bookmarks || params.send_initial_events).then_some(r.kind),
        table_kind,
    })
}

/// What an event carries: the object, or a one-row Table of it.
fn event_object(table_kind: Option<&str>, obj: &Value) -> Value {
    match table_kind {
        Some(kind) => super::table::of(
            kind,
            std::slice::from_ref(obj),
            obj.pointer("/metadata/resourceVersion"),
            false,
        ),
        None => obj.clone(),
    }
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
                if !plan.selector.matches(&obj) {
                    continue;
                }
                let kind = match (e.kind, &e.prev) {
                    (EventKind::Delete, _) => "DELETED",
                    (EventKind::Put, None) => "ADDED",
                    (EventKind::Put, Some(_)) => "MODIFIED",
                };
                lines.push(line(kind, &event_object(plan.table_kind, &obj)));
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
