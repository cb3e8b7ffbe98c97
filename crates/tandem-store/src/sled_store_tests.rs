//! Unit tests of [`SledStore`](super::SledStore): append, compact and reload, chunked log
//! reads, `next_seq` across compaction, background reclaim of covered chunks, corrupt records
//! and room-name limits. Moved out of `sled_store.rs` to keep it short; as its child module they
//! still see its private items.

use super::*;

fn rec(n: u8) -> LogRecord {
    LogRecord {
        time_ms: u64::from(n),
        author: "t".into(),
        update: vec![n],
    }
}

fn open(dir: &std::path::Path) -> SledStore {
    SledStore::open(&StoreConfig::new(dir)).expect("open")
}

#[test]
fn append_compact_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = open(dir.path());
        assert!(s.load("a").expect("load").is_empty());
        // 1..=2 as one chunk, 3..=5 as another (straddling the snapshot at 3)
        s.append("a", &[(1, rec(1)), (2, rec(2))]).expect("append");
        s.append("a", &[(3, rec(3)), (4, rec(4)), (5, rec(5))])
            .expect("append");
        s.append("ab", &[(1, rec(100))]).expect("append");
        s.compact(
            "a",
            &Snapshot {
                seq: 3,
                time_ms: 3,
                update: vec![9],
            },
        )
        .expect("compact");
        s.flush().expect("flush");
    }
    let s = open(dir.path());
    let a = s.load("a").expect("load");
    assert_eq!(a.snapshot.as_ref().map(|s| s.seq), Some(3));
    assert_eq!(a.log.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(a.next_seq, 6);
    let ab = s.load("ab").expect("load");
    assert_eq!(ab.log.len(), 1, "rooms sharing a name prefix stay apart");
    assert_eq!(s.list_rooms(None, 10).expect("list"), vec!["a", "ab"]);
    assert_eq!(s.list_rooms(Some("a"), 10).expect("list"), vec!["ab"]);
    let st = s.stats("a").expect("stats").expect("exists");
    assert_eq!((st.log_len, st.snapshot_seq, st.next_seq), (2, 3, 6));
    assert_eq!(s.log_after("a", 4, 10).expect("log").len(), 1);
    s.delete("a").expect("delete");
    assert!(s.load("a").expect("load").is_empty());
    assert!(s.stats("a").expect("stats").is_none());
    assert_eq!(s.list_rooms(None, 10).expect("list"), vec!["ab"]);
}

#[test]
fn reads_start_inside_chunks_and_honour_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let batch: Vec<(u64, LogRecord)> = (1..=4).map(|n| (n, rec(n as u8))).collect();
    s.append("r", &batch).expect("append");
    // a gap in positions splits the batch into two stored chunks
    s.append("r", &[(5, rec(5)), (7, rec(7)), (8, rec(8))])
        .expect("append");
    let seqs = |v: Vec<LogEntry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(s.log_after("r", 0, 100).expect("log")),
        [1, 2, 3, 4, 5, 7, 8]
    );
    assert_eq!(seqs(s.log_after("r", 2, 2).expect("log")), [3, 4]);
    assert_eq!(seqs(s.log_after("r", 4, 100).expect("log")), [5, 7, 8]);
    assert_eq!(seqs(s.log_after("r", 7, 100).expect("log")), [8]);
    assert!(s.log_after("r", 8, 100).expect("log").is_empty());
    assert_eq!(s.log_after("r", 1, 1).expect("log")[0].record, rec(2));
    let snap = |seq| Snapshot {
        seq,
        time_ms: 0,
        update: vec![],
    };
    s.compact("r", &snap(2)).expect("compact");
    let st = s.stats("r").expect("stats").expect("exists");
    assert_eq!((st.log_len, st.next_seq), (5, 9));
    assert_eq!(seqs(s.load("r").expect("load").log), [3, 4, 5, 7, 8]);
    s.compact("r", &snap(4)).expect("compact");
    let st = s.stats("r").expect("stats").expect("exists");
    assert_eq!((st.log_len, st.next_seq, st.last_change_ms), (3, 9, 8));
    assert_eq!(s.load("r").expect("load").next_seq, 9);
    s.compact("r", &snap(8)).expect("compact");
    assert_eq!(s.stats("r").expect("stats").expect("exists").log_len, 0);
    assert_eq!(s.load("r").expect("load").next_seq, 9);
}

#[test]
fn next_seq_survives_full_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    s.append("r", &[(1, rec(1))]).expect("append");
    s.compact(
        "r",
        &Snapshot {
            seq: 1,
            time_ms: 1,
            update: vec![],
        },
    )
    .expect("compact");
    assert_eq!(s.load("r").expect("load").next_seq, 2);
}

fn chunk_keys(s: &SledStore, room: &str) -> usize {
    s.db.scan_prefix(log_prefix(room)).count()
}

#[test]
fn covered_chunks_are_hidden_at_once_and_reclaimed_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = |seq| Snapshot {
        seq,
        time_ms: 0,
        update: vec![],
    };
    let seqs = |v: Vec<LogEntry>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    {
        let s = open(dir.path());
        for n in 1..=50u64 {
            s.append("r", &[(n, rec(n as u8))]).expect("append");
        }
        s.compact("r", &snap(40)).expect("compact");
        // whatever the reclaim thread has done so far, readers see only 41..=50
        assert_eq!(
            seqs(s.log_after("r", 0, 100).expect("log")),
            (41..=50).collect::<Vec<_>>()
        );
        assert_eq!(
            seqs(s.load("r").expect("load").log),
            (41..=50).collect::<Vec<_>>()
        );
        let st = s.stats("r").expect("stats").expect("exists");
        assert_eq!((st.log_len, st.snapshot_seq, st.next_seq), (10, 40, 51));
        // dropping the store waits for the queued reclaim
    }
    let s = open(dir.path());
    assert_eq!(chunk_keys(&s, "r"), 10, "the 40 covered chunks are gone");
    // A crash between snapshot and reclaim leaves covered chunks: still never read, and
    // the next compaction's pass removes them.
    s.db.insert(snapshot_key("r"), snap(45).encode())
        .expect("raw snapshot");
    assert_eq!(
        seqs(s.log_after("r", 0, 100).expect("log")),
        [46, 47, 48, 49, 50]
    );
    assert_eq!(s.load("r").expect("load").next_seq, 51);
    s.compact("r", &snap(47)).expect("compact");
    drop(s);
    let s = open(dir.path());
    assert_eq!(chunk_keys(&s, "r"), 3);
}

#[test]
fn a_recreated_room_keeps_its_chunks_when_an_old_reclaim_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let old: Vec<(u64, LogRecord)> = (1..=20).map(|n| (n, rec(n as u8))).collect();
    s.append("r", &old).expect("append");
    s.compact(
        "r",
        &Snapshot {
            seq: 20,
            time_ms: 0,
            update: vec![],
        },
    )
    .expect("compact");
    s.delete("r").expect("delete");
    // the room starts again at position 1, below the deleted snapshot's 20
    s.append("r", &[(1, rec(7)), (2, rec(8))]).expect("append");
    // a reclaim pass for the room (queued late, or run after the delete) removes nothing
    assert!(s.gc.queue("r"));
    drop(s);
    let s = open(dir.path());
    let got = s.load("r").expect("load");
    assert_eq!(
        got.log.iter().map(|e| e.record.clone()).collect::<Vec<_>>(),
        [rec(7), rec(8)]
    );
}

#[test]
fn corrupt_record_is_reported_not_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    s.append("r", &[(1, rec(1))]).expect("append");
    s.db.insert(log_key("r", 2), &[7u8, 1][..])
        .expect("raw insert");
    assert!(matches!(s.load("r"), Err(StoreError::Corrupt { .. })));
}

#[test]
fn health_writes_stay_out_of_room_listings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    s.check_writable().expect("writable");
    assert!(s.list_rooms(None, 10).expect("list").is_empty());
}

#[test]
fn invalid_room_names_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    assert!(s.load("").is_err());
    assert!(s.load(&"x".repeat(513)).is_err());
    assert!(s.load(&"x".repeat(512)).is_ok());
}
