//! The durable half of the store: one SQLite table holding every revision (kine's layout, simplified),
//! in WAL mode with `synchronous = FULL`, so a write is on disk before [`Log::append`] returns.
//!
//! Each row is one revision of one key: a put (with its value) or a delete (a tombstone). `revision` is
//! the global, gapless revision (assigned by the single writer, [`super::Store`]); `prev_revision` is
//! the key's previous row (0 for a creation), unique per key so two writers could never both build on
//! one revision. The current state is each key's newest row, unless that row is a tombstone.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Event, EventKind, KeyValue, StoreError};

/// One row to append.
pub struct Row<'a> {
    pub revision: u64,
    pub key: &'a str,
    pub create_revision: u64,
    pub prev_revision: u64,
    pub deleted: bool,
    pub value: &'a [u8],
}

/// The SQLite file.
pub struct Log {
    conn: Connection,
    path: PathBuf,
    /// How long the commits took, for `/metrics` (read by the metrics module, never pushed to it).
    commits: CommitTimes,
}

/// etcd's backend commit buckets (seconds): 1 ms doubling to about 8 s.
pub const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
];

/// Commit latencies by [`COMMIT_BUCKETS`] (not cumulative; one more count past the last bound).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommitTimes {
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl CommitTimes {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; COMMIT_BUCKETS.len()];
        }
        if let Some(i) = COMMIT_BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

/// Upper bound for keys starting with `prefix` (keys are UTF-8; U+10FFFF sorts after any of them).
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS kv_key_prev ON kv (key, prev_revision);
CREATE INDEX IF NOT EXISTS kv_key_revision ON kv (key, revision);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

impl Log {
    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Opens (creating if needed) the log at `path`.
    pub fn open(path: &Path) -> Result<Log, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        Ok(Log {
            conn,
            path: path.to_path_buf(),
            commits: CommitTimes::default(),
        })
    }

    /// Every key's current value, the newest revision and the compacted revision.
    pub fn load(&self) -> Result<(Vec<KeyValue>, u64, u64), StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT key, value, create_revision, revision FROM kv
                 WHERE revision IN (SELECT MAX(revision) FROM kv GROUP BY key) AND deleted = 0
                 ORDER BY key",
            )
            .map_err(self.err())?;
        let current = stmt
            .query_map([], row_to_kv)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let revision: Option<i64> = self
            .conn
            .query_row("SELECT MAX(revision) FROM kv", [], |r| r.get(0))
            .map_err(self.err())?;
        let compacted = self.compacted()?;
        Ok((
            current,
            revision.unwrap_or(0).max(compacted as i64) as u64,
            compacted,
        ))
    }

    fn compacted(&self) -> Result<u64, StoreError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE name = 'compacted'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err())?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// The revision of `key`'s newest row (a tombstone when the key is deleted), 0 if it has none.
    pub fn last_revision_of(&self, key: &str) -> Result<u64, StoreError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT MAX(revision) FROM kv WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .map_err(self.err())?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// Appends rows in one transaction; durable when this returns.
    pub fn append(&mut self, rows: &[Row<'_>]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let started = std::time::Instant::now();
        let tx = self.conn.transaction().map_err(sqlite)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO kv (revision, key, create_revision, prev_revision, deleted, value)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sqlite)?;
            for r in rows {
                stmt.execute(params![
                    r.revision as i64,
                    r.key,
                    r.create_revision as i64,
                    r.prev_revision as i64,
                    r.deleted,
                    r.value
                ])
                .map_err(sqlite)?;
            }
        }
        tx.commit().map_err(sqlite)?;
        self.commits.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// How long the commits so far took.
    pub fn commit_times(&self) -> &CommitTimes {
        &self.commits
    }

    /// The keys under `prefix` as they were at `revision`.
    pub fn list_at(&self, prefix: &str, revision: u64) -> Result<Vec<KeyValue>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, value, create_revision, revision FROM kv
                 WHERE revision IN (
                     SELECT MAX(revision) FROM kv
                     WHERE key >= ?1 AND key < ?2 AND revision <= ?3 GROUP BY key)
                   AND deleted = 0
                 ORDER BY key",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![prefix, prefix_end(prefix), revision as i64], row_to_kv)
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// Changes under `prefix` with revisions in `(after, upto]`, oldest first, each with the value it
    /// replaced when that row still exists.
    pub fn events(&self, prefix: &str, after: u64, upto: u64) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT kv.key, kv.value, kv.create_revision, kv.revision, kv.deleted,
                        prev.value, prev.create_revision, prev.revision
                 FROM kv LEFT JOIN kv AS prev
                   ON prev.key = kv.key AND prev.revision = kv.prev_revision
                 WHERE kv.revision > ?1 AND kv.revision <= ?2 AND kv.key >= ?3 AND kv.key < ?4
                 ORDER BY kv.revision",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(
                params![after as i64, upto as i64, prefix, prefix_end(prefix)],
                |r| {
                    let kv = row_to_kv(r)?;
                    let deleted: bool = r.get(4)?;
                    let prev_value: Option<Vec<u8>> = r.get(5)?;
                    let prev = match prev_value {
                        Some(value) => Some(KeyValue {
                            key: kv.key.clone(),
                            value: value.into(),
                            create_revision: r.get::<_, i64>(6)? as u64,
                            mod_revision: r.get::<_, i64>(7)? as u64,
                        }),
                        None => None,
                    };
                    // A tombstone carries no value: a delete event shows the key's last one.
                    let kv = match (&prev, deleted) {
                        (Some(p), true) => KeyValue {
                            value: p.value.clone(),
                            create_revision: p.create_revision,
                            ..kv
                        },
                        _ => kv,
                    };
                    Ok(Event {
                        kind: if deleted {
                            EventKind::Delete
                        } else {
                            EventKind::Put
                        },
                        kv,
                        prev,
                    })
                },
            )
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// Drops history up to `revision`: rows superseded by a newer row at or below it, and tombstones at
    /// or below it. Every key's state at `revision` and after stays readable. Returns the rows removed.
    pub fn compact(&mut self, revision: u64) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        let removed = tx
            .execute(
                "DELETE FROM kv WHERE revision <= ?1 AND (deleted = 1 OR EXISTS (
                     SELECT 1 FROM kv AS newer
                     WHERE newer.key = kv.key AND newer.revision > kv.revision AND newer.revision <= ?1))",
                params![revision as i64],
            )
            .map_err(sqlite)?;
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('compacted', ?1)
             ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
            params![revision as i64],
        )
        .map_err(sqlite)?;
        tx.commit().map_err(sqlite)?;
        Ok(removed)
    }
}

fn row_to_kv(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    let value: Vec<u8> = r.get(1)?;
    Ok(KeyValue {
        key: r.get(0)?,
        value: value.into(),
        create_revision: r.get::<_, i64>(2)? as u64,
        mod_revision: r.get::<_, i64>(3)? as u64,
    })
}
