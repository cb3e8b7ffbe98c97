//! `tandem bench-relay`: the floor under the `fanout` and `saturate` figures.
//!
//! A y-websocket relay that does the least any server has to do to pass those workloads. It
//! answers each client's SyncStep1 with an empty SyncStep2, and forwards every other frame, byte
//! for byte, straight from the sender's read loop to the room's other clients: one WebSocket
//! frame and one socket write per delivery, `TCP_NODELAY` as a low-latency server needs.
//!
//! It is an instrument, not a server: no CRDT, no storage, no echo to the sender, no
//! back-pressure (a client that stops reading stalls its room), no document for late joiners.
//! Its CPU under a workload is what the transport alone costs on the machine, a figure no real
//! server can go below; `bench/compare.sh` runs it beside Tandem and the peers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::{BenchError, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// Address to listen on; clients connect to ws://ADDR/<room>.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

type Sink = Arc<tokio::sync::Mutex<SplitSink<WebSocketStream<TcpStream>, Message>>>;

struct Member {
    id: u64,
    sink: Sink,
}

type Room = Arc<Mutex<Vec<Member>>>;

#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
    next_id: AtomicU64,
}

/// SyncStep2 (message 0, sync step 1) carrying the empty update `[0, 0]`.
const EMPTY_SYNC_STEP2: [u8; 5] = [0, 1, 2, 0, 0];

/// Whether a frame is a y-protocols SyncStep1 (message type 0, sync message type 0).
fn is_sync_step1(frame: &[u8]) -> bool {
    frame.starts_with(&[0, 0])
}

/// The room of a request path: `/name` → `name` (the query, if any, is not part of it).
fn room_of(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Serves until the process is stopped.
pub async fn serve(args: RelayArgs) -> Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| BenchError::Io(format!("binding {}", args.listen), e))?;
    eprintln!(
        "bench-relay listening on ws://{}/<room>",
        listener
            .local_addr()
            .map_err(|e| BenchError::Io("reading the bound address".into(), e))?
    );
    let rooms = Arc::new(Rooms::default());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or a connection reset before accept: the next accept may work.
            tokio::task::yield_now().await;
            continue;
        };
        tokio::spawn(connection(stream, rooms.clone()));
    }
}

async fn connection(stream: TcpStream, rooms: Arc<Rooms>) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The error type is fixed by tungstenite's `Callback` trait.
    #[allow(clippy::result_large_err)]
    let record_path = |req: &Request, resp: Response| {
        path = req.uri().path().to_owned();
        Ok(resp)
    };
    // Small read buffer: tungstenite zero-fills it before every read (see client.rs).
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, record_path, Some(config)).await
    else {
        return;
    };
    let name = room_of(&path).to_owned();
    let (sink, mut frames) = ws.split();
    let sink: Sink = Arc::new(tokio::sync::Mutex::new(sink));
    let id = rooms.next_id.fetch_add(1, Ordering::Relaxed);
    // Joining and leaving hold the map's lock, so a room is never forgotten while one joins.
    let room = {
        let Ok(mut map) = rooms.rooms.lock() else {
            return;
        };
        let room = map.entry(name.clone()).or_default().clone();
        if let Ok(mut members) = room.lock() {
            members.push(Member {
                id,
                sink: sink.clone(),
            });
        }
        room
    };
    while let Some(Ok(msg)) = frames.next().await {
        let data = match msg {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        if is_sync_step1(&data) {
            let reply = Message::Binary(EMPTY_SYNC_STEP2.to_vec().into());
            if sink.lock().await.send(reply).await.is_err() {
                break;
            }
            continue;
        }
        let others: Vec<Sink> = match room.lock() {
            Ok(members) => members
                .iter()
                .filter(|m| m.id != id)
                .map(|m| m.sink.clone())
                .collect(),
            Err(_) => break,
        };
        for other in others {
            // A failed peer is dropped by its own read loop.
            let _ = other.lock().await.send(Message::Binary(data.clone())).await;
        }
    }
    if let Ok(mut map) = rooms.rooms.lock() {
        let empty = room.lock().is_ok_and(|mut members| {
            members.retain(|m| m.id != id);
            members.is_empty()
        });
        if empty {
            map.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_sync_step1_only() {
        assert!(is_sync_step1(&tandem_protocol::encode_sync_step1(&[0])));
        assert!(!is_sync_step1(&tandem_protocol::encode_sync_step2(&[0, 0])));
        assert!(!is_sync_step1(&tandem_protocol::encode_update(&[0, 0])));
        assert!(!is_sync_step1(&[1, 0]));
        assert!(!is_sync_step1(&[]));
    }

    #[test]
    fn empty_sync_step2_is_what_the_encoder_writes() {
        assert_eq!(
            EMPTY_SYNC_STEP2.as_slice(),
            tandem_protocol::encode_sync_step2(&[0, 0])
        );
    }

    #[test]
    fn room_is_the_path() {
        assert_eq!(room_of("/doc-1"), "doc-1");
        assert_eq!(room_of("/"), "");
    }
}
