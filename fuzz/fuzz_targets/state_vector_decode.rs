//! Any bytes as a state vector: decoding never panics and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_protocol::{decode_state_vector, encode_state_vector};

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = decode_state_vector(data) {
        let bytes = encode_state_vector(entries.iter().copied());
        assert_eq!(decode_state_vector(&bytes).expect("re-encoded decodes"), entries);
    }
});
