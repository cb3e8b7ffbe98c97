//! The fuzz targets' bodies, shared with the stable replay test in
//! `crates/tandem-server/tests/it/bad_input.rs`, which runs every committed seed and regression
//! input (`fuzz/seeds/TARGET/`, `fuzz/regressions/TARGET/`) through them in `cargo test`.
//! Each function panics on a finding; a memory fault shows only under AddressSanitizer.

use tandem_protocol::{
    decode_awareness, decode_frame, decode_state_vector, encode_awareness, encode_message,
    encode_state_vector, encode_sync_step2, encode_update,
};
use tandem_room::{PeerInfo, Room, RoomConfig};
use tandem_store::{
    LogEntry, LogRecord, Snapshot, StoredRoom, decode_log_value, encode_log_chunk, log_value_len,
};
use yrs::{ReadTxn, Transact};

/// Separates the updates one `room_update` input carries (the crash of issue 14 needed two
/// applies onto the same document).
pub const UPDATE_SEPARATOR: &[u8] = b"|TNDM|";

/// Runs the target `name` on `data`; false for an unknown target name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "frame_decode" => frame_decode(data),
        "room_update" => room_update(data),
        "state_vector_decode" => state_vector_decode(data),
        "awareness_decode" => awareness_decode(data),
        "store_records_decode" => store_records_decode(data),
        _ => return false,
    }
    true
}

/// Any bytes as a WebSocket frame: decoding never panics, and what decodes re-encodes to a
/// frame that decodes to the same messages.
pub fn frame_decode(data: &[u8]) {
    if let Ok(messages) = decode_frame(data) {
        for m in &messages {
            let bytes = encode_message(m);
            let again = decode_frame(&bytes).expect("re-encoded message decodes");
            assert_eq!(again.len(), 1);
            assert_eq!(&again[0], m);
        }
    }
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest
        .windows(UPDATE_SEPARATOR.len())
        .position(|w| w == UPDATE_SEPARATOR)
    {
        parts.push(&rest[..at]);
        rest = &rest[at + UPDATE_SEPARATOR.len()..];
    }
    parts.push(rest);
    parts
}

/// Any bytes as one or more sync updates (split at [`UPDATE_SEPARATOR`]) sent to a live room
/// by a connected peer, each as an Update, then all again as SyncStep2 (a resend onto existing
/// state), then the whole input as a raw frame; and each as an HTTP API update to a second
/// room. The rooms never panic (validation runs before yrs), never keep pending structs, and
/// what they log replays to the same document.
pub fn room_update(data: &[u8]) {
    let parts = split(data);
    let mut room = Room::new(RoomConfig::default());
    room.connect(1, PeerInfo::default());
    let mut log = Vec::new();
    let frames = parts
        .iter()
        .map(|p| encode_update(p))
        .chain(parts.iter().map(|p| encode_sync_step2(p)))
        .chain(std::iter::once(data.to_vec()));
    for frame in frames {
        let (fx, err) = room.handle(1, &frame, 0);
        for (seq, record) in fx.append {
            log.push(LogEntry { seq, record });
        }
        if err.is_some_and(|e| e.leaves_doc_in_doubt()) {
            // what the server's room task does: rebuild the document from what was logged
            rebuild(&mut room, &log);
        }
        assert!(!room.doc().transact().has_missing_updates());
    }
    check_reload(&room, log);

    let mut api = Room::new(RoomConfig::default());
    let mut log = Vec::new();
    for part in parts.iter().chain(parts.iter()) {
        match api.apply_external(part, "fuzz", 0) {
            Ok(fx) => {
                for (seq, record) in fx.append {
                    log.push(LogEntry { seq, record });
                }
            }
            Err(e) if e.leaves_doc_in_doubt() => rebuild(&mut api, &log),
            Err(_) => {}
        }
        assert!(!api.doc().transact().has_missing_updates());
    }
    check_reload(&api, log);
}

/// Replaces the room's document with what `log` holds, as the server does after an error that
/// leaves the document in doubt (a panic, or yrs failing midway through an update).
fn rebuild(room: &mut Room, log: &[LogEntry]) {
    let stored = StoredRoom {
        snapshot: None,
        log: log.to_vec(),
        next_seq: room.next_seq(),
    };
    room.replace_doc(&stored).expect("logged updates reload");
}

fn check_reload(room: &Room, log: Vec<LogEntry>) {
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
}

/// Any bytes as a SyncStep1 state vector: decoding never panics and round-trips.
pub fn state_vector_decode(data: &[u8]) {
    if let Ok(entries) = decode_state_vector(data) {
        let bytes = encode_state_vector(entries.iter().copied());
        assert_eq!(
            decode_state_vector(&bytes).expect("re-encoded decodes"),
            entries
        );
    }
}

/// Any bytes as an awareness update: decoding never panics and round-trips.
pub fn awareness_decode(data: &[u8]) {
    if let Ok(entries) = decode_awareness(data) {
        let bytes = encode_awareness(&entries);
        assert_eq!(
            decode_awareness(&bytes).expect("re-encoded decodes"),
            entries
        );
    }
}

/// Any bytes as a stored log record, log chunk or snapshot: decoding never panics and
/// round-trips.
pub fn store_records_decode(data: &[u8]) {
    if let Ok(r) = LogRecord::decode(data) {
        assert_eq!(LogRecord::decode(&r.encode()), Ok(r));
    }
    if let Ok(entries) = decode_log_value(7, data) {
        assert_eq!(log_value_len(data), Ok(entries.len() as u64));
        let again = encode_log_chunk(entries.iter().map(|e| &e.record));
        assert_eq!(decode_log_value(7, &again), Ok(entries));
    }
    if let Ok(s) = Snapshot::decode(data) {
        assert_eq!(Snapshot::decode(&s.encode()), Ok(s));
    }
}
