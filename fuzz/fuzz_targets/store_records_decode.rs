//! Any bytes as a stored log record, log chunk or snapshot: decoding never panics and
//! round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_store::{LogRecord, Snapshot, decode_log_value, encode_log_chunk, log_value_len};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = LogRecord::decode(data) {
        assert_eq!(LogRecord::decode(&r.encode()), Ok(r));
    }
    if let Ok(entries) = decode_log_value(7, data) {
        assert_eq!(log_value_len(data), Ok(entries.len() as u64));
        let again = encode_log_chunk(entries.iter().map(|e| &e.record));
        assert_eq!(decode_log_value(7, &again), Ok(entries));
    }
    if let Ok(s) = Snapshot::decode(data) {
        assert_eq!(Snapshot::decode(&s.encode()), Ok(s));
    }
});
