//! The hub: the registry of loaded rooms, one task per room, and the glue that carries out a
//! room's [`Effects`] — append to the log, wait for the group-commit flush, then fan out.
//!
//! A room task owns its [`Room`] outright (no lock around the document). Connections talk to it
//! through a bounded command channel; it talks back through each peer's bounded frame queue with
//! `try_send`, so one slow peer can never stall the room: a full queue disconnects that peer.
//!
//! Layout: this file holds the [`Hub`] registry, the room handles, join / call / close_room /
//! shutdown and the deletion guard; `room_task.rs` the room task's batch loop and its `Host`
//! (persist, deliver, close); `warm_up.rs` what happens before that loop runs (waiting out a
//! deletion, the cold load, serving early readers from the [`Prefetch`](tandem_room::Prefetch),
//! refusing everything when the load fails).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tandem_room::{Effects, PeerError, PeerId, PeerInfo, Room};
use tandem_store::{DocStore, LogEntry};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::ServerConfig;
use crate::flusher::Flusher;
use crate::outbox::Outbox;

mod room_task;
mod warm_up;

use room_task::room_task;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A close request for a connection: WebSocket close code and reason.
pub type CloseFrame = (u16, String);

/// The room's ends of one connection.
pub struct PeerConn {
    pub out: Outbox,
    pub close: oneshot::Sender<CloseFrame>,
}

/// Why an API write failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Rejected(#[from] PeerError),
    #[error("room unavailable: {0}")]
    Unavailable(String),
    #[error("server is shutting down")]
    ShuttingDown,
}

type Inspector = Box<dyn FnOnce(Result<&Room, &str>) + Send>;

pub enum RoomCmd {
    Join {
        peer: PeerId,
        info: PeerInfo,
        conn: PeerConn,
        ready: oneshot::Sender<Result<(), String>>,
    },
    Frame {
        peer: PeerId,
        frame: Bytes,
    },
    Leave {
        peer: PeerId,
    },
    /// Apply an update from the HTTP API; answered once it is durable.
    ApplyExternal {
        update: Vec<u8>,
        author: String,
        reply: oneshot::Sender<Result<(), ApplyError>>,
    },
    /// Run a read-only function on the loaded room (or the reason it could not load).
    Inspect(Inspector),
    /// Close every peer with this frame (the room's data was deleted) and unload.
    CloseAll(CloseFrame),
    Shutdown,
}

#[derive(Clone)]
pub struct RoomHandle {
    pub tx: mpsc::Sender<RoomCmd>,
    generation: u64,
    /// Connected peers, kept by the room task (read by listings without loading the room).
    peers: Arc<AtomicUsize>,
    /// The first log position written but not yet durable (and so not yet published), 0 when no
    /// write is in flight; kept by the room task, read by the change feed's replay.
    unflushed: Arc<AtomicU64>,
}

/// Capacity of a room's change-feed broadcast; a subscriber further behind catches up from
/// the log.
pub const FEED_CAPACITY: usize = 1024;

pub struct Hub {
    rooms: Mutex<HashMap<String, RoomHandle>>,
    store: Arc<dyn DocStore>,
    flusher: Flusher,
    flusher_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub config: ServerConfig,
    next_peer: AtomicU64,
    next_generation: AtomicU64,
    shutting_down: AtomicBool,
    /// Room tasks and connection tasks, awaited at shutdown.
    pub tasks: TaskTracker,
    /// The number of loaded rooms, observable (tests wait on unloads through it).
    loaded: tokio::sync::watch::Sender<usize>,
    /// Change feeds: durable log entries per room, for the SSE endpoint. Independent of room
    /// loading, so a subscriber survives unload/reload.
    feeds: Mutex<HashMap<String, broadcast::Sender<Arc<LogEntry>>>>,
    /// Cancelled when shutdown starts (ends long-lived HTTP streams such as the change feed).
    pub closing: tokio_util::sync::CancellationToken,
    /// Prometheus metrics, scraped at `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Rooms whose stored data is being deleted (with the number of deletions under way): a
    /// room task started meanwhile holds its commands until the data is gone, then loads.
    deleting: Mutex<HashMap<String, usize>>,
    /// Notified whenever a deletion ends.
    deletion_done: tokio::sync::Notify,
}

/// Marks a room as being deleted until dropped (see [`Hub::begin_delete`]).
pub struct Deletion {
    hub: Arc<Hub>,
    name: String,
}

impl Drop for Deletion {
    fn drop(&mut self) {
        let mut deleting = self.hub.deleting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = deleting.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                deleting.remove(&self.name);
            }
        }
        drop(deleting);
        self.hub.deletion_done.notify_waiters();
    }
}

impl Hub {
    pub fn new(store: Arc<dyn DocStore>, config: ServerConfig) -> Arc<Self> {
        let (flusher, task) = Flusher::spawn(store.clone(), config.group_commit);
        Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            store,
            flusher,
            flusher_task: Mutex::new(Some(task)),
            config,
            next_peer: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            loaded: tokio::sync::watch::Sender::new(0),
            feeds: Mutex::new(HashMap::new()),
            closing: tokio_util::sync::CancellationToken::new(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            deleting: Mutex::new(HashMap::new()),
            deletion_done: tokio::sync::Notify::new(),
        })
    }

    /// Marks `name` as being deleted: until the returned guard drops, the room cannot load (a
    /// peer reconnecting in the middle of a delete would otherwise load the old state just
    /// before storage loses it, and the room's next writes would build on positions that no
    /// longer exist). Take it before closing the room's peers; a room task started meanwhile
    /// waits in `await_deletion`.
    pub fn begin_delete(self: &Arc<Self>, name: &str) -> Deletion {
        *self
            .deleting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_insert(0) += 1;
        Deletion {
            hub: self.clone(),
            name: name.to_owned(),
        }
    }

    fn is_being_deleted(&self, name: &str) -> bool {
        self.deleting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    pub fn store(&self) -> &Arc<dyn DocStore> {
        &self.store
    }

    pub fn next_peer_id(&self) -> PeerId {
        self.next_peer.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn loaded_rooms(&self) -> usize {
        self.lock_rooms().len()
    }

    /// Follows the number of loaded rooms as rooms load and unload.
    pub fn watch_loaded_rooms(&self) -> tokio::sync::watch::Receiver<usize> {
        self.loaded.subscribe()
    }

    fn publish_loaded(&self, rooms: &HashMap<String, RoomHandle>) {
        self.loaded.send_replace(rooms.len());
        self.metrics.rooms_loaded.set(rooms.len() as i64);
    }

    pub fn is_loaded(&self, room: &str) -> bool {
        self.lock_rooms().contains_key(room)
    }

    /// Peers connected to a room right now (0 when it is not loaded).
    pub fn peer_count(&self, room: &str) -> usize {
        self.lock_rooms()
            .get(room)
            .map_or(0, |h| h.peers.load(Ordering::Relaxed))
    }

    /// Follows a room's durable log entries as they are appended.
    pub fn subscribe(&self, room: &str) -> broadcast::Receiver<Arc<LogEntry>> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.retain(|_, tx| tx.receiver_count() > 0);
        feeds
            .entry(room.to_owned())
            .or_insert_with(|| broadcast::channel(FEED_CAPACITY).0)
            .subscribe()
    }

    /// The first log position of `room` that is written but not yet durable, if a write is in
    /// flight. Read it after reading the log: every entry the read saw at or past it may still
    /// be lost, every entry before it is durable.
    pub fn unflushed_from(&self, room: &str) -> Option<u64> {
        // A room that is not loaded has no write in flight.
        let seq = self
            .lock_rooms()
            .get(room)
            .map_or(0, |h| h.unflushed.load(Ordering::Acquire));
        (seq != 0).then_some(seq)
    }

    /// Publishes durable entries to the room's feed subscribers (if any).
    fn publish(&self, room: &str, fx: &Effects) {
        if fx.append.is_empty() {
            return;
        }
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = feeds.get(room) {
            for (seq, record) in &fx.append {
                let _ = tx.send(Arc::new(LogEntry {
                    seq: *seq,
                    record: record.clone(),
                }));
            }
        }
    }

    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomHandle>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handle of a loaded room, starting its task (which loads it) if needed.
    fn handle(self: &Arc<Self>, name: &str) -> RoomHandle {
        let mut rooms = self.lock_rooms();
        if let Some(h) = rooms.get(name) {
            return h.clone();
        }
        let (tx, rx) = mpsc::channel(self.config.room_queue_frames);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let peers = Arc::new(AtomicUsize::new(0));
        let unflushed = Arc::new(AtomicU64::new(0));
        let handle = RoomHandle {
            tx,
            generation,
            peers: peers.clone(),
            unflushed: unflushed.clone(),
        };
        rooms.insert(name.to_owned(), handle.clone());
        self.publish_loaded(&rooms);
        let hub = self.clone();
        let name = name.to_owned();
        self.tasks
            .spawn(async move { room_task(hub, name, generation, rx, peers, unflushed).await });
        handle
    }

    /// Removes a room from the registry if it is still this generation and nothing is queued.
    fn unregister(&self, name: &str, generation: u64, rx: &mpsc::Receiver<RoomCmd>) -> bool {
        let mut rooms = self.lock_rooms();
        if !rx.is_empty() {
            return false;
        }
        if rooms.get(name).is_some_and(|h| h.generation == generation) {
            rooms.remove(name);
            self.publish_loaded(&rooms);
        }
        true
    }

    /// Sends a command built by `make` to the room, retrying once the room restarts if it was
    /// unloading at that moment. `make` is called again for each attempt with a fresh reply
    /// channel, so a dropped command is never half-applied.
    pub async fn call<T>(
        self: &Arc<Self>,
        name: &str,
        make: impl Fn(oneshot::Sender<T>) -> RoomCmd,
    ) -> Option<T> {
        for _ in 0..8 {
            if self.is_shutting_down() {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            let handle = self.handle(name);
            if handle.tx.send(make(tx)).await.is_err() {
                self.forget(name, handle.generation);
                continue;
            }
            match rx.await {
                Ok(v) => return Some(v),
                Err(_) => {
                    self.forget(name, handle.generation);
                    continue;
                }
            }
        }
        None
    }

    fn forget(&self, name: &str, generation: u64) {
        let mut rooms = self.lock_rooms();
        if rooms.get(name).is_some_and(|h| h.generation == generation) {
            rooms.remove(name);
            self.publish_loaded(&rooms);
        }
    }

    /// Joins `peer` to a room; returns the room's command sender once the room is loaded.
    pub async fn join(
        self: &Arc<Self>,
        name: &str,
        peer: PeerId,
        info: PeerInfo,
        conn: PeerConn,
    ) -> Result<mpsc::Sender<RoomCmd>, String> {
        // `conn` can only be moved once; keep it in a slot the retry loop refills on failure.
        let mut slot = Some(conn);
        for _ in 0..8 {
            if self.is_shutting_down() {
                return Err("server is shutting down".into());
            }
            let Some(conn) = slot.take() else {
                return Err("connection lost while joining".into());
            };
            let handle = self.handle(name);
            let (ready, ready_rx) = oneshot::channel();
            let cmd = RoomCmd::Join {
                peer,
                info: info.clone(),
                conn,
                ready,
            };
            match handle.tx.send(cmd).await {
                Err(mpsc::error::SendError(RoomCmd::Join { conn, .. })) => {
                    slot = Some(conn);
                    self.forget(name, handle.generation);
                }
                Err(_) => return Err("room task rejected the join".into()),
                Ok(()) => match ready_rx.await {
                    Ok(Ok(())) => return Ok(handle.tx),
                    Ok(Err(reason)) => return Err(reason),
                    // the room unloaded with our join still queued: the conn is gone with it
                    Err(_) => return Err("room restarted while joining; reconnect".into()),
                },
            }
        }
        Err("room is restarting; reconnect".into())
    }

    /// Closes a room's peers with `frame` and waits until the room has unloaded.
    pub async fn close_room(self: &Arc<Self>, name: &str, frame: CloseFrame) {
        let mut loaded = self.watch_loaded_rooms();
        let handle = self.lock_rooms().get(name).cloned();
        let Some(handle) = handle else { return };
        if handle.tx.send(RoomCmd::CloseAll(frame)).await.is_err() {
            self.forget(name, handle.generation);
            return;
        }
        loop {
            let still = self
                .lock_rooms()
                .get(name)
                .is_some_and(|h| h.generation == handle.generation);
            if !still || loaded.changed().await.is_err() {
                return;
            }
        }
    }

    /// Stops every room: each flushes, closes its peers with 1001 and exits.
    pub async fn shutdown(self: &Arc<Self>) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.closing.cancel();
        let handles: Vec<RoomHandle> = self.lock_rooms().values().cloned().collect();
        for h in handles {
            let _ = h.tx.send(RoomCmd::Shutdown).await;
        }
        self.tasks.close();
        self.tasks.wait().await;
        self.flusher.stop();
        let task = self
            .flusher_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}
