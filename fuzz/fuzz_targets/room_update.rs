//! Any bytes as a sync update sent to a live room by a connected peer: the room never panics
//! (validation runs before yrs), never keeps pending structs, and what it logs replays to the
//! same document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_protocol::{encode_sync_step2, encode_update};
use tandem_room::{PeerInfo, Room, RoomConfig};
use tandem_store::{LogEntry, StoredRoom};
use yrs::{ReadTxn, Transact};

fuzz_target!(|data: &[u8]| {
    let mut room = Room::new(RoomConfig::default());
    room.connect(1, PeerInfo::default());
    let mut log = Vec::new();
    for frame in [encode_update(data), encode_sync_step2(data), data.to_vec()] {
        let (fx, _err) = room.handle(1, &frame, 0);
        for (seq, record) in fx.append {
            log.push(LogEntry { seq, record });
        }
        assert!(!room.doc().transact().has_missing_updates());
    }
    let stored = StoredRoom {
        snapshot: None,
        log,
        next_seq: room.next_seq(),
    };
    let reloaded = Room::load(&stored, RoomConfig::default()).expect("logged updates reload");
    assert_eq!(
        reloaded.doc().transact().state_vector(),
        room.doc().transact().state_vector()
    );
});
