//! The accept loop, for plain HTTP and for TLS.
//!
//! warp 0.4's own server sets no header-read timeout (a client that connects and never finishes
//! its request headers holds the socket forever), has no TLS, and its listener trait is private.
//! So the server runs its own loop: a TCP accept, then, in the connection's own task, an
//! optional rustls handshake (bounded by [`HANDSHAKE_TIMEOUT`]) and hyper's HTTP/1.1-or-2
//! connection with upgrades over `warp::service(routes)`, so the routes and our WebSocket
//! upgrade run unchanged.
//!
//! Slow or silent clients: a connection whose first request has not reached the routes within
//! `ServerConfig::header_read_timeout` of the connection opening (or of its TLS handshake) is
//! closed; hyper's own header-read timeout, which starts only once bytes arrive, then bounds each
//! later request's headers on a keep-alive connection and the wait for it. Without both, a client
//! that connects and sends nothing, or a few bytes, held its socket forever. Upgraded WebSockets
//! are no longer HTTP and answer to the hub's ping timeout instead.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::tls::{HANDSHAKE_TIMEOUT, TlsConfig};

/// Serves the hub's routes (over TLS when `tls` is set) until `stop` resolves; then stops
/// accepting, abandons handshakes in progress, asks open HTTP connections to finish, and returns
/// once they have. (Upgraded WebSockets are no longer HTTP connections: the hub closes them.)
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    tls: Option<TlsConfig>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let header_timeout = hub.config.header_read_timeout;
    let routes = crate::routes::routes(hub);
    let acceptor = tls.map(|tls| TlsAcceptor::from(tls.inner));
    let graceful = GracefulShutdown::new();
    let cancel = CancellationToken::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // e.g. out of file descriptors: back off instead of spinning
                        tracing::error!(error = %e, "accept failed");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = &mut stop => break,
                        }
                    }
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        let watcher = graceful.watcher();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            // set once the first request's headers are in, i.e. the routes see it
            let started = Arc::new(AtomicBool::new(false));
            let service = {
                let started = started.clone();
                hyper::service::service_fn(move |req| {
                    started.store(true, Ordering::Relaxed);
                    service.call(req)
                })
            };
            let first_request = async {
                tokio::time::sleep(header_timeout).await;
                if started.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            let result = match acceptor {
                None => {
                    let builder = http_builder(None, header_timeout);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                    tokio::select! {
                        r = watcher.watch(conn) => r,
                        _ = first_request => {
                            tracing::debug!(%remote, "no request within the header timeout");
                            return;
                        }
                    }
                }
                Some(acceptor) => {
                    let stream = tokio::select! {
                        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "tls handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "tls handshake timed out");
                                return;
                            }
                        },
                        _ = cancel.cancelled() => return,
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let builder = http_builder(Some(h2), header_timeout);
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        r = watcher.watch(conn) => r,
                        _ = first_request => {
                            tracing::debug!(%remote, "no request within the header timeout");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    cancel.cancel();
    graceful.shutdown().await;
}

/// A connection builder: HTTP/2 or HTTP/1.1 as TLS' ALPN chose (`Some(h2)`), or either,
/// sniffed from the first bytes (`None`, plain connections: HTTP/1.1 or h2c prior knowledge).
/// HTTP/1 gets the header-read timeout.
fn http_builder(alpn_h2: Option<bool>, header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut builder = match alpn_h2 {
        Some(true) => return builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
}

/// Errors of one incoming connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
