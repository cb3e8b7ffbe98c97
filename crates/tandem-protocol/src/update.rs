//! A structural validator for Yjs v1 updates, run on untrusted bytes before yrs decodes them.
//!
//! yrs' decoder recurses into nested `Any` values without a depth limit (a few hundred KiB of
//! `[[[[…` overflows the stack, which no `catch_unwind` can stop), accepts client ids a
//! JavaScript peer cannot represent, and adds clocks in `u32` without overflow checks. This
//! module walks the same grammar yrs 0.28's `Update::decode` walks — byte for byte, including its
//! quirks — iteratively, with every count bounded by the input, and reports the first violation.
//! Anything it accepts, yrs reads along exactly the same boundaries.
//!
//! On top of the grammar, `shape` refuses the update shapes yrs 0.28 mishandles (a client
//! listed twice, overlapping delete ranges, structs that depend on themselves): see
//! `docs/protocol.md`, "Limits on updates".

use crate::MAX_SAFE_INTEGER;
use crate::codec::{DecodeError, Reader};

mod shape;
mod values;
use values::read_json_str;
pub use values::skip_any;
#[cfg(test)]
mod accept_tests;
#[cfg(test)]
mod shape_tests;
#[cfg(test)]
mod yrs_bugs;

/// Limits applied to untrusted updates.
#[derive(Debug, Clone, Copy)]
pub struct UpdateLimits {
    /// Deepest nesting of arrays/maps inside an `Any` value.
    pub max_any_depth: usize,
}

impl Default for UpdateLimits {
    fn default() -> Self {
        UpdateLimits { max_any_depth: 64 }
    }
}

/// What the validator learned about an update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateInfo {
    /// For every struct group: (client id, first clock, clock after the last struct).
    pub struct_ranges: Vec<(u64, u32, u32)>,
    /// Number of (client, range) pairs in the delete set.
    pub delete_ranges: usize,
    /// Ids the update's structs point at (origins, right origins, parents): each must exist,
    /// in the document or in this update, for the update to integrate without pending structs.
    pub references: Vec<(u64, u32)>,
    /// Skip structs: (client, start, end) ranges the update does not carry.
    pub skips: Vec<(u64, u32, u32)>,
    /// Delete set ranges: (client, end clock), each must be known to integrate at once.
    pub deletes: Vec<(u64, u32)>,
}

impl UpdateInfo {
    /// An update with no structs and no deletions changes nothing.
    pub fn is_empty(&self) -> bool {
        self.struct_ranges.is_empty() && self.delete_ranges == 0
    }
}

const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
const BLOCK_GC: u8 = 0;
const BLOCK_SKIP: u8 = 10;
const U32_MAX: u64 = u32::MAX as u64;

/// Checks that `bytes` is a well-formed Yjs v1 update within `limits`.
pub fn validate_update_v1(bytes: &[u8], limits: &UpdateLimits) -> Result<UpdateInfo, DecodeError> {
    let mut r = Reader::new(bytes);
    let mut info = UpdateInfo::default();
    let groups = r.read_count(3, "update client count")?;
    let mut seen = shape::Seen::default();
    let mut shapes = Vec::with_capacity(groups);
    for _ in 0..groups {
        let structs = r.read_count(1, "update struct count")?;
        let client = r.read_var_bounded(MAX_SAFE_INTEGER, "update client id")?;
        seen.struct_group(client, structs)?;
        let start = r.read_var_bounded(U32_MAX, "update clock")?;
        let mut group = shape::Group {
            client,
            start: start as u32,
            ..Default::default()
        };
        let mut clock = start;
        for _ in 0..structs {
            let first_ref = info.references.len();
            let block = read_block(&mut r, limits, &mut info.references)?;
            let (len, skip) = (block.len, block.info == BLOCK_SKIP);
            if clock + len > U32_MAX {
                return Err(DecodeError::InvalidUpdate("clock overflows u32"));
            }
            for &(c, k) in &info.references[first_ref..] {
                group.refs.push((clock as u32, c, k));
            }
            group.structs.push((clock as u32, block.info));
            group.parents.extend(block.parent);
            if skip {
                info.skips
                    .push((client, clock as u32, (clock + len) as u32));
                group.skips.push((clock as u32, (clock + len) as u32));
            }
            clock += len;
        }
        group.end = clock as u32;
        shapes.push(group);
        info.struct_ranges
            .push((client, start as u32, clock as u32));
    }
    shape::check_integrable(&shapes)?;
    shape::check_parents(&shapes)?;
    // delete set
    let clients = r.read_count(2, "delete set client count")?;
    let mut seen = shape::Seen::default();
    for _ in 0..clients {
        let client = r.read_var_bounded(MAX_SAFE_INTEGER, "delete set client id")?;
        seen.delete_client(client)?;
        let ranges = r.read_count(2, "delete set range count")?;
        let mut prev_end = 0;
        for _ in 0..ranges {
            let clock = r.read_var_bounded(U32_MAX, "delete set clock")?;
            let len = r.read_var_bounded(U32_MAX, "delete set length")?;
            if clock + len > U32_MAX {
                return Err(DecodeError::InvalidUpdate("delete range overflows u32"));
            }
            shape::delete_range_in_order(prev_end, clock, len)?;
            prev_end = clock + len;
            info.deletes.push((client, (clock + len) as u32));
        }
        info.delete_ranges += ranges;
    }
    if !r.is_empty() {
        return Err(DecodeError::TrailingBytes(r.remaining(), "update"));
    }
    Ok(info)
}

/// One struct as [`read_block`] saw it.
struct Block {
    /// Length in clock units.
    len: u64,
    /// The info byte (`BLOCK_GC`, `BLOCK_SKIP`, or an item's flags and content type).
    info: u8,
    /// The parent id, for an item that names its parent by id.
    parent: Option<(u64, u32)>,
}

/// Reads one struct, pushing the ids it refers to onto `refs`.
fn read_block(
    r: &mut Reader<'_>,
    limits: &UpdateLimits,
    refs: &mut Vec<(u64, u32)>,
) -> Result<Block, DecodeError> {
    let info = r.read_u8("struct info")?;
    match info {
        BLOCK_SKIP | BLOCK_GC => {
            let len = r.read_var_bounded(U32_MAX, "gc/skip length")?;
            if len == 0 {
                return Err(DecodeError::InvalidUpdate("empty gc/skip block"));
            }
            return Ok(Block {
                len,
                info,
                parent: None,
            });
        }
        _ => {}
    }
    let mut parent = None;
    if info & HAS_ORIGIN != 0 {
        refs.push(read_id(r)?);
    }
    if info & HAS_RIGHT_ORIGIN != 0 {
        refs.push(read_id(r)?);
    }
    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
        // parent info: 1 = named root type, anything else = the id of the parent item
        if r.read_var_bounded(U32_MAX, "parent info")? == 1 {
            r.read_str("parent name")?;
        } else {
            let id = read_id(r)?;
            refs.push(id);
            parent = Some(id);
        }
        if info & HAS_PARENT_SUB != 0 {
            r.read_str("parent sub key")?;
        }
    }
    Ok(Block {
        len: read_content(r, info & 0b1111, limits)?,
        info,
        parent,
    })
}

fn read_id(r: &mut Reader<'_>) -> Result<(u64, u32), DecodeError> {
    let client = r.read_var_bounded(MAX_SAFE_INTEGER, "id client")?;
    let clock = r.read_var_bounded(U32_MAX, "id clock")?;
    Ok((client, clock as u32))
}

impl UpdateInfo {
    /// Whether this update can integrate completely into a document whose state vector is
    /// `known` (a lookup: client -> next expected clock). Returns the first missing dependency:
    /// a clock gap, a referenced id, a skipped range or a deleted range the document lacks.
    pub fn missing_dependency(&self, known: impl Fn(u64) -> u32) -> Option<(u64, u32)> {
        let mut ranges = self.struct_ranges.clone();
        ranges.sort_unstable();
        let mut reach: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
        for &(client, start, end) in &ranges {
            let have = *reach.entry(client).or_insert_with(|| known(client));
            if start > have {
                return Some((client, have));
            }
            reach.insert(client, have.max(end));
        }
        let next = |client: u64| reach.get(&client).copied().unwrap_or_else(|| known(client));
        for &(client, start, end) in &self.skips {
            // a skip is a hole in this update: the document must already hold it
            if end > known(client) {
                return Some((client, start));
            }
        }
        for &(client, clock) in &self.references {
            if clock >= next(client) {
                return Some((client, clock));
            }
        }
        for &(client, end) in &self.deletes {
            if end > next(client) {
                return Some((client, end));
            }
        }
        None
    }
}

fn read_content(r: &mut Reader<'_>, kind: u8, limits: &UpdateLimits) -> Result<u64, DecodeError> {
    Ok(match kind {
        // deleted
        1 => {
            let len = r.read_var_bounded(U32_MAX, "deleted length")?;
            if len == 0 {
                return Err(DecodeError::InvalidUpdate("empty deleted content"));
            }
            len
        }
        // legacy JSON (older Yjs): `len` strings, each `JSON.stringify(v)` or "undefined", as
        // Yjs' `readContentJSON` and the patched yrs read them (vendor/yrs/PATCHES.md). Yjs
        // clients `JSON.parse` every entry, so text they would throw on is refused here.
        2 => {
            let len = r.read_count(1, "json content length")?;
            if len == 0 {
                return Err(DecodeError::InvalidUpdate("empty json content"));
            }
            for _ in 0..len {
                let mut peek = r.clone();
                if peek.read_str("json content")? == "undefined" {
                    *r = peek;
                } else {
                    read_json_str(r, "json content", limits)?;
                }
            }
            len as u64
        }
        // binary
        3 => {
            r.read_buf("binary content")?;
            1
        }
        // string: length in UTF-16 code units, as Yjs counts
        4 => {
            let s = r.read_str("string content")?;
            let len = s.encode_utf16().count() as u64;
            if len == 0 {
                return Err(DecodeError::InvalidUpdate("empty string content"));
            }
            len
        }
        // embed
        5 => {
            read_json_str(r, "embed content", limits)?;
            1
        }
        // format: key + json value
        6 => {
            r.read_str("format key")?;
            read_json_str(r, "format value", limits)?;
            1
        }
        // type
        7 => {
            match r.read_u8("type ref")? {
                0 | 1 | 2 | 4 | 6 | 9 | 15 => {}
                3 => {
                    r.read_str("xml element name")?;
                }
                // Yjs' YXmlHook writes its hook name (read since yrs patch 4)
                5 => {
                    r.read_str("xml hook name")?;
                }
                _ => return Err(DecodeError::InvalidUpdate("unknown type ref")),
            }
            1
        }
        // any
        8 => {
            let len = r.read_count(1, "any content length")?;
            if len == 0 {
                return Err(DecodeError::InvalidUpdate("empty any content"));
            }
            for _ in 0..len {
                skip_any(r, limits.max_any_depth)?;
            }
            len as u64
        }
        // sub-document: guid + options
        9 => {
            r.read_str("subdoc guid")?;
            skip_any(r, limits.max_any_depth)?;
            1
        }
        _ => return Err(DecodeError::InvalidUpdate("unknown content type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{write_str, write_var_u64};
    use yrs::updates::decoder::Decode;
    use yrs::{Any, Array, Doc, GetString, Map, ReadTxn, StateVector, Text, Transact, Update};

    fn full_update(doc: &Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    #[test]
    fn accepts_everything_yrs_produces() {
        let doc = Doc::with_client_id(42);
        let text = doc.get_or_insert_text("t");
        let map = doc.get_or_insert_map("m");
        let arr = doc.get_or_insert_array("a");
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "hello 🌍 world");
            text.remove_range(&mut txn, 1, 2);
            map.insert(&mut txn, "k", Any::from(vec![Any::from(1.5), Any::Null]));
            map.insert(&mut txn, "nested", yrs::MapPrelim::default());
            arr.insert(&mut txn, 0, "x");
            arr.insert(&mut txn, 1, Any::from(1i64 << 40));
            arr.insert(&mut txn, 2, vec![1u8, 2, 3]);
        }
        let bytes = full_update(&doc);
        let info = validate_update_v1(&bytes, &UpdateLimits::default()).expect("valid");
        assert_eq!(info.struct_ranges[0].0, 42);
        assert!(info.delete_ranges > 0);
        // and yrs agrees on the content
        let other = Doc::new();
        other
            .transact_mut()
            .apply_update(Update::decode_v1(&bytes).expect("yrs decodes"))
            .expect("applies");
        let t = other.get_or_insert_text("t");
        assert_eq!(
            t.get_string(&other.transact()),
            text.get_string(&doc.transact())
        );
    }

    #[test]
    fn empty_update_is_valid_and_empty() {
        let info = validate_update_v1(&[0, 0], &UpdateLimits::default()).expect("valid");
        assert!(info.is_empty());
    }

    fn any_update(client: u64, nested: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_u64(&mut out, 1); // one client group
        write_var_u64(&mut out, 1); // one struct
        write_var_u64(&mut out, client);
        write_var_u64(&mut out, 0); // clock
        out.push(8); // item with Any content, no origins
        write_var_u64(&mut out, 1); // parent: named root
        write_str(&mut out, "root");
        write_var_u64(&mut out, 1); // one value
        out.extend_from_slice(nested);
        out.extend_from_slice(&[0]); // empty delete set
        out
    }

    #[test]
    fn deeply_nested_any_is_rejected_without_recursion() {
        let mut nested = Vec::new();
        for _ in 0..1_000_000 {
            nested.extend_from_slice(&[117, 1]);
        }
        nested.push(126);
        let bytes = any_update(1, &nested);
        assert_eq!(
            validate_update_v1(&bytes, &UpdateLimits::default()),
            Err(DecodeError::TooDeep("any value", 64))
        );
        // modest nesting passes and yrs decodes it
        let mut ok = Vec::new();
        for _ in 0..10 {
            ok.extend_from_slice(&[117, 1]);
        }
        ok.push(126);
        let bytes = any_update(1, &ok);
        validate_update_v1(&bytes, &UpdateLimits::default()).expect("valid");
        Update::decode_v1(&bytes).expect("yrs decodes");
    }

    /// One item with `kind` content (5 embed, 6 format, 9 sub-document) under a root text.
    fn content_update(kind: u8, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_var_u64(&mut out, 1);
        write_var_u64(&mut out, 1);
        write_var_u64(&mut out, 3); // client
        write_var_u64(&mut out, 0);
        out.push(kind);
        write_var_u64(&mut out, 1);
        write_str(&mut out, "text");
        out.extend_from_slice(content);
        out.push(0);
        out
    }

    /// Deep values in every other place a v1 update carries JSON-like data: embed and format
    /// values (JSON text) and sub-document options (`Any`). The validator refuses them (JSON
    /// text by the same depth limit as `Any`: serde_json's syntax check alone skips values
    /// iteratively and accepts any depth), and yrs' own v1 decoder returns an error rather than
    /// overflowing a small stack (serde_json stops building values at 128 levels).
    #[test]
    fn deep_values_in_embeds_formats_and_subdoc_options_are_refused() {
        let deep_json = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let mut embed = Vec::new();
        write_str(&mut embed, &deep_json);
        let mut format = Vec::new();
        write_str(&mut format, "bold");
        write_str(&mut format, &deep_json);
        let mut subdoc = Vec::new();
        write_str(&mut subdoc, "guid");
        for _ in 0..100_000 {
            subdoc.extend_from_slice(&[118, 1, 1, b'k']);
        }
        subdoc.push(126);
        let limits = UpdateLimits::default();
        let bodies = [
            content_update(5, &embed),
            content_update(6, &format),
            content_update(9, &subdoc),
        ];
        for body in &bodies[..2] {
            assert_eq!(
                validate_update_v1(body, &limits),
                Err(DecodeError::TooDeep("json value", 64))
            );
        }
        assert_eq!(
            validate_update_v1(&bodies[2], &limits),
            Err(DecodeError::TooDeep("any value", 64))
        );
        let json_bodies = bodies[..2].to_vec();
        let yrs_results = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                json_bodies
                    .iter()
                    .map(|b| Update::decode_v1(b).is_err())
                    .collect::<Vec<_>>()
            })
            .expect("spawn")
            .join()
            .expect("no overflow");
        assert_eq!(yrs_results, [true, true]);
        // shallow values of each kind pass, and yrs reads them
        let mut embed = Vec::new();
        write_str(&mut embed, r#"{"image":[1,[2]]}"#);
        let mut format = Vec::new();
        write_str(&mut format, "bold");
        write_str(&mut format, "true");
        let mut subdoc = Vec::new();
        write_str(&mut subdoc, "guid");
        subdoc.extend_from_slice(&[118, 0]);
        for body in [
            content_update(5, &embed),
            content_update(6, &format),
            content_update(9, &subdoc),
        ] {
            validate_update_v1(&body, &limits).expect("valid");
            Update::decode_v1(&body).expect("yrs decodes");
        }
        // brackets inside JSON strings (with escaped quotes) do not count
        let two = UpdateLimits { max_any_depth: 2 };
        for (json, ok) in [
            (r#"{"a":["[[[\"[[[{{"]}"#, true),
            (r#"[[1]]"#, true),
            (r#"[[[1]]]"#, false),
            (r#"[{"k":[]}]"#, false),
        ] {
            let mut embed = Vec::new();
            write_str(&mut embed, json);
            let r = validate_update_v1(&content_update(5, &embed), &two);
            assert_eq!(r.is_ok(), ok, "{json}: {r:?}");
        }
    }

    #[test]
    fn unsafe_client_ids_and_clock_overflow_are_rejected() {
        let bytes = any_update(1 << 53, &[126]);
        assert!(validate_update_v1(&bytes, &UpdateLimits::default()).is_err());
        let mut overflow = Vec::new();
        write_var_u64(&mut overflow, 1);
        write_var_u64(&mut overflow, 1);
        write_var_u64(&mut overflow, 5);
        write_var_u64(&mut overflow, u64::from(u32::MAX) - 1);
        overflow.push(BLOCK_GC);
        write_var_u64(&mut overflow, 10);
        overflow.push(0);
        assert!(validate_update_v1(&overflow, &UpdateLimits::default()).is_err());
    }

    #[test]
    fn truncations_and_bit_flips_never_panic() {
        let doc = Doc::with_client_id(7);
        let map = doc.get_or_insert_map("m");
        let text = doc.get_or_insert_text("t");
        {
            let mut txn = doc.transact_mut();
            map.insert(&mut txn, "a", Any::from(vec![Any::from("x"); 3]));
            text.insert(&mut txn, 0, "abc");
        }
        let bytes = full_update(&doc);
        for cut in 0..bytes.len() {
            let _ = validate_update_v1(&bytes[..cut], &UpdateLimits::default());
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[i] ^= 1 << bit;
                if validate_update_v1(&flipped, &UpdateLimits::default()).is_ok() {
                    // whatever we accept, yrs must decode without panicking
                    let _ = Update::decode_v1(&flipped);
                }
            }
        }
    }

    /// Legacy `ContentJSON` (content ref 2), as Yjs 13.6's `ContentJSON.write` encodes it: `len`
    /// strings, `undefined` spelled out. Accepted exactly when Yjs could read it back.
    #[test]
    fn legacy_json_content_reads_len_strings() {
        // client 7, clock 0, info 2 (JSON, no origins), parent = root "a" (an array)
        let with = |entries: &[&str]| {
            let mut b = vec![1, 1];
            write_var_u64(&mut b, 7);
            b.extend_from_slice(&[0, 2, 1]);
            write_str(&mut b, "a");
            write_var_u64(&mut b, entries.len() as u64);
            for e in entries {
                write_str(&mut b, e);
            }
            b.push(0); // empty delete set
            b
        };
        let limits = UpdateLimits::default();
        let ok = with(&["{\"x\":[1,2]}", "undefined", "\"s\"", "null"]);
        validate_update_v1(&ok, &limits).expect("legacy JSON is valid");
        let doc = Doc::new();
        let update = Update::decode_v1(&ok).expect("yrs decodes it");
        doc.transact_mut().apply_update(update).expect("applies");
        assert_eq!(doc.get_or_insert_array("a").len(&doc.transact()), 4);
        assert_eq!(full_update(&doc), ok, "yrs re-encodes it byte for byte");
        // what Yjs' JSON.parse would throw on, and a zero-length item, are refused
        for bad in [with(&["{"]), with(&["undefinedx"]), with(&[])] {
            assert!(validate_update_v1(&bad, &limits).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod dependency_tests {
    use super::*;
    use yrs::updates::encoder::Encode;
    use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

    #[test]
    fn detects_missing_predecessors_and_accepts_contiguous_updates() {
        let doc = Doc::with_client_id(5);
        let text = doc.get_or_insert_text("t");
        text.insert(&mut doc.transact_mut(), 0, "abc");
        let sv1 = doc.transact().state_vector();
        text.insert(&mut doc.transact_mut(), 3, "def");
        let sv2 = doc.transact().state_vector();
        text.remove_range(&mut doc.transact_mut(), 0, 1);
        let first = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let second = doc.transact().encode_state_as_update_v1(&sv1);
        let third = doc.transact().encode_state_as_update_v1(&sv2);
        let info = |b: &[u8]| validate_update_v1(b, &UpdateLimits::default()).expect("valid");
        // an empty document has everything the full update needs
        assert_eq!(info(&first).missing_dependency(|_| 0), None);
        // the incremental update needs clock 3 of client 5 first
        assert_eq!(info(&second).missing_dependency(|_| 0), Some((5, 0)));
        let sv1 = sv1.encode_v1();
        let have = crate::decode_state_vector(&sv1).expect("sv");
        let known = |c: u64| have.iter().find(|(k, _)| *k == c).map_or(0, |(_, v)| *v);
        assert_eq!(info(&second).missing_dependency(known), None);
        // a deletion of an unknown item is a missing dependency too
        assert_eq!(info(&third).missing_dependency(|_| 0), Some((5, 1)));
        assert_eq!(info(&third).missing_dependency(known), None);
    }
}
