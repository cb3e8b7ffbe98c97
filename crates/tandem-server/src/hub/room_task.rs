//! The room task: owns one [`Room`] and runs its command batches. Each batch is persisted
//! (appended, and flushed in sync durability) before anything it produced is published or
//! delivered — log before echo. Must never send a frame ahead of its batch's log write, and
//! never let one peer's full backlog block the room (`Host::deliver` disconnects it instead).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tandem_room::{Effects, PeerId, Prefetch, Room, Target, close};
use tandem_store::Durability;
use tokio::sync::mpsc;

use super::warm_up::{WarmUp, await_deletion, build_room, built, read_room, refuse_all, warm_up};
use super::{ApplyError, CloseFrame, Hub, PeerConn, RoomCmd, now_ms};
use crate::metrics::Metrics;

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

pub(super) async fn room_task(
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
