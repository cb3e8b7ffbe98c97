//! Any bytes as a WebSocket frame: decoding never panics, and what decodes re-encodes to a
//! frame that decodes to the same messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_protocol::{decode_frame, encode_message};

fuzz_target!(|data: &[u8]| {
    if let Ok(messages) = decode_frame(data) {
        for m in &messages {
            let bytes = encode_message(m);
            let again = decode_frame(&bytes).expect("re-encoded message decodes");
            assert_eq!(again.len(), 1);
            assert_eq!(&again[0], m);
        }
    }
});
