//! The end of a simulation: the final phase (heal, reconnect, settle, last edits with any
//! sabotage armed, a visitor) and the checks that every connected client, the room in memory
//! and the room reloaded from storage agree, and that no departed client's awareness remains.

use std::collections::BTreeSet;

use yrs::{ReadTxn, Transact};

use super::{Sim, state_of};
use crate::ops::{Edit, doc_view};

impl Sim {
    /// The final phase: heal, reconnect, settle; one more edit per client (with any sabotage
    /// armed, so no later resync can heal it); a visitor joins, edits, sets awareness and leaves;
    /// settle; check.
    pub(super) fn finish(&mut self) -> Result<(), String> {
        let n = self.scenario.clients;
        for c in 0..n {
            self.clients[c].partitioned = false;
            if !self.clients[c].departed {
                self.clients[c].online = true;
                if self.clients[c].conn.is_none() {
                    self.connect(c)?;
                }
            }
        }
        self.drain().map_err(|e| format!("final settle: {e}"))?;
        self.armed = self.scenario.sabotage.is_some();
        for c in 0..n {
            if self.clients[c].conn.is_some() {
                let edit = Edit::TextInsert {
                    target: 0,
                    pos: 0,
                    s: format!("[{c}]"),
                    attr: None,
                };
                self.edit(c, &edit)?;
            }
        }
        self.drain()
            .map_err(|e| format!("after final edits: {e}"))?;
        // the visitor
        let v = n;
        self.clients[v].online = true;
        self.connect(v)?;
        self.set_awareness(v, 1);
        self.edit(
            v,
            &Edit::MapSet {
                target: 0,
                key: "visitor".into(),
                value: crate::ops::Value::Bool { b: true },
            },
        )?;
        self.drain().map_err(|e| format!("visitor: {e}"))?;
        self.clients[v].online = false;
        self.clients[v].departed = true;
        self.disconnect(v)?;
        self.drain()
            .map_err(|e| format!("after visitor left: {e}"))?;
        self.check()
    }

    fn check(&self) -> Result<(), String> {
        let room_doc = self.server.room.doc();
        if room_doc.transact().has_missing_updates() {
            return Err("the room's document has pending structs".into());
        }
        let server_view = doc_view(room_doc);
        let server_state = state_of(room_doc);
        for (c, cl) in self.clients.iter().enumerate() {
            if cl.conn.is_none() {
                continue;
            }
            if cl.replica.doc.transact().has_missing_updates() {
                return Err(format!("client {c} has pending structs"));
            }
            let view = doc_view(&cl.replica.doc);
            if view.1 != server_view.1 {
                return Err(format!(
                    "client {c}'s text differs from the server's:\n  client: {:?}\n  server: {:?}",
                    view.1, server_view.1
                ));
            }
            if view.0 != server_view.0 {
                return Err(format!(
                    "client {c}'s JSON differs from the server's:\n  client: {}\n  server: {}",
                    view.0, server_view.0
                ));
            }
            let state = state_of(&cl.replica.doc);
            if state.0 != server_state.0 {
                return Err(format!(
                    "client {c}'s state vector {:?} differs from the server's {:?}",
                    state.0, server_state.0
                ));
            }
            if state.1 != server_state.1 {
                return Err(format!("client {c}'s delete set differs from the server's"));
            }
        }
        let fresh = self.server.load_fresh()?;
        if fresh.doc().transact().has_missing_updates() {
            return Err("the room loaded from storage has pending structs".into());
        }
        if state_of(fresh.doc()) != server_state || doc_view(fresh.doc()) != server_view {
            return Err(format!(
                "the room loaded fresh from storage differs from memory: stored {}, memory {}",
                doc_view(fresh.doc()).0,
                server_view.0
            ));
        }
        let owners = self.server.room.awareness().owners();
        let connected: BTreeSet<u64> = self
            .clients
            .iter()
            .filter(|c| c.conn.is_some())
            .map(|c| c.id)
            .collect();
        for id in owners.keys() {
            if !connected.contains(id) {
                return Err(format!(
                    "awareness of departed client {id} is still in the room"
                ));
            }
        }
        Ok(())
    }
}
