//! Helpers shared by this crate's unit tests (`room_tests.rs`, `causal_tests.rs`). Test-only:
//! must never be compiled into the library.

use tandem_store::{LogEntry, LogRecord, StoredRoom};

/// A room as storage holds it after one accepted update: no snapshot, `update` at log position
/// 1 (by author `a`, time 0), next position 2.
pub(crate) fn stored_one_update(update: Vec<u8>) -> StoredRoom {
    StoredRoom {
        snapshot: None,
        log: vec![LogEntry {
            seq: 1,
            record: LogRecord {
                time_ms: 0,
                author: "a".into(),
                update,
            },
        }],
        next_seq: 2,
    }
}
