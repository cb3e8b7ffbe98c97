//! Hostile and malformed input: each bad frame closes only the connection that sent it, with a
//! close code and a reason; the room, its stored data and every other connection keep working.

use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tandem_protocol::codec::{write_str, write_var_u64};
use tandem_protocol::{encode_sync_step2, encode_update};
use tandem_room::close;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Text, Transact};

use crate::common::{Client, TIMEOUT, TestServer, test_config};

/// A room with two healthy clients and some content, plus a second room.
struct Fixture {
    server: TestServer,
    a: Client,
    b: Client,
    other: Client,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(config: tandem_server::ServerConfig) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = TestServer::start(dir.path(), config).await;
        let mut a = Client::synced(&server.url("victim"), 1).await;
        let mut b = Client::synced(&server.url("victim"), 2).await;
        let other = Client::synced(&server.url("bystander"), 3).await;
        a.insert_text("t", 0, "precious").await;
        let sv = a.state_vector();
        b.wait_for_state(&sv).await;
        Fixture {
            server,
            a,
            b,
            other,
            _dir: dir,
        }
    }

    /// Sends `frame` from a fresh connection to the victim room; returns how it was closed
    /// (None if the server kept it open and answered normally).
    async fn attack(&self, frame: WsMessage) -> (u16, String) {
        let mut evil = Client::synced(&self.server.url("victim"), 666).await;
        evil.send_raw(frame).await.expect("send");
        evil.wait_closed().await
    }

    /// Everyone else still syncs and the room's content is intact.
    async fn still_healthy(&mut self, round: u32) {
        self.b.insert_text("t", 0, &format!("<{round}>")).await;
        let sv = self.b.state_vector();
        self.a.wait_for_state(&sv).await;
        let sv = self.a.state_vector();
        self.b.wait_for_state(&sv).await;
        // (a bit-flipped update can be a valid one that edits the text; what must hold is that
        // everyone agrees and nothing breaks)
        assert_eq!(self.a.text("t"), self.b.text("t"));
        let text = self.other.doc.get_or_insert_text("t");
        self.other
            .edit_confirmed(|_, txn| text.insert(txn, 0, "x"))
            .await;
        // storage still loads
        let stored = self.server.hub.store().load("victim").expect("loads");
        assert!(!stored.is_empty());
    }
}

fn valid_update() -> Vec<u8> {
    let doc = yrs::Doc::with_client_id(4242);
    let t = doc.get_or_insert_text("t");
    t.insert(&mut doc.transact_mut(), 0, "valid content here");
    doc.transact()
        .encode_state_as_update_v1(&yrs::StateVector::default())
}

fn any_update(client: u64, clock: u64, any: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_var_u64(&mut out, 1);
    write_var_u64(&mut out, 1);
    write_var_u64(&mut out, client);
    write_var_u64(&mut out, clock);
    out.push(8);
    write_var_u64(&mut out, 1);
    write_str(&mut out, "m");
    write_var_u64(&mut out, 1);
    out.extend_from_slice(any);
    out.push(0);
    out
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let mut fx = Fixture::new(test_config()).await;
    let cases: Vec<(&str, WsMessage, u16)> = vec![
        (
            "unknown message type",
            WsMessage::Binary(vec![9u8].into()),
            4400,
        ),
        (
            "unknown sync type",
            WsMessage::Binary(vec![0u8, 7].into()),
            4400,
        ),
        (
            "empty frame",
            WsMessage::Binary(Vec::<u8>::new().into()),
            4400,
        ),
        ("text frame", WsMessage::Text("hello".into()), 4400),
        (
            "update yrs would reject (empty gc block)",
            WsMessage::Binary(encode_update(&[1, 1, 5, 0, 0, 0, 0]).into()),
            4400,
        ),
        (
            "client id at 2^53",
            WsMessage::Binary(encode_update(&any_update(1 << 53, 0, &[126])).into()),
            4400,
        ),
        (
            "awareness with invalid json",
            WsMessage::Binary(
                tandem_protocol::encode_awareness_message(&[tandem_protocol::AwarenessEntry {
                    client_id: 1,
                    clock: 1,
                    state: "{nope",
                }])
                .into(),
            ),
            4400,
        ),
    ];
    for (round, (what, frame, code)) in cases.into_iter().enumerate() {
        let (got, reason) = fx.attack(frame).await;
        assert_eq!(got, code, "{what}: {reason}");
        assert!(!reason.is_empty(), "{what}: a reason is given");
        fx.still_healthy(round as u32).await;
    }
}

#[tokio::test]
async fn deeply_nested_values_are_refused_without_crashing() {
    let mut fx = Fixture::new(test_config()).await;
    let mut nested = Vec::new();
    for _ in 0..500_000 {
        nested.extend_from_slice(&[117, 1]);
    }
    nested.push(126);
    let (code, reason) = fx
        .attack(WsMessage::Binary(
            encode_update(&any_update(77, 0, &nested)).into(),
        ))
        .await;
    assert_eq!(code, 4400);
    assert!(reason.contains("nested"), "{reason}");
    fx.still_healthy(0).await;
}

#[tokio::test]
async fn frames_over_the_limit_are_closed_as_too_large() {
    let mut config = test_config();
    config.max_frame_bytes = 64 * 1024;
    let mut fx = Fixture::new(config).await;
    let (code, _) = fx
        .attack(WsMessage::Binary(vec![0u8; 100 * 1024].into()))
        .await;
    assert_eq!(code, close::TOO_LARGE);
    fx.still_healthy(0).await;
}

/// Clients that send bad frames back to back, and keep sending until they read the server's close
/// frame, receive the close code and reason: the server sends its close frame and keeps reading
/// until the client answers, instead of dropping a socket that data is still arriving on. (A
/// reset hits the client's writes; browsers and Node's `ws` then report 1006 and never read the
/// close frame, so a write error before the close frame arrived counts as a failure here.)
#[tokio::test]
async fn every_client_sending_bad_frames_back_to_back_sees_4400_and_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    const CONNECTIONS: usize = 50;
    let mut tasks = Vec::new();
    for i in 0..CONNECTIONS {
        let url = server.url("burst");
        tasks.push(tokio::spawn(async move {
            send_bad_frames_until_closed(&url, i).await
        }));
    }
    let mut wrong = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let seen = tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("closed in time")
            .expect("client task");
        match seen {
            Ok((code, reason)) if code == close::BAD_MESSAGE && !reason.is_empty() => {}
            other => wrong.push((i, other)),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {CONNECTIONS} connections did not see 4400: {wrong:?}",
        wrong.len()
    );
    server.stop().await;
}

/// One client of the test above: text frames for even `i` (refused by the connection itself),
/// unknown message types for odd `i` (refused by the room), 16 KiB each, written one after the
/// other, with what has arrived read in between (as an event loop does). Returns the close
/// code and reason, or how the connection failed.
async fn send_bad_frames_until_closed(url: &str, i: usize) -> Result<(u16, String), String> {
    use futures::FutureExt;
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    for _ in 0..2000 {
        // everything that has arrived, without waiting
        while let Some(msg) = ws.next().now_or_never() {
            match msg {
                Some(Ok(WsMessage::Close(frame))) => {
                    // read on: that flushes our answer, and the server then ends the connection
                    while let Ok(Some(_)) = tokio::time::timeout(TIMEOUT, ws.next()).await {}
                    return frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .ok_or_else(|| "close frame without a code".to_owned());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("1006: {e}")),
                None => return Err("1006: ended without a close frame".into()),
            }
        }
        let msg = if i.is_multiple_of(2) {
            WsMessage::Text("x".repeat(16 * 1024).into())
        } else {
            WsMessage::Binary(vec![0x7f; 16 * 1024].into())
        };
        if let Err(e) = ws.send(msg).await {
            // browsers and Node's `ws` give up on a write error: 1006
            return Err(format!("1006: reset while sending: {e}"));
        }
        tokio::task::yield_now().await;
    }
    Err("never closed".into())
}

#[tokio::test]
async fn huge_clock_gap_asks_for_resync_and_then_closes() {
    let mut fx = Fixture::new(test_config()).await;
    let gap = any_update(31337, 1_000_000, &[126]);
    let mut evil = Client::synced(&fx.server.url("victim"), 31337).await;
    evil.send(encode_update(&gap)).await;
    // the server asks for what it lacks; our client answers with its (empty) diff, and then we
    // send the gapped update as SyncStep2, which cannot be resolved
    evil.pump().await;
    evil.send(encode_sync_step2(&gap)).await;
    let (code, reason) = evil.wait_closed().await;
    assert_eq!(code, close::MISSING_DEPENDENCIES, "{reason}");
    let stored = fx.server.hub.store().load("victim").expect("load");
    assert!(stored.log.iter().all(|e| e.record.update.len() < 100));
    fx.still_healthy(0).await;
}

#[tokio::test]
async fn random_truncated_and_bit_flipped_frames_never_hurt_the_room() {
    let seed: u64 = rand::random();
    println!("seed: {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fx = Fixture::new(test_config()).await;
    let valid = encode_update(&valid_update());
    let sv_frame =
        tandem_protocol::encode_sync_step1(&yrs::Doc::new().transact().state_vector().encode_v1());
    for round in 0..30u32 {
        let frame = match round % 3 {
            0 => {
                let mut b = vec![0u8; rng.random_range(1..64)];
                rng.fill_bytes(&mut b);
                b
            }
            1 => valid[..rng.random_range(1..valid.len())].to_vec(),
            _ => {
                let mut b = if rng.random_bool(0.5) {
                    valid.clone()
                } else {
                    sv_frame.clone()
                };
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
                b
            }
        };
        let mut evil = Client::synced(&fx.server.url("victim"), 7000 + u64::from(round)).await;
        evil.send(frame).await;
        // a follow-up message proves whether the connection survived; either way is fine as
        // long as a closed connection carries a code and a reason
        evil.send(tandem_protocol::encode_query_awareness()).await;
        evil.close().await;
        fx.still_healthy(round).await;
    }
}

/// A client that connects and then sends nothing, or only part of a request, is closed once
/// the header timeout passes (it used to hold its socket forever). WebSockets are past their
/// request and stay open, and ordinary requests are unaffected.
#[tokio::test]
async fn silent_and_slow_http_clients_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tandem_server::ServerConfig {
        header_read_timeout: std::time::Duration::from_millis(500),
        ..test_config()
    };
    let server = TestServer::start(dir.path(), config).await;
    let mut ws = Client::synced(&server.url("quiet"), 1).await;
    let mut probes = Vec::new();
    for partial in [&b""[..], b"G", b"GET /healthz HT", b"PRI * HTTP/2.0\r\n"] {
        let mut tcp = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        tcp.write_all(partial).await.expect("write");
        probes.push((partial, tcp));
    }
    for (partial, mut tcp) in probes {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{partial:?}: still open after 10 s"));
        assert!(
            matches!(n, Ok(0) | Err(_)),
            "{partial:?}: expected the server to close, got {n:?}"
        );
    }
    // the WebSocket opened before them, idle all along, still syncs
    ws.insert_text("t", 0, "still here").await;
    let mut other = Client::synced(&server.url("quiet"), 2).await;
    other
        .wait_until("the idle socket's edit", |c| c.text("t") == "still here")
        .await;
    assert_eq!(crate::http::get(server.addr, "/healthz").await.status, 200);
    server.stop().await;
}

/// The 25-byte update of issue 14 (client 5 listed twice with overlapping clock ranges): POSTed
/// twice it used to kill the process (a heap use-after-free inside yrs) and leave the room
/// unloadable.
const CRASH_FRAME: &str = "02010500040101740561626364650105038405020378797a00";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test]
async fn the_issue_14_crash_frame_is_refused_over_http_and_websocket() {
    let mut fx = Fixture::new(test_config()).await;
    let crash = hex(CRASH_FRAME);
    let victim_log = fx
        .server
        .hub
        .store()
        .load("victim")
        .expect("load")
        .log
        .len();
    for attempt in 0..2 {
        let resp = crate::http::post_update(fx.server.addr, "fresh", &crash).await;
        assert_eq!(resp.status, 400, "attempt {attempt}");
        assert_eq!(resp.code(), "invalid_update", "attempt {attempt}");
        // and into a room that holds content
        let resp = crate::http::post_update(fx.server.addr, "victim", &crash).await;
        assert_eq!(resp.status, 400, "attempt {attempt}");
        assert_eq!(resp.code(), "invalid_update", "attempt {attempt}");
    }
    for frame in [encode_update(&crash), encode_sync_step2(&crash)] {
        let (code, reason) = fx.attack(WsMessage::Binary(frame.into())).await;
        assert_eq!(code, 4400, "{reason}");
        assert!(reason.contains("listed twice"), "{reason}");
    }
    // nothing was stored
    assert!(
        fx.server
            .hub
            .store()
            .load("fresh")
            .expect("load")
            .is_empty()
    );
    let stored = fx.server.hub.store().load("victim").expect("load");
    assert_eq!(stored.log.len(), victim_log);
    fx.still_healthy(0).await;
    assert_eq!(fx.a.text("t"), fx.b.text("t"));
}

/// A room whose storage already holds such an update is refused with a reason (4500 on the
/// WebSocket, 503 on the API) instead of being handed to yrs; the process and the other rooms
/// carry on. The same bytes split into two log entries (one client group each) are an ordinary
/// overlapping resend and load.
#[tokio::test]
async fn a_room_storing_the_crash_frame_is_refused_at_load() {
    use tandem_store::LogRecord;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let crash = hex(CRASH_FRAME);
    // the two client groups of the frame, each a whole update of its own
    let first = hex("0101050004010174056162636465");
    let second = hex("010105038405020378797a00");
    let record = |update: &[u8]| LogRecord {
        time_ms: 0,
        author: "legacy".to_owned(),
        update: update.to_vec(),
    };
    let store = server.hub.store();
    store
        .append("bricked", &[(1, record(&crash)), (2, record(&crash))])
        .expect("append");
    let mut halves = first.clone();
    halves.push(0); // empty delete set
    store
        .append("halves", &[(1, record(&halves)), (2, record(&second))])
        .expect("append");
    store.flush().expect("flush");

    let mut peer = Client::connect(&server.url("bricked"), 1).await;
    let (code, reason) = peer.wait_closed().await;
    assert_eq!(code, 4500, "{reason}");
    assert!(reason.contains("log entry 1"), "{reason}");
    let resp = crate::http::get(server.addr, "/api/rooms/bricked/update").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.code(), "room_unavailable");

    let halves = Client::synced(&server.url("halves"), 2).await;
    assert_eq!(halves.text("t"), "abcdez");
    let mut a = Client::synced(&server.url("healthy"), 3).await;
    let mut b = Client::synced(&server.url("healthy"), 4).await;
    a.insert_text("t", 0, "still here").await;
    let sv = a.state_vector();
    b.wait_for_state(&sv).await;
    assert_eq!(b.text("t"), "still here");
    assert_eq!(crate::http::get(server.addr, "/healthz").await.status, 200);
}

/// An update that passes validation but that yrs refuses midway — here an item whose parent is
/// a *string* item already in the document, which the validator cannot see — after yrs already
/// integrated the update's other struct group (client 88's "x"). yrs does not roll back, so the
/// room rebuilds its document from storage, which never saw the update: otherwise the room would
/// think it holds client 88's clock 0 and turn that client's real first edit into a corrupt merge
/// ("x" + the rest of "hello").
#[tokio::test]
async fn an_update_yrs_refuses_midway_leaves_no_trace_in_the_room() {
    fn half_valid() -> Vec<u8> {
        let mut out = Vec::new();
        write_var_u64(&mut out, 2);
        // yrs integrates clients in descending order: 88's valid item first, then 77's
        for (client, bad) in [(88u64, false), (77u64, true)] {
            write_var_u64(&mut out, 1);
            write_var_u64(&mut out, client);
            write_var_u64(&mut out, 0);
            out.push(4); // string item, no origins
            if bad {
                write_var_u64(&mut out, 0); // parent by id: (1, 0), the 'p' of "precious"
                write_var_u64(&mut out, 1);
                write_var_u64(&mut out, 0);
            } else {
                write_var_u64(&mut out, 1);
                write_str(&mut out, "t");
            }
            write_str(&mut out, "x");
        }
        write_var_u64(&mut out, 0);
        out
    }
    let bad = half_valid();
    for via_http in [true, false] {
        // a fresh server each round: a room that has never seen client 88
        let mut fx = Fixture::new(test_config()).await;
        if via_http {
            let resp = crate::http::post_update(fx.server.addr, "victim", &bad).await;
            assert_eq!(resp.status, 400);
            assert_eq!(resp.code(), "invalid_update");
        } else {
            let (code, reason) = fx
                .attack(WsMessage::Binary(encode_update(&bad).into()))
                .await;
            assert_eq!(code, 4400, "{reason}");
        }
        // client 88's own first edit, at the end of the text, is stored as it wrote it
        let mut real = Client::synced(&fx.server.url("victim"), 88).await;
        assert_eq!(real.text("t"), "precious");
        let text = real.doc.get_or_insert_text("t");
        real.edit_confirmed(|_, txn| text.insert(txn, 8, "hello"))
            .await;
        let fresh = Client::synced(&fx.server.url("victim"), 99).await;
        assert_eq!(fresh.text("t"), "precioushello");
        fx.still_healthy(0).await;
    }
}

/// The fuzz targets' bodies (shared with `fuzz/fuzz_targets/`).
#[path = "../../../../fuzz/harness/mod.rs"]
mod fuzz_harness;

/// Every committed fuzz seed and regression input (`fuzz/seeds/TARGET/*`,
/// `fuzz/regressions/TARGET/*`, the issue 14 frame among them) goes through its target's checks
/// — the validator, two rooms, storage reload — in the ordinary test run. (The AddressSanitizer
/// runs that found or guard them: README, "Decoder fuzzing".)
#[test]
fn committed_fuzz_inputs_replay_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(targets) = std::fs::read_dir(root.join(kind)) else {
            continue;
        };
        for target in targets {
            let target = target.expect("dir entry").path();
            let name = target
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            for input in std::fs::read_dir(&target).expect("read target dir") {
                let input = input.expect("dir entry").path();
                let bytes = std::fs::read(&input).expect("read input");
                println!("{}", input.display());
                assert!(
                    fuzz_harness::run(&name, &bytes),
                    "unknown fuzz target {name}"
                );
                replayed += 1;
            }
        }
    }
    println!("{replayed} inputs replayed");
    assert!(
        replayed >= 80,
        "only {replayed} committed fuzz inputs found"
    );
}
