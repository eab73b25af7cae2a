use std::path::PathBuf;

use super::*;

/// A fresh store file in a per-test temporary directory (removed when the guard drops).
struct TempStore {
    dir: PathBuf,
}

impl TempStore {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("berth-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempStore { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.db")
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn val(kv: &KeyValue) -> &[u8] {
    &kv.value
}

#[test]
fn create_update_delete_with_compare_and_swap() {
    let t = TempStore::new("cas");
    let s = Store::open(&t.path()).expect("open");
    assert_eq!(s.revision(), 0);
    let a = s.create("/pods/a", b"1".to_vec()).expect("create");
    assert_eq!((a.create_revision, a.mod_revision), (1, 1));
    assert!(matches!(
        s.create("/pods/a", b"x".to_vec()),
        Err(StoreError::AlreadyExists { .. })
    ));
    let b = s.update("/pods/a", b"2".to_vec(), Some(1)).expect("update");
    assert_eq!((b.create_revision, b.mod_revision), (1, 2));
    assert!(matches!(
        s.update("/pods/a", b"3".to_vec(), Some(1)),
        Err(StoreError::Conflict {
            expected: 1,
            actual: 2,
            ..
        })
    ));
    assert!(matches!(
        s.delete("/pods/a", Some(1)),
        Err(StoreError::Conflict { .. })
    ));
    let gone = s.delete("/pods/a", Some(2)).expect("delete");
    assert_eq!((gone.mod_revision, val(&gone)), (3, &b"2"[..]));
    assert!(s.get("/pods/a").is_none());
    assert!(matches!(
        s.update("/pods/a", vec![], None),
        Err(StoreError::NotFound { .. })
    ));
    // Created again: a new life with a new create revision.
    let again = s.create("/pods/a", b"4".to_vec()).expect("recreate");
    assert_eq!((again.create_revision, again.mod_revision), (4, 4));
    assert_eq!(s.revision(), 4);
}

#[test]
fn a_reopened_store_has_every_acknowledged_write() {
    let t = TempStore::new("reopen");
    {
        let s = Store::open(&t.path()).expect("open");
        for i in 0..50 {
            s.create(&format!("/cm/{i:02}"), format!("v{i}").into_bytes())
                .expect("create");
        }
        s.update("/cm/07", b"seven".to_vec(), None).expect("update");
        s.delete("/cm/08", None).expect("delete");
    }
    let s = Store::open(&t.path()).expect("reopen");
    assert_eq!(s.revision(), 52);
    let seven = s.get("/cm/07").expect("kept");
    assert_eq!(
        (val(&seven), seven.create_revision, seven.mod_revision),
        (&b"seven"[..], 8, 51)
    );
    assert!(s.get("/cm/08").is_none());
    assert_eq!(s.list("/cm/", None, None, 0).expect("list").items.len(), 49);
    // Revisions go on from where they were, without gaps.
    assert_eq!(s.create("/cm/new", vec![]).expect("create").mod_revision, 53);
}

#[test]
fn lists_page_and_read_the_past() {
    let t = TempStore::new("list");
    let s = Store::open(&t.path()).expect("open");
    for name in ["a", "b", "c", "d"] {
        s.create(&format!("/pods/ns1/{name}"), name.as_bytes().to_vec())
            .expect("create");
    }
    s.create("/pods/ns2/x", vec![]).expect("create");
    s.create("/services/ns1/a", vec![]).expect("create");
    let before_changes = s.revision();
    s.update("/pods/ns1/b", b"B".to_vec(), None).expect("update");
    s.delete("/pods/ns1/c", None).expect("delete");

    let page = s.list("/pods/ns1/", None, None, 2).expect("page 1");
    let keys: Vec<&str> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!((keys, page.more), (vec!["/pods/ns1/a", "/pods/ns1/b"], true));
    let page = s
        .list("/pods/ns1/", None, Some("/pods/ns1/b"), 2)
        .expect("page 2");
    let keys: Vec<&str> = page.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!((keys, page.more), (vec!["/pods/ns1/d"], false));
    assert_eq!(s.list("/pods/", None, None, 0).expect("all pods").items.len(), 4);

    // The past: b's old value and c still there.
    let past = s.list("/pods/ns1/", Some(before_changes), None, 0).expect("past");
    let got: Vec<(&str, &[u8])> = past.items.iter().map(|kv| (kv.key.as_str(), val(kv))).collect();
    assert_eq!(
        got,
        vec![
            ("/pods/ns1/a", &b"a"[..]),
            ("/pods/ns1/b", &b"b"[..]),
            ("/pods/ns1/c", &b"c"[..]),
            ("/pods/ns1/d", &b"d"[..])
        ]
    );
    assert_eq!(past.revision, before_changes);
    assert!(matches!(
        s.list("/pods/", Some(s.revision() + 1), None, 0),
        Err(StoreError::FutureRevision { .. })
    ));
}

#[test]
fn watches_resume_from_any_revision_until_it_is_compacted() {
    let t = TempStore::new("watch");
    // A ring of 4 recent events, so older history is read from the file.
    let s = Store::open_with(&t.path(), 4).expect("open");
    s.create("/pods/a", b"1".to_vec()).expect("r1");
    s.create("/services/x", b"s".to_vec()).expect("r2");
    s.update("/pods/a", b"2".to_vec(), None).expect("r3");
    s.create("/pods/b", b"1".to_vec()).expect("r4");
    s.delete("/pods/a", None).expect("r5");
    for i in 0..6 {
        s.create(&format!("/services/y{i}"), vec![]).expect("r6..r11");
    }
    s.update("/pods/b", b"2".to_vec(), None).expect("r12");

    let mut w = s.watch("/pods/", 0).expect("watch from the start");
    let mut seen = Vec::new();
    loop {
        let batch = w.next(2).expect("next");
        if batch.is_empty() && w.position() == s.revision() {
            break;
        }
        seen.extend(batch);
    }
    let summary: Vec<(EventKind, &str, u64, Option<u64>)> = seen
        .iter()
        .map(|e| {
            (
                e.kind,
                e.kv.key.as_str(),
                e.kv.mod_revision,
                e.prev.as_ref().map(|p| p.mod_revision),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (EventKind::Put, "/pods/a", 1, None),
            (EventKind::Put, "/pods/a", 3, Some(1)),
            (EventKind::Put, "/pods/b", 4, None),
            (EventKind::Delete, "/pods/a", 5, Some(3)),
            (EventKind::Put, "/pods/b", 12, Some(4)),
        ]
    );
    // The delete carries the last value, whether it came from the log (here) or the ring.
    assert_eq!(val(&seen[3].kv), &b"2"[..]);
    assert_eq!(seen[3].prev.as_ref().map(val), Some(&b"2"[..]));

    // A watcher at the head gets nothing until something changes.
    let mut head = s.watch("/pods/", s.revision()).expect("head");
    assert!(head.next(10).expect("nothing").is_empty());
    s.create("/pods/c", vec![]).expect("r13");
    assert_eq!(head.next(10).expect("one")[0].kv.key, "/pods/c");
    s.delete("/pods/c", None).expect("r14");
    let ring = head.next(10).expect("from the ring");
    assert_eq!(
        (ring[0].kind, ring[0].kv.create_revision),
        (EventKind::Delete, 13)
    );
    s.create("/pods/c", vec![]).expect("r15");

    // Compaction: the current state stays, older history answers Compacted (410 Gone above).
    let removed = s.compact(12).expect("compact");
    assert!(removed > 0);
    assert!(matches!(
        s.watch("/pods/", 3),
        Err(StoreError::Compacted { oldest: 12, .. })
    ));
    assert!(matches!(
        s.list("/pods/", Some(4), None, 0),
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(s.list("/pods/", Some(12), None, 0).expect("at 12").items.len(), 1);
    assert_eq!(s.list("/pods/", Some(13), None, 0).expect("at 13").items.len(), 2);
    assert_eq!(s.list("/services/", None, None, 0).expect("now").items.len(), 7);
    drop(head);
    drop(w);
    let reopened = Store::open(&t.path());
    drop(s);
    let s = reopened.expect("reopen");
    assert!(matches!(s.watch("/pods/", 3), Err(StoreError::Compacted { .. })));
    assert_eq!(s.list("/pods/", None, None, 0).expect("now").items.len(), 2);
    assert_eq!(s.revision(), 15);
}

#[test]
fn concurrent_writers_get_unique_gapless_revisions() {
    let t = TempStore::new("concurrent");
    let s = Arc::new(Store::open(&t.path()).expect("open"));
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        s.create(&format!("/leases/{w}-{i}"), vec![w as u8])
                            .expect("create")
                            .mod_revision
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut revisions: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("writer"))
        .collect();
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=100).collect::<Vec<u64>>());
    // A subscriber sees the newest revision.
    assert_eq!(*s.subscribe().borrow(), 100);
}

#[test]
fn update_many_commits_each_write_on_its_own_terms_in_one_transaction() {
    let t = TempStore::new("many");
    {
        let s = Store::open(&t.path()).expect("open");
        s.create("/pods/a", b"a1".to_vec()).expect("create a");
        s.create("/pods/b", b"b1".to_vec()).expect("create b");
        let results = s
            .update_many(vec![
                ("/pods/a".into(), b"a2".to_vec(), Some(1)),
                // Stale: b is at 2.
                ("/pods/b".into(), b"bx".to_vec(), Some(1)),
                ("/pods/missing".into(), b"m".to_vec(), None),
                // Builds on the batch's own write of a (revision 3).
                ("/pods/a".into(), b"a3".to_vec(), Some(3)),
            ])
            .expect("commit");
        assert_eq!(results[0].as_ref().map(|kv| kv.mod_revision).ok(), Some(3));
        assert!(matches!(
            results[1],
            Err(StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            })
        ));
        assert!(matches!(results[2], Err(StoreError::NotFound { .. })));
        assert_eq!(results[3].as_ref().map(|kv| kv.mod_revision).ok(), Some(4));
        assert_eq!(s.revision(), 4);
        let (events, _) = s.events_after("/pods/", 2, 100).expect("events");
        let seen: Vec<(u64, &[u8], Option<u64>)> = events
            .iter()
            .map(|e| {
                (
                    e.kv.mod_revision,
                    val(&e.kv),
                    e.prev.as_ref().map(|p| p.mod_revision),
                )
            })
            .collect();
        assert_eq!(seen, vec![(3, &b"a2"[..], Some(1)), (4, &b"a3"[..], Some(3))]);
    }
    // Durable: a reopened store has both writes and the untouched key.
    let s = Store::open(&t.path()).expect("reopen");
    assert_eq!(
        s.get("/pods/a").map(|kv| (kv.mod_revision, kv.value.to_vec())),
        Some((4, b"a3".to_vec()))
    );
    assert_eq!(s.get("/pods/b").map(|kv| kv.value.to_vec()), Some(b"b1".to_vec()));
    let (events, _) = s.events_after("/pods/", 2, 100).expect("events from the log");
    assert_eq!(events.len(), 2);
}
