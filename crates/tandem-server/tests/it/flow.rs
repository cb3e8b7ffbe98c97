//! Flow control and liveness: slow peers are disconnected instead of stalling the room or
//! growing memory; silent peers are dropped by the keepalive.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tandem_room::close;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::Text;

use crate::common::{Client, TIMEOUT, TestServer, test_config};

#[tokio::test]
async fn a_peer_that_stops_reading_is_closed_as_too_slow_and_the_room_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.send_queue_frames = 4;
    let server = TestServer::start(dir.path(), config).await;
    let url = server.url("slow");
    let mut slow = Client::synced(&url, 1).await;
    let mut writer = Client::synced(&url, 2).await;
    let mut reader = Client::synced(&url, 3).await;
    // far more than the socket buffers hold, so the slow peer's queue must overflow
    const CHUNK: u32 = 64 * 1024;
    const UPDATES: u32 = 200;
    let target = yrs::StateVector::new(
        [(yrs::ClientID::new(2), CHUNK * UPDATES)]
            .into_iter()
            .collect(),
    );
    // the healthy reader keeps reading the whole time
    let reader = tokio::spawn(async move {
        reader.wait_for_state(&target).await;
        reader
    });
    append_confirmed(&mut writer, CHUNK, UPDATES).await;
    let reader = reader.await.expect("reader got everything");
    assert!(reader.closed.is_none());
    // It gets the close frame if its socket had room for it within the close timeout;
    // otherwise the server dropped the connection (the client sees an abnormal end, 1006).
    let (code, reason) = slow.wait_closed().await;
    assert!(code == close::TOO_SLOW || code == 1006, "{code} {reason}");
    server.stop().await;
}

/// Polls `cond` until it holds; panics after [`TIMEOUT`]. For server state that has no event to
/// wait on (a gauge, a counter).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let wait = async {
        while !cond() {
            tick.tick().await;
        }
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// A peer that stops reading while the room's updates are large is let go: once it is judged
/// too slow its backlog is dropped, it stops counting as connected although it still reads
/// nothing, it is counted once, and when it reads again it finds the connection ended after at
/// most what was already in the kernel's buffers.
#[tokio::test]
async fn a_too_slow_peer_is_let_go_at_once_without_a_flood_of_stale_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.send_queue_frames = 16;
    let server = TestServer::start(dir.path(), config).await;
    let url = server.url("let-go");
    // a raw client with a small receive buffer that never reads until told to
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket.connect(server.addr).await.expect("connect");
    let (mut slow, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
        .await
        .expect("handshake");
    // Its SyncStep1 from nothing: document updates reach a peer only once that is answered
    // (causal delivery), and this peer must be one the room is sending them to.
    slow.send(WsMessage::Binary(
        tandem_protocol::encode_sync_step1(&[0]).into(),
    ))
    .await
    .expect("send SyncStep1");
    let mut writer = Client::synced(&url, 2).await;
    let hub = server.hub.clone();
    eventually("both peers connected", || hub.peer_count("let-go") == 2).await;
    assert_eq!(hub.metrics.peers_connected.get(), 2);
    const CHUNK: u32 = 64 * 1024;
    const UPDATES: u32 = 200;
    append_confirmed(&mut writer, CHUNK, UPDATES).await;
    // judged too slow, and let go while it still reads nothing
    let metrics = hub.metrics.clone();
    eventually("the slow peer's connection ends", || {
        metrics.peers_connected.get() == 1
    })
    .await;
    assert!(
        hub.metrics
            .encode()
            .contains("tandem_slow_peer_disconnects_total 1\n")
    );
    // It reads again: what it gets before the end is at most what the kernel had buffered (the
    // server's send buffer, tcp_wmem's maximum, 4 MiB by default), not the room's backlog.
    let mut stale_bytes = 0usize;
    let mut code = None;
    let read_all = async {
        while let Some(msg) = slow.next().await {
            match msg {
                Ok(WsMessage::Binary(b)) => stale_bytes += b.len(),
                Ok(WsMessage::Close(frame)) => code = frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    tokio::time::timeout(TIMEOUT, read_all)
        .await
        .expect("the server side of the connection is gone");
    let kernel_buffers = 4 * 1024 * 1024 + 1024 * 1024;
    assert!(
        stale_bytes <= kernel_buffers,
        "{stale_bytes} stale bytes after the decision"
    );
    assert!(code.is_none_or(|c| c == close::TOO_SLOW), "{code:?}");
    // counted once, and the room carries on
    assert!(
        hub.metrics
            .encode()
            .contains("tandem_slow_peer_disconnects_total 1\n")
    );
    writer.insert_text("t", 0, "still here").await;
    assert!(writer.closed.is_none());
    server.stop().await;
}

/// Appends `updates` chunks of `chunk` characters to text `t`, each confirmed by the server.
async fn append_confirmed(writer: &mut Client, chunk: u32, updates: u32) {
    let chunk = "x".repeat(chunk as usize);
    let text = writer.doc.get_or_insert_text("t");
    for _ in 0..updates {
        writer
            .edit_confirmed(|_, txn| {
                let len = text.len(txn);
                text.insert(txn, len, &chunk);
            })
            .await;
    }
}

/// A peer that stops reading for a while makes the room hand its socket to the connection's
/// writer task (outbox.rs); once it reads again it gets every update, and the room never waited.
#[tokio::test]
async fn a_peer_that_pauses_reading_gets_everything_once_it_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let url = server.url("pause");
    let mut paused = Client::synced(&url, 1).await;
    let mut writer = Client::synced(&url, 2).await;
    // far more than the socket buffers hold, far less than the 1024-frame backlog
    const CHUNK: u32 = 64 * 1024;
    const UPDATES: u32 = 200;
    // confirmed: the room handled each one, so it was not waiting on the paused peer's socket
    append_confirmed(&mut writer, CHUNK, UPDATES).await;
    paused.wait_for_state(&writer.state_vector()).await;
    assert_eq!(paused.text("t"), writer.text("t"));
    assert!(paused.closed.is_none(), "{:?}", paused.closed);
    server.stop().await;
}

/// Reads raw WebSocket frames (server frames are unmasked) until the close frame; returns its
/// code. Never answers pings: that is the point.
async fn close_code_without_ponging(stream: &mut tokio::net::TcpStream) -> u16 {
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .expect("server closes in time")
        .expect("read");
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http head")
        + 4;
    let mut rest = &buf[head_end..];
    while rest.len() >= 2 {
        let opcode = rest[0] & 0x0f;
        let (len, header) = match rest[1] & 0x7f {
            126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        let payload = &rest[header..header + len];
        if opcode == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
        rest = &rest[header + len..];
    }
    panic!("no close frame received");
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_dropped_with_4000() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.ping_interval = Duration::from_millis(100);
    let server = TestServer::start(dir.path(), config).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /silent HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("upgrade request");
    assert_eq!(close_code_without_ponging(&mut stream).await, 4000);
    // a client that answers pings stays connected across many intervals
    let mut alive = Client::synced(&server.url("silent"), 9).await;
    for i in 0..5 {
        let text = alive.doc.get_or_insert_text("t");
        alive
            .edit_confirmed(|_, txn| text.insert(txn, 0, &i.to_string()))
            .await;
    }
    assert!(alive.closed.is_none());
    server.stop().await;
}
