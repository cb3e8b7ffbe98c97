//! The awareness table: per Yjs client id, its latest clock and JSON state, and which peer
//! introduced it. Follows y-protocols' `applyAwarenessUpdate` rules: a newer clock wins, a
//! `null` state at the current clock removes, and clocks survive removal so stale updates are
//! ignored.

use std::collections::{BTreeMap, HashMap};

use tandem_protocol::AwarenessEntry;

use crate::PeerId;

#[derive(Debug, Clone)]
struct ClientState {
    clock: u64,
    /// `None` once removed (the clock is kept).
    state: Option<String>,
    updated_ms: u64,
    owner: Option<PeerId>,
}

#[derive(Debug, Default)]
pub struct AwarenessTable {
    clients: BTreeMap<u64, ClientState>,
}

/// An accepted change, ready to relay: (client id, clock, JSON state or `null`).
pub type Change = (u64, u64, String);

impl AwarenessTable {
    /// Applies an update from `peer`; returns the accepted entries to relay to everyone.
    pub fn apply(
        &mut self,
        peer: PeerId,
        entries: &[AwarenessEntry<'_>],
        now_ms: u64,
    ) -> Vec<Change> {
        let mut accepted = Vec::new();
        for e in entries {
            let current = self.clients.get(&e.client_id);
            let cur_clock = current.map_or(0, |c| c.clock);
            let present = current.is_some_and(|c| c.state.is_some());
            let removal = e.is_removal();
            if cur_clock < e.clock || (cur_clock == e.clock && removal && present) {
                let state = (!removal).then(|| e.state.to_owned());
                self.clients.insert(
                    e.client_id,
                    ClientState {
                        clock: e.clock,
                        state,
                        updated_ms: now_ms,
                        owner: (!removal).then_some(peer),
                    },
                );
                accepted.push((e.client_id, e.clock, e.state.to_owned()));
            }
        }
        accepted
    }

    /// Removes every state `peer` introduced; returns the removals to relay.
    pub fn remove_peer(&mut self, peer: PeerId, now_ms: u64) -> Vec<Change> {
        self.remove_where(now_ms, |c| c.owner == Some(peer))
    }

    /// Removes states not renewed for `timeout_ms`; returns the removals to relay.
    pub fn expire(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<Change> {
        self.remove_where(now_ms, |c| {
            now_ms.saturating_sub(c.updated_ms) >= timeout_ms
        })
    }

    fn remove_where(&mut self, now_ms: u64, pred: impl Fn(&ClientState) -> bool) -> Vec<Change> {
        let mut removed = Vec::new();
        for (&id, c) in self.clients.iter_mut() {
            if c.state.is_some() && pred(c) {
                c.clock += 1;
                c.state = None;
                c.owner = None;
                c.updated_ms = now_ms;
                removed.push((id, c.clock, "null".to_owned()));
            }
        }
        removed
    }

    /// Every present state, for a newcomer or a query.
    pub fn states(&self) -> Vec<Change> {
        self.clients
            .iter()
            .filter_map(|(&id, c)| c.state.as_ref().map(|s| (id, c.clock, s.clone())))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.clients.values().filter(|c| c.state.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Client ids currently owned per peer (for diagnostics and tests).
    pub fn owners(&self) -> HashMap<u64, PeerId> {
        self.clients
            .iter()
            .filter_map(|(&id, c)| c.owner.map(|p| (id, p)))
            .collect()
    }
}

/// Encodes changes as one awareness message frame.
pub fn encode_changes(changes: &[Change]) -> Vec<u8> {
    let entries: Vec<AwarenessEntry<'_>> = changes
        .iter()
        .map(|(client_id, clock, state)| AwarenessEntry {
            client_id: *client_id,
            clock: *clock,
            state,
        })
        .collect();
    tandem_protocol::encode_awareness_message(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(client_id: u64, clock: u64, state: &str) -> AwarenessEntry<'_> {
        AwarenessEntry {
            client_id,
            clock,
            state,
        }
    }

    #[test]
    fn newer_clock_wins_and_stale_is_ignored() {
        let mut t = AwarenessTable::default();
        assert_eq!(t.apply(1, &[e(10, 1, "{}")], 0).len(), 1);
        assert_eq!(
            t.apply(1, &[e(10, 1, r#"{"a":1}"#)], 0).len(),
            0,
            "same clock ignored"
        );
        assert_eq!(t.apply(1, &[e(10, 2, r#"{"a":1}"#)], 0).len(), 1);
        assert_eq!(
            t.apply(1, &[e(10, 2, "null")], 0).len(),
            1,
            "removal at same clock"
        );
        assert!(t.is_empty());
        assert_eq!(
            t.apply(1, &[e(10, 2, "{}")], 0).len(),
            0,
            "clock kept after removal"
        );
    }

    #[test]
    fn peer_removal_and_expiry() {
        let mut t = AwarenessTable::default();
        t.apply(1, &[e(10, 1, "{}"), e(11, 1, "{}")], 0);
        t.apply(2, &[e(20, 1, "{}")], 5_000);
        let removed = t.remove_peer(1, 6_000);
        assert_eq!(
            removed,
            vec![(10, 2, "null".into()), (11, 2, "null".into())]
        );
        assert_eq!(t.states().len(), 1);
        assert!(t.expire(20_000, 30_000).is_empty());
        assert_eq!(t.expire(35_000, 30_000).len(), 1);
        assert!(t.is_empty());
    }
}
