//! The simulated network: carries out a room's effects exactly as the server does (persist,
//! flush in sync mode, then send), moves one queued frame at a time over a link the seeded RNG
//! picks, and settles the system. Must never read a clock or use a thread: a seed must replay
//! exactly.

use std::sync::atomic::Ordering;

use rand::Rng;
use tandem_protocol::{Message, SyncMessage, decode_frame, encode_sync_step2, encode_update};
use tandem_room::{Effects, Target, persist_effects};
use tandem_store::DocStore;
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact};

use super::{Client, DurabilityMode, MAX_DRAIN, ROOM, Sabotage, Sim, awareness_frame};

impl Sim {
    /// Carries out a room's effects exactly as the server does: persist, flush (sync), send.
    pub(super) fn dispatch(&mut self, fx: Effects) -> Result<(), String> {
        let store = self.server.store()?.clone();
        if self.sabotage(Sabotage::SkipLogWrite) && !fx.append.is_empty() && fx.compact.is_none() {
            store.skip_next_append.store(true, Ordering::SeqCst);
            self.armed = false;
        }
        let wrote = persist_effects(store.as_ref(), ROOM, &fx).map_err(|e| e.to_string())?;
        if wrote {
            if self.scenario.durability == DurabilityMode::Sync {
                store.flush().map_err(|e| e.to_string())?;
            }
            // storage must account for every position the room handed out
            let stored_next = store
                .stats(ROOM)
                .map_err(|e| e.to_string())?
                .map_or(1, |s| s.next_seq);
            if stored_next != self.server.room.next_seq() {
                return Err(format!(
                    "storage's next log position is {stored_next}, the room's is {}",
                    self.server.room.next_seq()
                ));
            }
        }
        for out in fx.sends {
            for cl in &mut self.clients {
                let to_it = match (out.target, cl.conn) {
                    (_, None) => false,
                    (Target::All, Some(_)) => true,
                    (Target::Peer(p), Some(q)) => p == q,
                };
                if to_it {
                    cl.down.push_back(out.frame.to_vec());
                }
            }
        }
        Ok(())
    }

    /// Delivers one queued message from a random open link; false if nothing can move.
    pub(super) fn deliver_one(&mut self) -> Result<bool, String> {
        let mut links = Vec::new();
        for (i, cl) in self.clients.iter().enumerate() {
            if cl.conn.is_none() || cl.partitioned {
                continue;
            }
            if !cl.up.is_empty() {
                links.push((i, true));
            }
            if !cl.down.is_empty() {
                links.push((i, false));
            }
        }
        if links.is_empty() {
            return Ok(false);
        }
        let (c, up) = links[self.rng.random_range(0..links.len())];
        self.counters.messages += 1;
        if up {
            let Some(frame) = self.clients[c].up.pop_front() else {
                return Ok(true);
            };
            self.server_receive(c, &frame)?;
        } else {
            let Some(frame) = self.clients[c].down.pop_front() else {
                return Ok(true);
            };
            self.client_receive(c, &frame)?;
        }
        Ok(true)
    }

    fn server_receive(&mut self, c: usize, frame: &[u8]) -> Result<(), String> {
        let Some(peer) = self.clients[c].conn else {
            return Ok(());
        };
        if self.sabotage(Sabotage::DropUpdate)
            && decode_frame(frame).is_ok_and(|msgs| {
                msgs.iter()
                    .any(|m| matches!(m, Message::Sync(SyncMessage::Update(_))))
            })
        {
            self.armed = false;
            return Ok(());
        }
        let (fx, err) = self.server.room.handle(peer, frame, self.now_ms);
        self.dispatch(fx)?;
        if let Some(err) = err {
            return Err(format!("server rejected client {c}'s frame: {err}"));
        }
        Ok(())
    }

    fn client_receive(&mut self, c: usize, frame: &[u8]) -> Result<(), String> {
        if self.sabotage(Sabotage::CrashClient) {
            std::process::abort();
        }
        let msgs = decode_frame(frame).map_err(|e| format!("client {c} got a bad frame: {e}"))?;
        for msg in msgs {
            match msg {
                Message::Sync(SyncMessage::SyncStep1(sv)) => {
                    let cl = &mut self.clients[c];
                    let sv = StateVector::decode_v1(&tandem_protocol::encode_state_vector(sv))
                        .map_err(|e| format!("client {c}: state vector: {e}"))?;
                    let diff = cl.replica.doc.transact().encode_diff_v1(&sv);
                    cl.up.push_back(encode_sync_step2(&diff));
                }
                Message::Sync(SyncMessage::SyncStep2(u) | SyncMessage::Update(u)) => {
                    let cl = &mut self.clients[c];
                    cl.replica
                        .apply_remote(u)
                        .map_err(|e| format!("client {c}: apply: {e}"))?;
                    cl.flush_outgoing();
                }
                Message::QueryAwareness => {
                    let cl = &mut self.clients[c];
                    if cl.awareness.is_some() {
                        let frame = awareness_frame(cl);
                        cl.up.push_back(frame);
                    }
                }
                Message::Awareness(_) | Message::Auth(_) => {}
            }
        }
        Ok(())
    }

    pub(super) fn drain(&mut self) -> Result<(), String> {
        for _ in 0..MAX_DRAIN {
            self.now_ms += 1;
            if !self.deliver_one()? {
                return Ok(());
            }
        }
        Err(format!("no quiescence after {MAX_DRAIN} deliveries"))
    }
}

impl Client {
    /// Sends what the replica committed (edits, formatting cleanups) if connected.
    pub(super) fn flush_outgoing(&mut self) {
        for u in self.replica.take_outgoing() {
            if self.conn.is_some() {
                self.up.push_back(encode_update(&u));
            }
        }
    }
}
