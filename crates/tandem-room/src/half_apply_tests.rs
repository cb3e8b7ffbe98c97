//! An update yrs refuses *while applying* may already have integrated some of its structs (yrs
//! 0.28 integrates struct by struct and does not roll back): the room must report that its
//! document is in doubt, so the driver rebuilds it from storage, which never saw the update.

use tandem_protocol::codec::{write_str, write_var_u64};
use tandem_protocol::encode_update;
use yrs::{GetString, ReadTxn, StateVector, Text, Transact};

use crate::{PeerError, PeerInfo, Room, RoomConfig};

/// One update with two struct groups: client 3 inserts "x" into root text `t` (valid on its
/// own), client 2 inserts "y" into the *item* (1, 0) — a string, not a type. The validator cannot
/// know what (1, 0) is (it is not in the update), so yrs decides.
fn half_valid_update() -> Vec<u8> {
    let mut out = Vec::new();
    write_var_u64(&mut out, 2); // two client groups
    for (client, parent_is_root) in [(2u64, false), (3u64, true)] {
        write_var_u64(&mut out, 1); // one struct
        write_var_u64(&mut out, client);
        write_var_u64(&mut out, 0); // clock
        out.push(4); // item, string content, no origins
        if parent_is_root {
            write_var_u64(&mut out, 1);
            write_str(&mut out, "t");
        } else {
            write_var_u64(&mut out, 0);
            write_var_u64(&mut out, 1); // parent id: client 1…
            write_var_u64(&mut out, 0); // …clock 0
        }
        write_str(&mut out, if parent_is_root { "x" } else { "y" });
    }
    write_var_u64(&mut out, 0); // empty delete set
    out
}

fn room_with_text() -> Room {
    let mut room = Room::new(RoomConfig::default());
    room.connect(1, PeerInfo::default());
    let doc = yrs::Doc::with_client_id(1);
    let text = doc.get_or_insert_text("t");
    text.insert(&mut doc.transact_mut(), 0, "ab");
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let (fx, err) = room.handle(1, &encode_update(&update), 0);
    assert!(err.is_none() && fx.append.len() == 1);
    room
}

#[test]
fn an_update_yrs_refuses_midway_leaves_the_document_in_doubt() {
    let bytes = half_valid_update();
    tandem_protocol::validate_update_v1(&bytes, &Default::default())
        .expect("the validator cannot see that (1, 0) is no type");
    for via_http in [false, true] {
        let mut room = room_with_text();
        let err = if via_http {
            room.apply_external(&bytes, "a", 1).expect_err("refused")
        } else {
            let (fx, err) = room.handle(1, &encode_update(&bytes), 1);
            assert!(fx.append.is_empty(), "nothing logged");
            err.expect("refused")
        };
        assert!(
            matches!(err, PeerError::ApplyFailed(_)),
            "expected ApplyFailed, got {err:?}"
        );
        assert!(err.leaves_doc_in_doubt());
        assert_eq!(err.close_code(), crate::close::BAD_MESSAGE);
    }
}

/// What the driver's rebuild restores: the document storage holds, without the half-applied part.
#[test]
fn yrs_keeps_what_it_integrated_before_the_error() {
    let mut room = room_with_text();
    let (_, err) = room.handle(1, &encode_update(&half_valid_update()), 1);
    assert!(err.is_some());
    let text = room.doc().get_or_insert_text("t");
    let sv = room.doc().transact().state_vector();
    // If this fails, yrs rolls back (or refuses up front) and the rebuild is merely cautious.
    assert!(
        sv.get(&yrs::ClientID::new(3)) == 1 || text.get_string(&room.doc().transact()) != "ab",
        "yrs no longer half-applies: {sv:?}"
    );
}
