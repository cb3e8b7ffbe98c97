//! y-protocols messages: one frame carries one or more messages, each starting with a varuint
//! type. Decoding borrows from the frame; encoders produce exactly one message per `Vec`, because
//! a stock y-websocket client reads only the first message of each frame it receives.

use crate::MAX_SAFE_INTEGER;
use crate::awareness::{AwarenessEntry, decode_awareness, encode_awareness};
use crate::codec::{DecodeError, Reader, write_buf, write_str, write_var_u64};

pub const MSG_SYNC: u64 = 0;
pub const MSG_AWARENESS: u64 = 1;
pub const MSG_AUTH: u64 = 2;
pub const MSG_QUERY_AWARENESS: u64 = 3;

pub const SYNC_STEP1: u64 = 0;
pub const SYNC_STEP2: u64 = 1;
pub const SYNC_UPDATE: u64 = 2;

pub const AUTH_PERMISSION_DENIED: u64 = 0;
pub const AUTH_PERMISSION_GRANTED: u64 = 1;

/// One decoded message, borrowing its payload from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Sync(SyncMessage<'a>),
    Awareness(Vec<AwarenessEntry<'a>>),
    Auth(AuthMessage<'a>),
    QueryAwareness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMessage<'a> {
    /// The sender's state vector, already checked: (client, clock) pairs.
    SyncStep1(Vec<(u64, u32)>),
    /// A Yjs v1 update answering our SyncStep1 (not yet validated).
    SyncStep2(&'a [u8]),
    /// A Yjs v1 update made by the sender (not yet validated).
    Update(&'a [u8]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMessage<'a> {
    PermissionDenied(&'a str),
    PermissionGranted,
}

/// Decodes every message in a frame. A frame that is empty, truncated, or holds an unknown type
/// is rejected as a whole: nothing in it is acted upon.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<Message<'_>>, DecodeError> {
    if frame.is_empty() {
        return Err(DecodeError::EmptyFrame);
    }
    let mut reader = Reader::new(frame);
    let mut out = Vec::new();
    while !reader.is_empty() {
        out.push(decode_one(&mut reader)?);
    }
    Ok(out)
}

fn decode_one<'a>(r: &mut Reader<'a>) -> Result<Message<'a>, DecodeError> {
    match r.read_var_u64("message type")? {
        MSG_SYNC => {
            let msg = match r.read_var_u64("sync message type")? {
                SYNC_STEP1 => {
                    SyncMessage::SyncStep1(decode_state_vector(r.read_buf("state vector")?)?)
                }
                SYNC_STEP2 => SyncMessage::SyncStep2(r.read_buf("sync step 2 update")?),
                SYNC_UPDATE => SyncMessage::Update(r.read_buf("update")?),
                other => return Err(DecodeError::UnknownSyncType(other)),
            };
            Ok(Message::Sync(msg))
        }
        MSG_AWARENESS => Ok(Message::Awareness(decode_awareness(
            r.read_buf("awareness update")?,
        )?)),
        MSG_AUTH => match r.read_var_u64("auth message type")? {
            AUTH_PERMISSION_DENIED => Ok(Message::Auth(AuthMessage::PermissionDenied(
                r.read_str("auth reason")?,
            ))),
            AUTH_PERMISSION_GRANTED => Ok(Message::Auth(AuthMessage::PermissionGranted)),
            other => Err(DecodeError::UnknownAuthType(other)),
        },
        MSG_QUERY_AWARENESS => Ok(Message::QueryAwareness),
        other => Err(DecodeError::UnknownMessageType(other)),
    }
}

/// Decodes a v1 state vector: varuint count, then (client, clock) pairs. Client ids must be
/// JavaScript-safe integers and clocks must fit yrs' `u32`.
pub fn decode_state_vector(bytes: &[u8]) -> Result<Vec<(u64, u32)>, DecodeError> {
    let mut r = Reader::new(bytes);
    let n = r.read_count(2, "state vector length")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let client = r.read_var_bounded(MAX_SAFE_INTEGER, "state vector client id")?;
        let clock = r.read_var_bounded(u64::from(u32::MAX), "state vector clock")? as u32;
        out.push((client, clock));
    }
    if !r.is_empty() {
        return Err(DecodeError::TrailingBytes(r.remaining(), "state vector"));
    }
    Ok(out)
}

pub fn encode_state_vector(entries: impl IntoIterator<Item = (u64, u32)>) -> Vec<u8> {
    let entries: Vec<_> = entries.into_iter().collect();
    let mut out = Vec::with_capacity(1 + entries.len() * 8);
    write_var_u64(&mut out, entries.len() as u64);
    for (client, clock) in entries {
        write_var_u64(&mut out, client);
        write_var_u64(&mut out, u64::from(clock));
    }
    out
}

fn sync_message(kind: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    write_var_u64(&mut out, MSG_SYNC);
    write_var_u64(&mut out, kind);
    write_buf(&mut out, payload);
    out
}

/// SyncStep1 carrying an already-encoded v1 state vector.
pub fn encode_sync_step1(state_vector: &[u8]) -> Vec<u8> {
    sync_message(SYNC_STEP1, state_vector)
}

pub fn encode_sync_step2(update: &[u8]) -> Vec<u8> {
    sync_message(SYNC_STEP2, update)
}

pub fn encode_update(update: &[u8]) -> Vec<u8> {
    sync_message(SYNC_UPDATE, update)
}

pub fn encode_awareness_message(entries: &[AwarenessEntry<'_>]) -> Vec<u8> {
    let payload = encode_awareness(entries);
    let mut out = Vec::with_capacity(payload.len() + 6);
    write_var_u64(&mut out, MSG_AWARENESS);
    write_buf(&mut out, &payload);
    out
}

pub fn encode_query_awareness() -> Vec<u8> {
    vec![MSG_QUERY_AWARENESS as u8]
}

/// The auth message y-protocols clients understand as "permission denied: <reason>".
pub fn encode_auth_denied(reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(reason.len() + 4);
    write_var_u64(&mut out, MSG_AUTH);
    write_var_u64(&mut out, AUTH_PERMISSION_DENIED);
    write_str(&mut out, reason);
    out
}

/// Re-encodes a decoded message (used by tests and the fuzzer's clients).
pub fn encode_message(msg: &Message<'_>) -> Vec<u8> {
    match msg {
        Message::Sync(SyncMessage::SyncStep1(sv)) => {
            encode_sync_step1(&encode_state_vector(sv.iter().copied()))
        }
        Message::Sync(SyncMessage::SyncStep2(u)) => encode_sync_step2(u),
        Message::Sync(SyncMessage::Update(u)) => encode_update(u),
        Message::Awareness(entries) => encode_awareness_message(entries),
        Message::Auth(AuthMessage::PermissionDenied(reason)) => encode_auth_denied(reason),
        Message::Auth(AuthMessage::PermissionGranted) => {
            vec![MSG_AUTH as u8, AUTH_PERMISSION_GRANTED as u8]
        }
        Message::QueryAwareness => encode_query_awareness(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_messages_per_frame_round_trip() {
        let entries = vec![AwarenessEntry {
            client_id: 7,
            clock: 3,
            state: r#"{"user":{"name":"a"}}"#,
        }];
        let msgs = vec![
            Message::Sync(SyncMessage::SyncStep1(vec![(1, 2), (99, 0)])),
            Message::Sync(SyncMessage::SyncStep2(&[0, 0])),
            Message::Sync(SyncMessage::Update(&[1, 2, 3])),
            Message::Awareness(entries),
            Message::Auth(AuthMessage::PermissionDenied("nope")),
            Message::QueryAwareness,
        ];
        let frame: Vec<u8> = msgs.iter().flat_map(encode_message).collect();
        assert_eq!(decode_frame(&frame).expect("valid frame"), msgs);
    }

    /// Golden bytes as produced by y-protocols (`syncProtocol.writeSyncStep1` of an empty
    /// Y.Doc: `[0, 0, 1, 0]`, and `awarenessProtocol` query `[3]`).
    #[test]
    fn golden_frames_from_yjs() {
        assert_eq!(
            decode_frame(&[0, 0, 1, 0]).expect("valid"),
            vec![Message::Sync(SyncMessage::SyncStep1(vec![]))]
        );
        assert_eq!(encode_sync_step1(&[0]), vec![0, 0, 1, 0]);
        assert_eq!(
            decode_frame(&[3]).expect("valid"),
            vec![Message::QueryAwareness]
        );
    }

    #[test]
    fn bad_frames_are_rejected() {
        assert_eq!(decode_frame(&[]), Err(DecodeError::EmptyFrame));
        assert_eq!(decode_frame(&[9]), Err(DecodeError::UnknownMessageType(9)));
        assert_eq!(decode_frame(&[0, 5]), Err(DecodeError::UnknownSyncType(5)));
        assert!(decode_frame(&[0, 2, 10, 1]).is_err(), "truncated update");
        // a valid message followed by garbage rejects the whole frame
        assert!(decode_frame(&[3, 0]).is_err());
    }

    #[test]
    fn state_vector_rejects_unsafe_client_ids_and_huge_clocks() {
        let sv = encode_state_vector([(1 << 53, 1)]);
        assert!(decode_state_vector(&sv).is_err());
        let mut big_clock = Vec::new();
        write_var_u64(&mut big_clock, 1);
        write_var_u64(&mut big_clock, 5);
        write_var_u64(&mut big_clock, 1 << 33);
        assert!(decode_state_vector(&big_clock).is_err());
    }
}
