//! The document as a Yjs v2 update (`GET .../update?encoding=v2`), written so Yjs reads back
//! exactly what the room holds.
//!
//! yrs 0.28's `EncoderV2` implements `Write::write_all` as `self.buf.write_buf(buf)`, which
//! prefixes the bytes with their length; `Write::write_buf` (binary content, `ContentBinary`)
//! writes the length itself and then calls `write_all`, so every binary item came out as
//! `len len bytes` and Yjs' `applyUpdateV2` threw or read garbage. `FixedV2` wraps yrs' encoder
//! and routes binary content to `EncoderV2::write_all`, whose length-prefixing is exactly the
//! `writeVarUint8Array` Yjs' `UpdateEncoderV2.writeBuf` does. Every other `Write`/`Encoder`
//! call is delegated unchanged: yrs' v2 encoder writes `Any` values (and numbers inside them)
//! through its own v1 encoder over the rest buffer, never through `write_all`.
//!
//! The room encodes its state as v1 (`encode_state_as_update_v1` also merges pending structs
//! and delete sets); `v1_to_v2` decodes that and writes it through `FixedV2`.

use yrs::block::ClientID;
use yrs::encoding::write::Write;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::{Encode, Encoder, EncoderV2};
use yrs::{Any, ID, Update};

/// `EncoderV2` with binary content written once, length-prefixed, as Yjs writes it.
struct FixedV2(EncoderV2);

impl Write for FixedV2 {
    /// Raw bytes. yrs' v2 encoder only reaches this through `write_buf` (handled below) and
    /// the fixed-size number writers, which its encoders never call on the v2 encoder itself;
    /// delegating keeps yrs' behaviour for anything else.
    fn write_all(&mut self, buf: &[u8]) {
        self.0.write_all(buf)
    }

    fn write_u8(&mut self, value: u8) {
        self.0.write_u8(value)
    }

    fn write_string(&mut self, s: &str) {
        self.0.write_string(s)
    }

    /// `writeVarUint8Array` into the rest buffer: `EncoderV2::write_all` does exactly that.
    fn write_buf<B: AsRef<[u8]>>(&mut self, buf: B) {
        self.0.write_all(buf.as_ref())
    }
}

impl Encoder for FixedV2 {
    fn to_vec(self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn reset_ds_cur_val(&mut self) {
        self.0.reset_ds_cur_val()
    }
    fn write_ds_clock(&mut self, clock: u32) {
        self.0.write_ds_clock(clock)
    }
    fn write_ds_len(&mut self, len: u32) {
        self.0.write_ds_len(len)
    }
    fn write_left_id(&mut self, id: &ID) {
        self.0.write_left_id(id)
    }
    fn write_right_id(&mut self, id: &ID) {
        self.0.write_right_id(id)
    }
    fn write_client(&mut self, client: ClientID) {
        self.0.write_client(client)
    }
    fn write_info(&mut self, info: u8) {
        self.0.write_info(info)
    }
    fn write_parent_info(&mut self, is_y_key: bool) {
        self.0.write_parent_info(is_y_key)
    }
    fn write_type_ref(&mut self, info: u8) {
        self.0.write_type_ref(info)
    }
    fn write_len(&mut self, len: u32) {
        self.0.write_len(len)
    }
    fn write_any(&mut self, any: &Any) {
        self.0.write_any(any)
    }
    fn write_json(&mut self, any: &Any) {
        self.0.write_json(any)
    }
    fn write_key(&mut self, key: &str) {
        self.0.write_key(key)
    }
}

/// Converts a v1 update (as the room encodes it) to v2.
pub(crate) fn v1_to_v2(v1: &[u8]) -> Result<Vec<u8>, yrs::encoding::read::Error> {
    let update = Update::decode_v1(v1)?;
    let mut encoder = FixedV2(EncoderV2::new());
    update.encode(&mut encoder);
    Ok(encoder.to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use yrs::{Doc, ReadTxn, StateVector, Transact};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The reported bug: a map holding `Uint8Array [1,2]` (Yjs writes `ContentBinary`, content
    /// ref 3) came back from GET v2 as `… 02 02 01 02`.
    #[test]
    fn binary_content_is_written_once() {
        // v1, as Yjs writes `map('m').set('k', new Uint8Array([1, 2]))` for client 1
        let v1 = [1, 1, 1, 0, 0x23, 1, 1, b'm', 1, b'k', 2, 1, 2, 0];
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&v1).unwrap())
            .unwrap();
        let full = |d: &Doc| {
            d.transact()
                .encode_state_as_update_v1(&StateVector::default())
        };
        assert_eq!(full(&doc), v1);
        let v2 = v1_to_v2(&full(&doc)).unwrap();
        let h = hex(&v2);
        assert!(h.ends_with("02010200"), "{h}");
        assert!(!h.contains("02020102"), "length written twice: {h}");
        // and it decodes back to the same document
        let back = Doc::new();
        back.transact_mut()
            .apply_update(Update::decode_v2(&v2).unwrap())
            .unwrap();
        assert_eq!(full(&back), v1);
    }
}
