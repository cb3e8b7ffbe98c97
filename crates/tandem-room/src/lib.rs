//! A collaboration room without I/O: a yrs document, the awareness table and the connected
//! peers. Frames go in through [`Room::handle`]; what must happen next comes out as
//! [`Effects`] — log records to persist, frames to send, a snapshot to store, peers to close.
//!
//! The driver (the server's room task, or the fuzzer's simulator) must honour one ordering rule:
//! **every record in `Effects::append` is written to the update log before any frame in
//! `Effects::sends` leaves**, so nothing is echoed that storage does not hold.
//!
//! This crate never touches disk or sockets and never reads a clock: time comes in as a
//! parameter.

mod awareness;
#[cfg(test)]
mod causal_tests;
#[cfg(test)]
mod half_apply_tests;
mod room;
#[cfg(test)]
mod test_support;

pub use awareness::AwarenessTable;
pub use room::{PeerInfo, Prefetch, Room, RoomConfig};

use bytes::Bytes;
use tandem_store::{DocStore, LogRecord, Snapshot, StoreError};
use thiserror::Error;

/// Identifies a connection within a room (assigned by the driver, never reused while live).
pub type PeerId = u64;

/// Who receives an outgoing frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Peer(PeerId),
    /// Every connected peer, the sender included (stock clients treat the echo as confirmation).
    All,
}

/// One encoded message, shared by every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub target: Target,
    pub frame: Bytes,
}

/// What the driver must do after the room handled an input.
#[derive(Debug, Default)]
pub struct Effects {
    /// Log records (with their positions) to append, in order, before sending anything.
    pub append: Vec<(u64, LogRecord)>,
    /// Frames to send once the appends are stored (and flushed, in sync durability).
    pub sends: Vec<Outgoing>,
    /// A snapshot to store after the appends (it covers them).
    pub compact: Option<Snapshot>,
    /// Write attempts refused because the peer is read-only.
    pub denied_writes: u64,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.append.is_empty() && self.sends.is_empty() && self.compact.is_none()
    }

    pub(crate) fn send(&mut self, target: Target, frame: impl Into<Bytes>) {
        self.sends.push(Outgoing {
            target,
            frame: frame.into(),
        });
    }
}

/// Carries out the storage half of `fx` in the order the ordering rule needs: every log append
/// in order, then the snapshot (which covers them). Returns whether anything was written, i.e.
/// whether the driver must flush (in sync durability) before sending `fx.sends`.
///
/// Shared by the server's room task and the fuzzer's simulator so both persist identically.
pub fn persist_effects(store: &dyn DocStore, room: &str, fx: &Effects) -> Result<bool, StoreError> {
    if fx.append.is_empty() && fx.compact.is_none() {
        return Ok(false);
    }
    if !fx.append.is_empty() {
        store.append(room, &fx.append)?;
    }
    if let Some(snapshot) = &fx.compact {
        store.compact(room, snapshot)?;
    }
    Ok(true)
}

/// Why a peer must be disconnected. Each maps to a WebSocket close code (see `docs/protocol.md`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeerError {
    #[error("malformed message: {0}")]
    Malformed(#[from] tandem_protocol::DecodeError),
    #[error("update rejected: {0}")]
    Rejected(String),
    #[error("update depends on data that neither side has (client {client} clock {clock})")]
    MissingDependencies { client: u64, clock: u32 },
    /// yrs refused the update while applying it, possibly after integrating part of it: the
    /// document is in doubt and must be rebuilt from storage (see [`PeerError::leaves_doc_in_doubt`]).
    #[error("update rejected while applying: {0}")]
    ApplyFailed(String),
    #[error("internal error while applying update")]
    Panicked,
}

impl PeerError {
    /// The WebSocket close code for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            PeerError::Malformed(_) | PeerError::Rejected(_) | PeerError::ApplyFailed(_) => {
                close::BAD_MESSAGE
            }
            PeerError::MissingDependencies { .. } => close::MISSING_DEPENDENCIES,
            PeerError::Panicked => close::INTERNAL_ERROR,
        }
    }

    /// Whether the room's in-memory document may now differ from what storage holds: yrs
    /// panicked, or returned an error after integrating part of the update (yrs 0.28 does not
    /// roll back). The driver must then rebuild the document from storage, which holds every
    /// accepted update and nothing of this one.
    pub fn leaves_doc_in_doubt(&self) -> bool {
        matches!(self, PeerError::ApplyFailed(_) | PeerError::Panicked)
    }
}

/// WebSocket close codes Tandem uses.
///
/// Stock y-websocket (3.1, `defaultShouldReconnect`) never reconnects after a code from 4400 to
/// 4499 and reconnects after every other one. So 4400–4499 is kept for refusals that
/// reconnecting cannot cure (the client would send the same bytes again, or bring back what
/// was deleted); everything a client recovers from by reconnecting and resyncing uses another
/// code. See the table in `docs/protocol.md`.
pub mod close {
    /// Server shutting down. Reconnect (later).
    pub const GOING_AWAY: u16 = 1001;
    /// Unexpected server failure while handling this peer's input, or a storage failure.
    /// Reconnect: the room was rebuilt from storage.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The peer stopped answering pings. Reconnect.
    pub const TIMEOUT: u16 = 4000;
    /// An update whose dependencies the peer could not supply after a resync request.
    /// Reconnect: the full sync handshake of a new connection resyncs both sides.
    pub const MISSING_DEPENDENCIES: u16 = 4009;
    /// The peer fell too far behind; its backlog was dropped. Reconnect to resync.
    pub const TOO_SLOW: u16 = 4029;
    /// A malformed message or an update yrs rejects. Permanent: the client would resend it.
    pub const BAD_MESSAGE: u16 = 4400;
    /// The room was deleted through the API. Permanent: a reconnecting client would push its
    /// copy back and bring the deleted room back to life.
    pub const ROOM_DELETED: u16 = 4410;
    /// A message larger than the configured maximum. Permanent: on reconnect the client's
    /// sync answer would carry the same content again.
    pub const TOO_LARGE: u16 = 4413;
    /// The room's stored data cannot be read (it is left untouched), or the room was
    /// restarting while the peer joined. Reconnect later.
    pub const ROOM_UNAVAILABLE: u16 = 4500;

    /// Whether stock y-websocket 3.1 reconnects after `code` (its `defaultShouldReconnect`).
    pub fn stock_client_reconnects(code: u16) -> bool {
        !(4400..4500).contains(&code)
    }
}

#[cfg(test)]
mod close_code_tests {
    use super::close::*;

    /// Recoverable conditions must use codes the stock client reconnects after; refusals that
    /// reconnecting cannot cure must use codes it gives up on.
    #[test]
    fn codes_fall_on_the_intended_side_of_the_stock_reconnect_rule() {
        for code in [
            GOING_AWAY,
            INTERNAL_ERROR,
            TIMEOUT,
            MISSING_DEPENDENCIES,
            TOO_SLOW,
            ROOM_UNAVAILABLE,
        ] {
            assert!(stock_client_reconnects(code), "{code} must be recoverable");
        }
        for code in [BAD_MESSAGE, ROOM_DELETED, TOO_LARGE] {
            assert!(!stock_client_reconnects(code), "{code} must be permanent");
        }
    }
}

#[derive(Debug, Error)]
pub enum RoomError {
    #[error("stored data cannot be loaded: {0}")]
    Corrupt(String),
}
