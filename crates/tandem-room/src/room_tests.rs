//! Unit tests of [`Room`](super::Room): sync and updates, gaps and resync, read-only peers,
//! awareness, bad frames, the `Prefetch`, compaction and corrupt storage. Moved out of
//! `room.rs` to keep it short; as its child module they still see its private items.

use super::*;
use crate::test_support::stored_one_update;
use tandem_protocol::{AwarenessEntry, Message as M, encode_awareness_message};
use tandem_store::LogEntry;
use yrs::{GetString, Text};

fn text_update(client: u64, s: &str) -> (Doc, Vec<u8>) {
    let doc = Doc::with_client_id(client);
    let t = doc.get_or_insert_text("t");
    t.insert(&mut doc.transact_mut(), 0, s);
    let u = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    (doc, u)
}

fn text_of(doc: &Doc) -> String {
    let t = doc.get_or_insert_text("t");
    t.get_string(&doc.transact())
}

#[test]
fn connect_sends_sync_step1_then_update_is_logged_and_echoed_to_all() {
    let mut room = Room::new(RoomConfig::default());
    let fx = room.connect(1, PeerInfo::default());
    assert_eq!(fx.sends.len(), 1);
    assert!(matches!(
        decode_frame(&fx.sends[0].frame).expect("frame")[0],
        M::Sync(SyncMessage::SyncStep1(_))
    ));
    room.connect(2, PeerInfo::default());
    // updates reach peers whose SyncStep1 was answered (causal_tests.rs)
    for p in [1, 2] {
        room.handle(p, &encode_sync_step1(&[0]), 0);
    }
    let (_, u) = text_update(7, "hi");
    let (fx, err) = room.handle(1, &encode_update(&u), 5);
    assert!(err.is_none());
    assert_eq!(fx.append.len(), 1);
    assert_eq!(fx.append[0].0, 1);
    assert_eq!(fx.sends.len(), 1);
    assert_eq!(fx.sends[0].target, Target::All);
    assert_eq!(text_of(room.doc()), "hi");
    // a duplicate changes nothing: no log, no echo
    let (fx, err) = room.handle(2, &encode_update(&u), 6);
    assert!(err.is_none() && fx.is_empty());
}

#[test]
fn sync_step1_is_answered_with_the_diff() {
    let mut room = Room::new(RoomConfig::default());
    room.connect(1, PeerInfo::default());
    let (_, u) = text_update(7, "hello");
    room.handle(1, &encode_update(&u), 0);
    let (fx, _) = room.handle(1, &encode_sync_step1(&[0]), 0);
    let M::Sync(SyncMessage::SyncStep2(diff)) =
        decode_frame(&fx.sends[0].frame).expect("f")[0].clone()
    else {
        panic!("expected step 2");
    };
    let fresh = Doc::new();
    fresh
        .transact_mut()
        .apply_update(Update::decode_v1(diff).expect("decode"))
        .expect("apply");
    assert_eq!(text_of(&fresh), "hello");
}

#[test]
fn gap_triggers_resync_request_and_unresolved_step2_closes() {
    let mut room = Room::new(RoomConfig::default());
    room.connect(1, PeerInfo::default());
    let (doc, _) = text_update(9, "ab");
    let sv = doc.transact().state_vector();
    doc.get_or_insert_text("t")
        .insert(&mut doc.transact_mut(), 2, "cd");
    let incremental = doc.transact().encode_state_as_update_v1(&sv);
    let (fx, err) = room.handle(1, &encode_update(&incremental), 0);
    assert!(err.is_none());
    assert!(fx.append.is_empty(), "nothing applied");
    assert!(matches!(
        decode_frame(&fx.sends[0].frame).expect("f")[0],
        M::Sync(SyncMessage::SyncStep1(_))
    ));
    assert!(!room.doc().transact().has_missing_updates());
    // answering with the same gap is an error
    let (_, err) = room.handle(1, &encode_sync_step2(&incremental), 0);
    assert!(matches!(err, Some(PeerError::MissingDependencies { .. })));
    // answering with the full state resolves it
    room.connect(2, PeerInfo::default());
    let full = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let (fx, err) = room.handle(2, &encode_sync_step2(&full), 0);
    assert!(err.is_none());
    assert_eq!(fx.append.len(), 1);
    assert_eq!(text_of(room.doc()), "abcd");
}

#[test]
fn read_only_peers_cannot_write_and_are_told_once() {
    let mut room = Room::new(RoomConfig::default());
    room.connect(
        1,
        PeerInfo {
            read_only: true,
            author: Arc::from("r"),
        },
    );
    let (_, u) = text_update(3, "x");
    let (fx1, _) = room.handle(1, &encode_update(&u), 0);
    let (fx2, _) = room.handle(1, &encode_sync_step2(&u), 0);
    assert_eq!(fx1.denied_writes + fx2.denied_writes, 2);
    assert!(fx1.append.is_empty() && fx2.append.is_empty());
    assert_eq!(fx1.sends.len(), 1, "told once");
    assert!(fx2.sends.is_empty());
    assert_eq!(text_of(room.doc()), "");
}

#[test]
fn awareness_is_relayed_and_removed_on_disconnect() {
    let mut room = Room::new(RoomConfig::default());
    room.connect(1, PeerInfo::default());
    room.connect(2, PeerInfo::default());
    let frame = encode_awareness_message(&[AwarenessEntry {
        client_id: 77,
        clock: 1,
        state: r#"{"user":{"name":"a"}}"#,
    }]);
    let (fx, _) = room.handle(1, &frame, 0);
    assert_eq!(fx.sends[0].target, Target::All);
    // a newcomer gets the state
    let fx = room.connect(3, PeerInfo::default());
    assert_eq!(fx.sends.len(), 2);
    let fx = room.disconnect(1, 10);
    let M::Awareness(entries) = decode_frame(&fx.sends[0].frame).expect("f")[0].clone() else {
        panic!("expected awareness");
    };
    assert_eq!(entries[0].client_id, 77);
    assert!(entries[0].is_removal());
    assert!(room.awareness().is_empty());
}

#[test]
fn bad_frames_are_errors_and_leave_the_room_intact() {
    let mut room = Room::new(RoomConfig::default());
    room.connect(1, PeerInfo::default());
    let (_, u) = text_update(3, "keep");
    room.handle(1, &encode_update(&u), 0);
    for bad in [vec![], vec![9], vec![0, 2, 3, 1, 2], vec![0, 0, 1, 0, 0xff]] {
        let (fx, err) = room.handle(1, &bad, 0);
        assert!(err.is_some(), "{bad:?}");
        assert!(fx.append.is_empty());
    }
    assert_eq!(text_of(room.doc()), "keep");
}

/// The SyncStep2 a fresh peer (empty state vector) gets from `room`.
fn full_sync_reply(room: &mut Room, peer: PeerId) -> Vec<u8> {
    room.connect(peer, PeerInfo::default());
    let (fx, err) = room.handle(peer, &encode_sync_step1(&[0]), 0);
    assert!(err.is_none());
    match decode_frame(&fx.sends[0].frame).expect("frame")[0] {
        M::Sync(SyncMessage::SyncStep2(u)) => u.to_vec(),
        ref other => panic!("expected SyncStep2, got {other:?}"),
    }
}

#[test]
fn a_room_loaded_from_one_stored_update_serves_it_until_it_changes() {
    let (_, stored_update) = text_update(4, "stored");
    let stored = StoredRoom {
        snapshot: Some(Snapshot {
            seq: 3,
            time_ms: 0,
            update: stored_update.clone(),
        }),
        log: vec![],
        next_seq: 4,
    };
    let mut room = Room::load(&stored, RoomConfig::default()).expect("load");
    assert_eq!(full_sync_reply(&mut room, 1), stored_update);
    let (_, more) = text_update(5, "more");
    let (fx, err) = room.handle(1, &encode_update(&more), 1);
    assert!(err.is_none() && fx.append.len() == 1);
    let reply = full_sync_reply(&mut room, 2);
    assert_ne!(reply, stored_update);
    let fresh = Doc::new();
    fresh
        .transact_mut()
        .apply_update(Update::decode_v1(&reply).expect("decode"))
        .expect("apply");
    assert_eq!(text_of(&fresh).len(), "storedmore".len());
    // a snapshot followed by log entries is re-encoded, never served partially
    let mut with_log = stored.clone();
    with_log.log.push(LogEntry {
        seq: 4,
        record: LogRecord {
            time_ms: 0,
            author: "a".into(),
            update: more,
        },
    });
    let mut room = Room::load(&with_log, RoomConfig::default()).expect("load");
    assert_eq!(full_sync_reply(&mut room, 1), reply);
}

#[test]
fn prefetch_answers_only_an_empty_sync_step1_and_only_for_a_single_stored_update() {
    let (_, update) = text_update(4, "cold");
    let one = stored_one_update(update.clone());
    let p = Prefetch::new(&one).expect("single update");
    let reply = p.answer(&encode_sync_step1(&[0])).expect("answered");
    let mut room = Room::load(&one, RoomConfig::default()).expect("load");
    assert_eq!(
        reply.as_ref(),
        encode_sync_step2(&full_sync_reply(&mut room, 1))
    );
    assert_eq!(full_sync_reply(&mut room, 2), update);
    // a peer that already has something, or any other message, must wait for the room
    let sv = Doc::with_client_id(4).transact().state_vector();
    let (doc, _) = text_update(4, "x");
    let nonempty = doc.transact().state_vector().encode_v1();
    assert_ne!(nonempty, sv.encode_v1());
    assert!(p.answer(&encode_sync_step1(&nonempty)).is_none());
    assert!(p.answer(&encode_update(&update)).is_none());
    assert!(p.answer(&[0xff]).is_none());
    let mut two = one.clone();
    two.log.push(two.log[0].clone());
    assert!(Prefetch::new(&two).is_none());
    assert!(Prefetch::new(&StoredRoom::default()).is_none());
}

#[test]
fn compaction_snapshot_reloads_to_identical_state() {
    let config = RoomConfig {
        compact_after_entries: 3,
        ..RoomConfig::default()
    };
    let mut room = Room::new(config.clone());
    room.connect(1, PeerInfo::default());
    let client = Doc::with_client_id(5);
    let t = client.get_or_insert_text("t");
    let mut log = Vec::new();
    let mut snapshot = None;
    for i in 0..5u32 {
        let sv = client.transact().state_vector();
        t.insert(&mut client.transact_mut(), i, "x");
        let u = client.transact().encode_state_as_update_v1(&sv);
        let (fx, err) = room.handle(1, &encode_update(&u), u64::from(i));
        assert!(err.is_none());
        for (seq, record) in fx.append {
            log.push(LogEntry { seq, record });
        }
        if let Some(s) = fx.compact {
            log.retain(|e| e.seq > s.seq);
            snapshot = Some(s);
        }
    }
    assert_eq!(snapshot.as_ref().map(|s| s.seq), Some(3));
    let stored = StoredRoom {
        snapshot,
        log,
        next_seq: room.next_seq(),
    };
    let reloaded = Room::load(&stored, config).expect("load");
    assert_eq!(text_of(reloaded.doc()), "xxxxx");
    assert_eq!(reloaded.encode_state_v1(), room.encode_state_v1());
    assert_eq!(reloaded.next_seq(), 6);
}

#[test]
fn corrupt_storage_is_an_error() {
    let stored = stored_one_update(vec![1, 2, 3]);
    assert!(Room::load(&stored, RoomConfig::default()).is_err());
}
