//! A seeded randomized check that everything yrs produces (per-transaction updates, diffs,
//! full states, deletes-only updates, merges with Skip structs) passes the validator.

use super::*;
use yrs::types::text::TextPrelim;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Array, ArrayPrelim, Doc, Map, MapPrelim, ReadTxn, StateVector, Text, Transact, Update,
    XmlElementPrelim, XmlFragment, XmlTextPrelim,
};

fn check(bytes: &[u8]) -> Result<UpdateInfo, DecodeError> {
    validate_update_v1(bytes, &UpdateLimits::default())
}

/// A small deterministic generator (splitmix64), so the test needs no extra dependency.
pub(super) struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn string(&mut self) -> String {
        const PIECES: [&str; 4] = ["a", "xyz", "q", " "];
        (0..=self.below(4))
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }

    fn any(&mut self) -> Any {
        match self.below(9) {
            0 => Any::Null,
            1 => Any::Bool(self.below(2) == 1),
            2 => Any::from(self.next() as f64 / 7.0),
            3 => Any::from(self.next() as i64),
            4 => Any::from(self.string()),
            5 => Any::from(vec![1u8, 2, 3]),
            6 => Any::from(vec![Any::from(1.5), Any::Undefined]),
            7 => Any::from(std::collections::HashMap::from([(
                "k".to_owned(),
                Any::from(-0.0),
            )])),
            _ => Any::from(f64::NAN),
        }
    }
}

/// One random local change on `doc` in one transaction; returns its update.
pub(super) fn random_edit(doc: &Doc, rng: &mut Rng) -> Vec<u8> {
    let text = doc.get_or_insert_text("text");
    // multi-unit characters only where no index can land inside one
    let wide = doc.get_or_insert_text("wide");
    let map = doc.get_or_insert_map("map");
    let array = doc.get_or_insert_array("array");
    let xml = doc.get_or_insert_xml_fragment("xml");
    let mut txn = doc.transact_mut();
    for _ in 0..=rng.below(3) {
        let len = text.len(&txn);
        let alen = array.len(&txn);
        match rng.below(11) {
            0 | 1 => {
                let s = rng.string();
                text.insert(&mut txn, rng.below(u64::from(len) + 1) as u32, &s);
            }
            2 if len > 0 => {
                let at = rng.below(u64::from(len)) as u32;
                let n = 1 + rng.below(u64::from(len - at)) as u32;
                text.remove_range(&mut txn, at, n);
            }
            3 if len > 0 => {
                let attrs = yrs::types::Attrs::from([(std::sync::Arc::from("bold"), rng.any())]);
                text.format(&mut txn, 0, 1 + rng.below(u64::from(len)) as u32, attrs);
            }
            4 => {
                let v = rng.any();
                text.insert_embed(&mut txn, rng.below(u64::from(len) + 1) as u32, v);
            }
            5 => {
                let key = format!("k{}", rng.below(4));
                let v = rng.any();
                map.insert(&mut txn, key, v);
            }
            6 => {
                let key = format!("k{}", rng.below(4));
                map.remove(&mut txn, &key);
            }
            7 => {
                let at = rng.below(u64::from(alen) + 1) as u32;
                match rng.below(4) {
                    0 => {
                        array.insert(&mut txn, at, MapPrelim::from([("n", rng.any())]));
                    }
                    1 => {
                        array.insert(&mut txn, at, ArrayPrelim::from([rng.any(), rng.any()]));
                    }
                    2 => {
                        array.insert(&mut txn, at, TextPrelim::new(rng.string()));
                    }
                    _ => {
                        array.insert(&mut txn, at, rng.any());
                    }
                }
            }
            8 if alen > 0 => {
                let at = rng.below(u64::from(alen)) as u32;
                array.remove_range(&mut txn, at, 1);
            }
            9 if rng.below(2) == 0 => {
                let end = wide.len(&txn);
                let at = if rng.below(2) == 0 { 0 } else { end };
                wide.insert(
                    &mut txn,
                    at,
                    ["🌍", "é\u{10FFFF}", "𝄞a"][rng.below(3) as usize],
                );
            }
            9 => {
                let el = xml.insert(&mut txn, 0, XmlElementPrelim::empty("p"));
                el.insert(&mut txn, 0, XmlTextPrelim::new(rng.string()));
            }
            _ => {
                let sub = Doc::new();
                map.insert(&mut txn, "sub", sub);
            }
        }
    }
    txn.encode_update_v1()
}

fn apply(doc: &Doc, bytes: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(bytes).expect("decode"))
        .expect("apply");
}

#[test]
fn accepts_every_update_yrs_produces_randomized() {
    let seed = std::env::var("TANDEM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("seed: {seed} (rerun with TANDEM_TEST_SEED={seed})");
    let mut rng = Rng(seed);
    let mut checked = 0usize;
    for round in 0..40 {
        let docs: Vec<Doc> = (0..2 + rng.below(4))
            .map(|i| Doc::with_client_id(1 + i + 100 * round + rng.below(1 << 40)))
            .collect();
        let mut produced: Vec<Vec<u8>> = Vec::new();
        for _ in 0..60 {
            let d = rng.below(docs.len() as u64) as usize;
            produced.push(random_edit(&docs[d], &mut rng));
            if rng.below(4) == 0 {
                // sync one doc from another with a diff
                let (a, b) = (
                    rng.below(docs.len() as u64) as usize,
                    rng.below(docs.len() as u64) as usize,
                );
                let sv = docs[b].transact().state_vector();
                let diff = docs[a].transact().encode_diff_v1(&sv);
                apply(&docs[b], &diff);
                produced.push(diff);
            }
        }
        for doc in &docs {
            let txn = doc.transact();
            produced.push(txn.encode_state_as_update_v1(&StateVector::default()));
            // deletes only: the diff against the document's own state
            produced.push(txn.encode_diff_v1(&txn.state_vector()));
            produced.push(txn.encode_diff_v1(&docs[0].transact().state_vector()));
        }
        // merges of random subsets (gaps inside a client's run come out as Skip structs)
        let all = produced.clone();
        for _ in 0..20 {
            let subset: Vec<&Vec<u8>> = all.iter().filter(|_| rng.below(3) == 0).collect();
            produced.push(yrs::merge_updates_v1(subset).expect("merge"));
        }
        for (i, bytes) in produced.iter().enumerate() {
            if let Err(e) = check(bytes) {
                panic!("seed {seed} round {round} update {i} refused: {e}: {bytes:02x?}");
            }
            checked += 1;
        }
    }
    println!("{checked} yrs-produced updates accepted");
}

#[test]
fn deeply_shaped_yrs_documents_pass() {
    // long runs of one client, many clients, and a large deletes-only update
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("t");
    for i in 0..500u32 {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, i, "x");
    }
    text.remove_range(&mut doc.transact_mut(), 0, 400);
    let mut peers = Vec::new();
    for c in 2..50 {
        let p = Doc::with_client_id(c);
        apply(
            &p,
            &doc.transact()
                .encode_state_as_update_v1(&StateVector::default()),
        );
        let t = p.get_or_insert_text("t");
        t.insert(&mut p.transact_mut(), 0, "y");
        peers.push(p);
    }
    for p in &peers {
        let u = p
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        check(&u).expect("valid");
        apply(&doc, &u);
    }
    let full = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let info = check(&full).expect("valid");
    assert_eq!(info.struct_ranges.len(), 49);
    let sv = doc.transact().state_vector().encode_v1();
    let deletes = doc
        .transact()
        .encode_diff_v1(&StateVector::decode_v1(&sv).expect("sv"));
    check(&deletes).expect("valid");
}
