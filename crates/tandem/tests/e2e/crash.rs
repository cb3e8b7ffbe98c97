//! Crash durability: writers stream updates and record every echo; the server is SIGKILLed at
//! random moments (after a random number of echoes) and restarted; a fresh client must then see
//! every echoed update. `TANDEM_CRASH_CYCLES` sets the number of kill cycles (default 50).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_protocol::{
    Message, SyncMessage, UpdateLimits, decode_frame, encode_state_vector, encode_sync_step1,
    encode_sync_step2, encode_update, validate_update_v1,
};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Text, Transact, Update};

use crate::server::{Server, TIMEOUT};

/// Unconfirmed updates a writer keeps in flight.
const WINDOW: u32 = 16;

struct Writer {
    doc: Doc,
    room: String,
    /// The highest clock of this writer the server has echoed back.
    confirmed: u32,
}

fn own_range_end(update: &[u8], client: u64) -> Option<u32> {
    let info = validate_update_v1(update, &UpdateLimits::default()).ok()?;
    info.struct_ranges
        .iter()
        .filter(|(c, _, _)| *c == client)
        .map(|(_, _, end)| *end)
        .max()
}

/// Writes until the connection dies; returns the writer with its confirmed clock.
async fn write_until_killed(
    mut w: Writer,
    url: String,
    echoes: Arc<AtomicU64>,
    echoed: Arc<Notify>,
) -> Writer {
    let Ok((ws, _)) = tokio_tungstenite::connect_async(&url).await else {
        return w;
    };
    let (mut tx, mut rx) = ws.split();
    let client = w.doc.client_id().get();
    let text = w.doc.get_or_insert_text("t");
    let sv = w.doc.transact().state_vector().encode_v1();
    if tx
        .send(WsMessage::Binary(encode_sync_step1(&sv).into()))
        .await
        .is_err()
    {
        return w;
    }
    let mut n = 0u64;
    loop {
        let local = w.doc.transact().state_vector().get(&ClientID::new(client));
        if local - w.confirmed < WINDOW {
            let update = {
                let mut txn = w.doc.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, len, &format!("{client}:{n};"));
                txn.encode_update_v1()
            };
            n += 1;
            if tx
                .send(WsMessage::Binary(encode_update(&update).into()))
                .await
                .is_err()
            {
                return w;
            }
            continue;
        }
        let frame = match rx.next().await {
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(_)) => continue,
            _ => return w,
        };
        let Ok(msgs) = decode_frame(&frame) else {
            panic!("server sent an invalid frame");
        };
        for msg in msgs {
            match msg {
                Message::Sync(SyncMessage::SyncStep1(sv)) => {
                    let sv = StateVector::decode_v1(&encode_state_vector(sv)).expect("sv");
                    let diff = w.doc.transact().encode_diff_v1(&sv);
                    if tx
                        .send(WsMessage::Binary(encode_sync_step2(&diff).into()))
                        .await
                        .is_err()
                    {
                        return w;
                    }
                }
                Message::Sync(SyncMessage::SyncStep2(u) | SyncMessage::Update(u)) => {
                    if let Some(end) = own_range_end(u, client)
                        && end > w.confirmed
                    {
                        w.confirmed = end;
                        echoes.fetch_add(1, Ordering::SeqCst);
                        echoed.notify_waiters();
                    }
                    let update = Update::decode_v1(u).expect("valid update");
                    w.doc.transact_mut().apply_update(update).expect("apply");
                }
                _ => {}
            }
        }
    }
}

/// Connects a fresh client and returns the server's state vector for the room.
async fn stored_state(url: &str) -> StateVector {
    let (mut ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect");
    let empty = Doc::new().transact().state_vector().encode_v1();
    ws.send(WsMessage::Binary(encode_sync_step1(&empty).into()))
        .await
        .expect("send");
    loop {
        let msg = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("answer in time")
            .expect("open")
            .expect("ok");
        if let WsMessage::Binary(b) = msg
            && let Ok(msgs) = decode_frame(&b)
            && let Some(Message::Sync(SyncMessage::SyncStep2(u))) = msgs.first()
        {
            let doc = Doc::new();
            doc.transact_mut()
                .apply_update(Update::decode_v1(u).expect("valid"))
                .expect("apply");
            let _ = ws.close(None).await;
            return doc.transact().state_vector();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_echoed_update_survives_sigkill() {
    let cycles: u32 = std::env::var("TANDEM_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("TANDEM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed: {seed}, kill cycles: {cycles}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writers: Vec<Writer> = (0..4u64)
        .map(|i| Writer {
            doc: Doc::with_client_id(100 + i),
            room: format!("crash-{}", i % 2),
            confirmed: 0,
        })
        .collect();
    let mut total_echoes = 0u64;
    for cycle in 0..cycles {
        let server = Server::start(dir.path(), &[]);
        let echoes = Arc::new(AtomicU64::new(0));
        let echoed = Arc::new(Notify::new());
        let kill_after = rng.random_range(1..200u64);
        let tasks: Vec<_> = writers
            .drain(..)
            .map(|w| {
                let url = server.url(&w.room);
                tokio::spawn(write_until_killed(w, url, echoes.clone(), echoed.clone()))
            })
            .collect();
        tokio::time::timeout(TIMEOUT, async {
            loop {
                let notified = echoed.notified();
                if echoes.load(Ordering::SeqCst) >= kill_after {
                    break;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("cycle {cycle}: {kill_after} echoes in time (seed {seed})"));
        server.kill();
        for t in tasks {
            writers.push(t.await.expect("writer task"));
        }
        total_echoes += echoes.load(Ordering::SeqCst);
        // restart and check every confirmed clock is there
        let server = Server::start(dir.path(), &[]);
        for room in ["crash-0", "crash-1"] {
            let sv = stored_state(&server.url(room)).await;
            for w in writers.iter().filter(|w| w.room == room) {
                let id = w.doc.client_id();
                assert!(
                    sv.get(&id) >= w.confirmed,
                    "cycle {cycle} (seed {seed}): writer {} had clock {} echoed but the \
                     restarted server holds only {}",
                    id.get(),
                    w.confirmed,
                    sv.get(&id)
                );
            }
        }
        server.kill();
    }
    println!("kill cycles: {cycles}, echoed updates verified: {total_echoes}");
}
