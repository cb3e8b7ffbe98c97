//! Causal delivery: a peer receives a document update only once the room has answered its
//! SyncStep1, so it can always have the update's dependencies (yrs-based clients integrate an
//! update with missing dependencies at once, and filling the gap later goes through yrs' buggy
//! splice paths).

use std::sync::Arc;

use tandem_protocol::{
    Message as M, SyncMessage, decode_frame, encode_sync_step1, encode_sync_step2, encode_update,
};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::test_support::stored_one_update;
use crate::{Effects, PeerInfo, Room, RoomConfig, Target};

/// A client whose successive edits are incremental updates (each depends on the previous).
struct Writer {
    doc: Doc,
}

impl Writer {
    fn new(client: u64) -> Self {
        Writer {
            doc: Doc::with_client_id(client),
        }
    }

    fn append(&self, s: &str) -> Vec<u8> {
        let t = self.doc.get_or_insert_text("t");
        let sv = self.doc.transact().state_vector();
        let len = t.get_string(&self.doc.transact()).len() as u32;
        t.insert(&mut self.doc.transact_mut(), len, s);
        self.doc.transact().encode_state_as_update_v1(&sv)
    }
}

fn is_update(frame: &[u8]) -> bool {
    matches!(
        decode_frame(frame).expect("frame").as_slice(),
        [M::Sync(SyncMessage::Update(_))]
    )
}

/// The targets of the document updates in `fx`, sorted (`None` stands for `Target::All`).
fn update_targets(fx: &Effects) -> Vec<Option<u64>> {
    let mut t: Vec<_> = fx
        .sends
        .iter()
        .filter(|o| is_update(&o.frame))
        .map(|o| match o.target {
            Target::All => None,
            Target::Peer(p) => Some(p),
        })
        .collect();
    t.sort_unstable();
    t
}

fn step2_of(fx: &Effects) -> Vec<u8> {
    fx.sends
        .iter()
        .find_map(
            |o| match decode_frame(&o.frame).expect("frame").as_slice() {
                [M::Sync(SyncMessage::SyncStep2(u))] => Some(u.to_vec()),
                _ => None,
            },
        )
        .expect("a SyncStep2")
}

fn text_after(updates: &[Vec<u8>]) -> String {
    let doc = Doc::new();
    for u in updates {
        doc.transact_mut()
            .apply_update(Update::decode_v1(u).expect("decode"))
            .expect("apply");
    }
    assert!(!doc.transact().has_missing_updates(), "pending structs");
    doc.get_or_insert_text("t").get_string(&doc.transact())
}

fn synced_room(peers: &[u64]) -> Room {
    let mut room = Room::new(RoomConfig::default());
    for &p in peers {
        room.connect(p, PeerInfo::default());
        let (_, err) = room.handle(p, &encode_sync_step1(&[0]), 0);
        assert!(err.is_none());
    }
    room
}

#[test]
fn a_joining_peer_gets_no_update_before_the_sync_step2_answering_its_sync_step1() {
    let w = Writer::new(7);
    let mut room = synced_room(&[1]);
    let (fx, _) = room.handle(1, &encode_update(&w.append("ab")), 0);
    assert_eq!(update_targets(&fx), [None], "all synced: one Target::All");
    room.connect(2, PeerInfo::default());
    assert!(!room.is_synced(2));
    // a busy room: updates arrive before the newcomer's SyncStep1
    let (fx, _) = room.handle(1, &encode_update(&w.append("cd")), 0);
    assert_eq!(update_targets(&fx), [Some(1)], "the newcomer is skipped");
    let (fx, _) = room.handle(2, &encode_sync_step1(&[0]), 0);
    assert!(room.is_synced(2));
    // the SyncStep2 carries what the newcomer missed
    assert_eq!(text_after(&[step2_of(&fx)]), "abcd");
    let next = w.append("ef");
    let (fx, _) = room.handle(1, &encode_update(&next), 0);
    assert_eq!(update_targets(&fx), [None], "everyone synced again");
}

#[test]
fn everything_a_joining_peer_receives_applies_without_pending_structs() {
    let w = Writer::new(7);
    let mut room = synced_room(&[1]);
    room.handle(1, &encode_update(&w.append("a")), 0);
    room.connect(2, PeerInfo::default());
    let mut received = Vec::new();
    let take = |fx: Effects, received: &mut Vec<Vec<u8>>| {
        for o in fx.sends {
            if !matches!(o.target, Target::All | Target::Peer(2)) {
                continue;
            }
            if let [M::Sync(SyncMessage::Update(u) | SyncMessage::SyncStep2(u))] =
                decode_frame(&o.frame).expect("frame").as_slice()
            {
                received.push(u.to_vec());
            }
        }
    };
    for s in ["b", "c", "d"] {
        let (fx, _) = room.handle(1, &encode_update(&w.append(s)), 0);
        take(fx, &mut received);
    }
    assert!(received.is_empty(), "nothing before the SyncStep2");
    let (fx, _) = room.handle(2, &encode_sync_step1(&[0]), 0);
    take(fx, &mut received);
    let (fx, _) = room.handle(1, &encode_update(&w.append("e")), 0);
    take(fx, &mut received);
    // applied in arrival order, each update finds its dependencies (checked: no pending)
    assert_eq!(text_after(&received), "abcde");
}

#[test]
fn a_peer_answered_before_the_room_existed_is_synced_from_the_start() {
    let w = Writer::new(3);
    let stored = stored_one_update(w.append("cold"));
    let mut room = Room::load(&stored, RoomConfig::default()).expect("load");
    room.connect_synced(1, PeerInfo::default());
    room.connect(2, PeerInfo::default());
    room.handle(2, &encode_sync_step1(&[0]), 0);
    let (fx, _) = room.handle(2, &encode_update(&w.append("!")), 0);
    assert_eq!(update_targets(&fx), [None]);
    // and the counting stays right when such a peer leaves
    room.connect(3, PeerInfo::default());
    room.disconnect(1, 0);
    let (fx, _) = room.handle(2, &encode_update(&w.append("?")), 0);
    assert_eq!(update_targets(&fx), [Some(2)]);
    room.disconnect(3, 0);
    let (fx, _) = room.handle(2, &encode_update(&w.append(".")), 0);
    assert_eq!(update_targets(&fx), [None], "the unsynced peer left");
}

#[test]
fn http_updates_reach_synced_peers_only() {
    let w = Writer::new(5);
    let mut room = synced_room(&[1]);
    room.connect(2, PeerInfo::default());
    let fx = room
        .apply_external(&w.append("api"), "http", 0)
        .expect("apply");
    assert_eq!(update_targets(&fx), [Some(1)]);
    assert_eq!(fx.append.len(), 1);
    let (fx, _) = room.handle(2, &encode_sync_step1(&[0]), 0);
    assert_eq!(text_after(&[step2_of(&fx)]), "api");
    let fx = room
        .apply_external(&w.append("!"), "http", 0)
        .expect("apply");
    assert_eq!(update_targets(&fx), [None]);
}

#[test]
fn read_only_peers_receive_updates_once_synced() {
    let w = Writer::new(5);
    let mut room = synced_room(&[1]);
    let reader = PeerInfo {
        read_only: true,
        author: Arc::from("r"),
    };
    room.connect(2, reader);
    let (fx, _) = room.handle(1, &encode_update(&w.append("x")), 0);
    assert_eq!(update_targets(&fx), [Some(1)]);
    room.handle(2, &encode_sync_step1(&[0]), 0);
    let (fx, _) = room.handle(1, &encode_update(&w.append("y")), 0);
    assert_eq!(update_targets(&fx), [None]);
}

#[test]
fn a_resync_request_and_a_reload_keep_peers_synced() {
    let w = Writer::new(9);
    let first = w.append("ab");
    let mut room = synced_room(&[1, 2]);
    // peer 1 sends an update with a gap: the room asks it for everything (its own SyncStep1)
    let (fx, err) = room.handle(1, &encode_update(&w.append("cd")), 0);
    assert!(err.is_none() && fx.append.is_empty());
    assert!(room.is_synced(1) && room.is_synced(2));
    let full = w
        .doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let (fx, err) = room.handle(1, &encode_sync_step2(&full), 0);
    assert!(err.is_none());
    assert_eq!(update_targets(&fx), [None]);
    // a reload after a panic (the stored state is what every peer was sent) keeps them synced
    let stored = stored_one_update(full);
    room.replace_doc(&stored).expect("reload");
    let (fx, _) = room.handle(2, &encode_update(&w.append("e")), 0);
    assert_eq!(update_targets(&fx), [None]);
    let _ = first;
}
