//! The awareness update payload: varuint count, then (client id, clock, JSON state) triples.
//! A state of `null` means the client left.
//!
//! States are relayed verbatim to browsers that will `JSON.parse` them, so each one is checked
//! to be well-formed JSON (serde_json bounds nesting) before it is accepted.

use crate::MAX_SAFE_INTEGER;
use crate::codec::{DecodeError, Reader, write_str, write_var_u64};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwarenessEntry<'a> {
    pub client_id: u64,
    pub clock: u64,
    /// The JSON text of the state; `"null"` marks a removal.
    pub state: &'a str,
}

impl AwarenessEntry<'_> {
    pub fn is_removal(&self) -> bool {
        self.state.trim() == "null"
    }
}

pub fn decode_awareness(bytes: &[u8]) -> Result<Vec<AwarenessEntry<'_>>, DecodeError> {
    let mut r = Reader::new(bytes);
    let n = r.read_count(3, "awareness entry count")?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let client_id = r.read_var_bounded(MAX_SAFE_INTEGER, "awareness client id")?;
        let clock = r.read_var_bounded(MAX_SAFE_INTEGER, "awareness clock")?;
        let state = r.read_str("awareness state")?;
        serde_json::from_str::<serde::de::IgnoredAny>(state)
            .map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
        out.push(AwarenessEntry {
            client_id,
            clock,
            state,
        });
    }
    if !r.is_empty() {
        return Err(DecodeError::TrailingBytes(
            r.remaining(),
            "awareness update",
        ));
    }
    Ok(out)
}

pub fn encode_awareness(entries: &[AwarenessEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    write_var_u64(&mut out, entries.len() as u64);
    for e in entries {
        write_var_u64(&mut out, e.client_id);
        write_var_u64(&mut out, e.clock);
        write_str(&mut out, e.state);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_removal() {
        let entries = [
            AwarenessEntry {
                client_id: 1,
                clock: 1,
                state: r#"{"cursor":null}"#,
            },
            AwarenessEntry {
                client_id: 2,
                clock: 9,
                state: "null",
            },
        ];
        let bytes = encode_awareness(&entries);
        let back = decode_awareness(&bytes).expect("valid");
        assert_eq!(back, entries);
        assert!(!back[0].is_removal());
        assert!(back[1].is_removal());
    }

    #[test]
    fn invalid_json_and_deep_json_are_rejected() {
        let bad = [AwarenessEntry {
            client_id: 1,
            clock: 1,
            state: "{not json",
        }];
        assert!(decode_awareness(&encode_awareness(&bad)).is_err());
        let deep = "[".repeat(100_000);
        let deep = [AwarenessEntry {
            client_id: 1,
            clock: 1,
            state: &deep,
        }];
        assert!(decode_awareness(&encode_awareness(&deep)).is_err());
    }
}
