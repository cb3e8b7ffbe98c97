//! [`Room`]: one shared document, its awareness, and its peers.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bytes::Bytes;

use tandem_protocol::{
    AuthMessage, Message, SyncMessage, UpdateInfo, UpdateLimits, decode_frame, encode_auth_denied,
    encode_state_vector, encode_sync_step1, encode_sync_step2, encode_update, validate_update_v1,
};
use tandem_store::{LogRecord, Snapshot, StoredRoom};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

use crate::awareness::{AwarenessTable, encode_changes};
use crate::{Effects, PeerError, PeerId, RoomError, Target};

/// The encoding of an update that changes nothing.
const EMPTY_UPDATE: [u8; 2] = [0, 0];

/// Tunables of a room.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    pub update_limits: UpdateLimits,
    /// Compact once the log holds this many entries since the last snapshot…
    pub compact_after_entries: u64,
    /// …or this many bytes.
    pub compact_after_bytes: u64,
    /// Awareness states not renewed for this long are removed (y-protocols uses 30 s).
    pub awareness_timeout_ms: u64,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            update_limits: UpdateLimits::default(),
            compact_after_entries: 1000,
            compact_after_bytes: 4 * 1024 * 1024,
            awareness_timeout_ms: 30_000,
        }
    }
}

/// What the driver knows about a connection when it joins.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Read-only peers receive everything but cannot change the document.
    pub read_only: bool,
    /// Recorded with every update this peer sends (token subject or `anonymous`).
    pub author: Arc<str>,
}

impl Default for PeerInfo {
    fn default() -> Self {
        PeerInfo {
            read_only: false,
            author: Arc::from("anonymous"),
        }
    }
}

#[derive(Debug)]
struct Peer {
    info: PeerInfo,
    /// We sent this peer a SyncStep1 because its update lacked dependencies; its answer must
    /// supply them.
    resync_requested: bool,
    denied_notified: bool,
    /// The room has queued the SyncStep2 answering this peer's SyncStep1 (or the driver answered
    /// it before the room existed). Only synced peers receive document updates: an update sent
    /// before that reply could depend on state the peer cannot have yet (causal delivery).
    synced: bool,
}

pub struct Room {
    doc: Doc,
    awareness: AwarenessTable,
    peers: HashMap<PeerId, Peer>,
    /// How many peers are not synced yet; while zero, updates go out as one `Target::All`.
    unsynced: usize,
    config: RoomConfig,
    next_seq: u64,
    entries_since_snapshot: u64,
    bytes_since_snapshot: u64,
    /// While the document is still exactly what was loaded from a single stored update (a
    /// snapshot, or a lone log entry), the SyncStep2 carrying it, encoded once: a peer syncing
    /// from nothing gets it instead of a full re-encode. Dropped at the first change.
    pristine: Option<Prefetch>,
}

/// Applies a v1 update behind `catch_unwind`; with `want_delta`, returns what it changed as a
/// v1 update (the bytes to log and broadcast), otherwise an empty vector.
fn apply_guarded(doc: &Doc, bytes: &[u8], want_delta: bool) -> Result<Vec<u8>, PeerError> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let update = Update::decode_v1(bytes).map_err(|e| PeerError::Rejected(e.to_string()))?;
        let mut txn = doc.transact_mut();
        // Past this point yrs may have integrated part of the update before failing.
        txn.apply_update(update)
            .map_err(|e| PeerError::ApplyFailed(e.to_string()))?;
        Ok(if want_delta {
            txn.encode_update_v1()
        } else {
            Vec::new()
        })
    }));
    result.unwrap_or(Err(PeerError::Panicked))
}

/// The stored state as one v1 update, when storage holds exactly one (a snapshot with no log
/// after it, or a lone log entry): then those bytes are the whole document.
fn single_update(stored: &StoredRoom) -> Option<&[u8]> {
    match (&stored.snapshot, stored.log.as_slice()) {
        (Some(s), []) => Some(&s.update),
        (None, [only]) => Some(&only.record.update),
        _ => None,
    }
}

/// Answers peers that sync from nothing while a room's document is still being rebuilt from
/// storage: when storage holds the whole state as one update, that update *is* the reply to a
/// SyncStep1 with an empty state vector, so a cold room's first readers need not wait for the
/// decode (and the full re-encode) of a large document.
#[derive(Debug, Clone)]
pub struct Prefetch {
    reply: Bytes,
}

impl Prefetch {
    /// `None` unless storage holds the room's state as exactly one update.
    pub fn new(stored: &StoredRoom) -> Option<Self> {
        single_update(stored).map(|u| Prefetch {
            reply: Bytes::from(encode_sync_step2(u)),
        })
    }

    /// The SyncStep2 to send back if `frame` is a lone SyncStep1 with an empty state vector;
    /// `None` for anything else (which must wait for the rebuilt room).
    pub fn answer(&self, frame: &[u8]) -> Option<Bytes> {
        match decode_frame(frame).ok()?.as_slice() {
            [Message::Sync(SyncMessage::SyncStep1(sv))] if sv.is_empty() => {
                Some(self.reply.clone())
            }
            _ => None,
        }
    }
}

impl Room {
    pub fn new(config: RoomConfig) -> Self {
        Room {
            doc: Doc::new(),
            awareness: AwarenessTable::default(),
            peers: HashMap::new(),
            unsynced: 0,
            config,
            next_seq: 1,
            entries_since_snapshot: 0,
            bytes_since_snapshot: 0,
            pristine: None,
        }
    }

    /// Rebuilds a room from storage: the snapshot, then every log entry after it, in order.
    pub fn load(stored: &StoredRoom, config: RoomConfig) -> Result<Self, RoomError> {
        let mut room = Room::new(config);
        room.replace_doc(stored)?;
        Ok(room)
    }

    /// Replaces the document with the stored state, keeping peers and awareness (used after a
    /// panic inside yrs left the in-memory document in doubt).
    pub fn replace_doc(&mut self, stored: &StoredRoom) -> Result<(), RoomError> {
        let doc = Doc::new();
        let limits = self.config.update_limits;
        let apply = |what: String, bytes: &[u8]| -> Result<(), RoomError> {
            validate_update_v1(bytes, &limits)
                .map_err(|e| RoomError::Corrupt(format!("{what}: {e}")))?;
            // loading re-applies what was logged: nothing to log or broadcast, so no delta
            apply_guarded(&doc, bytes, false)
                .map_err(|e| RoomError::Corrupt(format!("{what}: {e}")))?;
            Ok(())
        };
        if let Some(s) = &stored.snapshot {
            apply(format!("snapshot at {}", s.seq), &s.update)?;
        }
        for entry in &stored.log {
            apply(format!("log entry {}", entry.seq), &entry.record.update)?;
        }
        let complete = !doc.transact().has_missing_updates();
        if !complete {
            tracing::warn!("stored room has updates with missing dependencies");
        }
        self.pristine = Prefetch::new(stored).filter(|_| complete);
        self.doc = doc;
        self.next_seq = stored.next_seq.max(1);
        self.entries_since_snapshot = stored.log.len() as u64;
        self.bytes_since_snapshot = stored
            .log
            .iter()
            .map(|e| e.record.update.len() as u64)
            .sum();
        Ok(())
    }

    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn awareness(&self) -> &AwarenessTable {
        &self.awareness
    }

    /// The position the next logged update will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn state_vector_v1(&self) -> Vec<u8> {
        self.doc.transact().state_vector().encode_v1()
    }

    /// The whole document as one v1 update (snapshots, late joiners through the API).
    pub fn encode_state_v1(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// A peer joins: it gets our state vector (SyncStep1) and the current awareness states.
    /// It receives document updates only once its own SyncStep1 has been answered (see
    /// [`Room::connect_synced`] for a peer whose SyncStep1 the driver already answered).
    pub fn connect(&mut self, peer: PeerId, info: PeerInfo) -> Effects {
        self.join(peer, info, false)
    }

    /// A peer joins whose opening SyncStep1 the driver already answered with a SyncStep2 of
    /// exactly this room's current state (a cold room's [`Prefetch`]): it receives document
    /// updates from now on.
    pub fn connect_synced(&mut self, peer: PeerId, info: PeerInfo) -> Effects {
        self.join(peer, info, true)
    }

    /// Whether `peer` receives document updates (its SyncStep1 was answered).
    pub fn is_synced(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.synced)
    }

    fn join(&mut self, peer: PeerId, info: PeerInfo, synced: bool) -> Effects {
        let previous = self.peers.insert(
            peer,
            Peer {
                info,
                resync_requested: false,
                denied_notified: false,
                synced,
            },
        );
        if previous.is_some_and(|p| !p.synced) {
            self.unsynced -= 1;
        }
        if !synced {
            self.unsynced += 1;
        }
        let mut fx = Effects::default();
        fx.send(
            Target::Peer(peer),
            encode_sync_step1(&self.state_vector_v1()),
        );
        let states = self.awareness.states();
        if !states.is_empty() {
            fx.send(Target::Peer(peer), encode_changes(&states));
        }
        fx
    }

    /// A peer left (or was closed): its awareness states are removed and the removal relayed.
    pub fn disconnect(&mut self, peer: PeerId, now_ms: u64) -> Effects {
        if self.peers.remove(&peer).is_some_and(|p| !p.synced) {
            self.unsynced -= 1;
        }
        let mut fx = Effects::default();
        let removed = self.awareness.remove_peer(peer, now_ms);
        if !removed.is_empty() && !self.peers.is_empty() {
            fx.send(Target::All, encode_changes(&removed));
        }
        fx
    }

    /// Periodic work: expires awareness states that were not renewed.
    pub fn tick(&mut self, now_ms: u64) -> Effects {
        let mut fx = Effects::default();
        let expired = self
            .awareness
            .expire(now_ms, self.config.awareness_timeout_ms);
        if !expired.is_empty() && !self.peers.is_empty() {
            fx.send(Target::All, encode_changes(&expired));
        }
        fx
    }

    /// Handles one frame from `peer`. The returned effects are always to be carried out, even
    /// when an error follows: messages before the bad one in the frame took effect. On error the
    /// driver closes the peer with [`PeerError::close_code`] and then calls [`Room::disconnect`].
    pub fn handle(
        &mut self,
        peer: PeerId,
        frame: &[u8],
        now_ms: u64,
    ) -> (Effects, Option<PeerError>) {
        let mut fx = Effects::default();
        let messages = match decode_frame(frame) {
            Ok(m) => m,
            Err(e) => return (fx, Some(PeerError::Malformed(e))),
        };
        for msg in messages {
            if let Err(e) = self.handle_message(peer, msg, now_ms, &mut fx) {
                return (fx, Some(e));
            }
        }
        self.maybe_compact(now_ms, &mut fx);
        (fx, None)
    }

    /// Applies an update that did not come from a WebSocket peer (the HTTP API). Missing
    /// dependencies are an error here: there is nobody to ask for a resync.
    pub fn apply_external(
        &mut self,
        update: &[u8],
        author: &str,
        now_ms: u64,
    ) -> Result<Effects, PeerError> {
        let mut fx = Effects::default();
        let info = validate_update_v1(update, &self.config.update_limits)?;
        if let Some((client, clock)) = self.missing_dependency(&info) {
            return Err(PeerError::MissingDependencies { client, clock });
        }
        self.integrate(update, author, now_ms, &mut fx)?;
        self.maybe_compact(now_ms, &mut fx);
        Ok(fx)
    }

    fn handle_message(
        &mut self,
        peer: PeerId,
        msg: Message<'_>,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<(), PeerError> {
        match msg {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let sv = StateVector::decode_v1(&encode_state_vector(sv))
                    .map_err(|e| PeerError::Rejected(e.to_string()))?;
                let reply = match &self.pristine {
                    Some(prefetch) if sv.is_empty() => prefetch.reply.clone(),
                    _ => encode_sync_step2(&self.doc.transact().encode_diff_v1(&sv)).into(),
                };
                fx.send(Target::Peer(peer), reply);
                // Every update integrated after this reply is sent after it too: from here on
                // the peer can have each one's dependencies.
                if let Some(state) = self.peers.get_mut(&peer)
                    && !state.synced
                {
                    state.synced = true;
                    self.unsynced -= 1;
                }
                Ok(())
            }
            Message::Sync(SyncMessage::SyncStep2(update)) => {
                self.receive_update(peer, update, true, now_ms, fx)
            }
            Message::Sync(SyncMessage::Update(update)) => {
                self.receive_update(peer, update, false, now_ms, fx)
            }
            Message::Awareness(entries) => {
                let changes = self.awareness.apply(peer, &entries, now_ms);
                if !changes.is_empty() {
                    fx.send(Target::All, encode_changes(&changes));
                }
                Ok(())
            }
            Message::QueryAwareness => {
                let states = self.awareness.states();
                if !states.is_empty() {
                    fx.send(Target::Peer(peer), encode_changes(&states));
                }
                Ok(())
            }
            // Auth messages from clients carry nothing we act on (tokens come with the URL).
            Message::Auth(AuthMessage::PermissionDenied(_) | AuthMessage::PermissionGranted) => {
                Ok(())
            }
        }
    }

    fn missing_dependency(&self, info: &UpdateInfo) -> Option<(u64, u32)> {
        let sv = self.doc.transact().state_vector();
        info.missing_dependency(|client| sv.get(&ClientID::new(client)))
    }

    fn receive_update(
        &mut self,
        peer: PeerId,
        update: &[u8],
        is_sync_step2: bool,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<(), PeerError> {
        let info = validate_update_v1(update, &self.config.update_limits)?;
        if info.is_empty() {
            return Ok(());
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return Ok(());
        };
        if state.info.read_only {
            fx.denied_writes += 1;
            if !state.denied_notified {
                state.denied_notified = true;
                fx.send(
                    Target::Peer(peer),
                    encode_auth_denied("read-only access: updates are ignored"),
                );
            }
            return Ok(());
        }
        let author = state.info.author.clone();
        if let Some((client, clock)) = self.missing_dependency(&info) {
            let Some(state) = self.peers.get_mut(&peer) else {
                return Ok(());
            };
            if is_sync_step2 && state.resync_requested {
                return Err(PeerError::MissingDependencies { client, clock });
            }
            if !state.resync_requested {
                // Ask for everything we lack; the answer (SyncStep2) carries this update too.
                state.resync_requested = true;
                fx.send(
                    Target::Peer(peer),
                    encode_sync_step1(&self.state_vector_v1()),
                );
            }
            return Ok(());
        }
        if is_sync_step2 && let Some(state) = self.peers.get_mut(&peer) {
            state.resync_requested = false;
        }
        self.integrate(update, &author, now_ms, fx)
    }

    /// Applies a validated update whose dependencies are present; logs and broadcasts what
    /// actually changed.
    fn integrate(
        &mut self,
        update: &[u8],
        author: &str,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<(), PeerError> {
        let delta = apply_guarded(&self.doc, update, true)?;
        if delta == EMPTY_UPDATE {
            return Ok(());
        }
        self.pristine = None;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries_since_snapshot += 1;
        self.bytes_since_snapshot += delta.len() as u64;
        self.broadcast_update(encode_update(&delta), fx);
        fx.append.push((
            seq,
            LogRecord {
                time_ms: now_ms,
                author: author.to_owned(),
                update: delta,
            },
        ));
        Ok(())
    }

    /// Sends a document update to every synced peer: one `Target::All` when all are (the usual
    /// case), one send per synced peer while some peer still waits for its SyncStep2 — an unsynced
    /// peer gets the update inside that SyncStep2 instead.
    fn broadcast_update(&self, frame: Vec<u8>, fx: &mut Effects) {
        if self.unsynced == 0 {
            fx.send(Target::All, frame);
            return;
        }
        let frame = Bytes::from(frame);
        for (&peer, state) in &self.peers {
            if state.synced {
                fx.send(Target::Peer(peer), frame.clone());
            }
        }
    }

    fn maybe_compact(&mut self, now_ms: u64, fx: &mut Effects) {
        if self.entries_since_snapshot >= self.config.compact_after_entries
            || self.bytes_since_snapshot >= self.config.compact_after_bytes
        {
            fx.compact = Some(self.snapshot(now_ms));
        }
    }

    /// The whole state as a snapshot covering every position logged so far.
    pub fn snapshot(&mut self, now_ms: u64) -> Snapshot {
        self.entries_since_snapshot = 0;
        self.bytes_since_snapshot = 0;
        Snapshot {
            seq: self.next_seq - 1,
            time_ms: now_ms,
            update: self.encode_state_v1(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let one = StoredRoom {
            snapshot: None,
            log: vec![LogEntry {
                seq: 1,
                record: LogRecord {
                    time_ms: 0,
                    author: "a".into(),
                    update: update.clone(),
                },
            }],
            next_seq: 2,
        };
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
        let stored = StoredRoom {
            snapshot: None,
            log: vec![LogEntry {
                seq: 1,
                record: LogRecord {
                    time_ms: 0,
                    author: "a".into(),
                    update: vec![1, 2, 3],
                },
            }],
            next_seq: 2,
        };
        assert!(Room::load(&stored, RoomConfig::default()).is_err());
    }
}
