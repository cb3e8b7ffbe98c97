//! Built-in TLS: HTTPS for the API and the demo, WSS for rooms, on one port.
//!
//! warp 0.4 has no TLS support and its listener trait is private, so with TLS on the server runs
//! its own accept loop: a TCP accept, then (in the connection's own task, bounded by
//! [`HANDSHAKE_TIMEOUT`]) a rustls handshake, then hyper's HTTP/1.1-or-2 connection with upgrades
//! over `warp::service(routes)`, so the routes and our WebSocket upgrade run unchanged. A failed
//! handshake (plain HTTP on the TLS port, a scanner, an untrusting client) drops only that
//! connection. rustls uses the `ring` provider.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// Longest a client may take to complete its TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate file {}", path.display())]
    Cert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the TLS certificate file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCert { path: PathBuf },
    #[error("cannot read the TLS private key file {}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "the TLS private key file {} holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error("the TLS certificate {} and key {} are not usable together", cert.display(), key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// A server-side TLS configuration (certificate chain + private key); cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    inner: Arc<rustls::ServerConfig>,
}

/// Names the protocols only: the server config is printed with `ServerConfig`, and key
/// material has no business in logs.
impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let alpn: Vec<_> = self
            .inner
            .alpn_protocols
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        f.debug_struct("TlsConfig")
            .field("alpn", &alpn)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 RSA or
    /// SEC1 EC). Errors name the offending file.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::Cert {
                path: cert.to_owned(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCert {
                path: cert.to_owned(),
            });
        }
        let private_key = PrivateKeyDer::from_pem_file(key).map_err(|source| match source {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
                path: key.to_owned(),
            },
            source => TlsError::Key {
                path: key.to_owned(),
                source,
            },
        })?;
        Self::from_der(certs, private_key).map_err(|source| TlsError::Config {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })
    }

    /// A configuration from an already parsed chain and key.
    pub fn from_der(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        // HTTP/2 for API and demo requests; WebSocket clients ask for HTTP/1.1 (hyper does not
        // offer extended CONNECT, so browsers open WebSockets over HTTP/1.1).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsConfig {
            inner: Arc::new(config),
        })
    }

    /// A configuration built by the caller (other certificate resolvers, client auth, ...).
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig { inner: config }
    }

    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.inner
    }
}

/// Serves the hub's routes over TLS until `stop` resolves; then stops accepting, abandons
/// handshakes in progress, asks open HTTP connections to finish, and returns once they have.
/// (Upgraded WebSockets are no longer HTTP connections: the hub closes them.)
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    tls: TlsConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let routes = crate::routes::routes(hub);
    let acceptor = TlsAcceptor::from(tls.inner);
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
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%remote, error = %e, "https connection ended with an error");
            }
        });
    }
    drop(listener);
    cancel.cancel();
    graceful.shutdown().await;
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
