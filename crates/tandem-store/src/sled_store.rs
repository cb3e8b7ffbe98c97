//! [`DocStore`] on sled 0.34.
//!
//! Layout, all in sled's default tree so that one `Batch` covers a whole compaction atomically:
//!
//! | key                                        | value              |
//! |--------------------------------------------|--------------------|
//! | `n` name                                   | empty (room index) |
//! | `d` len:u16be name `s`                     | [`Snapshot`]       |
//! | `d` len:u16be name `l` seq:u64be           | log chunk          |
//!
//! The length prefix keeps one room's keys from being a prefix of another's. A log chunk holds
//! the records of consecutive positions starting at the key's `seq` (one group-commit batch;
//! see [`encode_log_chunk`]): one sled insert per batch instead of one per update, which is
//! most of the append cost.
//!
//! Compaction writes the snapshot (one insert) and leaves the covered chunks to a background
//! thread ([`LogGc`]): removing a thousand chunks took 8–28 ms per room, which inside the
//! caller's room task stalled that room's fan-out and, run on an async worker, every room
//! behind it. Readers skip whatever a snapshot covers, so chunks still waiting for removal,
//! or left behind by a crash (the next compaction's pass finds them), are never seen again.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::record::{be_u64, corrupt};
use crate::{
    DocStore, LogEntry, LogRecord, RoomStats, Snapshot, StoreError, StoredRoom, check_room_name,
    decode_log_value, encode_log_chunk, log_value_len,
};

/// When appended data reaches disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Nothing is flushed in the background; callers flush before acknowledging.
    Sync,
    /// sled flushes in the background every `flush_every_ms`; a crash loses at most that window.
    Async { flush_every_ms: u64 },
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub durability: Durability,
    /// sled page cache size in bytes.
    pub cache_capacity: u64,
}

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            durability: Durability::Sync,
            cache_capacity: 256 * 1024 * 1024,
        }
    }
}

pub struct SledStore {
    db: sled::Db,
    /// Rooms whose index key is known to be written, to skip re-writing it on every append.
    indexed: Mutex<HashSet<String>>,
    gc: LogGc,
}

/// Removes log chunks that a room's snapshot covers, on its own thread.
///
/// Safety of a removal: a chunk is removed only when the room's *current* snapshot covers it,
/// read while holding `lock`. `delete` holds the same lock, so a room deleted and recreated
/// meanwhile (whose positions start again at 1) cannot have a fresh chunk removed under an old
/// snapshot's position. Appends only add positions above the snapshot.
struct LogGc {
    tx: Option<mpsc::Sender<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    lock: Arc<Mutex<()>>,
}

impl LogGc {
    fn spawn(db: sled::Db) -> Self {
        let (tx, rx) = mpsc::channel::<String>();
        let lock = Arc::new(Mutex::new(()));
        let held = lock.clone();
        let thread = std::thread::Builder::new()
            .name("sled-log-gc".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // A burst of compactions of one room needs one pass.
                    let rooms: BTreeSet<String> =
                        std::iter::once(first).chain(rx.try_iter()).collect();
                    for room in rooms {
                        let _guard = held.lock().unwrap_or_else(|p| p.into_inner());
                        if let Err(e) = remove_covered_chunks(&db, &room) {
                            tracing::warn!(%room, error = %e, "reclaiming compacted log failed; the next compaction retries");
                        }
                    }
                }
            });
        match thread {
            Ok(thread) => LogGc {
                tx: Some(tx),
                thread: Some(thread),
                lock,
            },
            Err(e) => {
                tracing::warn!(error = %e, "no log reclaim thread; compaction reclaims inline");
                LogGc {
                    tx: None,
                    thread: None,
                    lock,
                }
            }
        }
    }

    /// Queues `room`; returns false when there is no thread to take it.
    fn queue(&self, room: &str) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send(room.to_owned()).is_ok())
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Let the thread finish what is queued and release its handle on the database.
        self.gc.tx = None;
        if let Some(thread) = self.gc.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The position `room`'s snapshot covers (0 without one), read from the snapshot's header.
fn snapshot_seq(db: &sled::Db, room: &str) -> Result<u64, StoreError> {
    match db.get(snapshot_key(room)).map_err(io)? {
        None => Ok(0),
        Some(v) => Snapshot::peek_seq(&v).map_err(|e| corrupt(room, format!("snapshot: {e}"))),
    }
}

/// Removes every log chunk of `room` that its current snapshot covers entirely (a chunk
/// reaching past the snapshot stays until a later snapshot covers it).
///
/// One `remove` per chunk, not a `Batch`: sled 0.34 applies a batch under its global write
/// lock, which would hold up every other room's appends for the whole pass. Removal needs no
/// atomicity, since readers skip covered chunks anyway.
fn remove_covered_chunks(db: &sled::Db, room: &str) -> Result<(), StoreError> {
    let covered = snapshot_seq(db, room)?;
    if covered == 0 {
        return Ok(());
    }
    let prefix = log_prefix(room);
    for kv in db.range(prefix.clone()..=log_key(room, covered)) {
        let (k, v) = kv.map_err(io)?;
        let first = SledStore::chunk_seq(room, &prefix, &k)?;
        let len = log_value_len(&v).map_err(|e| corrupt(room, format!("log {first}: {e}")))?;
        if first.saturating_add(len.saturating_sub(1)) <= covered {
            db.remove(k).map_err(io)?;
        }
    }
    Ok(())
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn room_prefix(room: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + room.len() + 9);
    k.push(b'd');
    k.extend_from_slice(&(room.len() as u16).to_be_bytes());
    k.extend_from_slice(room.as_bytes());
    k
}

fn snapshot_key(room: &str) -> Vec<u8> {
    let mut k = room_prefix(room);
    k.push(b's');
    k
}

fn log_prefix(room: &str) -> Vec<u8> {
    let mut k = room_prefix(room);
    k.push(b'l');
    k
}

fn log_key(room: &str, seq: u64) -> Vec<u8> {
    let mut k = log_prefix(room);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn index_key(room: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + room.len());
    k.push(b'n');
    k.extend_from_slice(room.as_bytes());
    k
}

/// How long [`SledStore::open`] waits for a just-closed store's file lock to be released.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl SledStore {
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let flush_every = match config.durability {
            Durability::Sync => None,
            Durability::Async { flush_every_ms } => Some(flush_every_ms.max(1)),
        };
        let sled_config = sled::Config::default()
            .path(&config.path)
            .cache_capacity(config.cache_capacity)
            .flush_every_ms(flush_every);
        // A store closed a moment ago in this process may still hold the directory's file lock:
        // sled's background threads release it only when they notice the shutdown. Nothing
        // signals that, so retry for a bounded time; another live process keeps it and we fail.
        // (sled 0.34 reports the lock failure only as an `ErrorKind::Other` with this message.)
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled_config.open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.map_err(io)?,
            }
        };
        Ok(SledStore {
            gc: LogGc::spawn(db.clone()),
            db,
            indexed: Mutex::new(HashSet::new()),
        })
    }

    fn ensure_indexed(&self, room: &str) -> Result<(), StoreError> {
        let mut indexed = self.indexed.lock().unwrap_or_else(|p| p.into_inner());
        if !indexed.contains(room) {
            self.db.insert(index_key(room), &[][..]).map_err(io)?;
            indexed.insert(room.to_owned());
        }
        Ok(())
    }

    /// The first position of a log key under `prefix`.
    fn chunk_seq(room: &str, prefix: &[u8], key: &[u8]) -> Result<u64, StoreError> {
        if key.len() != prefix.len() + 8 || !key.starts_with(prefix) {
            return Err(corrupt(room, "malformed log key"));
        }
        Ok(be_u64(&key[prefix.len()..]))
    }

    /// Log entries after `after` (which must be at least the snapshot's position: chunks the
    /// snapshot covers may still be stored).
    fn read_log(&self, room: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let prefix = log_prefix(room);
        let first_wanted = after.saturating_add(1);
        let mut out = Vec::new();
        let take = |key: &[u8], value: &[u8], out: &mut Vec<LogEntry>| {
            let seq = Self::chunk_seq(room, &prefix, key)?;
            let entries = decode_log_value(seq, value)
                .map_err(|e| corrupt(room, format!("log {seq}: {e}")))?;
            out.extend(entries.into_iter().filter(|e| e.seq > after));
            Ok::<(), StoreError>(())
        };
        // The chunk holding `after + 1` may start before it.
        let start = log_key(room, first_wanted);
        if let Some(kv) = self.db.range(prefix.clone()..start.clone()).next_back() {
            let (k, v) = kv.map_err(io)?;
            take(&k, &v, &mut out)?;
        }
        for kv in self.db.range(start..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv.map_err(io)?;
            if !k.starts_with(&prefix) {
                break;
            }
            take(&k, &v, &mut out)?;
        }
        out.truncate(limit);
        Ok(out)
    }

    fn read_snapshot(&self, room: &str) -> Result<Option<Snapshot>, StoreError> {
        match self.db.get(snapshot_key(room)).map_err(io)? {
            None => Ok(None),
            Some(v) => Snapshot::decode(&v)
                .map(Some)
                .map_err(|e| corrupt(room, format!("snapshot: {e}"))),
        }
    }
}

impl DocStore for SledStore {
    fn load(&self, room: &str) -> Result<StoredRoom, StoreError> {
        check_room_name(room)?;
        let snapshot = self.read_snapshot(room)?;
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        let log = self.read_log(room, after, usize::MAX)?;
        let next_seq = log.last().map_or(after, |e| e.seq) + 1;
        Ok(StoredRoom {
            snapshot,
            log,
            next_seq,
        })
    }

    fn append(&self, room: &str, entries: &[(u64, LogRecord)]) -> Result<(), StoreError> {
        check_room_name(room)?;
        if entries.is_empty() {
            return Ok(());
        }
        self.ensure_indexed(room)?;
        // One value per run of consecutive positions (normally the whole batch).
        let mut rest = entries;
        while let Some(&(first, _)) = rest.first() {
            let run = rest
                .iter()
                .enumerate()
                .take_while(|(i, (seq, _))| first.checked_add(*i as u64) == Some(*seq))
                .count();
            let (chunk, tail) = rest.split_at(run);
            self.db
                .insert(
                    log_key(room, first),
                    encode_log_chunk(chunk.iter().map(|(_, r)| r)),
                )
                .map_err(io)?;
            rest = tail;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(io)?;
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        // `h` is outside the room (`d`) and index (`n`) key spaces.
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.db
            .insert(b"health", &stamp.to_be_bytes()[..])
            .map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }

    fn compact(&self, room: &str, snapshot: &Snapshot) -> Result<(), StoreError> {
        check_room_name(room)?;
        self.ensure_indexed(room)?;
        self.db
            .insert(snapshot_key(room), snapshot.encode())
            .map_err(io)?;
        if !self.gc.queue(room) {
            let _guard = self.gc.lock.lock().unwrap_or_else(|p| p.into_inner());
            remove_covered_chunks(&self.db, room)?;
        }
        Ok(())
    }

    fn delete(&self, room: &str) -> Result<(), StoreError> {
        check_room_name(room)?;
        // Not while the reclaim thread judges this room's chunks by its old snapshot.
        let _guard = self.gc.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        for kv in self.db.scan_prefix(room_prefix(room)) {
            let (k, _) = kv.map_err(io)?;
            batch.remove(k);
        }
        batch.remove(index_key(room));
        self.db.apply_batch(batch).map_err(io)?;
        self.indexed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room);
        Ok(())
    }

    fn list_rooms(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        let start = match after {
            Some(a) => {
                let mut k = index_key(a);
                k.push(0); // first key strictly after `a`
                k
            }
            None => vec![b'n'],
        };
        let mut out = Vec::new();
        for kv in self.db.range(start..) {
            let (k, _) = kv.map_err(io)?;
            if k.first() != Some(&b'n') || out.len() >= limit {
                break;
            }
            match std::str::from_utf8(&k[1..]) {
                Ok(name) => out.push(name.to_owned()),
                Err(_) => tracing::warn!("skipping room index key that is not utf-8"),
            }
        }
        Ok(out)
    }

    fn stats(&self, room: &str) -> Result<Option<RoomStats>, StoreError> {
        check_room_name(room)?;
        if !self.db.contains_key(index_key(room)).map_err(io)? {
            return Ok(None);
        }
        let mut stats = RoomStats {
            name: room.to_owned(),
            ..RoomStats::default()
        };
        if let Some(v) = self.db.get(snapshot_key(room)).map_err(io)? {
            let s = Snapshot::decode(&v).map_err(|e| corrupt(room, format!("snapshot: {e}")))?;
            stats.size_bytes += v.len() as u64;
            stats.snapshot_seq = s.seq;
            stats.last_change_ms = s.time_ms;
        }
        let prefix = log_prefix(room);
        let mut last_seq = stats.snapshot_seq;
        let mut last_value = None;
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(io)?;
            let first = Self::chunk_seq(room, &prefix, &k)?;
            let len = log_value_len(&v).map_err(|e| corrupt(room, format!("log {first}: {e}")))?;
            let last = first.saturating_add(len.saturating_sub(1));
            stats.size_bytes += v.len() as u64;
            // entries a snapshot already covers (in a straddling chunk) do not count
            let from = first.max(stats.snapshot_seq.saturating_add(1));
            if last >= from {
                stats.log_len += last - from + 1;
            }
            last_seq = last_seq.max(last);
            last_value = Some((first, v));
        }
        if let Some((first, v)) = last_value {
            let entries =
                decode_log_value(first, &v).map_err(|e| corrupt(room, format!("log: {e}")))?;
            if let Some(e) = entries.last() {
                stats.last_change_ms = stats.last_change_ms.max(e.record.time_ms);
            }
        }
        stats.next_seq = last_seq + 1;
        Ok(Some(stats))
    }

    fn log_after(&self, room: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        check_room_name(room)?;
        let after = after.max(snapshot_seq(&self.db, room)?);
        self.read_log(room, after, limit)
    }
}

#[cfg(test)]
#[path = "sled_store_tests.rs"]
mod tests;
