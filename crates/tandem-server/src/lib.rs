//! The Tandem server: warp routes, the WebSocket adapter, and the hub that hosts rooms.
//!
//! This is the only crate that knows warp. It wires the sans-IO [`tandem_room::Room`] to sockets
//! and to a [`tandem_store::DocStore`], and it owns the ordering guarantee: an update is appended
//! to the log (and, in sync durability, flushed) before any peer sees it.
//!
//! Entry point: [`run`], which takes a bound listener and a shutdown future, so tests bind
//! `127.0.0.1:0` and stop the server at will.

pub mod api;
mod api_error;
pub mod auth;
mod bearer;
mod config;
mod flusher;
pub mod hub;
pub mod json;
mod listen;
pub mod metrics;
mod outbox;
mod room_name;
mod routes;
pub mod tls;
mod upgrade;
mod ws;

use std::future::Future;
use std::sync::Arc;

pub use config::ServerConfig;
pub use hub::Hub;
pub use room_name::room_from_path;
use tandem_store::DocStore;
use tokio::net::TcpListener;

/// Serves (over TLS when `config.tls` is set) until `shutdown` resolves, then stops accepting, flushes every room, closes every
/// socket with 1001 and returns.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn DocStore>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve(listener, Hub::new(store, config), shutdown).await
}

/// [`run`] with a hub the caller built (and can observe).
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux): every y-sync frame is a
    // small write, and with Nagle on, a frame queued behind an unacknowledged one waits for the
    // peer's delayed ACK (40 ms) — the tail of every fan-out latency.
    if let Err(e) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
        tracing::warn!(error = %e, "could not disable Nagle's algorithm on the listener");
    }
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let server = tokio::spawn(listen::serve(
        listener,
        hub.clone(),
        hub.config.tls.clone(),
        stopped,
    ));
    shutdown.await;
    tracing::info!("shutting down: closing rooms");
    let _ = stop_accepting.send(());
    hub.shutdown().await;
    if tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .is_err()
    {
        tracing::warn!("http server did not stop within 5 s");
    }
    tracing::info!("shutdown complete");
}
