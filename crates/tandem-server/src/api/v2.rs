//! Yjs v2 update bodies → v1, without yrs' recursive `Any` decoder.
//!
//! yrs 0.28 decodes every `Any` value of a v2 update (`Any` content, embeds, format values,
//! sub-document options) with `Any::decode`, which recurses once per nested array or map: a
//! POST body of a few hundred KiB of `[[[[…` overflows the thread's stack, an abort that no
//! `catch_unwind` stops (the v1 path is guarded by `tandem_protocol::validate_update_v1`, which
//! runs before yrs). Here yrs' own `DecoderV2` still reads the column-encoded structure, wrapped
//! in a decoder whose `read_any`/`read_json` build the value iteratively, reading exactly the
//! bytes `Any::decode` reads, and refuse nesting deeper than the configured limit. The v1
//! re-encoding then goes through the v1 validator like any other update.
//!
//! The wrapper also bounds the work a body can ask for. v2 run-length encodes its columns, so
//! a 25-byte body can declare twenty million GC blocks (40 MB of v1, 1.4 s and ~650 MB to
//! decode). Every v1 block takes at least two bytes, so a body may declare at most
//! `max_v1_bytes / 2` blocks, and the v1 result must fit `max_v1_bytes`, the same bound a v1
//! body has.

use std::collections::HashMap;
use std::sync::Arc;

use yrs::encoding::read::{Cursor, Error, Read};
use yrs::updates::decoder::{Decode, Decoder, DecoderV2};
use yrs::updates::encoder::Encode;
use yrs::{Any, ClientID, ID, Number, Update};

/// Why a v2 body was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum V2Error {
    /// An `Any` value nests deeper than the limit.
    TooDeep(usize),
    /// The update, as v1, would exceed this many bytes.
    TooLarge(usize),
    /// Anything else yrs' decoder refused.
    Invalid(String),
}

impl std::fmt::Display for V2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            V2Error::TooDeep(max) => {
                write!(
                    f,
                    "invalid v2 update: a value nests deeper than {max} levels"
                )
            }
            V2Error::TooLarge(max) => {
                write!(f, "the update decodes to more than {max} bytes of v1")
            }
            V2Error::Invalid(e) => write!(f, "invalid v2 update: {e}"),
        }
    }
}

/// Decodes a v2 update (depth- and size-limited) and re-encodes it as v1, behind
/// `catch_unwind` (yrs may panic on hostile bytes).
pub(crate) fn v2_to_v1(
    bytes: &[u8],
    max_depth: usize,
    max_v1_bytes: usize,
) -> Result<Vec<u8>, V2Error> {
    let run = || -> Result<Vec<u8>, V2Error> {
        let inner =
            DecoderV2::new(Cursor::new(bytes)).map_err(|e| V2Error::Invalid(e.to_string()))?;
        let mut decoder = DepthLimited {
            inner,
            max_depth,
            too_deep: false,
            blocks_left: max_v1_bytes / 2,
            too_many_blocks: false,
        };
        match Update::decode(&mut decoder) {
            Ok(update) => {
                let v1 = update.encode_v1();
                if v1.len() > max_v1_bytes {
                    return Err(V2Error::TooLarge(max_v1_bytes));
                }
                Ok(v1)
            }
            Err(_) if decoder.too_deep => Err(V2Error::TooDeep(max_depth)),
            Err(_) if decoder.too_many_blocks => Err(V2Error::TooLarge(max_v1_bytes)),
            Err(e) => Err(V2Error::Invalid(e.to_string())),
        }
    };
    match std::panic::catch_unwind(run) {
        Ok(r) => r,
        Err(_) => Err(V2Error::Invalid("decoder failed".into())),
    }
}

/// yrs' `DecoderV2` with an iterative, depth-limited `Any` reader and a block budget.
struct DepthLimited<'a> {
    inner: DecoderV2<'a>,
    max_depth: usize,
    too_deep: bool,
    /// Blocks the body may still declare (yrs reads one info byte per block).
    blocks_left: usize,
    too_many_blocks: bool,
}

/// A container being filled: its values so far and how many are still to come.
enum Frame {
    Array(Vec<Any>, usize),
    Map(HashMap<String, Any>, String, usize),
}

impl DepthLimited<'_> {
    /// A string inside an `Any` value: length-prefixed UTF-8 from the v2 "rest" buffer (which
    /// is where `Any::decode` reads it, unlike `DecoderV2::read_string`'s string column).
    fn any_str(&mut self) -> Result<String, Error> {
        let buf = self.inner.read_buf()?;
        std::str::from_utf8(buf)
            .map(str::to_owned)
            .map_err(|_| Error::Custom("any string is not utf-8".into()))
    }

    /// Reads one `Any` exactly as `Any::decode` does, without recursion.
    fn read_any_iter(&mut self) -> Result<Any, Error> {
        let mut stack: Vec<Frame> = Vec::new();
        loop {
            let tag = self.inner.read_u8()?;
            let mut value = match tag {
                127 => Any::Undefined,
                126 => Any::Null,
                // -0 and bigint as the patched `Any::decode` reads them (vendor/yrs/PATCHES.md)
                125 => {
                    let n = self.inner.read_var_signed::<i64>()?;
                    if n.is_negative() && n.value() == 0 {
                        Any::Number(Number::Float(-0.0))
                    } else {
                        Any::Number(Number::Int(n.value()))
                    }
                }
                124 => Any::Number(Number::Float(self.inner.read_f32()? as f64)),
                123 => Any::Number(Number::Float(self.inner.read_f64()?)),
                122 => Any::Number(Number::BigInt(self.inner.read_i64()?)),
                121 => Any::Bool(false),
                120 => Any::Bool(true),
                119 => Any::String(Arc::from(self.any_str()?)),
                116 => Any::Buffer(Arc::from(self.inner.read_buf()?)),
                117 | 118 => {
                    let len: usize = self.inner.read_var()?;
                    if stack.len() + 1 > self.max_depth {
                        self.too_deep = true;
                        return Err(Error::Custom(format!(
                            "any value nests deeper than {}",
                            self.max_depth
                        )));
                    }
                    match (tag, len) {
                        (117, 0) => Any::Array(Arc::from(Vec::<Any>::new())),
                        (_, 0) => Any::Map(Arc::new(HashMap::new())),
                        (117, n) => {
                            stack.push(Frame::Array(Vec::new(), n));
                            continue;
                        }
                        (_, n) => {
                            let key = self.any_str()?;
                            stack.push(Frame::Map(HashMap::new(), key, n));
                            continue;
                        }
                    }
                }
                _ => return Err(Error::UnexpectedValue),
            };
            // hand the finished value to its container; close every container it completes
            loop {
                match stack.last_mut() {
                    None => return Ok(value),
                    Some(Frame::Array(items, left)) => {
                        items.push(value);
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                    }
                    Some(Frame::Map(entries, key, left)) => {
                        entries.insert(std::mem::take(key), value);
                        *left -= 1;
                        if *left > 0 {
                            *key = self.any_str()?;
                            break;
                        }
                    }
                }
                value = match stack.pop() {
                    Some(Frame::Array(items, _)) => Any::Array(Arc::from(items)),
                    Some(Frame::Map(entries, _, _)) => Any::Map(Arc::new(entries)),
                    None => return Err(Error::UnexpectedValue),
                };
            }
        }
    }
}

impl Read for DepthLimited<'_> {
    fn read_exact(&mut self, len: usize) -> Result<&[u8], Error> {
        self.inner.read_exact(len)
    }
    fn read_u8(&mut self) -> Result<u8, Error> {
        self.inner.read_u8()
    }
    fn read_string(&mut self) -> Result<&str, Error> {
        self.inner.read_string()
    }
}

impl Decoder for DepthLimited<'_> {
    fn reset_ds_cur_val(&mut self) {
        self.inner.reset_ds_cur_val()
    }
    fn read_ds_clock(&mut self) -> Result<u32, Error> {
        self.inner.read_ds_clock()
    }
    fn read_ds_len(&mut self) -> Result<u32, Error> {
        self.inner.read_ds_len()
    }
    fn read_left_id(&mut self) -> Result<ID, Error> {
        self.inner.read_left_id()
    }
    fn read_right_id(&mut self) -> Result<ID, Error> {
        self.inner.read_right_id()
    }
    fn read_client(&mut self) -> Result<ClientID, Error> {
        self.inner.read_client()
    }
    fn read_info(&mut self) -> Result<u8, Error> {
        match self.blocks_left.checked_sub(1) {
            Some(left) => self.blocks_left = left,
            None => {
                self.too_many_blocks = true;
                return Err(Error::Custom("too many blocks".into()));
            }
        }
        self.inner.read_info()
    }
    fn read_parent_info(&mut self) -> Result<bool, Error> {
        self.inner.read_parent_info()
    }
    fn read_type_ref(&mut self) -> Result<u8, Error> {
        self.inner.read_type_ref()
    }
    fn read_len(&mut self) -> Result<u32, Error> {
        self.inner.read_len()
    }
    fn read_any(&mut self) -> Result<Any, Error> {
        self.read_any_iter()
    }
    // v2 stores embeds and format values as `Any`, read by the same `Any::decode`
    fn read_json(&mut self) -> Result<Any, Error> {
        self.read_any_iter()
    }
    fn read_key(&mut self) -> Result<Arc<str>, Error> {
        self.inner.read_key()
    }
    fn read_to_end(&mut self) -> Result<&[u8], Error> {
        self.inner.read_to_end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use yrs::types::ToJson;
    use yrs::types::text::YChange;
    use yrs::{
        Array, Doc, GetString, Map, ReadTxn, StateVector, Text, Transact, WriteTxn, XmlFragment,
    };

    const MARKER: &str = "NESTING-MARKER-7f3a";
    /// The server's default bound on an update (`max_frame_bytes`).
    const MAX: usize = 16 * 1024 * 1024;

    /// A v2 update carrying `MARKER` as an `Any` string inside map content (`in_embed`: inside
    /// a text embed instead), plus assorted other content.
    fn v2_with_marker(in_embed: bool) -> Vec<u8> {
        let doc = Doc::with_client_id(7);
        {
            let mut txn = doc.transact_mut();
            let text = txn.get_or_insert_text("text");
            text.insert(&mut txn, 0, "hello");
            if in_embed {
                text.insert_embed(&mut txn, 5, Any::from(vec![Any::from(MARKER)]));
            }
            let map = txn.get_or_insert_map("map");
            let marker = if in_embed { "plain" } else { MARKER };
            map.insert(
                &mut txn,
                "k",
                Any::from(vec![Any::from(1.5), Any::from(marker)]),
            );
            let arr = txn.get_or_insert_array("array");
            arr.insert(&mut txn, 0, Any::from(42i64));
        }
        doc.transact()
            .encode_state_as_update_v2(&StateVector::default())
    }

    /// Replaces the marker's `Any` string encoding with `depth` nested one-element arrays
    /// (or maps) around a null: a self-delimiting `Any` for a self-delimiting `Any`, so the rest
    /// of the v2 buffer still lines up.
    fn splice_nesting(v2: &[u8], depth: usize, maps: bool) -> Vec<u8> {
        let mut needle = vec![119, MARKER.len() as u8];
        needle.extend_from_slice(MARKER.as_bytes());
        let at = v2
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .expect("marker in the v2 rest buffer");
        let mut out = v2[..at].to_vec();
        for _ in 0..depth {
            if maps {
                out.extend_from_slice(&[118, 1, 1, b'k']);
            } else {
                out.extend_from_slice(&[117, 1]);
            }
        }
        out.push(126);
        out.extend_from_slice(&v2[at + needle.len()..]);
        out
    }

    fn state(v1: &[u8]) -> (String, String, String) {
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(v1).unwrap())
            .unwrap();
        let txn = doc.transact();
        let text = txn.get_text("text").unwrap();
        let diff = format!("{:?}", text.diff(&txn, YChange::identity));
        let map = txn.get_map("map").unwrap().to_json(&txn);
        let arr = txn.get_array("array").unwrap().to_json(&txn);
        (
            format!("{}{diff}", text.get_string(&txn)),
            format!("{map:?}"),
            format!("{arr:?}"),
        )
    }

    #[test]
    fn same_result_as_yrs_for_ordinary_updates() {
        for in_embed in [false, true] {
            let v2 = v2_with_marker(in_embed);
            let ours = v2_to_v1(&v2, 64, MAX).unwrap();
            let theirs = Update::decode_v2(&v2).unwrap().encode_v1();
            assert_eq!(state(&ours), state(&theirs));
            // nesting within the limit is kept, value for value
            let nested = splice_nesting(&v2, 63, false); // + the array around the marker
            let ours = v2_to_v1(&nested, 64, MAX).unwrap();
            assert_eq!(
                state(&ours),
                state(&Update::decode_v2(&nested).unwrap().encode_v1())
            );
            let nested = splice_nesting(&v2, 10, true);
            let ours = v2_to_v1(&nested, 64, MAX).unwrap();
            assert_eq!(
                state(&ours),
                state(&Update::decode_v2(&nested).unwrap().encode_v1())
            );
        }
        // xml and sub-documents go through the same wrapper
        let doc = Doc::with_client_id(9);
        {
            let mut txn = doc.transact_mut();
            let xml = txn.get_or_insert_xml_fragment("xml");
            xml.insert(&mut txn, 0, yrs::XmlTextPrelim::new("x"));
            txn.get_or_insert_map("map")
                .insert(&mut txn, "sub", Doc::with_client_id(10));
        }
        let v2 = doc
            .transact()
            .encode_state_as_update_v2(&StateVector::default());
        let ours = v2_to_v1(&v2, 64, MAX).unwrap();
        let reference = Update::decode_v2(&v2).unwrap().encode_v1();
        assert_eq!(ours.len(), reference.len());
        assert!(tandem_protocol::validate_update_v1(&ours, &Default::default()).is_ok());
    }

    #[test]
    fn too_deep_and_garbage_are_errors() {
        let v2 = v2_with_marker(false);
        assert_eq!(
            v2_to_v1(&splice_nesting(&v2, 65, false), 64, MAX),
            Err(V2Error::TooDeep(64))
        );
        assert_eq!(
            v2_to_v1(&splice_nesting(&v2, 65, true), 64, MAX),
            Err(V2Error::TooDeep(64))
        );
        assert!(matches!(
            v2_to_v1(&[1, 2, 3], 64, MAX),
            Err(V2Error::Invalid(_))
        ));
        assert!(matches!(
            v2_to_v1(&v2[..v2.len() - 3], 64, MAX),
            Err(V2Error::Invalid(_))
        ));
    }

    /// A v2 update of `blocks` one-clock GC blocks: the info and length columns are
    /// run-length encoded, so the body stays a few dozen bytes however many blocks it declares.
    fn gc_bomb(blocks: u32) -> Vec<u8> {
        use yrs::encoding::write::Write;
        use yrs::updates::encoder::{Encoder, EncoderV2};
        let mut e = EncoderV2::new();
        e.write_var(1u32); // clients
        e.write_var(blocks); // blocks of the one client
        e.write_client(ClientID::new(1));
        e.write_var(0u32); // first clock
        for _ in 0..blocks {
            e.write_info(0); // GC
            e.write_len(1);
        }
        e.write_var(0u32); // empty delete set
        e.to_vec()
    }

    #[test]
    fn declared_work_is_bounded_like_a_v1_body() {
        // within the bound: the same blocks yrs itself decodes
        let body = gc_bomb(1000);
        let ours = v2_to_v1(&body, 64, MAX).unwrap();
        assert_eq!(ours, Update::decode_v2(&body).unwrap().encode_v1());
        // 20 million blocks in 25 bytes: refused after at most MAX / 2 of them
        let body = gc_bomb(20_000_000);
        assert!(body.len() < 32);
        assert_eq!(v2_to_v1(&body, 64, MAX), Err(V2Error::TooLarge(MAX)));
        // the block budget and the final size check agree at small limits too
        assert_eq!(
            v2_to_v1(&gc_bomb(1000), 64, 1000),
            Err(V2Error::TooLarge(1000))
        );
        assert!(v2_to_v1(&gc_bomb(1000), 64, 2100).is_ok());
    }

    /// 100,000 nested arrays / maps in an `Any` (and in an embed) on a 256 KiB stack: yrs'
    /// recursive decoder would overflow it and abort the whole test process.
    #[test]
    fn hostile_nesting_does_not_overflow_a_small_stack() {
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let mut results = Vec::new();
                for in_embed in [false, true] {
                    for maps in [false, true] {
                        let body = splice_nesting(&v2_with_marker(in_embed), 100_000, maps);
                        results.push(v2_to_v1(&body, 64, MAX));
                    }
                }
                results
            })
            .unwrap();
        for r in handle.join().unwrap() {
            assert_eq!(r, Err(V2Error::TooDeep(64)));
        }
    }
}
