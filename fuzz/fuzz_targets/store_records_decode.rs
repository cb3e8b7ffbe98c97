//! Any bytes as a stored log record or snapshot: decoding never panics and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_store::{LogRecord, Snapshot};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = LogRecord::decode(data) {
        assert_eq!(LogRecord::decode(&r.encode()), Ok(r));
    }
    if let Ok(s) = Snapshot::decode(data) {
        assert_eq!(Snapshot::decode(&s.encode()), Ok(s));
    }
});
