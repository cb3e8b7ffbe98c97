//! Any bytes as an awareness payload: decoding never panics and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_protocol::{decode_awareness, encode_awareness};

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = decode_awareness(data) {
        let bytes = encode_awareness(&entries);
        assert_eq!(decode_awareness(&bytes).expect("re-encoded decodes"), entries);
    }
});
