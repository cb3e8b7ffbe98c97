//! The WebSocket adapter: per connection, a task reading the client's frames into the room, and
//! a task that writes what the room could not write itself ([`Outbox`]), pings, and closes.
//! Neither interprets y-protocols bytes; the room does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::SplitStream;
use tandem_room::{PeerId, PeerInfo, close};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use crate::hub::{CloseFrame, Hub, PeerConn, RoomCmd};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::upgrade::Socket;

/// WebSocket close reasons must fit in 123 bytes.
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut cut = 120;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push_str("...");
    }
    reason
}

/// A close message with `code` and `reason`.
fn close_message(code: u16, reason: String) -> Message {
    Message::Close(Some(WsCloseFrame {
        code: code.into(),
        reason: truncate_reason(reason).into(),
    }))
}

/// How long a closing connection gets for our close frame to leave (it may sit behind frames
/// the room queued before deciding to close). A peer too slow to take it is dropped.
pub const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// How long, from the decision to close, the socket stays open for the client to read our close
/// frame and answer it; what it sends meanwhile is read and discarded. Dropping a socket while
/// the client is still sending resets it, and a reset loses the close frame (the client sees
/// 1006 instead of the code).
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

pub async fn serve_peer(ws: Socket, hub: Arc<Hub>, room: String, info: PeerInfo) {
    let peer = hub.next_peer_id();
    let (close_tx, mut close_rx) = oneshot::channel::<CloseFrame>();
    let (sink, stream) = ws.split();
    let metrics = hub.metrics.clone();
    let out = Outbox::new(sink, hub.config.send_queue_frames, metrics.clone());
    let conn = PeerConn {
        out: out.clone(),
        close: close_tx,
    };
    let (info_read_only, info_author) = (info.read_only, info.author.clone());
    let room_tx = match hub.join(&room, peer, info, conn).await {
        Ok(tx) => tx,
        Err(reason) => {
            tracing::warn!(%room, peer, %reason, "join refused");
            let code = if hub.is_shutting_down() {
                close::GOING_AWAY
            } else {
                close::ROOM_UNAVAILABLE
            };
            // the client sent its opening messages already: read them while closing
            let stream = ReadEnd {
                stream,
                verdict: None,
                state: ReadState::Open,
            };
            close_gracefully(&out, Some(stream), Some((code, reason)), Instant::now()).await;
            return;
        }
    };
    tracing::info!(%room, peer, read_only = info_read_only, author = %info_author, "peer connected");
    metrics.peers_connected.inc();
    // Reading runs in its own task: this one wakes whenever the room hands it frames to write,
    // and polling the read side on each of those wake-ups cost a buffer fill and a lock.
    let heard = Arc::new(AtomicBool::new(true));
    let stop_reading = CancellationToken::new();
    let mut reader = tokio::spawn(read_frames(
        ReadCtx {
            stream,
            room_tx: room_tx.clone(),
            peer,
            room: room.clone(),
            heard: heard.clone(),
            metrics: metrics.clone(),
            max_frame_bytes: hub.config.max_frame_bytes,
        },
        stop_reading.clone(),
    ));
    let mut read_end: Option<ReadEnd> = None;
    let mut reader_failed = false;
    let mut draining = false;
    let mut ping = tokio::time::interval(hub.config.ping_interval);
    ping.tick().await;
    // The room writes to the socket itself while it can (see outbox.rs); this task writes what
    // it could not, pings, and closes. Draining is a branch of its own: a socket that takes
    // nothing must never keep the close or the ping branch from running.
    let closing: Option<CloseFrame> = loop {
        tokio::select! {
            biased;
            frame = &mut close_rx => {
                // What the room queued before deciding to close (e.g. final echoes) goes out
                // ahead of the close frame; a too-slow peer's backlog is already gone.
                break Some(frame.unwrap_or((close::INTERNAL_ERROR, "room closed".into())));
            }
            ended = &mut reader, if read_end.is_none() && !reader_failed => {
                let verdict = match ended {
                    Ok(end) => {
                        let verdict = end.verdict.clone();
                        read_end = Some(end);
                        verdict
                    }
                    Err(_) => {
                        reader_failed = true;
                        None
                    }
                };
                // A room that closed us also dropped its queue, so a frame the client sent just
                // then failed to reach it: the room's reason is the one to give.
                break close_rx.try_recv().ok().or(verdict);
            }
            _ = ping.tick() => {
                if !heard.swap(false, Ordering::Relaxed) {
                    break Some((close::TIMEOUT, "no answer to ping".into()));
                }
                out.queue_control(Message::Ping(Bytes::new()));
                draining = true;
            }
            written = out.drain(), if draining => {
                draining = false;
                if written.is_err() {
                    break None;
                }
            }
            () = out.handed_over(), if !draining => draining = true,
        }
    };
    let decided = Instant::now();
    // No frame of ours may reach the room after our `Leave`: stop the reader first (it hands
    // the read half back, so the close handshake can still read the client's answer).
    if read_end.is_none() && !reader_failed {
        stop_reading.cancel();
        read_end = reader.await.ok();
    }
    // The room forgets the peer and the gauge falls now, not after the close handshake.
    let _ = room_tx.send(RoomCmd::Leave { peer }).await;
    metrics.peers_connected.dec();
    let (code, reason) = match &closing {
        Some((code, reason)) => (*code, reason.clone()),
        None => (1000, "closed by the client".to_owned()),
    };
    tracing::info!(%room, peer, code, %reason, "peer disconnected");
    close_gracefully(&out, read_end, closing, decided).await;
}

/// Ends a connection in bounded time: sends `frame` (if any) behind what is queued, gives it
/// [`CLOSE_SEND_TIMEOUT`] to leave, then reads and discards what the client sends until its
/// close frame, its end of the connection, or [`CLOSE_LINGER`] after `decided`; then drops the
/// socket.
async fn close_gracefully(
    out: &Outbox,
    read: Option<ReadEnd>,
    frame: Option<CloseFrame>,
    decided: Instant,
) {
    let ours = frame.is_some();
    if let Some((code, reason)) = frame {
        out.queue_control(close_message(code, reason));
    }
    let send = async {
        out.drain().await?;
        out.close().await
    };
    let sent = tokio::time::timeout(CLOSE_SEND_TIMEOUT, send).await;
    // (when the client closed or went away there is nothing left to wait for)
    if let Some(read) = read.filter(|_| ours && matches!(sent, Ok(Ok(())))) {
        linger(read, decided + CLOSE_LINGER).await;
    }
    out.finish();
}

/// Reads and discards until the client's close frame, the end of the connection, or `deadline`.
async fn linger(read: ReadEnd, deadline: Instant) {
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut stream = match read.state {
        ReadState::Open => read.stream,
        ReadState::Finished => return,
        // The read side failed mid-frame (e.g. a message over the limit) and cannot be parsed
        // further, while the client may still be sending: give it time to read our close frame
        // before its socket is reset.
        ReadState::Broken => return tokio::time::sleep_until(deadline).await,
    };
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Err(_) => return,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                if !connection_gone(&e) {
                    tokio::time::sleep_until(deadline).await;
                }
                return;
            }
        }
    }
}

/// Whether a read error means the connection itself is gone (rather than bad input on it).
fn connection_gone(e: &WsError) -> bool {
    matches!(
        e,
        WsError::Io(_)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
    )
}

/// What the read side of a connection needs.
struct ReadCtx {
    stream: SplitStream<Socket>,
    room_tx: mpsc::Sender<RoomCmd>,
    peer: PeerId,
    room: String,
    /// Set on every message; the ping timer clears it.
    heard: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    max_frame_bytes: usize,
}

/// How reading ended: the read half back, and the close frame to answer bad input with.
struct ReadEnd {
    stream: SplitStream<Socket>,
    /// `None` when the client closed or went away, or reading was stopped.
    verdict: Option<CloseFrame>,
    state: ReadState,
}

/// Whether the read half can still be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// Between messages: more can be read.
    Open,
    /// The client closed, or the connection is gone.
    Finished,
    /// A read failed on bad input; the stream cannot be parsed further.
    Broken,
}

/// Passes the client's frames to the room until the connection ends, bad input arrives, or
/// `stop` is cancelled; then hands the read half back.
async fn read_frames(mut cx: ReadCtx, stop: CancellationToken) -> ReadEnd {
    let (verdict, state) = tokio::select! {
        biased;
        () = stop.cancelled() => (None, ReadState::Open),
        ended = forward_frames(&mut cx) => ended,
    };
    ReadEnd {
        stream: cx.stream,
        verdict,
        state,
    }
}

/// The reading loop of [`read_frames`]: returns the close frame to answer with (`None` when the
/// client closed or went away) and whether the stream can still be read.
async fn forward_frames(cx: &mut ReadCtx) -> (Option<CloseFrame>, ReadState) {
    loop {
        let msg = match cx.stream.next().await {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                let text = e.to_string();
                tracing::warn!(room = %cx.room, peer = cx.peer, error = %text, "websocket error");
                if connection_gone(&e) {
                    return (None, ReadState::Finished);
                }
                if matches!(e, WsError::Capacity(_)) {
                    cx.metrics.rejected(close::TOO_LARGE);
                    let max = cx.max_frame_bytes;
                    let reason = format!("message exceeds {max} bytes");
                    return (Some((close::TOO_LARGE, reason)), ReadState::Broken);
                }
                cx.metrics.rejected(close::BAD_MESSAGE);
                return (Some((close::BAD_MESSAGE, text)), ReadState::Broken);
            }
            None => return (None, ReadState::Finished),
        };
        cx.heard.store(true, Ordering::Relaxed);
        match msg {
            Message::Binary(frame) => {
                cx.metrics.bytes_in.inc_by(frame.len() as u64);
                let cmd = RoomCmd::Frame {
                    peer: cx.peer,
                    frame,
                };
                if cx.room_tx.send(cmd).await.is_err() {
                    return (
                        Some((close::INTERNAL_ERROR, "room closed".into())),
                        ReadState::Open,
                    );
                }
            }
            Message::Close(_) => return (None, ReadState::Finished),
            Message::Text(_) => {
                cx.metrics.rejected(close::BAD_MESSAGE);
                let reason = "text frames are not part of the protocol".to_owned();
                return (Some((close::BAD_MESSAGE, reason)), ReadState::Open);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncate_reason;

    #[test]
    fn reasons_fit_a_close_frame() {
        let r = truncate_reason("é".repeat(200));
        assert!(r.len() <= 123);
        assert_eq!(truncate_reason("short".into()), "short");
    }
}
