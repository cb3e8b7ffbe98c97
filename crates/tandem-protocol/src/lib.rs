//! The y-protocols wire format as Tandem speaks it: bytes in, typed messages out, and back.
//!
//! This crate never does I/O and never touches a `yrs::Doc`. Everything it decodes comes from
//! untrusted peers, so every length is checked against the bytes actually present, recursion is
//! bounded, and every failure is a typed [`DecodeError`] — never a panic.
//!
//! * [`codec`] — lib0 variable-length integers, strings and buffers.
//! * [`message`] — sync / awareness / auth / query-awareness messages, several per frame.
//! * [`awareness`] — the awareness update payload.
//! * [`update`] — a structural validator for Yjs v1 updates, run before yrs sees the bytes.

pub mod awareness;
pub mod codec;
pub mod message;
pub mod update;

pub use awareness::{AwarenessEntry, decode_awareness, encode_awareness};
pub use codec::DecodeError;
pub use message::{
    AuthMessage, Message, SyncMessage, decode_frame, decode_state_vector, encode_auth_denied,
    encode_awareness_message, encode_message, encode_query_awareness, encode_state_vector,
    encode_sync_step1, encode_sync_step2, encode_update,
};
pub use update::{UpdateInfo, UpdateLimits, validate_update_v1};

/// The largest integer a JavaScript peer can represent exactly (2^53 - 1). Client ids and clocks
/// above it cannot round-trip through a stock Yjs client.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
