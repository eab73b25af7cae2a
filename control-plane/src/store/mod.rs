//! The embedded store: an MVCC key-value store with etcd's semantics (global gapless revisions, per-key
//! create and modify revisions, compare-and-swap on the modify revision, watch from a revision,
//! compaction), kept in one SQLite file ([`log`]) with the current state and recent changes in memory.
//!
//! Why this shape: the Kubernetes API is defined in terms of etcd's model (resourceVersion is the
//! revision; optimistic concurrency is compare-and-swap; watches resume from a revision and get
//! `410 Gone` once it is compacted), so the API server above can be the same whether the store is this
//! file or etcd. One writer assigns revisions under a lock and appends to the log before it answers,
//! so every acknowledged write is on disk (`synchronous = FULL`) and revisions have no gaps. Reads of the
//! current state never touch SQLite; history (lists at an older revision, watches that fell behind the
//! in-memory ring of recent events) is read from the log.
//!
//! Two backends ([`Backend`]): the SQLite file, or etcd, whose changes a mirror thread applies to the
//! same in-memory state, so reads and watches are served the same way over both.

pub mod etcd;
mod log;
mod watch;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use thiserror::Error;

pub use log::{COMMIT_BUCKETS, CommitTimes};
pub use watch::Watcher;

/// Errors of the store. The API server maps them to Kubernetes `Status` answers.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Create of a key that exists (409 AlreadyExists).
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    /// Update or delete of a key that does not exist (404 NotFound).
    #[error("{key} not found")]
    NotFound { key: String },
    /// Compare-and-swap failed: the key changed since the caller read it (409 Conflict).
    #[error("{key} was modified: expected revision {expected}, it is at {actual}")]
    Conflict { key: String, expected: u64, actual: u64 },
    /// The requested revision's history is compacted away (410 Gone, reason Expired).
    #[error("revision {requested} is compacted (oldest available {oldest})")]
    Compacted { requested: u64, oldest: u64 },
    /// The requested revision does not exist yet.
    #[error("revision {requested} is newer than the store's {current}")]
    FutureRevision { requested: u64, current: u64 },
    /// The SQLite file failed (disk full, corruption, permissions).
    #[error("store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// etcd could not be reached or answered with an error.
    #[error("{0}")]
    Etcd(String),
}

/// One key's value at a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    /// Shared: the same bytes serve the current state, watch events and list answers.
    pub value: Arc<[u8]>,
    /// Revision that created the key (for this life of it: a key deleted and created again starts anew).
    pub create_revision: u64,
    /// Revision of the key's last change: the compare-and-swap token (the object's resourceVersion).
    pub mod_revision: u64,
}

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv` holds the key's last value with `mod_revision` set to the revision of
/// the delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The value the change replaced, when known.
    pub prev: Option<KeyValue>,
}

/// A page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the list reflects.
    pub revision: u64,
    /// Whether keys follow the last item (ask again with `start_after` = its key).
    pub more: bool,
}

/// How many recent events are kept in memory for watchers.
pub const DEFAULT_RECENT_EVENTS: usize = 8192;

/// Where the data is durable.
enum Backend {
    /// The SQLite log. Appended to with the state's lock held (the state's lock is always taken
    /// first), so revisions are written in the order they are assigned.
    File(Mutex<log::Log>),
    /// etcd: it assigns revisions; the mirror thread applies its changes to the state.
    Etcd(etcd::Etcd),
}

struct Inner {
    current: BTreeMap<String, KeyValue>,
    revision: u64,
    compacted: u64,
    /// Recent events, oldest first, in revision order.
    recent: VecDeque<Event>,
    recent_capacity: usize,
    /// `recent` holds every event after this revision.
    ring_floor: u64,
}

/// The store. Cheap to share (`Arc<Store>`); every method is safe to call from any thread.
pub struct Store {
    inner: Mutex<Inner>,
    /// Signalled whenever the etcd mirror applied changes (writers wait for their revision).
    mirrored: std::sync::Condvar,
    notify: tokio::sync::watch::Sender<u64>,
    path: PathBuf,
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the store in the SQLite file at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, DEFAULT_RECENT_EVENTS)
    }

    /// [`open`](Self::open), keeping `recent_events` events in memory for watchers.
    pub fn open_with(path: &Path, recent_events: usize) -> Result<Store, StoreError> {
        let log = log::Log::open(path)?;
        let (items, revision, compacted) = log.load()?;
        let current = items.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let (notify, _) = tokio::sync::watch::channel(revision);
        Ok(Store {
            inner: Mutex::new(Inner {
                current,
                revision,
                compacted,
                recent: VecDeque::new(),
                recent_capacity: recent_events.max(1),
                ring_floor: revision,
            }),
            mirrored: std::sync::Condvar::new(),
            notify,
            path: path.to_path_buf(),
            backend: Backend::File(Mutex::new(log)),
        })
    }

    /// Opens the store over etcd at `endpoint` (`http://host:port`): loads everything under
    /// `/registry/` and mirrors etcd's changes from then on (a thread that lives as long as the store).
    pub fn open_etcd(endpoint: &str, tls: Option<etcd::EtcdTls>) -> Result<Arc<Store>, StoreError> {
        let client = etcd::Etcd::new(endpoint, tls)?;
        let (items, revision) = client.range("/registry/", None)?;
        let (notify, _) = tokio::sync::watch::channel(revision);
        let store = Arc::new(Store {
            inner: Mutex::new(Inner {
                current: items.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
                revision,
                compacted: 0,
                recent: VecDeque::new(),
                recent_capacity: DEFAULT_RECENT_EVENTS,
                ring_floor: revision,
            }),
            mirrored: std::sync::Condvar::new(),
            notify,
            path: PathBuf::from(endpoint),
            backend: Backend::Etcd(client.clone()),
        });
        let weak = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("etcd-mirror".into())
            .spawn(move || mirror(weak, client))
            .map_err(|e| StoreError::Etcd(format!("starting the etcd mirror: {e}")))?;
        Ok(store)
    }

    /// Applies changes etcd reported (in revision order) and wakes whoever waits for them.
    fn apply_mirrored(&self, events: Vec<etcd::WatchedEvent>) {
        let mut inner = self.lock();
        for e in events {
            if e.kv.mod_revision <= inner.revision {
                continue;
            }
            let kind = if e.deleted {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            let kv = if e.deleted {
                KeyValue {
                    mod_revision: e.kv.mod_revision,
                    ..e.prev.clone().unwrap_or(e.kv.clone())
                }
            } else {
                e.kv
            };
            inner.revision = kv.mod_revision;
            if e.deleted {
                inner.current.remove(&kv.key);
            } else {
                inner.current.insert(kv.key.clone(), kv.clone());
            }
            push_recent(
                &mut inner,
                Event {
                    kind,
                    kv,
                    prev: e.prev,
                },
            );
        }
        let revision = inner.revision;
        drop(inner);
        self.mirrored.notify_all();
        self.notify.send_replace(revision);
    }

    /// After etcd compacted history the mirror missed: reload the state; older revisions are gone.
    fn reload_mirror(&self, client: &etcd::Etcd, compacted: u64) -> Result<(), StoreError> {
        let (items, revision) = client.range("/registry/", None)?;
        let mut inner = self.lock();
        inner.current = items.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        inner.revision = revision;
        inner.compacted = inner.compacted.max(compacted);
        inner.recent.clear();
        inner.ring_floor = revision;
        drop(inner);
        self.mirrored.notify_all();
        self.notify.send_replace(revision);
        Ok(())
    }

    /// Waits until the mirror has applied `revision` (a write's own), so the writer reads it back.
    fn wait_mirrored(&self, revision: u64) -> Result<(), StoreError> {
        let inner = self.lock();
        let (inner, timeout) = self
            .mirrored
            .wait_timeout_while(inner, std::time::Duration::from_secs(10), |i| {
                i.revision < revision
            })
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() && inner.revision < revision {
            return Err(StoreError::Etcd(format!(
                "etcd acknowledged revision {revision} but its watch did not deliver it within 10 s"
            )));
        }
        Ok(())
    }

    /// A write through etcd: one transaction comparing `compare` on `key`, then putting `value` (or
    /// deleting). Returns the revision and the previous (success) or current (failure) value.
    fn etcd_write(
        &self,
        client: &etcd::Etcd,
        key: &str,
        compare: serde_json::Value,
        value: Option<&[u8]>,
    ) -> Result<(bool, u64, Option<KeyValue>), StoreError> {
        let (ok, revision, kv) = client.txn(key, compare, value)?;
        if ok {
            self.wait_mirrored(revision)?;
        }
        Ok((ok, revision, kv))
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands `apply` every event under `prefix` after `*position`, up to the current revision, and
    /// advances `*position`: how an in-memory index follows the store. `Err` when those events were
    /// compacted away (the index is then rebuilt from a list).
    pub fn catch_up(
        &self,
        prefix: &str,
        position: &mut u64,
        mut apply: impl FnMut(&Event),
    ) -> Result<(), StoreError> {
        loop {
            let (events, next) = self.events_after(prefix, *position, 4096)?;
            events.iter().for_each(&mut apply);
            let done = next >= self.revision() || next == *position;
            *position = next;
            if done {
                return Ok(());
            }
        }
    }

    /// How long the embedded store's commits to disk took (`None` with etcd).
    pub fn commit_times(&self) -> Option<CommitTimes> {
        match &self.backend {
            Backend::File(log) => Some(lock_log(log).commit_times().clone()),
            Backend::Etcd(_) => None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A writer that panicked left the state as it was before its write (the state is updated only
        // after the log append succeeded): keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest revision.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// The revision history is compacted up to (older revisions are gone).
    pub fn compacted_revision(&self) -> u64 {
        self.lock().compacted
    }

    /// How many objects each resource has (`/registry/<resource>/...`; allocations left out).
    pub fn count_by_resource(&self) -> BTreeMap<String, usize> {
        let inner = self.lock();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut last: Option<(&str, usize)> = None;
        for key in inner.current.keys() {
            let Some(resource) = key.strip_prefix("/registry/").and_then(|k| k.split('/').next()) else {
                continue;
            };
            // Keys are sorted: count runs of one resource, then store them once.
            match &mut last {
                Some((r, n)) if *r == resource => *n += 1,
                _ => {
                    if let Some((r, n)) = last.take() {
                        counts.insert(r.to_string(), n);
                    }
                    last = Some((resource, 1));
                }
            }
        }
        if let Some((r, n)) = last {
            counts.insert(r.to_string(), n);
        }
        counts.remove("allocations");
        counts
    }

    /// A receiver of the newest revision, for waiting on changes (`changed().await`).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.lock().current.get(key).cloned()
    }

    /// Creates `key`; fails if it exists.
    pub fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let log = match &self.backend {
            Backend::File(log) => log,
            Backend::Etcd(client) => return self.create_in_etcd(client, key, value),
        };
        let mut inner = self.lock();
        if inner.current.contains_key(key) {
            return Err(StoreError::AlreadyExists { key: key.into() });
        }
        let revision = inner.revision + 1;
        let kv = KeyValue {
            key: key.to_string(),
            value: value.into(),
            create_revision: revision,
            mod_revision: revision,
        };
        // A key created again after a delete builds on its tombstone (the log's per-key chain).
        let prev_revision = lock_log(log).last_revision_of(key)?;
        self.commit(&mut inner, log, kv.clone(), prev_revision, EventKind::Put, None)?;
        Ok(kv)
    }

    /// [`create`](Self::create) as an etcd transaction: put if the key's create revision is 0.
    fn create_in_etcd(&self, client: &etcd::Etcd, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let compare = serde_json::json!({"target": "CREATE", "create_revision": "0", "result": "EQUAL"});
        let (ok, revision, _) = self.etcd_write(client, key, compare, Some(&value))?;
        if !ok {
            return Err(StoreError::AlreadyExists { key: key.into() });
        }
        Ok(KeyValue {
            key: key.to_string(),
            value: value.into(),
            create_revision: revision,
            mod_revision: revision,
        })
    }

    /// Replaces `key`'s value if its modify revision is `expected` (or unconditionally when `None`).
    pub fn update(&self, key: &str, value: Vec<u8>, expected: Option<u64>) -> Result<KeyValue, StoreError> {
        let log = match &self.backend {
            Backend::File(log) => log,
            Backend::Etcd(client) => {
                let (ok, revision, kv) =
                    self.etcd_write(client, key, etcd_compare(expected), Some(&value))?;
                let prev = etcd_outcome(key, ok, expected, kv)?;
                return Ok(KeyValue {
                    key: key.to_string(),
                    value: value.into(),
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                });
            }
        };
        let mut inner = self.lock();
        let old = current_as_expected(&inner, key, expected)?;
        let kv = KeyValue {
            key: key.to_string(),
            value: value.into(),
            create_revision: old.create_revision,
            mod_revision: inner.revision + 1,
        };
        let prev_revision = old.mod_revision;
        self.commit(
            &mut inner,
            log,
            kv.clone(),
            prev_revision,
            EventKind::Put,
            Some(old),
        )?;
        Ok(kv)
    }

    /// Several [`update`](Self::update)s committed together: one transaction, one sync to disk, for
    /// a writer with many independent changes at hand (the scheduler's bindings). Each write is checked
    /// on its own (a conflict fails that write only, as separate updates would); the outer error means
    /// the commit itself failed and nothing was written.
    pub fn update_many(
        &self,
        writes: Vec<(String, Vec<u8>, Option<u64>)>,
    ) -> Result<Vec<Result<KeyValue, StoreError>>, StoreError> {
        let Backend::File(log) = &self.backend else {
            return Ok(writes
                .into_iter()
                .map(|(key, value, expected)| self.update(&key, value, expected))
                .collect());
        };
        let mut inner = self.lock();
        let mut results = Vec::with_capacity(writes.len());
        // (new value, the value it replaces), in revision order.
        let mut accepted: Vec<(KeyValue, KeyValue)> = Vec::new();
        let mut written: HashMap<String, usize> = HashMap::new();
        for (key, value, expected) in writes {
            let old = match written.get(&key) {
                Some(&i) => {
                    let current = accepted[i].0.clone();
                    match expected {
                        Some(e) if e != current.mod_revision => Err(StoreError::Conflict {
                            key: key.clone(),
                            expected: e,
                            actual: current.mod_revision,
                        }),
                        _ => Ok(current),
                    }
                }
                None => current_as_expected(&inner, &key, expected),
            };
            let old = match old {
                Ok(old) => old,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let kv = KeyValue {
                key: key.clone(),
                value: value.into(),
                create_revision: old.create_revision,
                mod_revision: inner.revision + 1 + accepted.len() as u64,
            };
            written.insert(key, accepted.len());
            results.push(Ok(kv.clone()));
            accepted.push((kv, old));
        }
        if accepted.is_empty() {
            return Ok(results);
        }
        let rows: Vec<log::Row<'_>> = accepted
            .iter()
            .map(|(kv, old)| log::Row {
                revision: kv.mod_revision,
                key: &kv.key,
                create_revision: kv.create_revision,
                prev_revision: old.mod_revision,
                deleted: false,
                value: &kv.value,
            })
            .collect();
        lock_log(log).append(&rows)?;
        drop(rows);
        for (kv, old) in accepted {
            inner.revision = kv.mod_revision;
            inner.current.insert(kv.key.clone(), kv.clone());
            push_recent(
                &mut inner,
                Event {
                    kind: EventKind::Put,
                    kv,
                    prev: Some(old),
                },
            );
        }
        self.notify.send_replace(inner.revision);
        Ok(results)
    }

    /// Deletes `key` if its modify revision is `expected` (or unconditionally when `None`). Returns its
    /// last value, with `mod_revision` the revision of the delete.
    pub fn delete(&self, key: &str, expected: Option<u64>) -> Result<KeyValue, StoreError> {
        let log = match &self.backend {
            Backend::File(log) => log,
            Backend::Etcd(client) => {
                let (ok, revision, kv) = self.etcd_write(client, key, etcd_compare(expected), None)?;
                let prev = etcd_outcome(key, ok, expected, kv)?;
                return Ok(KeyValue {
                    mod_revision: revision,
                    ..prev
                });
            }
        };
        let mut inner = self.lock();
        let old = current_as_expected(&inner, key, expected)?;
        let gone = KeyValue {
            mod_revision: inner.revision + 1,
            ..old.clone()
        };
        let prev_revision = old.mod_revision;
        self.commit(
            &mut inner,
            log,
            gone.clone(),
            prev_revision,
            EventKind::Delete,
            Some(old),
        )?;
        Ok(gone)
    }

    /// Appends one change to the log (durable), then applies it to memory and wakes watchers.
    fn commit(
        &self,
        inner: &mut Inner,
        log: &Mutex<log::Log>,
        kv: KeyValue,
        prev_revision: u64,
        kind: EventKind,
        prev: Option<KeyValue>,
    ) -> Result<(), StoreError> {
        let deleted = kind == EventKind::Delete;
        lock_log(log).append(&[log::Row {
            revision: kv.mod_revision,
            key: &kv.key,
            create_revision: kv.create_revision,
            prev_revision,
            deleted,
            value: if deleted { &[] } else { &kv.value },
        }])?;
        inner.revision = kv.mod_revision;
        if deleted {
            inner.current.remove(&kv.key);
        } else {
            inner.current.insert(kv.key.clone(), kv.clone());
        }
        push_recent(inner, Event { kind, kv, prev });
        self.notify.send_replace(inner.revision);
        Ok(())
    }

    /// Keys under `prefix`, in key order, after `start_after`, at most `limit` (0: all), as of `at`
    /// (`None`: now).
    pub fn list(
        &self,
        prefix: &str,
        at: Option<u64>,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListResult, StoreError> {
        let inner = self.lock();
        let revision = at.unwrap_or(inner.revision);
        if revision > inner.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: inner.revision,
            });
        }
        let mut items: Vec<KeyValue> = if revision == inner.revision {
            let lower = start_after.unwrap_or(prefix);
            inner
                .current
                .range(lower.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(k, _)| start_after.is_none_or(|s| k.as_str() > s))
                .take(if limit == 0 { usize::MAX } else { limit + 1 })
                .map(|(_, v)| v.clone())
                .collect()
        } else {
            if revision < inner.compacted {
                return Err(StoreError::Compacted {
                    requested: revision,
                    oldest: inner.compacted,
                });
            }
            let at = match &self.backend {
                Backend::File(log) => lock_log(log).list_at(prefix, revision)?,
                Backend::Etcd(client) => client.range(prefix, Some(revision))?.0,
            };
            at.into_iter()
                .filter(|kv| start_after.is_none_or(|s| kv.key.as_str() > s))
                .take(if limit == 0 { usize::MAX } else { limit + 1 })
                .collect()
        };
        let more = limit != 0 && items.len() > limit;
        items.truncate(if limit == 0 { items.len() } else { limit });
        Ok(ListResult {
            items,
            revision,
            more,
        })
    }

    /// Watches changes under `prefix` after revision `after` (`Compacted` if that history is gone).
    pub fn watch(&self, prefix: &str, after: u64) -> Result<Watcher<'_>, StoreError> {
        let inner = self.lock();
        if after < inner.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: inner.compacted,
            });
        }
        if after > inner.revision {
            return Err(StoreError::FutureRevision {
                requested: after,
                current: inner.revision,
            });
        }
        Ok(Watcher::new(self, prefix, after))
    }

    /// Events under `prefix` after revision `after`, at most `limit` of them, oldest first, and the
    /// revision up to which the history was scanned (the watcher's next position). Served from the
    /// in-memory ring when it reaches back that far, else from the log.
    pub fn events_after(
        &self,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, u64), StoreError> {
        let inner = self.lock();
        if after < inner.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: inner.compacted,
            });
        }
        let limit = limit.max(1);
        if after >= inner.ring_floor {
            let start = inner.recent.partition_point(|e| e.kv.mod_revision <= after);
            let mut out = Vec::new();
            let mut scanned = inner.revision;
            for e in inner.recent.iter().skip(start) {
                if out.len() == limit {
                    scanned = e.kv.mod_revision - 1;
                    break;
                }
                if e.kv.key.starts_with(prefix) {
                    out.push(e.clone());
                }
            }
            return Ok((out, scanned));
        }
        // Behind the ring: read a bounded window of revisions from the log (etcd's mirror keeps no
        // older history: the watcher lists again, as with kube-apiserver's watch cache).
        let upto = after.saturating_add(limit as u64).min(inner.revision);
        match &self.backend {
            Backend::File(log) => Ok((lock_log(log).events(prefix, after, upto)?, upto)),
            Backend::Etcd(_) => Err(StoreError::Compacted {
                requested: after,
                oldest: inner.ring_floor,
            }),
        }
    }

    /// Forgets history up to `revision` (at most the newest revision): lists at older revisions and
    /// watches from before it get `Compacted`. Returns how many log rows went.
    pub fn compact(&self, revision: u64) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let target = revision.min(inner.revision);
        if target <= inner.compacted {
            return Ok(0);
        }
        let removed = match &self.backend {
            Backend::File(log) => lock_log(log).compact(target)?,
            Backend::Etcd(client) => {
                client.compact(target)?;
                0
            }
        };
        inner.compacted = target;
        Ok(removed)
    }
}

/// The log, locked (after the state's lock, by whoever holds that). A writer that panicked left no
/// half-written row: SQLite's transaction rolled back.
fn lock_log(log: &Mutex<log::Log>) -> MutexGuard<'_, log::Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds an event to the ring of recent ones, dropping the oldest when full.
fn push_recent(inner: &mut Inner, event: Event) {
    if inner.recent.len() >= inner.recent_capacity
        && let Some(old) = inner.recent.pop_front()
    {
        inner.ring_floor = old.kv.mod_revision;
    }
    inner.recent.push_back(event);
}

/// The etcd comparison for a write expecting modify revision `expected` (or just that the key exists).
fn etcd_compare(expected: Option<u64>) -> serde_json::Value {
    match expected {
        Some(e) => serde_json::json!({"target": "MOD", "mod_revision": e.to_string(), "result": "EQUAL"}),
        None => serde_json::json!({"target": "CREATE", "create_revision": "0", "result": "GREATER"}),
    }
}

/// What an etcd write's comparison outcome means: the previous value, or the error.
fn etcd_outcome(
    key: &str,
    ok: bool,
    expected: Option<u64>,
    kv: Option<KeyValue>,
) -> Result<KeyValue, StoreError> {
    match (ok, kv) {
        (true, Some(prev)) => Ok(prev),
        (true, None) | (false, None) => Err(StoreError::NotFound { key: key.into() }),
        (false, Some(current)) => Err(StoreError::Conflict {
            key: key.into(),
            expected: expected.unwrap_or(0),
            actual: current.mod_revision,
        }),
    }
}

/// Follows etcd's changes into the store's memory until the store is dropped; reconnects after
/// errors, reloads after a compaction it missed.
fn mirror(store: std::sync::Weak<Store>, client: etcd::Etcd) {
    loop {
        let Some(s) = store.upgrade() else { return };
        let from = s.revision() + 1;
        drop(s);
        match client.watch("/registry/", from) {
            Ok(mut stream) => loop {
                let message = stream.next_message();
                let Some(s) = store.upgrade() else { return };
                match message {
                    Ok(etcd::WatchMessage::Events(events)) => s.apply_mirrored(events),
                    Ok(etcd::WatchMessage::Compacted(at)) => {
                        if let Err(e) = s.reload_mirror(&client, at) {
                            tracing::warn!(error = %e, "etcd mirror: reloading after a compaction");
                        }
                        break;
                    }
                    Ok(etcd::WatchMessage::Other) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd mirror: the watch broke; reconnecting");
                        break;
                    }
                }
            },
            Err(e) => tracing::warn!(error = %e, "etcd mirror: cannot watch; retrying"),
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The current value of `key`, if it is at modify revision `expected` (any, when `None`).
fn current_as_expected(inner: &Inner, key: &str, expected: Option<u64>) -> Result<KeyValue, StoreError> {
    let current = inner
        .current
        .get(key)
        .cloned()
        .ok_or_else(|| StoreError::NotFound { key: key.into() })?;
    match expected {
        Some(e) if e != current.mod_revision => Err(StoreError::Conflict {
            key: key.into(),
            expected: e,
            actual: current.mod_revision,
        }),
        _ => Ok(current),
    }
}

#[cfg(test)]
mod tests;
