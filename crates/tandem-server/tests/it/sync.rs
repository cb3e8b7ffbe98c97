//! Convergence, late joiners, awareness, isolation, restarts, compaction and idle unloading.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yrs::types::ToJson;
use yrs::{Map, StateVector, Text, Transact};

use crate::common::{Client, TIMEOUT, TestServer, covers, full_state, merged, test_config};

fn seed() -> u64 {
    let seed = std::env::var("TANDEM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed: {seed} (rerun with TANDEM_TEST_SEED={seed})");
    seed
}

/// Every client edits text and a map concurrently; all end with identical documents.
async fn converge(n: usize, rng: &mut StdRng) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let url = server.url("converge");
    let mut clients = Vec::new();
    for i in 0..n {
        clients.push(Client::synced(&url, 1000 + i as u64).await);
    }
    for round in 0..5 {
        for (i, c) in clients.iter_mut().enumerate() {
            // insert at a boundary between markers, so each marker stays contiguous and can be
            // found afterwards (positions inside a marker would split it)
            let text = c.text("t");
            let boundaries: Vec<u32> = std::iter::once(0)
                .chain(text.match_indices(']').map(|(i, _)| i as u32 + 1))
                .collect();
            let at = boundaries[rng.random_range(0..boundaries.len())];
            c.insert_text("t", at, &format!("[{i}.{round}]")).await;
            let map = c.doc.get_or_insert_map("m");
            let key = format!("k{}", rng.random_range(0..4));
            let value = format!("c{i}r{round}");
            c.edit(|_, txn| {
                map.insert(txn, key, value);
            })
            .await;
        }
    }
    let target = merged(clients.iter().map(|c| c.state_vector()));
    for c in clients.iter_mut() {
        c.wait_for_state(&target).await;
    }
    let expected = full_state(&clients[0].doc);
    let text = clients[0].text("t");
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c.text("t"), text, "client {i} text");
        for j in 0..n {
            for round in 0..5 {
                assert!(text.contains(&format!("[{j}.{round}]")));
            }
        }
        let m1 = c.doc.get_or_insert_map("m").to_json(&c.doc.transact());
        let m0 = clients[0]
            .doc
            .get_or_insert_map("m")
            .to_json(&clients[0].doc.transact());
        assert_eq!(m1, m0, "client {i} map");
    }
    // a late joiner gets exactly the same state
    let mut late = Client::synced(&url, 99).await;
    late.wait_for_state(&target).await;
    assert_eq!(late.text("t"), text);
    assert_eq!(full_state(&late.doc).len(), expected.len());
    for c in clients {
        c.close().await;
    }
    server.stop().await;
}

#[tokio::test]
async fn two_to_ten_clients_converge_and_late_joiner_gets_everything() {
    let mut rng = StdRng::seed_from_u64(seed());
    for n in [2, 5, 10] {
        converge(n, &mut rng).await;
    }
}

#[tokio::test]
async fn updates_are_echoed_to_the_sender_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let mut a = Client::synced(&server.url("echo"), 1).await;
    let mut b = Client::synced(&server.url("echo"), 2).await;
    a.insert_text("t", 0, "x").await;
    // the sender receives its own update back as a sync Update message
    a.wait_until("own echo", |c| c.updates_received == 1).await;
    b.wait_until("broadcast", |c| c.updates_received == 1).await;
    assert_eq!(b.text("t"), "x");
    server.stop().await;
}

#[tokio::test]
async fn awareness_is_relayed_and_removed_when_its_peer_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let url = server.url("aw");
    let mut a = Client::synced(&url, 11).await;
    let mut b = Client::synced(&url, 22).await;
    a.set_awareness(1, r#"{"user":{"name":"Ada"}}"#).await;
    b.wait_until("a's awareness", |c| {
        c.awareness.get(&11).is_some_and(|s| s.is_some())
    })
    .await;
    // a newcomer receives the current states on connect
    let mut c = Client::synced(&url, 33).await;
    c.wait_until("states on join", |c| {
        c.awareness.get(&11).is_some_and(|s| s.is_some())
    })
    .await;
    a.close().await;
    b.wait_until("removal", |c| {
        c.awareness.get(&11).is_some_and(|s| s.is_none())
    })
    .await;
    c.wait_until("removal", |c| {
        c.awareness.get(&11).is_some_and(|s| s.is_none())
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn fifty_rooms_stay_isolated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let mut pairs = Vec::new();
    for r in 0..50u64 {
        let url = server.url(&format!("room-{r}"));
        let mut a = Client::synced(&url, 10_000 + r).await;
        let b = Client::synced(&url, 20_000 + r).await;
        a.insert_text("t", 0, &format!("room {r} only")).await;
        pairs.push((a, b));
    }
    for (r, (a, b)) in pairs.iter_mut().enumerate() {
        let sv = a.state_vector();
        b.wait_for_state(&sv).await;
        assert_eq!(b.text("t"), format!("room {r} only"));
    }
    for (_, b) in pairs.iter_mut() {
        let text = b.doc.get_or_insert_text("t");
        b.edit_confirmed(|_, txn| text.insert(txn, 0, "+")).await;
        // b received exactly two updates: a's and the echo of its own
        assert_eq!(b.updates_received, 2);
    }
    for (r, (a, b)) in pairs.iter_mut().enumerate() {
        let sv = b.state_vector();
        a.wait_for_state(&sv).await;
        assert_eq!(a.text("t"), format!("+room {r} only"));
        assert_eq!(a.state_vector().len(), 2, "only this room's two clients");
    }
    server.stop().await;
}

#[tokio::test]
async fn restart_keeps_every_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    for r in 0..5u64 {
        let mut a = Client::synced(&server.url(&format!("keep-{r}")), 500 + r).await;
        let text = a.doc.get_or_insert_text("t");
        a.edit_confirmed(|_, txn| text.insert(txn, 0, &format!("kept {r}")))
            .await;
        a.close().await;
    }
    server.stop().await;
    let server = TestServer::start(dir.path(), test_config()).await;
    for r in 0..5u64 {
        let b = Client::synced(&server.url(&format!("keep-{r}")), 900 + r).await;
        assert_eq!(b.text("t"), format!("kept {r}"), "room {r} after restart");
    }
    server.stop().await;
}

#[tokio::test]
async fn compaction_then_reload_gives_identical_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.room.compact_after_entries = 7;
    let server = TestServer::start(dir.path(), config.clone()).await;
    let url = server.url("compact");
    let mut a = Client::synced(&url, 1).await;
    let mut b = Client::synced(&url, 2).await;
    for i in 0..30u32 {
        a.insert_text("t", 0, "a").await;
        b.insert_text("t", i, "b").await;
        let map = a.doc.get_or_insert_map("m");
        a.edit(|_, txn| {
            map.insert(txn, format!("k{}", i % 3), i);
        })
        .await;
    }
    let target = merged([a.state_vector(), b.state_vector()]);
    a.wait_for_state(&target).await;
    b.wait_for_state(&target).await;
    let stats = server
        .hub
        .store()
        .stats("compact")
        .expect("stats")
        .expect("stored");
    assert!(stats.snapshot_seq > 0, "a snapshot was written: {stats:?}");
    assert!(stats.log_len < 7, "the log was trimmed: {stats:?}");
    let before = a.text("t");
    a.close().await;
    b.close().await;
    server.stop().await;
    let server = TestServer::start(dir.path(), config).await;
    let c = Client::synced(&server.url("compact"), 3).await;
    assert!(covers(&c.state_vector(), &target));
    assert_eq!(c.text("t"), before);
    assert_eq!(
        c.doc.get_or_insert_map("m").to_json(&c.doc.transact()),
        yrs::Any::from(std::collections::HashMap::from([
            ("k0".to_owned(), yrs::Any::from(27.0)),
            ("k1".to_owned(), yrs::Any::from(28.0)),
            ("k2".to_owned(), yrs::Any::from(29.0)),
        ])),
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_room_unloads_and_reloads_from_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.idle_unload = Duration::from_millis(200);
    config.tick_interval = Duration::from_millis(50);
    let server = TestServer::start(dir.path(), config).await;
    let mut loaded = server.hub.watch_loaded_rooms();
    let mut a = Client::synced(&server.url("idle"), 1).await;
    let text = a.doc.get_or_insert_text("t");
    a.edit_confirmed(|_, txn| text.insert(txn, 0, "survives unload"))
        .await;
    assert!(server.hub.is_loaded("idle"));
    a.close().await;
    tokio::time::timeout(TIMEOUT, loaded.wait_for(|&n| n == 0))
        .await
        .expect("unloaded in time")
        .expect("hub alive");
    assert!(!server.hub.is_loaded("idle"));
    let b = Client::synced(&server.url("idle"), 2).await;
    assert_eq!(b.text("t"), "survives unload");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let mut a = Client::synced(&server.url("bye"), 1).await;
    let stop = tokio::spawn(server.stop());
    let (code, _) = a.wait_closed().await;
    assert_eq!(code, 1001);
    stop.await.expect("stopped");
}

/// A cold room whose storage holds one large update: fresh readers that join while it is being
/// rebuilt are answered from storage, and a writer that joins in the same moment and edits at
/// once (its update must wait for the rebuilt room) loses nothing.
#[tokio::test]
async fn a_cold_room_serves_early_readers_and_keeps_an_early_writers_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = "cold ".repeat(100_000);
    {
        let server = TestServer::start(dir.path(), test_config()).await;
        let mut author = Client::synced(&server.url("cold"), 1).await;
        let text = author.doc.get_or_insert_text("t");
        author
            .edit_confirmed(|_, txn| text.insert(txn, 0, &big))
            .await;
        server.stop().await;
    }
    let server = TestServer::start(dir.path(), test_config()).await;
    let url = server.url("cold");
    let (mut r1, mut r2, mut writer) = tokio::join!(
        Client::connect(&url, 3),
        Client::connect(&url, 4),
        Client::connect(&url, 2)
    );
    let w = writer.doc.get_or_insert_text("w");
    writer.edit(|_, txn| w.insert(txn, 0, "live ")).await;
    let target = merged([
        StateVector::new(
            [(yrs::ClientID::new(1), big.len() as u32)]
                .into_iter()
                .collect(),
        ),
        StateVector::new(
            [(yrs::ClientID::new(2), "live ".len() as u32)]
                .into_iter()
                .collect(),
        ),
    ]);
    for c in [&mut r1, &mut r2, &mut writer] {
        c.wait_for_state(&target).await;
        assert_eq!(c.text("t"), big);
    }
    assert_eq!(r1.text("w").len(), "live ".len());
    assert_eq!(r2.text("w"), r1.text("w"));
    for c in [r1, r2, writer] {
        c.close().await;
    }
    server.stop().await;
    // and it is all stored
    let server = TestServer::start(dir.path(), test_config()).await;
    let mut check = Client::synced(&server.url("cold"), 5).await;
    check.wait_for_state(&target).await;
    assert_eq!(check.text("t"), big);
    check.close().await;
    server.stop().await;
}
