//! The WebSocket adapter: per connection, a task reading the client's frames into the room, and
//! a task that writes what the room could not write itself ([`Outbox`]), pings, and closes.
//! Neither interprets y-protocols bytes; the room does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::SplitStream;
use tandem_room::{PeerId, PeerInfo, close};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;

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
            let _ = out.send_control(close_message(code, reason)).await;
            out.finish();
            return;
        }
    };
    tracing::info!(%room, peer, read_only = info_read_only, author = %info_author, "peer connected");
    metrics.peers_connected.inc();
    // Reading runs in its own task: this one wakes whenever the room hands it frames to write,
    // and polling the read side on each of those wake-ups cost a buffer fill and a lock.
    let heard = Arc::new(AtomicBool::new(true));
    let mut reader = tokio::spawn(read_frames(ReadCtx {
        stream,
        room_tx: room_tx.clone(),
        peer,
        room: room.clone(),
        heard: heard.clone(),
        metrics: metrics.clone(),
        max_frame_bytes: hub.config.max_frame_bytes,
    }));
    let mut reader_done = false;
    let mut ping = tokio::time::interval(hub.config.ping_interval);
    ping.tick().await;
    // The room writes to the socket itself while it can (see outbox.rs); this task writes what
    // it could not, pings, and closes.
    let closing: Option<CloseFrame> = loop {
        tokio::select! {
            biased;
            frame = &mut close_rx => {
                let frame = frame.unwrap_or((close::INTERNAL_ERROR, "room closed".into()));
                if frame.0 == close::TOO_SLOW {
                    out.discard_backlog();
                }
                // otherwise what the room queued before deciding to close (e.g. final echoes)
                // goes out ahead of the close frame
                break Some(frame);
            }
            () = out.handed_over() => {
                if out.drain().await.is_err() {
                    break None;
                }
            }
            ended = &mut reader, if !reader_done => {
                reader_done = true;
                // A room that closed us also dropped its queue, so a frame the client sent just
                // then failed to reach it: the room's reason is the one to give.
                break close_rx.try_recv().ok().or(ended.unwrap_or(None));
            }
            _ = ping.tick() => {
                if !heard.swap(false, Ordering::Relaxed) {
                    break Some((close::TIMEOUT, "no answer to ping".into()));
                }
                if out.send_control(Message::Ping(Bytes::new())).await.is_err() {
                    break None;
                }
            }
        }
    };
    // No frame of ours may reach the room after our `Leave`.
    if !reader_done {
        reader.abort();
        let _ = reader.await;
    }
    let (code, reason) = match &closing {
        Some((code, reason)) => (*code, reason.clone()),
        None => (1000, "closed by the client".to_owned()),
    };
    if let Some((code, reason)) = closing {
        let _ = out.send_control(close_message(code, reason)).await;
    }
    let _ = out.close().await;
    out.finish();
    let _ = room_tx.send(RoomCmd::Leave { peer }).await;
    metrics.peers_connected.dec();
    tracing::info!(%room, peer, code, %reason, "peer disconnected");
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

/// Passes the client's frames to the room until the connection ends. Returns `None` when the
/// client closed or went away, or the close frame to answer bad input with.
async fn read_frames(mut cx: ReadCtx) -> Option<CloseFrame> {
    loop {
        let msg = match cx.stream.next().await {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                let text = e.to_string();
                tracing::warn!(room = %cx.room, peer = cx.peer, error = %text, "websocket error");
                if text.contains("too long") || text.contains("Space limit") {
                    cx.metrics.rejected(close::TOO_LARGE);
                    let max = cx.max_frame_bytes;
                    return Some((close::TOO_LARGE, format!("message exceeds {max} bytes")));
                }
                cx.metrics.rejected(close::BAD_MESSAGE);
                return Some((close::BAD_MESSAGE, text));
            }
            None => return None,
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
                    return Some((close::INTERNAL_ERROR, "room closed".into()));
                }
            }
            Message::Close(_) => return None,
            Message::Text(_) => {
                cx.metrics.rejected(close::BAD_MESSAGE);
                return Some((
                    close::BAD_MESSAGE,
                    "text frames are not part of the protocol".into(),
                ));
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
