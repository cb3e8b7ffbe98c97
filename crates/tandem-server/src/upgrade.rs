//! The WebSocket upgrade, done here rather than by `warp::ws` so the socket gets our
//! `WebSocketConfig`: warp 0.4 cannot set tungstenite's read buffer, whose 128 KiB default is
//! zero-filled on the first read and so stays resident for every idle connection. A small read
//! buffer keeps an idle peer at a few KiB; large messages still arrive whole (the buffer grows
//! to the frame being read).

use std::future::Future;

use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use warp::Reply;
use warp::http::{StatusCode, header};
use warp::hyper::upgrade::OnUpgrade;

/// A server-side WebSocket over the upgraded HTTP connection.
pub type Socket = WebSocketStream<TokioIo<warp::hyper::upgrade::Upgraded>>;

/// Bytes read from the socket at a time (tungstenite's default is 128 KiB).
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// What the upgrade needs from the request; taken before `warp::ws()` consumes the upgrade.
pub struct UpgradeRequest {
    pub key: String,
    pub on_upgrade: Option<OnUpgrade>,
}

/// Socket settings: a small read buffer, and the message/frame limit.
pub fn config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// Answers `101 Switching Protocols` and runs `serve` on the socket once the upgrade completes.
pub fn reply<F, Fut>(
    req: UpgradeRequest,
    config: WebSocketConfig,
    serve: F,
) -> warp::reply::Response
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(on_upgrade) = req.on_upgrade else {
        return warp::reply::with_status("connection cannot be upgraded", StatusCode::BAD_REQUEST)
            .into_response();
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve(socket).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut res = warp::reply().into_response();
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&derive_accept_key(req.key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}
