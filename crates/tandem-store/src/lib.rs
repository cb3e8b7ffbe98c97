//! Durable storage for rooms: one snapshot plus an append-only update log per room.
//!
//! [`DocStore`] is the only way the rest of Tandem reaches disk; [`SledStore`] implements it on
//! sled 0.34 and is the only code in the workspace that knows sled. The store knows nothing about
//! Yjs: snapshots and log entries are opaque bytes, and records are checked on the way back in so
//! that corruption surfaces as [`StoreError::Corrupt`] instead of garbage.
//!
//! Log positions (`seq`) are per room, start at 1, and are never reused while the room exists:
//! a snapshot records the last position it covers, so positions keep counting after compaction.

mod record;
mod sled_store;

pub use record::{
    LogEntry, LogRecord, Snapshot, decode_log_value, encode_log_chunk, log_value_len,
};
pub use sled_store::{Durability, SledStore, StoreConfig};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage i/o error: {0}")]
    Io(String),
    #[error("stored data for room {room:?} is corrupt: {detail}")]
    Corrupt { room: String, detail: String },
    #[error("room name must be 1 to {max} bytes, got {len}")]
    InvalidRoomName { len: usize, max: usize },
}

/// The longest room name, in bytes of UTF-8.
pub const MAX_ROOM_NAME_BYTES: usize = 512;

/// Everything stored for one room, as needed to rebuild it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRoom {
    pub snapshot: Option<Snapshot>,
    /// Log entries after the snapshot, in position order.
    pub log: Vec<LogEntry>,
    /// The position the next appended entry will get.
    pub next_seq: u64,
}

impl StoredRoom {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.log.is_empty()
    }
}

/// Summary of a room's stored data (for listings and metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomStats {
    pub name: String,
    /// Bytes of snapshot + log values.
    pub size_bytes: u64,
    /// Entries in the update log (not yet compacted into the snapshot).
    pub log_len: u64,
    /// Milliseconds since the Unix epoch of the newest stored change.
    pub last_change_ms: u64,
    /// Last log position covered by the snapshot (0 when there is none).
    pub snapshot_seq: u64,
    pub next_seq: u64,
}

/// Storage for rooms. Implementations must be safe to share between threads; every method may
/// block on disk and must be called off the async reactor (e.g. `spawn_blocking`) where that
/// matters.
pub trait DocStore: Send + Sync + 'static {
    /// Reads a room's snapshot and remaining log. An unknown room is empty, not an error.
    fn load(&self, room: &str) -> Result<StoredRoom, StoreError>;
    /// Appends records at their positions (which the caller got from `load().next_seq` and
    /// increments itself), in increasing order. Visible to `load` at once; durable after the next
    /// [`flush`](Self::flush). A run of consecutive positions may be stored as one value.
    fn append(&self, room: &str, entries: &[(u64, LogRecord)]) -> Result<(), StoreError>;
    /// Makes every append and compaction so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Stores `snapshot`, replacing the room's previous one. From then on the log entries it
    /// covers (`<= snapshot.seq`) are gone for every reader; an implementation may reclaim their
    /// space later (in the background), since nothing reads them again.
    fn compact(&self, room: &str, snapshot: &Snapshot) -> Result<(), StoreError>;
    /// Deletes everything stored for a room.
    fn delete(&self, room: &str) -> Result<(), StoreError>;
    /// Names of every room with stored data, sorted, starting after `after` (exclusive), at most `limit`.
    fn list_rooms(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Stored-data summary of one room; `None` if nothing is stored.
    fn stats(&self, room: &str) -> Result<Option<RoomStats>, StoreError>;
    /// Log entries with position `> after` not covered by the snapshot, at most `limit`, in
    /// order.
    fn log_after(&self, room: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError>;
    /// Proves the store is open and writable (readiness probes): writes and flushes a small
    /// health record outside every room's keys. The default only flushes.
    fn check_writable(&self) -> Result<(), StoreError> {
        self.flush()
    }
}

pub fn check_room_name(room: &str) -> Result<(), StoreError> {
    if room.is_empty() || room.len() > MAX_ROOM_NAME_BYTES {
        return Err(StoreError::InvalidRoomName {
            len: room.len(),
            max: MAX_ROOM_NAME_BYTES,
        });
    }
    Ok(())
}
