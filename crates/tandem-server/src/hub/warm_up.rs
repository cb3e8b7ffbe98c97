//! Before a room task's batch loop runs: waiting out a deletion of the room, reading and
//! rebuilding it from storage (off the reactor), serving its first readers from the stored
//! state meanwhile ([`Prefetch`]), and refusing every command when it cannot be loaded. Must
//! never write the stored data of a room that failed to load.

use tandem_room::{PeerId, PeerInfo, Prefetch, Room, close};
use tandem_store::StoredRoom;
use tokio::sync::mpsc;

use super::{ApplyError, Hub, PeerConn, RoomCmd};

/// Reads a room's stored state off the reactor.
pub(super) async fn read_room(hub: &Hub, name: &str) -> Result<StoredRoom, String> {
    let store = hub.store.clone();
    let n = name.to_owned();
    tokio::task::spawn_blocking(move || store.load(&n))
        .await
        .map_err(|e| format!("load task failed: {e}"))?
        .map_err(|e| e.to_string())
}

/// Rebuilds the room from its stored state on the blocking pool: decoding and integrating a
/// large document takes tens of milliseconds, too long to hold a reactor thread.
pub(super) fn build_room(
    hub: &Hub,
    stored: StoredRoom,
) -> tokio::task::JoinHandle<Result<Room, String>> {
    let config = hub.config.room.clone();
    tokio::task::spawn_blocking(move || Room::load(&stored, config).map_err(|e| e.to_string()))
}

pub(super) async fn built(
    build: tokio::task::JoinHandle<Result<Room, String>>,
) -> Result<Room, String> {
    build
        .await
        .map_err(|e| format!("room rebuild failed: {e}"))?
}

/// What arrived while a room's document was being rebuilt.
#[derive(Default)]
pub(super) struct WarmUp {
    /// Peers whose join was acknowledged; the room connects them once it is built.
    pub(super) joined: Vec<(PeerId, PeerInfo, PeerConn)>,
    /// Joined peers whose opening SyncStep1 was answered from the [`Prefetch`]: the room must
    /// count them as synced, or they would never receive its updates.
    pub(super) answered: std::collections::HashSet<PeerId>,
    /// Every other command, in arrival order, for the built room.
    pub(super) deferred: Vec<RoomCmd>,
}

/// Serves a cold room's first readers from its stored state while the document is rebuilt:
/// joins are acknowledged at once, and a joined peer's opening SyncStep1 from nothing is
/// answered with the stored update ([`Prefetch`]). Everything else waits, in order, for the
/// built room (a peer's later frames too, once one of its frames had to wait).
pub(super) async fn warm_up(
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
pub(super) async fn await_deletion(
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
pub(super) async fn refuse_all(
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
