//! The hub: the registry of loaded rooms, one task per room, and the glue that carries out a
//! room's [`Effects`] — append to the log, wait for the group-commit flush, then fan out.
//!
//! A room task owns its [`Room`] outright (no lock around the document). Connections talk to it
//! through a bounded command channel; it talks back through each peer's bounded frame queue with
//! `try_send`, so one slow peer can never stall the room: a full queue disconnects that peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tandem_room::{Effects, PeerError, PeerId, PeerInfo, Prefetch, Room, Target, close};
use tandem_store::{DocStore, Durability, LogEntry, StoredRoom};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::ServerConfig;
use crate::flusher::Flusher;
use crate::metrics::Metrics;
use crate::outbox::Outbox;

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

/// Per-room state owned by the room task besides the [`Room`] itself.
struct Host {
    hub: Arc<Hub>,
    name: String,
    peers: HashMap<PeerId, PeerConn>,
}

impl Host {
    fn close_peer(&mut self, room: &mut Room, peer: PeerId, frame: CloseFrame, fx: &mut Effects) {
        if let Some(conn) = self.peers.remove(&peer) {
            tracing::info!(room = %self.name, peer, code = frame.0, reason = %frame.1, "closing peer");
            let _ = conn.close.send(frame);
        }
        let more = room.disconnect(peer, now_ms());
        fx.sends.extend(more.sends);
    }

    /// Writes the effects' log records and snapshot, then waits for durability (sync mode).
    async fn persist(&self, fx: &Effects) -> Result<(), String> {
        let wrote = tandem_room::persist_effects(self.hub.store.as_ref(), &self.name, fx)
            .map_err(|e| e.to_string())?;
        if !wrote {
            return Ok(());
        }
        if self.hub.config.durability == Durability::Sync {
            let start = Instant::now();
            self.hub.flusher.flush().await?;
            Metrics::observe_since(&self.hub.metrics.flush_seconds, start);
        }
        Ok(())
    }

    /// Fans out frames, written straight to each socket that takes them (outbox.rs); peers
    /// whose backlogs are full are disconnected, and the resulting awareness removals are
    /// delivered in turn.
    fn deliver(&mut self, room: &mut Room, mut sends: Vec<tandem_room::Outgoing>) {
        while !sends.is_empty() {
            let mut slow = Vec::new();
            let mut to_all = false;
            let mut to_some = Vec::new();
            for out in sends.drain(..) {
                match out.target {
                    Target::All => {
                        to_all = true;
                        for (&peer, conn) in &self.peers {
                            if conn.out.push(out.frame.clone()).is_err() {
                                slow.push(peer);
                            }
                        }
                    }
                    Target::Peer(peer) => {
                        if let Some(conn) = self.peers.get(&peer) {
                            to_some.push(peer);
                            if conn.out.push(out.frame.clone()).is_err() {
                                slow.push(peer);
                            }
                        }
                    }
                }
            }
            // One write per peer for the whole batch.
            if to_all {
                self.peers.values().for_each(|conn| conn.out.flush());
            } else {
                to_some.sort_unstable();
                to_some.dedup();
                for conn in to_some.iter().filter_map(|p| self.peers.get(p)) {
                    conn.out.flush();
                }
            }
            slow.sort_unstable();
            slow.dedup();
            let mut fx = Effects::default();
            for peer in slow {
                // The decision reaches the outbox directly: its backlog is freed now, even while
                // the connection's writer waits on a socket that takes nothing. Counted once
                // per peer, and not for a connection that had already ended (it is leaving).
                if self.peers.get(&peer).is_some_and(|conn| conn.out.abandon()) {
                    self.hub.metrics.slow_peer_disconnects.inc();
                }
                self.close_peer(
                    room,
                    peer,
                    (
                        close::TOO_SLOW,
                        "send queue full; reconnect to resync".into(),
                    ),
                    &mut fx,
                );
            }
            sends = fx.sends;
        }
    }

    fn close_all(&mut self, room: &mut Room, frame: CloseFrame) {
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        let mut fx = Effects::default();
        for peer in peers {
            self.close_peer(room, peer, frame.clone(), &mut fx);
        }
    }
}

/// Reads a room's stored state off the reactor.
async fn read_room(hub: &Hub, name: &str) -> Result<StoredRoom, String> {
    let store = hub.store.clone();
    let n = name.to_owned();
    tokio::task::spawn_blocking(move || store.load(&n))
        .await
        .map_err(|e| format!("load task failed: {e}"))?
        .map_err(|e| e.to_string())
}

/// Rebuilds the room from its stored state on the blocking pool: decoding and integrating a
/// large document takes tens of milliseconds, too long to hold a reactor thread.
fn build_room(hub: &Hub, stored: StoredRoom) -> tokio::task::JoinHandle<Result<Room, String>> {
    let config = hub.config.room.clone();
    tokio::task::spawn_blocking(move || Room::load(&stored, config).map_err(|e| e.to_string()))
}

async fn built(build: tokio::task::JoinHandle<Result<Room, String>>) -> Result<Room, String> {
    build
        .await
        .map_err(|e| format!("room rebuild failed: {e}"))?
}

/// What arrived while a room's document was being rebuilt.
#[derive(Default)]
struct WarmUp {
    /// Peers whose join was acknowledged; the room connects them once it is built.
    joined: Vec<(PeerId, PeerInfo, PeerConn)>,
    /// Joined peers whose opening SyncStep1 was answered from the [`Prefetch`]: the room must
    /// count them as synced, or they would never receive its updates.
    answered: std::collections::HashSet<PeerId>,
    /// Every other command, in arrival order, for the built room.
    deferred: Vec<RoomCmd>,
}

/// Serves a cold room's first readers from its stored state while the document is rebuilt:
/// joins are acknowledged at once, and a joined peer's opening SyncStep1 from nothing is
/// answered with the stored update ([`Prefetch`]). Everything else waits, in order, for the
/// built room (a peer's later frames too, once one of its frames had to wait).
async fn warm_up(
    prefetch: &Prefetch,
    build: tokio::task::JoinHandle<Result<Room, String>>,
    rx: &mut mpsc::Receiver<RoomCmd>,
) -> (Result<Room, String>, WarmUp) {
    let mut early = WarmUp::default();
    let mut waiting: std::collections::HashSet<PeerId> = std::collections::HashSet::new();
    let mut build = std::pin::pin!(built(build));
    loop {
        tokio::select! {
            biased;
            room = &mut build => return (room, early),
            cmd = rx.recv() => match cmd {
                None => return ((&mut build).await, early),
                Some(RoomCmd::Join { peer, info, conn, ready }) => {
                    if ready.send(Ok(())).is_ok() {
                        early.joined.push((peer, info, conn));
                    }
                }
                Some(RoomCmd::Frame { peer, frame }) => {
                    let conn = early.joined.iter().find(|(p, ..)| *p == peer).map(|j| &j.2);
                    let answered = !waiting.contains(&peer)
                        && conn.zip(prefetch.answer(&frame)).is_some_and(|(conn, reply)| {
                            let queued = conn.out.push(reply).is_ok();
                            conn.out.flush();
                            queued
                        });
                    if answered {
                        early.answered.insert(peer);
                    } else {
                        waiting.insert(peer);
                        early.deferred.push(RoomCmd::Frame { peer, frame });
                    }
                }
                Some(other) => early.deferred.push(other),
            },
        }
    }
}

/// Answers a command with the room's load failure.
fn refuse(cmd: RoomCmd, reason: &str) {
    match cmd {
        RoomCmd::Join { ready, .. } => {
            let _ = ready.send(Err(format!("room unavailable: {reason}")));
        }
        RoomCmd::ApplyExternal { reply, .. } => {
            let _ = reply.send(Err(ApplyError::Unavailable(reason.to_owned())));
        }
        RoomCmd::Inspect(f) => f(Err(reason)),
        RoomCmd::Frame { .. }
        | RoomCmd::Leave { .. }
        | RoomCmd::CloseAll(_)
        | RoomCmd::Shutdown => {}
    }
}

/// While `name` is being deleted, holds the room's commands instead of loading what storage is
/// about to lose; returns them (to run after the load) once the deletion is over. A `CloseAll`
/// or `Shutdown` meanwhile (the deletion closing this very room, or the server stopping) ends
/// the wait with `Err`: the held commands are to be refused.
async fn await_deletion(
    hub: &Hub,
    name: &str,
    rx: &mut mpsc::Receiver<RoomCmd>,
) -> Result<Vec<RoomCmd>, Vec<RoomCmd>> {
    let mut held = Vec::new();
    loop {
        let done = hub.deletion_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if !hub.is_being_deleted(name) {
            return Ok(held);
        }
        tracing::debug!(room = %name, "waiting for the room's deletion before loading it");
        tokio::select! {
            _ = &mut done => {}
            cmd = rx.recv() => match cmd {
                None => return Err(held),
                Some(RoomCmd::CloseAll(_) | RoomCmd::Shutdown) => return Err(held),
                Some(cmd) => held.push(cmd),
            },
        }
    }
}

/// Answers every command with the load failure until the queue is empty, then exits so a later
/// connection retries the load. The stored data is never written.
async fn refuse_all(
    hub: &Hub,
    name: &str,
    generation: u64,
    mut rx: mpsc::Receiver<RoomCmd>,
    reason: String,
    early: WarmUp,
) {
    for (_, _, conn) in early.joined {
        let _ = conn.close.send((
            close::ROOM_UNAVAILABLE,
            format!("room unavailable: {reason}"),
        ));
    }
    for cmd in early.deferred {
        refuse(cmd, &reason);
    }
    loop {
        while let Ok(cmd) = rx.try_recv() {
            refuse(cmd, &reason);
        }
        if hub.unregister(name, generation, &rx) {
            return;
        }
    }
}

async fn room_task(
    hub: Arc<Hub>,
    name: String,
    generation: u64,
    mut rx: mpsc::Receiver<RoomCmd>,
    peer_gauge: Arc<AtomicUsize>,
    unflushed: Arc<AtomicU64>,
) {
    let held = match await_deletion(&hub, &name, &mut rx).await {
        Ok(held) => held,
        Err(held) => {
            let reason = "the room was deleted; reconnect".to_owned();
            let early = WarmUp {
                deferred: held,
                ..WarmUp::default()
            };
            return refuse_all(&hub, &name, generation, rx, reason, early).await;
        }
    };
    let load_start = Instant::now();
    let stored = match read_room(&hub, &name).await {
        Ok(stored) => stored,
        Err(reason) => {
            tracing::error!(room = %name, %reason, "room cannot be loaded");
            return refuse_all(&hub, &name, generation, rx, reason, WarmUp::default()).await;
        }
    };
    let read_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let prefetch = Prefetch::new(&stored);
    let build = build_room(&hub, stored);
    let (room, early) = match &prefetch {
        Some(prefetch) => warm_up(prefetch, build, &mut rx).await,
        None => (built(build).await, WarmUp::default()),
    };
    let mut room = match room {
        Ok(room) => room,
        Err(reason) => {
            tracing::error!(room = %name, %reason, "room cannot be loaded");
            return refuse_all(&hub, &name, generation, rx, reason, early).await;
        }
    };
    tracing::debug!(
        room = %name,
        read_ms,
        ms = load_start.elapsed().as_secs_f64() * 1e3,
        early_peers = early.joined.len(),
        "room loaded"
    );
    let mut host = Host {
        hub: hub.clone(),
        name: name.clone(),
        peers: HashMap::new(),
    };
    let mut fx = Effects::default();
    for (peer, info, conn) in early.joined {
        host.peers.insert(peer, conn);
        // The prefetched reply is the stored state, which is exactly the built room's.
        let joined = if early.answered.contains(&peer) {
            room.connect_synced(peer, info)
        } else {
            room.connect(peer, info)
        };
        merge(&mut fx, joined);
    }
    host.deliver(&mut room, fx.sends);
    let mut tick = tokio::time::interval(hub.config.tick_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_since = Instant::now();
    // Commands that waited for the rebuild are the first batch.
    let mut batch = held;
    batch.extend(early.deferred);
    'run: loop {
        if batch.is_empty() {
            tokio::select! {
                n = rx.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        break 'run;
                    }
                }
                _ = tick.tick() => {
                    let fx = room.tick(now_ms());
                    host.deliver(&mut room, fx.sends);
                    peer_gauge.store(host.peers.len(), Ordering::Relaxed);
                    if host.peers.is_empty()
                        && idle_since.elapsed() >= hub.config.idle_unload
                        && hub.unregister(&name, generation, &rx)
                    {
                        tracing::debug!(room = %name, "unloading idle room");
                        break 'run;
                    }
                    continue;
                }
            }
        }
        let batch_start = Instant::now();
        let mut fx = Effects::default();
        let mut replies = Vec::new();
        let mut reload = false;
        let mut stop: Option<CloseFrame> = None;
        // Commands left for the next batch (allocates only when a batch is split).
        let mut carry = Vec::new();
        let mut cmds = batch.drain(..);
        while let Some(cmd) = cmds.next() {
            // `Target::All` is resolved when the batch is delivered, so a peer joining mid-batch
            // would receive updates the room emitted before it connected — before its SyncStep2,
            // against causal delivery. A join therefore starts the next batch.
            if matches!(cmd, RoomCmd::Join { .. }) && !fx.sends.is_empty() {
                carry.push(cmd);
                carry.extend(cmds.by_ref());
                break;
            }
            match cmd {
                RoomCmd::Join {
                    peer,
                    info,
                    conn,
                    ready,
                } => {
                    if ready.send(Ok(())).is_ok() {
                        host.peers.insert(peer, conn);
                        merge(&mut fx, room.connect(peer, info));
                    }
                }
                RoomCmd::Frame { peer, frame } => {
                    if !host.peers.contains_key(&peer) {
                        continue;
                    }
                    let start = Instant::now();
                    let (more, err) = room.handle(peer, &frame, now_ms());
                    Metrics::observe_since(&hub.metrics.apply_seconds, start);
                    merge(&mut fx, more);
                    if let Some(err) = err {
                        tracing::warn!(room = %name, peer, error = %err, "rejecting peer input");
                        reload |= err.leaves_doc_in_doubt();
                        let reason = err.to_string();
                        hub.metrics.rejected(err.close_code());
                        host.close_peer(&mut room, peer, (err.close_code(), reason), &mut fx);
                    }
                }
                RoomCmd::Leave { peer } => {
                    if host.peers.remove(&peer).is_some() {
                        tracing::info!(room = %name, peer, "peer left");
                        merge(&mut fx, room.disconnect(peer, now_ms()));
                    }
                }
                RoomCmd::ApplyExternal {
                    update,
                    author,
                    reply,
                } => match timed(&hub.metrics, || {
                    room.apply_external(&update, &author, now_ms())
                }) {
                    Ok(more) => {
                        merge(&mut fx, more);
                        replies.push(reply);
                    }
                    Err(e) => {
                        reload |= e.leaves_doc_in_doubt();
                        let _ = reply.send(Err(ApplyError::Rejected(e)));
                    }
                },
                RoomCmd::Inspect(f) => f(Ok(&room)),
                RoomCmd::CloseAll(frame) => stop = Some(frame),
                RoomCmd::Shutdown => {
                    stop = Some((close::GOING_AWAY, "server shutting down".into()))
                }
            }
        }
        drop(cmds);
        batch.append(&mut carry);
        // Marked before the log write, cleared once it is durable (or failed): a replay that
        // reads the log concurrently never sends an entry live subscribers have not been sent.
        let first_new = fx.append.first().map(|(seq, _)| *seq);
        if let Some(seq) = first_new {
            unflushed.store(seq, Ordering::Release);
        }
        let persisted = host.persist(&fx).await;
        if let Err(e) = persisted {
            unflushed.store(0, Ordering::Release);
            // Nothing unflushed may be confirmed: close everyone and drop the in-memory state so
            // the next load reads what storage really holds.
            tracing::error!(room = %name, error = %e, "storage failure");
            for r in replies {
                let _ = r.send(Err(ApplyError::Unavailable(format!(
                    "storage failure: {e}"
                ))));
            }
            host.close_all(&mut room, (close::INTERNAL_ERROR, "storage failure".into()));
            hub.forget(&name, generation);
            break 'run;
        }
        hub.publish(&name, &fx);
        if first_new.is_some() {
            unflushed.store(0, Ordering::Release);
        }
        hub.metrics.updates_applied.inc_by(fx.append.len() as u64);
        hub.metrics.denied_writes.inc_by(fx.denied_writes);
        host.deliver(&mut room, fx.sends);
        Metrics::observe_since(&hub.metrics.fanout_seconds, batch_start);
        peer_gauge.store(host.peers.len(), Ordering::Relaxed);
        for r in replies {
            let _ = r.send(Ok(()));
        }
        if reload {
            // A panic inside yrs, or an error it returned midway, may have left the document
            // half-updated: rebuild it from what storage holds (every accepted update is there).
            match host.hub.store.load(&name) {
                Ok(stored) => {
                    if let Err(e) = room.replace_doc(&stored) {
                        tracing::error!(room = %name, error = %e, "reload after panic failed");
                        host.close_all(&mut room, (close::ROOM_UNAVAILABLE, e.to_string()));
                        hub.forget(&name, generation);
                        break 'run;
                    }
                }
                Err(e) => {
                    host.close_all(&mut room, (close::ROOM_UNAVAILABLE, e.to_string()));
                    hub.forget(&name, generation);
                    break 'run;
                }
            }
        }
        if let Some(frame) = stop {
            host.close_all(&mut room, frame);
            hub.forget(&name, generation);
            break 'run;
        }
        if host.peers.is_empty() {
            idle_since = Instant::now();
        }
    }
    peer_gauge.store(0, Ordering::Relaxed);
    // Anything still queued (joins racing the unload) is dropped; joiners retry.
}

/// Runs `f`, recording its duration as an update apply time.
fn timed<T>(metrics: &Metrics, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    Metrics::observe_since(&metrics.apply_seconds, start);
    r
}

fn merge(into: &mut Effects, from: Effects) {
    into.append.extend(from.append);
    into.sends.extend(from.sends);
    if from.compact.is_some() {
        into.compact = from.compact;
    }
    into.denied_writes += from.denied_writes;
}
