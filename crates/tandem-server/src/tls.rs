//! Built-in TLS: HTTPS for the API and the demo, WSS for rooms, on one port.
//!
//! This module loads the certificate and key; the accept loop in `listen.rs` runs the rustls
//! handshake in each connection's own task, bounded by [`HANDSHAKE_TIMEOUT`]. A failed handshake
//! (plain HTTP on the TLS port, a scanner, an untrusting client) drops only that connection.
//! rustls uses the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    pub(crate) inner: Arc<rustls::ServerConfig>,
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
