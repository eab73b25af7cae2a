//! A watcher: a position in the store's history and a prefix. It pulls the changes after its position
//! in order, from the store's ring of recent events or, when it fell further behind, from the log; if
//! that history was compacted meanwhile it gets `Compacted`, which the API server turns into the
//! in-stream `410 Gone` that makes Kubernetes clients list again.
//!
//! Pulling instead of per-watcher queues means a slow watcher costs the writers nothing and can never
//! miss an event; waiting for new revisions is [`super::Store::subscribe`].

use super::{Event, Store, StoreError};

/// See the module documentation.
pub struct Watcher<'a> {
    store: &'a Store,
    prefix: String,
    position: u64,
}

impl<'a> Watcher<'a> {
    pub(super) fn new(store: &'a Store, prefix: &str, after: u64) -> Self {
        Watcher {
            store,
            prefix: prefix.to_string(),
            position: after,
        }
    }

    /// The revision up to which this watcher has seen the history.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next changes (at most `limit`, oldest first); empty when nothing new happened under the
    /// prefix. The position advances past every revision looked at, matching or not.
    pub fn next(&mut self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let (events, scanned) = self.store.events_after(&self.prefix, self.position, limit)?;
        self.position = self.position.max(scanned);
        Ok(events)
    }
}
