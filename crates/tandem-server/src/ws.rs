//! The WebSocket adapter: per connection, a task writing the room's frames and keeping the
//! connection alive, and a task reading the client's frames into the room. It never interprets y-protocols bytes; the room does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use tandem_room::{PeerId, PeerInfo, close};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;

use crate::upgrade::Socket;

use crate::hub::{CloseFrame, Hub, PeerConn, RoomCmd};
use crate::metrics::Metrics;

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

/// Most frames written to a socket before one flush (one `write` for the whole burst).
const WRITE_BURST_FRAMES: usize = 64;

/// Writes `first` and whatever else is already queued (up to [`WRITE_BURST_FRAMES`]) with a
/// single flush: a room batch fans out many frames to each peer at once, and one syscall per
/// burst instead of per frame is most of the fan-out cost under load.
async fn send_queued<S>(
    sink: &mut S,
    first: Bytes,
    queue: &mut mpsc::Receiver<Bytes>,
    metrics: &crate::metrics::Metrics,
) -> Result<(), S::Error>
where
    S: futures::Sink<Message> + Unpin,
{
    metrics.bytes_out.inc_by(first.len() as u64);
    sink.feed(Message::Binary(first)).await?;
    for _ in 1..WRITE_BURST_FRAMES {
        let Ok(f) = queue.try_recv() else { break };
        metrics.bytes_out.inc_by(f.len() as u64);
        sink.feed(Message::Binary(f)).await?;
    }
    sink.flush().await
}

pub async fn serve_peer(ws: Socket, hub: Arc<Hub>, room: String, info: PeerInfo) {
    let peer = hub.next_peer_id();
    let (frames_tx, mut frames_rx) = mpsc::channel(hub.config.send_queue_frames);
    let (close_tx, mut close_rx) = oneshot::channel::<CloseFrame>();
    let (mut sink, stream) = ws.split();
    let conn = PeerConn {
        frames: frames_tx,
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
            let _ = sink.send(close_message(code, reason)).await;
            return;
        }
    };
    tracing::info!(%room, peer, read_only = info_read_only, author = %info_author, "peer connected");
    let metrics = hub.metrics.clone();
    metrics.peers_connected.inc();
    // Reading runs in its own task: this one wakes for every frame the room fans out, and
    // polling the socket's read side on each of those wake-ups cost a buffer fill and a lock.
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
    let closing: Option<CloseFrame> = loop {
        tokio::select! {
            frame = &mut close_rx => {
                let frame = frame.unwrap_or((close::INTERNAL_ERROR, "room closed".into()));
                if frame.0 != close::TOO_SLOW {
                    // deliver what the room queued before deciding to close (e.g. final echoes)
                    while let Ok(f) = frames_rx.try_recv() {
                        metrics.bytes_out.inc_by(f.len() as u64);
                        if sink.send(Message::Binary(f)).await.is_err() {
                            break;
                        }
                    }
                }
                break Some(frame);
            }
            out = frames_rx.recv() => match out {
                Some(f) => {
                    if send_queued(&mut sink, f, &mut frames_rx, &metrics).await.is_err() {
                        break None;
                    }
                }
                // the room dropped our queue: it closed us, and says why on `close_rx`
                None => break Some(close_rx.try_recv().unwrap_or((close::INTERNAL_ERROR, "room closed".into()))),
            },
            ended = &mut reader, if !reader_done => {
                reader_done = true;
                break ended.unwrap_or(None);
            }
            _ = ping.tick() => {
                if !heard.swap(false, Ordering::Relaxed) {
                    break Some((close::TIMEOUT, "no answer to ping".into()));
                }
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
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
        let _ = sink.send(close_message(code, reason)).await;
    }
    let _ = sink.close().await;
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
