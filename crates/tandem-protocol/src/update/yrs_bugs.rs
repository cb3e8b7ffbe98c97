//! Minimal reproducers of the yrs 0.28.1 bugs behind issue 14, written up for upstream in
//! `docs/upstream/yrs-memory-safety.md`. Each is paired with Tandem's defence.
//!
//! The memory fault runs in a child process (this test binary re-invoking itself), so it can
//! never take the suite down; for the exact AddressSanitizer report run the `room_update` fuzz
//! target on `fuzz/regressions/room_update/issue-14-crash-frame` (see README, "Decoder
//! fuzzing"). The logic errors are asserted as they are today: if one of those tests fails,
//! yrs fixed the bug, and the comment there says which workaround can go.

use super::shape_tests::{CRASH_FRAME, build, hex, item};
use super::*;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Transact, Update};

const CHILD_ENV: &str = "TANDEM_YRS_REPRO_CHILD";

fn apply(doc: &Doc, bytes: &[u8]) {
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(bytes).expect("yrs decodes"))
        .expect("yrs applies");
}

/// Bug 1, the child half: applies the issue 14 frame twice to a plain yrs document, then checks
/// the document is sane. Ignored in normal runs; the parent test runs it in a child process.
#[test]
#[ignore = "run as a child process by overlapping_client_groups_corrupt_the_heap"]
fn overlapping_client_groups_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    println!("REPRO-CHILD-STARTED");
    // release builds loop for minutes on the corrupted block list: give up after 10 s
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        overlapping_client_groups_work();
        let _ = done.send(());
    });
    if wait
        .recv_timeout(std::time::Duration::from_secs(10))
        .is_err_and(|e| e == std::sync::mpsc::RecvTimeoutError::Timeout)
    {
        println!("REPRO-CHILD-HUNG");
        std::process::exit(3);
    }
}

fn overlapping_client_groups_work() {
    let bytes = hex(CRASH_FRAME);
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    apply(&doc, &bytes);
    apply(&doc, &bytes);
    let txn = doc.transact();
    let s = text.get_string(&txn);
    let sv = txn.state_vector();
    let state = txn.encode_state_as_update_v1(&StateVector::default());
    // a sound document holds at most clocks 0..6 of client 5 and re-encodes to a valid update
    assert!(
        sv.get(&yrs::block::ClientID::new(5)) <= 6,
        "state vector {sv:?}"
    );
    validate_update_v1(&state, &UpdateLimits::default()).expect("re-encoded state is valid");
    Update::decode_v1(&state).expect("re-encoded state decodes");
    println!("REPRO-CHILD-SOUND text={s:?}");
}

/// Bug 1: `Update::decode` appends a client's second struct group to its first, and
/// `BlockStore::push` takes the overlapping block for the filling of a Skip: it overwrites (and
/// frees) the linked item `abcde`, and `next_clock() - block.next_clock()` underflows. In a
/// release build that is a heap use-after-free (ASAN: freed in `BlockStore::push`, used in
/// `ClientBlockList::squash_left` at commit) and a Skip of ~2^32 clocks; with overflow checks a
/// panic; in a plain release build it then spins for minutes on the corrupted block list (the
/// child gives up after 10 s). Either way the child must not come out sound.
/// If this fails, yrs fixed it: the "client listed twice" rule may stay (Yjs keeps only the
/// last group, yrs both — they still disagree) but is no longer a memory-safety defence.
#[test]
fn overlapping_client_groups_corrupt_the_heap() {
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "update::yrs_bugs::overlapping_client_groups_child",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("REPRO-CHILD-STARTED"),
        "child did not run: {stdout}"
    );
    assert!(
        !out.status.success() && !stdout.contains("REPRO-CHILD-SOUND"),
        "yrs came out sound (fixed upstream?): {stdout}"
    );
    println!(
        "child: {} {}",
        out.status,
        stdout.lines().last().unwrap_or_default()
    );
    // Tandem's defence
    assert_eq!(
        validate_update_v1(&hex(CRASH_FRAME), &UpdateLimits::default()),
        Err(DecodeError::InvalidUpdate(
            "client listed twice in the update's structs"
        ))
    );
}

/// Bug 2: a delete set that lists a client twice loses all but the last range list
/// (`IdSet::decode` inserts into a map); Yjs merges them. The sender's deletions are silently
/// dropped and the replicas diverge.
/// If this fails, yrs fixed it: the "client listed twice in the delete set" rule is then only
/// hygiene.
#[test]
fn a_client_listed_twice_in_the_delete_set_loses_deletions() {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    apply(&doc, &build(&[(5, 0, vec![item("abcdefgh")])], &[]));
    let deletes = build(&[], &[(5, vec![(0, 1)]), (5, vec![(3, 1)])]);
    apply(&doc, &deletes);
    // Yjs deletes both `a` and `d` ("bcefgh"); yrs only `d`
    assert_eq!(text.get_string(&doc.transact()), "abcefgh");
    assert_eq!(
        validate_update_v1(&deletes, &UpdateLimits::default()),
        Err(DecodeError::InvalidUpdate(
            "client listed twice in the delete set"
        ))
    );
}

/// Bug 3: pending structs are not retried once their dependency arrives, when another
/// update that is still missing something was queued after them. Three one-struct updates
/// from a 3-client yrs session (found by a differential search, shrunk by hand): `u0` = 1:0
/// "a"; `u3` = 1:1 "a" between 3:0 and 3:1 (client 3 never arrives); `u4` = 2:0 "bc" before 1:0.
/// Delivered u0, u3, u4 the text is "bca" (u3 pending). Delivered u4, u3, u0 it stays "a": u4's
/// dependency 1:0 arrives but u4 is never integrated. Yjs' algorithm retries it.
/// If this fails, yrs fixed it: Tandem's rooms never integrate an update with missing
/// dependencies (they ask for a resync instead) and, for yrs clients, the server delivers
/// causally (issue 14 §2); both stay right, but the client-side hazard is gone.
#[test]
fn pending_structs_are_stuck_after_a_second_pending_update() {
    let u0 = hex("0101010004010174016100");
    let u3 = hex("01010101c403000301016100");
    let u4 = hex("0101020044010002626300");
    let run = |order: &[&[u8]]| {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        for u in order {
            apply(&doc, u);
        }
        let txn = doc.transact();
        (
            text.get_string(&txn),
            txn.state_vector().get(&yrs::block::ClientID::new(2)),
        )
    };
    assert_eq!(run(&[&u0, &u3, &u4]), ("bca".to_owned(), 2));
    assert_eq!(run(&[&u4, &u3, &u0]), ("a".to_owned(), 0));
    // all three pass the validator: the hazard is the order of delivery, not a shape
    for u in [&u0, &u3, &u4] {
        validate_update_v1(u, &UpdateLimits::default()).expect("valid");
    }
}

/// Bug 4: yrs integrates a block whose predecessors are missing behind a `Block::Skip`
/// (`Update::integrate`, `integrate_skip`) instead of keeping it pending; a later block that
/// fills the gap and runs past the Skip corrupts the client's block list. Reduced from the
/// fuzzer's `tandem-fuzz-3-123` replay with causal delivery reverted (a client got a live update
/// before its SyncStep2): `live` = GC 5:2 (len 2), then `full` = GC 5:0 (len 4), the whole state
/// that covers it. `BlockStore::push` takes `full` as the filling of Skip 5:0..2 and computes
/// the rest of the Skip as `2 - 4` clocks: the re-encoded state holds a Skip of 2^32 - 2 clocks
/// ("clock overflows u32"; a debug build panics at that subtraction instead). Yjs keeps `live`
/// pending, then drops it as covered by `full`: the state yrs reaches in causal order.
/// If this fails, yrs fixed it: causal delivery (Room::broadcast_update) stays anyway, but the
/// upstream report's section 4 can be closed.
#[test]
fn filling_a_skip_past_its_end_overflows_the_clock() {
    let live = hex("01010502000200");
    let full = hex("01010500000400");
    let state_after = |order: &[&[u8]]| {
        let doc = Doc::new();
        for u in order {
            apply(&doc, u);
        }
        let txn = doc.transact();
        (
            txn.state_vector().get(&yrs::block::ClientID::new(5)),
            txn.encode_state_as_update_v1(&StateVector::default()),
        )
    };
    let limits = UpdateLimits::default();
    // causal order: one GC block 5:0..4
    let (clock, causal) = state_after(&[&full, &live]);
    assert_eq!(
        (clock, hex_of(&causal)),
        (4, "0101050000040105010004".to_owned())
    );
    validate_update_v1(&causal, &limits).expect("valid");
    // live first: GC 5:0..4, Skip 5:4 of 0xfffffffe clocks, GC 5:2..4
    if let Ok((clock, skipped)) = std::panic::catch_unwind(|| state_after(&[&live, &full])) {
        assert_eq!(
            (clock, hex_of(&skipped)),
            (4, "0103050000040afeffffff0f00020105010004".to_owned())
        );
        assert_eq!(
            validate_update_v1(&skipped, &limits),
            Err(DecodeError::InvalidUpdate("clock overflows u32"))
        );
    }
    // both updates are valid: the hazard is the order of delivery, not a shape
    for u in [&live, &full] {
        validate_update_v1(u, &limits).expect("valid");
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
