//! The WebSocket adapter: one task per connection moving frames between warp's socket and the
//! room task, plus keepalive. It never interprets y-protocols bytes; the room does.

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tandem_room::{PeerInfo, close};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;

use crate::upgrade::Socket;

use crate::hub::{CloseFrame, Hub, PeerConn, RoomCmd};

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
    let (mut sink, mut stream) = ws.split();
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
    let mut ping = tokio::time::interval(hub.config.ping_interval);
    ping.tick().await;
    let mut heard_since_ping = true;
    let max = hub.config.max_frame_bytes;
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
            incoming = stream.next() => match incoming {
                Some(Ok(msg)) => {
                    heard_since_ping = true;
                    match msg {
                        Message::Binary(frame) => {
                            metrics.bytes_in.inc_by(frame.len() as u64);
                            let cmd = RoomCmd::Frame { peer, frame };
                            if room_tx.send(cmd).await.is_err() {
                                break Some((close::INTERNAL_ERROR, "room closed".into()));
                            }
                        }
                        Message::Close(_) => break None,
                        Message::Text(_) => {
                            metrics.rejected(close::BAD_MESSAGE);
                            break Some((close::BAD_MESSAGE, "text frames are not part of the protocol".into()));
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                Some(Err(e)) => {
                    let text = e.to_string();
                    tracing::warn!(%room, peer, error = %text, "websocket error");
                    if text.contains("too long") || text.contains("Space limit") {
                        metrics.rejected(close::TOO_LARGE);
                        break Some((close::TOO_LARGE, format!("message exceeds {max} bytes")));
                    }
                    metrics.rejected(close::BAD_MESSAGE);
                    break Some((close::BAD_MESSAGE, text));
                }
                None => break None,
            },
            _ = ping.tick() => {
                if !heard_since_ping {
                    break Some((close::TIMEOUT, "no answer to ping".into()));
                }
                heard_since_ping = false;
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break None;
                }
            }
        }
    };
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
