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
#[path = "room_tests.rs"]
mod tests;
