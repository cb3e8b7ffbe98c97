//! The shape rules, one hand-built update each (the randomized check that everything yrs
//! produces still passes is in `accept_tests.rs`), and the fuzz seed writer.

use super::accept_tests::{Rng, random_edit};
use super::*;
use crate::codec::{write_str, write_var_u64};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact, Update};

/// The 25-byte update of issue 14: client 5 listed twice, `abcde` at 0..5 then `xyz` at 3..6
/// (origin 5:2). Applied twice, yrs 0.28.1 frees a linked item (heap use-after-free).
pub(crate) const CRASH_FRAME: &str = "02010500040101740561626364650105038405020378797a00";

pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn check(bytes: &[u8]) -> Result<UpdateInfo, DecodeError> {
    validate_update_v1(bytes, &UpdateLimits::default())
}

/// A struct to hand-build: a string item with optional origins (a named root `t` when neither).
pub(super) struct Item<'a> {
    origin: Option<(u64, u32)>,
    right: Option<(u64, u32)>,
    text: &'a str,
}

pub(super) fn item(text: &str) -> Item<'_> {
    Item {
        origin: None,
        right: None,
        text,
    }
}

pub(super) fn after(origin: (u64, u32), text: &str) -> Item<'_> {
    Item {
        origin: Some(origin),
        right: None,
        text,
    }
}

/// Builds a v1 update: struct groups (client, first clock, items) then delete set entries
/// (client, ranges).
pub(super) fn build(
    groups: &[(u64, u32, Vec<Item<'_>>)],
    deletes: &[(u64, Vec<(u32, u32)>)],
) -> Vec<u8> {
    let mut out = Vec::new();
    write_var_u64(&mut out, groups.len() as u64);
    for (client, clock, items) in groups {
        write_var_u64(&mut out, items.len() as u64);
        write_var_u64(&mut out, *client);
        write_var_u64(&mut out, u64::from(*clock));
        for it in items {
            let mut info = 4u8;
            if it.origin.is_some() {
                info |= HAS_ORIGIN;
            }
            if it.right.is_some() {
                info |= HAS_RIGHT_ORIGIN;
            }
            out.push(info);
            for (c, k) in [it.origin, it.right].into_iter().flatten() {
                write_var_u64(&mut out, c);
                write_var_u64(&mut out, u64::from(k));
            }
            if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                write_var_u64(&mut out, 1);
                write_str(&mut out, "t");
            }
            write_str(&mut out, it.text);
        }
    }
    write_var_u64(&mut out, deletes.len() as u64);
    for (client, ranges) in deletes {
        write_var_u64(&mut out, *client);
        write_var_u64(&mut out, ranges.len() as u64);
        for &(clock, len) in ranges {
            write_var_u64(&mut out, u64::from(clock));
            write_var_u64(&mut out, u64::from(len));
        }
    }
    out
}

fn refused(bytes: &[u8]) -> &'static str {
    match check(bytes) {
        Err(DecodeError::InvalidUpdate(reason)) => reason,
        other => panic!("expected InvalidUpdate, got {other:?}"),
    }
}

fn apply_raw(doc: &Doc, bytes: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(bytes).expect("yrs decodes"))
        .expect("yrs applies");
}

/// Applies `bytes` to a fresh document; whether everything integrated (no pending structs).
fn yrs_integrates(bytes: &[u8]) -> bool {
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(bytes).expect("yrs decodes"))
        .expect("yrs applies");
    !txn.has_missing_updates()
}

#[test]
fn the_issue_14_crash_frame_is_refused() {
    let bytes = hex(CRASH_FRAME);
    assert_eq!(bytes.len(), 25);
    assert_eq!(
        refused(&bytes),
        "client listed twice in the update's structs"
    );
    // the same bytes built by hand, to show what they say
    let same = build(
        &[
            (5, 0, vec![item("abcde")]),
            (5, 3, vec![after((5, 2), "xyz")]),
        ],
        &[],
    );
    assert_eq!(same, bytes);
}

#[test]
fn a_client_listed_twice_is_refused_even_without_overlap() {
    // contiguous (0..3 then 3..5): Yjs keeps only the second group, yrs both — they disagree
    let contiguous = build(
        &[(5, 0, vec![item("abc")]), (5, 3, vec![after((5, 2), "de")])],
        &[],
    );
    assert_eq!(
        refused(&contiguous),
        "client listed twice in the update's structs"
    );
    // going backwards
    let backwards = build(&[(5, 3, vec![item("de")]), (5, 0, vec![item("abc")])], &[]);
    assert_eq!(
        refused(&backwards),
        "client listed twice in the update's structs"
    );
    // two different clients are fine
    let two = build(
        &[(5, 0, vec![item("abc")]), (6, 0, vec![after((5, 2), "de")])],
        &[],
    );
    check(&two).expect("valid");
    assert!(yrs_integrates(&two));
}

#[test]
fn an_empty_struct_group_is_refused() {
    assert_eq!(
        refused(&build(&[(5, 0, vec![])], &[])),
        "empty struct group"
    );
}

#[test]
fn delete_sets_list_each_client_once_with_ordered_disjoint_ranges() {
    let base = || vec![(5u64, 0u32, vec![item("abcdefgh")])];
    assert_eq!(
        refused(&build(&base(), &[(5, vec![(0, 1)]), (5, vec![(3, 1)])])),
        "client listed twice in the delete set"
    );
    assert_eq!(
        refused(&build(&base(), &[(5, vec![(0, 4), (2, 1)])])),
        "delete ranges overlap or are out of order"
    );
    assert_eq!(
        refused(&build(&base(), &[(5, vec![(4, 1), (0, 1)])])),
        "delete ranges overlap or are out of order"
    );
    // an empty range of an unknown client: yrs keeps it as a pending delete set forever
    // (found by fuzzing room_update)
    let empty = build(&[], &[(96, vec![(0, 0)])]);
    assert_eq!(refused(&empty), "empty delete range");
    let doc = Doc::new();
    apply_raw(&doc, &empty);
    assert!(doc.transact().has_missing_updates());
    // adjacent ranges and range-less entries are harmless and pass
    for ok in [
        build(&base(), &[(5, vec![(0, 2), (2, 2)])]),
        build(&base(), &[(5, vec![]), (6, vec![(0, 1)])]),
    ] {
        check(&ok).expect("valid");
        Update::decode_v1(&ok).expect("yrs decodes");
    }
}

#[test]
fn a_struct_referring_to_its_own_future_is_refused() {
    // origin is the struct itself
    let own = build(&[(5, 0, vec![after((5, 0), "a")])], &[]);
    assert_eq!(
        refused(&own),
        "struct refers to its own client at or after its own clock"
    );
    // origin is a later struct of the same group
    let later = build(&[(5, 0, vec![after((5, 2), "a"), item("bc")])], &[]);
    assert_eq!(
        refused(&later),
        "struct refers to its own client at or after its own clock"
    );
    // yrs would keep both pending forever
    assert!(!yrs_integrates(&own));
    assert!(!yrs_integrates(&later));
    // referring backwards is what every real update does
    let back = build(&[(5, 0, vec![item("ab"), after((5, 1), "c")])], &[]);
    check(&back).expect("valid");
    assert!(yrs_integrates(&back));
}

#[test]
fn structs_referring_to_each_other_in_a_cycle_are_refused() {
    // 5:0 after 6:0, and 6:0 after 5:0
    let cycle = build(
        &[
            (5, 0, vec![after((6, 0), "a")]),
            (6, 0, vec![after((5, 0), "b")]),
        ],
        &[],
    );
    assert_eq!(refused(&cycle), "structs refer to each other in a cycle");
    assert!(!yrs_integrates(&cycle));
    // a longer loop through the implicit order of a client's structs:
    // 5:1 after 7:0, 7:0 after 6:0, 6:0 after 5:1 (5:1 needs 5:0 first, which is fine)
    let long = build(
        &[
            (5, 0, vec![item("x"), after((7, 0), "y")]),
            (6, 0, vec![after((5, 1), "z")]),
            (7, 0, vec![after((6, 0), "w")]),
        ],
        &[],
    );
    assert_eq!(refused(&long), "structs refer to each other in a cycle");
    assert!(!yrs_integrates(&long));
    // the same chain without the loop (6:0 after 5:0), listed in an awkward order, passes
    let chain = build(
        &[
            (7, 0, vec![after((6, 0), "w")]),
            (5, 0, vec![item("x"), after((7, 0), "y")]),
            (6, 0, vec![after((5, 0), "z")]),
        ],
        &[],
    );
    check(&chain).expect("valid");
    assert!(yrs_integrates(&chain));
    // references outside the update are the receiver's business, not a cycle
    let outside = build(&[(5, 3, vec![after((9, 7), "a")])], &[]);
    check(&outside).expect("valid");
}

#[test]
fn skips_inside_a_group_pass_and_refer_to_nothing() {
    // what merge_updates_v1 writes for two non-adjacent updates of one client
    let doc = Doc::with_client_id(5);
    let text = doc.get_or_insert_text("t");
    let mut updates = Vec::new();
    for (i, s) in ["ab", "cd", "ef"].iter().enumerate() {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 2 * i as u32, s);
        updates.push(txn.encode_update_v1());
    }
    let merged = yrs::merge_updates_v1([&updates[0], &updates[2]]).expect("merge");
    let info = check(&merged).expect("valid");
    assert_eq!(info.skips, vec![(5, 2, 4)]);
}

/// Writes the fuzz seed corpora (`fuzz/seeds/…`): the issue 14 frame, every crafted shape of
/// this file, and real yrs updates, diffs and merges. Run with
/// `TANDEM_WRITE_SEEDS=fuzz/seeds cargo test --release -p tandem-protocol write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes files; run by hand to refresh fuzz/seeds"]
fn write_fuzz_seeds() {
    let dir =
        std::path::PathBuf::from(std::env::var("TANDEM_WRITE_SEEDS").expect("TANDEM_WRITE_SEEDS"));
    let sep: &[u8] = b"|TNDM|";
    let crash = hex(CRASH_FRAME);
    let mut updates: Vec<(String, Vec<u8>)> = vec![
        ("crash-frame".into(), crash.clone()),
        (
            "contiguous-twice".into(),
            build(
                &[(5, 0, vec![item("abc")]), (5, 3, vec![after((5, 2), "de")])],
                &[],
            ),
        ),
        (
            "backwards-twice".into(),
            build(&[(5, 3, vec![item("de")]), (5, 0, vec![item("abc")])], &[]),
        ),
        ("empty-group".into(), build(&[(5, 0, vec![])], &[])),
        (
            "ds-twice".into(),
            build(
                &[(5, 0, vec![item("abcdefgh")])],
                &[(5, vec![(0, 1)]), (5, vec![(3, 1)])],
            ),
        ),
        (
            "ds-overlap".into(),
            build(
                &[(5, 0, vec![item("abcdefgh")])],
                &[(5, vec![(0, 4), (2, 1)])],
            ),
        ),
        (
            "ds-adjacent-empty".into(),
            build(
                &[(5, 0, vec![item("abcdefgh")])],
                &[(5, vec![(0, 2), (2, 0), (4, 1)])],
            ),
        ),
        (
            "self-origin".into(),
            build(&[(5, 0, vec![after((5, 0), "a")])], &[]),
        ),
        (
            "later-origin".into(),
            build(&[(5, 0, vec![after((5, 2), "a"), item("bc")])], &[]),
        ),
        (
            "cycle".into(),
            build(
                &[
                    (5, 0, vec![after((6, 0), "a")]),
                    (6, 0, vec![after((5, 0), "b")]),
                ],
                &[],
            ),
        ),
        (
            "chain".into(),
            build(
                &[
                    (7, 0, vec![after((6, 0), "w")]),
                    (5, 0, vec![item("x"), after((7, 0), "y")]),
                    (6, 0, vec![after((5, 0), "z")]),
                ],
                &[],
            ),
        ),
    ];
    // the crash frame's halves, and pairs that need two applies
    let first = build(&[(5, 0, vec![item("abcde")])], &[]);
    let second = build(&[(5, 3, vec![after((5, 2), "xyz")])], &[]);
    updates.push((
        "halves".into(),
        [first.as_slice(), sep, second.as_slice()].concat(),
    ));
    updates.push((
        "crash-twice".into(),
        [crash.as_slice(), sep, crash.as_slice()].concat(),
    ));
    let mut rng = Rng(20261202);
    let docs: Vec<Doc> = (1..4).map(Doc::with_client_id).collect();
    let mut produced = Vec::new();
    for _ in 0..40 {
        let d = rng.below(3) as usize;
        produced.push(random_edit(&docs[d], &mut rng));
    }
    for (i, u) in produced.iter().enumerate().step_by(4) {
        updates.push((format!("yrs-edit-{i}"), u.clone()));
    }
    for (i, doc) in docs.iter().enumerate() {
        updates.push((
            format!("yrs-full-{i}"),
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default()),
        ));
    }
    let merged = yrs::merge_updates_v1([&produced[0], &produced[5], &produced[9]]).expect("merge");
    updates.push(("yrs-merge-skips".into(), merged));
    updates.push((
        "yrs-pair".into(),
        [produced[0].as_slice(), sep, produced[1].as_slice()].concat(),
    ));
    let room = dir.join("room_update");
    let frames = dir.join("frame_decode");
    let svs = dir.join("state_vector_decode");
    for d in [&room, &frames, &svs] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    for (name, bytes) in &updates {
        std::fs::write(room.join(name), bytes).expect("write");
        if !bytes.windows(sep.len()).any(|w| w == sep) {
            std::fs::write(
                frames.join(format!("update-{name}")),
                crate::encode_update(bytes),
            )
            .expect("write");
            std::fs::write(
                frames.join(format!("step2-{name}")),
                crate::encode_sync_step2(bytes),
            )
            .expect("write");
        }
    }
    for (i, doc) in docs.iter().enumerate() {
        let sv = doc.transact().state_vector().encode_v1();
        std::fs::write(svs.join(format!("yrs-sv-{i}")), &sv).expect("write");
        std::fs::write(
            frames.join(format!("step1-{i}")),
            crate::encode_sync_step1(&sv),
        )
        .expect("write");
    }
}

/// Client 5: a first struct under root `a` (`first`: info byte and content bytes), then a string
/// item "x" whose parent is named by id: 5:0.
fn child_of_first(first_info: u8, first_content: &[u8]) -> Vec<u8> {
    let mut out = vec![1, 2, 5, 0, first_info, 1];
    write_str(&mut out, "a");
    out.extend_from_slice(first_content);
    out.extend_from_slice(&[4, 0, 5, 0]); // string item, parent by id 5:0
    write_str(&mut out, "x");
    out.push(0);
    out
}

#[test]
fn a_parent_in_the_update_must_be_a_type() {
    // 5:0 is the string "ab": yrs integrates it, then fails on 5:2 with InvalidParent and
    // keeps the half-applied transaction (found by fuzzing room_update: the room's document
    // and its log disagreed)
    let mut ab = Vec::new();
    write_str(&mut ab, "ab");
    let bad = child_of_first(4, &ab);
    assert_eq!(refused(&bad), "parent is not a type");
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    let result = txn.apply_update(Update::decode_v1(&bad).expect("decodes"));
    assert!(result.is_err(), "yrs refuses the parent");
    assert_eq!(txn.state_vector().get(&yrs::block::ClientID::new(5)), 2);
    drop(txn);
    // 5:0 an array type: fine, and yrs puts "x" in it
    let good = child_of_first(7, &[0]);
    check(&good).expect("valid");
    assert!(yrs_integrates(&good));
    // deleted content as parent: yrs turns the child into GC, no error
    let deleted = child_of_first(1, &[1]);
    check(&deleted).expect("valid");
    assert!(yrs_integrates(&deleted));
}
