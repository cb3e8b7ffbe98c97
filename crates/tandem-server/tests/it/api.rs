//! The HTTP API: every endpoint, its errors, and the change feed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tandem_room::close;
use tandem_server::ServerConfig;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, Map, MapPrelim, ReadTxn, StateVector, Text, Transact, Update, WriteTxn};

use crate::common::{Client, TestServer, test_config};
use crate::http::{Sse, get, post_update, request};

/// An update from a fresh client appending `s` to text `t` after what `doc` already holds.
fn text_update(doc: &Doc, s: &str) -> Vec<u8> {
    let before = doc.transact().state_vector();
    let text = doc.get_or_insert_text("t");
    {
        let mut txn = doc.transact_mut();
        let len = text.len(&txn);
        text.insert(&mut txn, len, s);
    }
    doc.transact().encode_state_as_update_v1(&before)
}

fn apply(doc: &Doc, update: &[u8]) {
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).expect("decode"))
        .expect("apply");
}

fn text_of(doc: &Doc) -> String {
    doc.get_or_insert_text("t").get_string(&doc.transact())
}

#[tokio::test]
async fn listing_metadata_and_path_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    for room in ["alpha", "beta", "gamma"] {
        let r = post_update(
            server.addr,
            room,
            &text_update(&Doc::with_client_id(7), room),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
    }
    let peer = Client::synced(&server.url("beta"), 99).await;

    let page = get(server.addr, "/api/rooms?limit=2").await;
    assert_eq!(page.status, 200);
    let page = page.json();
    let names: Vec<&str> = page["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(page["next"], "beta");
    assert_eq!(page["rooms"][1]["peers"], 1);
    assert_eq!(page["rooms"][0]["log_len"], 1);
    assert!(page["rooms"][0]["size_bytes"].as_u64().expect("size") > 0);
    assert!(page["rooms"][0]["last_change_ms"].as_u64().expect("time") > 0);
    let rest = get(server.addr, "/api/rooms?limit=2&after=beta")
        .await
        .json();
    assert_eq!(rest["rooms"].as_array().expect("rooms").len(), 1);
    assert_eq!(rest["rooms"][0]["name"], "gamma");
    assert_eq!(rest["next"], serde_json::Value::Null);

    let meta = get(server.addr, "/api/rooms/beta").await;
    assert_eq!(meta.status, 200);
    let meta = meta.json();
    assert_eq!(meta["name"], "beta");
    assert_eq!(meta["peers"], 1);
    assert_eq!(meta["next_seq"], 2);

    for (path, status, code) in [
        ("/api/rooms/nope", 404, "room_not_found"),
        ("/api/rooms/nope/update", 404, "room_not_found"),
        ("/api/rooms/nope/state-vector", 404, "room_not_found"),
        ("/api/rooms/nope/json", 404, "room_not_found"),
        ("/api/rooms/nope/log", 404, "room_not_found"),
        ("/api/rooms/alpha/bogus", 404, "not_found"),
        ("/api/rooms/alpha/update/extra", 404, "not_found"),
        ("/api/nothing", 404, "not_found"),
        ("/api/rooms/%FF", 400, "invalid_room_name"),
        ("/api/rooms?limit=0", 400, "invalid_query"),
        ("/api/rooms?limit=abc", 400, "invalid_query"),
        ("/api/rooms/alpha/log?after=-1", 400, "invalid_query"),
        ("/api/rooms/alpha/update?encoding=v3", 400, "invalid_query"),
        (
            "/api/rooms/alpha/update?sv=%%%",
            400,
            "invalid_state_vector",
        ),
        ("/api/rooms/alpha/update?sv=AQ", 400, "invalid_state_vector"),
    ] {
        let r = get(server.addr, path).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.code(), code, "{path}");
        assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let put = request(server.addr, "PUT", "/api/rooms/alpha", &[], b"").await;
    assert_eq!(
        (put.status, put.code().as_str()),
        (405, "method_not_allowed")
    );
    let post_list = request(server.addr, "POST", "/api/rooms", &[], b"").await;
    assert_eq!(post_list.status, 405);
    // A room literally named "api" is still reachable over WebSocket.
    let mut api_room = Client::synced(&server.url("api"), 5).await;
    api_room.insert_text("t", 0, "x").await;
    assert_eq!(get(server.addr, "/api/rooms/api").await.status, 200);
    api_room.close().await;
    peer.close().await;
    server.stop().await;
}

#[tokio::test]
async fn update_state_vector_and_json_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let mut writer = Client::synced(&server.url("doc"), 1).await;
    writer.insert_text("t", 0, "hello").await;
    writer
        .edit_confirmed(|_, txn| {
            let m = txn.get_or_insert_map("m");
            m.insert(txn, "k", 42i64);
            let inner = m.insert(txn, "inner", MapPrelim::default());
            inner.insert(txn, "deep", "yes");
        })
        .await;

    let full = get(server.addr, "/api/rooms/doc/update").await;
    assert_eq!(full.status, 200);
    assert_eq!(full.headers["content-type"], "application/octet-stream");
    let fresh = Doc::new();
    apply(&fresh, &full.body);
    assert_eq!(text_of(&fresh), "hello");

    let sv = get(server.addr, "/api/rooms/doc/state-vector").await;
    assert_eq!(sv.status, 200);
    assert_eq!(
        StateVector::decode_v1(&sv.body).expect("sv"),
        writer.state_vector()
    );

    // A consumer that has everything gets an empty diff; one that has part gets the rest.
    let have_all = STANDARD.encode(writer.state_vector().encode_v1());
    let diff = get(
        server.addr,
        &format!("/api/rooms/doc/update?sv={}", urlencode(&have_all)),
    )
    .await;
    assert_eq!(diff.status, 200);
    let check = Doc::new();
    apply(&check, &diff.body);
    assert_eq!(check.transact().state_vector(), StateVector::default());
    let partial = Doc::new();
    apply(&partial, &text_update(&Doc::with_client_id(1), "hel"));
    let partial_sv = STANDARD.encode(partial.transact().state_vector().encode_v1());
    // unencoded `+`/`=` in the query are tolerated
    let diff = get(
        server.addr,
        &format!("/api/rooms/doc/update?sv={partial_sv}"),
    )
    .await;
    assert_eq!(diff.status, 200);
    apply(&partial, &diff.body);
    assert_eq!(text_of(&partial), "hello");

    let v2 = get(server.addr, "/api/rooms/doc/update?encoding=v2").await;
    assert_eq!(v2.status, 200);
    let from_v2 = Doc::new();
    from_v2
        .transact_mut()
        .apply_update(Update::decode_v2(&v2.body).expect("v2"))
        .expect("apply v2");
    assert_eq!(text_of(&from_v2), "hello");

    let json = get(server.addr, "/api/rooms/doc/json").await;
    assert_eq!(json.status, 200);
    assert_eq!(
        json.json(),
        serde_json::json!({"t": "hello", "m": {"k": 42, "inner": {"deep": "yes"}}})
    );
    writer.close().await;
    server.stop().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[tokio::test]
async fn deeply_nested_document_json_is_refused_and_the_server_survives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let update = std::thread::Builder::new()
        .stack_size(256 * 1024 * 1024)
        .spawn(|| {
            let doc = Doc::with_client_id(3);
            let root = doc.get_or_insert_map("m");
            let mut txn = doc.transact_mut();
            let mut cur = root.insert(&mut txn, "c", MapPrelim::default());
            for _ in 0..10_000 {
                cur = cur.insert(&mut txn, "c", MapPrelim::default());
            }
            drop(txn);
            let u = doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            std::mem::forget(doc);
            u
        })
        .expect("spawn")
        .join()
        .expect("build deep doc");
    let r = post_update(server.addr, "deep", &update).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let json = get(server.addr, "/api/rooms/deep/json").await;
    assert_eq!(json.status, 422);
    assert_eq!(json.code(), "too_deep");
    // still serving, and the binary form is available
    assert_eq!(get(server.addr, "/healthz").await.status, 200);
    let bin = get(server.addr, "/api/rooms/deep/update").await;
    assert_eq!(bin.status, 200);
    assert!(bin.body.len() > 10_000);
    server.stop().await;
}

/// A v1 or v2 update whose map value is `depth` nested one-element arrays: an update carrying
/// a marker string is encoded by yrs, then the marker's `Any` encoding (the same bytes in both
/// formats) is replaced by the nesting.
fn nested_any_update(v2: bool, embed: bool, depth: usize) -> Vec<u8> {
    const MARKER: &str = "DEPTH-MARKER-41c9";
    let doc = Doc::with_client_id(21);
    {
        let mut txn = doc.transact_mut();
        if embed {
            let text = txn.get_or_insert_text("t");
            text.insert_embed(&mut txn, 0, yrs::Any::from(MARKER));
        } else {
            txn.get_or_insert_map("m")
                .insert(&mut txn, "k", yrs::Any::from(MARKER));
        }
    }
    let txn = doc.transact();
    let bytes = if v2 {
        txn.encode_state_as_update_v2(&StateVector::default())
    } else {
        txn.encode_state_as_update_v1(&StateVector::default())
    };
    let mut needle = vec![119, MARKER.len() as u8];
    needle.extend_from_slice(MARKER.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("marker");
    let mut out = bytes[..at].to_vec();
    for _ in 0..depth {
        out.extend_from_slice(&[117, 1]);
    }
    out.push(126);
    out.extend_from_slice(&bytes[at + needle.len()..]);
    out
}

/// yrs decodes v2 `Any` values recursively: 100,000 nested arrays in a POST body would
/// overflow the decoding thread's stack and abort the server. Both encodings are refused with
/// `too_deep`, nothing is stored, and modest nesting still goes through.
#[tokio::test]
async fn deeply_nested_values_in_post_bodies_are_refused_too_deep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    for (v2, embed) in [(true, false), (false, false), (true, true)] {
        let body = nested_any_update(v2, embed, 100_000);
        let query = if v2 { "?encoding=v2" } else { "" };
        let r = request(
            server.addr,
            "POST",
            &format!("/api/rooms/deep/update{query}"),
            &[],
            &body,
        )
        .await;
        assert_eq!(r.status, 400, "v2={v2} embed={embed}");
        assert_eq!(r.code(), "too_deep", "v2={v2} embed={embed}");
    }
    assert_eq!(get(server.addr, "/api/rooms/deep").await.status, 404);
    // the server is alive and takes nesting within the limit, in both encodings
    for (v2, embed) in [(true, false), (false, false), (true, true)] {
        let body = nested_any_update(v2, embed, 20);
        let query = if v2 { "?encoding=v2" } else { "" };
        let room = format!("ok-{v2}-{embed}");
        let r = request(
            server.addr,
            "POST",
            &format!("/api/rooms/{room}/update{query}"),
            &[],
            &body,
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        let json = get(server.addr, &format!("/api/rooms/{room}/json")).await;
        assert_eq!(json.status, 200);
        let text = json.json().to_string();
        assert!(text.contains(&"[".repeat(20)), "{text}");
    }
    server.stop().await;
}

/// v2 columns are run-length encoded: 25 bytes can declare twenty million GC blocks (40 MB of
/// v1, ~650 MB of memory to decode). The body is refused with 413 before that work is done,
/// nothing is stored, and the server keeps serving.
#[tokio::test]
async fn a_tiny_v2_body_declaring_millions_of_blocks_is_refused_413() {
    use yrs::encoding::write::Write;
    use yrs::updates::encoder::{Encoder, EncoderV2};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let mut e = EncoderV2::new();
    e.write_var(1u32); // one client
    e.write_var(20_000_000u32); // blocks
    e.write_client(yrs::ClientID::new(1));
    e.write_var(0u32); // first clock
    for _ in 0..20_000_000 {
        e.write_info(0); // GC, length 1
        e.write_len(1);
    }
    e.write_var(0u32); // empty delete set
    let body = e.to_vec();
    assert!(body.len() < 32, "{} bytes", body.len());
    let r = request(
        server.addr,
        "POST",
        "/api/rooms/bomb/update?encoding=v2",
        &[],
        &body,
    )
    .await;
    assert_eq!(r.status, 413, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.code(), "payload_too_large");
    assert_eq!(get(server.addr, "/api/rooms/bomb").await.status, 404);
    let doc = Doc::with_client_id(3);
    let ok = post_update(server.addr, "bomb", &text_update(&doc, "still here")).await;
    assert_eq!(ok.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn post_update_reaches_peers_storage_and_rejects_garbage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let mut peer = Client::synced(&server.url("w"), 1).await;
    let author = Doc::with_client_id(2);
    let r = post_update(server.addr, "w", &text_update(&author, "from http")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ok"], true);
    peer.wait_until("http edit", |c| c.text("t") == "from http")
        .await;

    // v2 by query parameter and by content type
    let before = author.transact().state_vector();
    let text = author.get_or_insert_text("t");
    text.insert(&mut author.transact_mut(), 9, "!");
    let v2 = author.transact().encode_state_as_update_v2(&before);
    let r = request(
        server.addr,
        "POST",
        "/api/rooms/w/update?encoding=v2",
        &[],
        &v2,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let before = author.transact().state_vector();
    text.insert(&mut author.transact_mut(), 10, "?");
    let v2 = author.transact().encode_state_as_update_v2(&before);
    let r = request(
        server.addr,
        "POST",
        "/api/rooms/w/update",
        &[("Content-Type", tandem_server::api::V2_CONTENT_TYPE)],
        &v2,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    peer.wait_until("v2 edits", |c| c.text("t") == "from http!?")
        .await;

    let sv_before = get(server.addr, "/api/rooms/w/state-vector").await.body;
    let log_before = get(server.addr, "/api/rooms/w/log").await.json();
    for (body, query) in [
        (vec![0xff, 0xff, 0xff], ""),
        (vec![], ""),
        (vec![1, 2, 3], "?encoding=v2"),
        (vec![1, 1, 200, 1, 0, 4], ""),
    ] {
        let r = request(
            server.addr,
            "POST",
            &format!("/api/rooms/w/update{query}"),
            &[],
            &body,
        )
        .await;
        assert_eq!(r.status, 400, "{body:?}");
        assert_eq!(r.code(), "invalid_update");
    }
    // an update whose dependencies the room lacks
    let other = Doc::with_client_id(9);
    let _ = text_update(&other, "abc");
    let dependent = text_update(&other, "def");
    let r = post_update(server.addr, "w", &dependent).await;
    assert_eq!((r.status, r.code().as_str()), (409, "missing_dependencies"));
    // too large
    let big = vec![0u8; test_config().max_frame_bytes + 1];
    let r = post_update(server.addr, "w", &big).await;
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"));

    assert_eq!(
        get(server.addr, "/api/rooms/w/state-vector").await.body,
        sv_before
    );
    assert_eq!(
        get(server.addr, "/api/rooms/w/log").await.json(),
        log_before
    );
    assert_eq!(peer.text("t"), "from http!?");
    peer.close().await;
    server.stop().await;
}

#[tokio::test]
async fn delete_closes_peers_with_4410_and_removes_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let mut peer = Client::synced(&server.url("gone"), 1).await;
    peer.insert_text("t", 0, "bye").await;
    let r = request(server.addr, "DELETE", "/api/rooms/gone", &[], b"").await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let (code, reason) = peer.wait_closed().await;
    assert_eq!(code, close::ROOM_DELETED);
    assert_eq!(reason, "room deleted");
    assert_eq!(get(server.addr, "/api/rooms/gone").await.status, 404);
    let list = get(server.addr, "/api/rooms").await.json();
    assert_eq!(list["rooms"].as_array().expect("rooms").len(), 0);
    let again = request(server.addr, "DELETE", "/api/rooms/gone", &[], b"").await;
    assert_eq!(
        (again.status, again.code().as_str()),
        (404, "room_not_found")
    );
    // A new peer starts from an empty room.
    let fresh = Client::synced(&server.url("gone"), 2).await;
    assert_eq!(fresh.text("t"), "");
    fresh.close().await;
    server.stop().await;
}

#[tokio::test]
async fn audit_log_lists_positions_authors_and_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let doc = Doc::with_client_id(4);
    for i in 0..5 {
        assert_eq!(
            post_update(server.addr, "a", &text_update(&doc, &i.to_string()))
                .await
                .status,
            200
        );
    }
    let log = get(server.addr, "/api/rooms/a/log?after=2").await.json();
    let entries = log["entries"].as_array().expect("entries");
    let seqs: Vec<u64> = entries
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    for e in entries {
        assert_eq!(e["author"], "anonymous");
        assert!(e["size"].as_u64().expect("size") > 0);
        assert!(e["time_ms"].as_u64().expect("time") > 0);
    }
    assert_eq!(log["next_seq"], 6);
    let page = get(server.addr, "/api/rooms/a/log?limit=2").await.json();
    assert_eq!(page["next"], 2);
    server.stop().await;
}

fn decode_event_update(ev: &crate::http::Event) -> Vec<u8> {
    STANDARD
        .decode(ev.json()["update"].as_str().expect("update"))
        .expect("base64")
}

#[tokio::test]
async fn change_feed_resumes_with_last_event_id_without_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let author = Doc::with_client_id(5);
    let mirror = Doc::new();
    // Live-only by default: subscribe, then write.
    let mut feed = Sse::open(server.addr, "/api/rooms/f/events", &[]).await;
    assert_eq!(feed.status, 200);
    for i in 0..5 {
        assert_eq!(
            post_update(server.addr, "f", &text_update(&author, &format!("{i},")))
                .await
                .status,
            200
        );
    }
    let mut last = String::new();
    for expect in 1..=5u64 {
        let ev = feed.next().await.expect("event");
        assert_eq!(ev.event, "update");
        assert_eq!(ev.id.as_deref(), Some(expect.to_string().as_str()));
        assert_eq!(ev.json()["seq"], expect);
        assert_eq!(ev.json()["author"], "anonymous");
        apply(&mirror, &decode_event_update(&ev));
        last = ev.id.clone().expect("id");
    }
    drop(feed);
    // Writes while disconnected, over both the API and a WebSocket.
    for i in 5..8 {
        assert_eq!(
            post_update(server.addr, "f", &text_update(&author, &format!("{i},")))
                .await
                .status,
            200
        );
    }
    let mut ws = Client::synced(&server.url("f"), 77).await;
    ws.wait_for_state(&author.transact().state_vector()).await;
    ws.insert_text("t", 0, "ws:").await;
    let mut feed = Sse::open(
        server.addr,
        "/api/rooms/f/events",
        &[("Last-Event-ID", &last)],
    )
    .await;
    for expect in 6..=9u64 {
        let ev = feed.next().await.expect("replayed event");
        assert_eq!(ev.id.as_deref(), Some(expect.to_string().as_str()));
        apply(&mirror, &decode_event_update(&ev));
    }
    // and then live, with no duplicate at the handoff
    ws.insert_text("t", 0, "live:").await;
    let ev = feed.next().await.expect("live event");
    assert_eq!(ev.id.as_deref(), Some("10"));
    apply(&mirror, &decode_event_update(&ev));
    assert_eq!(text_of(&mirror), ws.text("t"));
    // ?after= works like Last-Event-ID
    let mut from_zero = Sse::open(server.addr, "/api/rooms/f/events?after=8", &[]).await;
    assert_eq!(from_zero.next().await.expect("ev").id.as_deref(), Some("9"));
    assert_eq!(
        from_zero.next().await.expect("ev").id.as_deref(),
        Some("10")
    );
    let bad = request(
        server.addr,
        "GET",
        "/api/rooms/f/events",
        &[("Last-Event-ID", "nine")],
        b"",
    )
    .await;
    assert_eq!((bad.status, bad.code().as_str()), (400, "invalid_query"));
    ws.close().await;
    server.stop().await;
}

#[tokio::test]
async fn change_feed_resets_when_the_position_was_compacted_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config: ServerConfig = test_config();
    config.room.compact_after_entries = 4;
    let server = TestServer::start(dir.path(), config).await;
    let author = Doc::with_client_id(6);
    for i in 0..10 {
        assert_eq!(
            post_update(server.addr, "c", &text_update(&author, &format!("{i}")))
                .await
                .status,
            200
        );
    }
    let meta = get(server.addr, "/api/rooms/c").await.json();
    let snapshot_seq = meta["snapshot_seq"].as_u64().expect("snapshot_seq");
    assert_eq!(snapshot_seq, 8);
    let mut feed = Sse::open(server.addr, "/api/rooms/c/events?after=2", &[]).await;
    let reset = feed.next().await.expect("reset");
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.id.as_deref(), Some("8"));
    assert_eq!(reset.json()["snapshot_seq"], 8);
    // The consumer refetches the state, then applies what follows.
    let mirror = Doc::new();
    apply(&mirror, &get(server.addr, "/api/rooms/c/update").await.body);
    for expect in 9..=10u64 {
        let ev = feed.next().await.expect("event");
        assert_eq!(ev.id.as_deref(), Some(expect.to_string().as_str()));
        apply(&mirror, &decode_event_update(&ev));
    }
    assert_eq!(text_of(&mirror), text_of(&author));
    server.stop().await;
}

#[tokio::test]
async fn readyz_writes_to_storage_and_does_not_shadow_rooms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let r = get(server.addr, "/readyz").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ready"[..]));
    assert_eq!(get(server.addr, "/healthz").await.status, 200);
    // a room named like the probe is still a room over WebSocket
    let mut c = Client::synced(&server.url("readyz"), 3).await;
    c.insert_text("t", 0, "ok").await;
    c.wait_until("echo", |c| c.updates_received > 0).await;
    assert_eq!(get(server.addr, "/api/rooms/readyz").await.status, 200);
    let list = get(server.addr, "/api/rooms").await.json();
    assert_eq!(list["rooms"].as_array().expect("rooms").len(), 1);
    c.close().await;
    server.stop().await;
}
