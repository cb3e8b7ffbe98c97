//! Values Yjs writes come back unchanged through every path the server re-encodes them: the
//! room's yrs document (WebSocket sync, broadcasts, snapshots, GET v1), POST v2 (`v2_to_v1`)
//! and GET v2 (`v1_to_v2`). The inputs are the bytes Yjs 13.6 / lib0 write, built by hand.
#![allow(clippy::unwrap_used)]

use yrs::updates::decoder::Decode;
use yrs::{Any, Doc, Map, Out, ReadTxn, StateVector, Transact, Update};

use super::{v2, v2_out};

fn full(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn load(v1: &[u8]) -> Doc {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(v1).unwrap())
        .unwrap();
    doc
}

/// v1 of `ydoc.getMap('m').set(key, value)` by client 1, with `content` the item content
/// (info byte and content bytes).
fn map_set(key: &str, info: u8, content: &[u8]) -> Vec<u8> {
    let mut b = vec![1, 1, 1, 0, info | 0x20, 1, 1, b'm', key.len() as u8];
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(content);
    b.push(0); // empty delete set
    b
}

/// Through the room and GET v1, and through GET v2 then POST v2.
fn round_trips(v1: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let via_room = full(&load(v1));
    let v2 = v2_out::v1_to_v2(v1).unwrap();
    let via_v2 = v2::v2_to_v1(&v2, 64, 1 << 20).unwrap();
    (via_room, via_v2)
}

/// `map.set('b', 5n)` and friends: lib0 type 122 stays a bigint (it came back as an integer
/// or, for `2n ** 62n`, a float), and `-0` (type 125, sign bit, no digits) stays `-0`.
#[test]
fn bigint_and_negative_zero_come_back_as_written() {
    let bigint = |n: i64| {
        let mut a = vec![1, 0x7a];
        a.extend_from_slice(&n.to_be_bytes());
        a
    };
    for (name, any) in [
        ("5n", bigint(5)),
        ("-5n", bigint(-5)),
        ("2n**62n", bigint(1 << 62)),
        ("0n", bigint(0)),
    ] {
        let v1 = map_set("b", 8, &any);
        let (room, v2) = round_trips(&v1);
        assert_eq!(room, v1, "{name} through the room");
        assert_eq!(v2, v1, "{name} through v2");
        let doc = load(&v1);
        let txn = doc.transact();
        let v = txn.get_map("m").unwrap().get(&txn, "b").unwrap();
        assert!(
            matches!(v, Out::Any(Any::Number(yrs::Number::BigInt(_)))),
            "{name}: {v:?}"
        );
    }
    // -0: yrs may write it as a float32 -0; Yjs reads that as -0 too
    let v1 = map_set("z", 8, &[1, 0x7d, 0x40]);
    for out in <[Vec<u8>; 2]>::from(round_trips(&v1)) {
        let doc = load(&out);
        let txn = doc.transact();
        match txn.get_map("m").unwrap().get(&txn, "z").unwrap() {
            Out::Any(Any::Number(n)) => {
                let f = n.as_f64().unwrap();
                assert!(f == 0.0 && f.is_sign_negative(), "{n:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}

/// `map.set('s', new Y.Doc({ meta: { a: 1 } }))`: the options keep `meta` (it came back `null`).
#[test]
fn subdocument_meta_comes_back() {
    let mut content = vec![3, b'g', b'i', b'd'];
    content.extend_from_slice(&[
        0x76, 1, 4, b'm', b'e', b't', b'a', 0x76, 1, 1, b'a', 0x7d, 1,
    ]);
    let v1 = map_set("s", 9, &content);
    let (room, v2) = round_trips(&v1);
    // the options map is re-encoded with yrs' own keys too (in hash order): look for the entry
    let meta_entry = [4, b'm', b'e', b't', b'a', 0x76, 1, 1, b'a', 0x7d, 1];
    for (path, out) in [("room", room), ("v2", v2)] {
        assert!(
            out.windows(meta_entry.len()).any(|w| w == meta_entry),
            "{path}: meta missing from {out:?}"
        );
        let doc = load(&out);
        let txn = doc.transact();
        let Some(Out::YDoc(sub)) = txn.get_map("m").unwrap().get(&txn, "s") else {
            panic!("{path}: no sub-document")
        };
        assert_eq!(sub.guid().to_string(), "gid", "{path}");
    }
}

/// `xmlFragment.insert(0, [new Y.XmlHook('hook')]); hook.set('a', 1)`: Yjs writes the hook
/// name after the type ref; yrs read none, so everything after it was misread (the validator
/// mirrored that and refused Yjs' bytes, e.g. as "invalid utf-8 in string content").
#[test]
fn xml_hook_name_comes_back() {
    // v1 as Yjs 13.6 writes it for client 1
    let v1 = [
        1, 2, 1, 0, 7, 1, 1, b'x', 5, 4, b'h', b'o', b'o', b'k', 0x28, 0, 1, 0, 1, b'a', 1, 0x7d,
        1, 0,
    ];
    tandem_protocol::validate_update_v1(&v1, &Default::default()).unwrap();
    let (room, v2) = round_trips(&v1);
    assert_eq!(room, v1);
    assert_eq!(v2, v1);
}
