//! Built-in TLS: HTTPS and WSS against a server holding a self-signed certificate made at test
//! time (rcgen), with rustls clients that trust exactly that certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use tandem_protocol::{Message, SyncMessage, decode_frame, encode_sync_step1, encode_update};
use tandem_server::tls::{TlsConfig, TlsError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::common::{TIMEOUT, TestServer, test_config};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files into `dir`.
struct Cert {
    der: CertificateDer<'static>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

fn self_signed(dir: &Path) -> Cert {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("generate a certificate");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, made.cert.pem()).expect("write cert");
    std::fs::write(&key_path, made.signing_key.serialize_pem()).expect("write key");
    Cert {
        der: made.cert.der().clone(),
        cert_path,
        key_path,
    }
}

/// A TLS server on 127.0.0.1:0 with a fresh certificate; the store lives in `dir/data`.
async fn tls_server(dir: &Path) -> (TestServer, Cert) {
    let cert = self_signed(dir);
    let mut config = test_config();
    config.tls = Some(TlsConfig::from_pem_files(&cert.cert_path, &cert.key_path).expect("load"));
    let server = TestServer::start(&dir.join("data"), config).await;
    (server, cert)
}

fn connector(trusted: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("add root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(TIMEOUT, connector(trusted, alpn).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("tls handshake")
}

/// One HTTP/1.1 request over TLS (`Connection: close`); returns the status and the body.
async fn https_get(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    path: &str,
) -> (u16, String) {
    let mut tls = tls_connect(addr, trusted, &[b"http/1.1"]).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    // rustls reports a peer that closes without close_notify as an error; hyper sends it
    tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read response");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {text:?}"));
    (status, body.to_owned())
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A minimal y-websocket peer over WSS: a yrs Doc kept in sync with the server.
struct WssPeer {
    doc: Doc,
    ws: Wss,
}

impl WssPeer {
    /// Connects to `wss://localhost/<room>` and waits for the answer to its SyncStep1.
    async fn synced(addr: SocketAddr, trusted: &CertificateDer<'static>, room: &str) -> WssPeer {
        let tls = tls_connect(addr, trusted, &[b"http/1.1"]).await;
        let url = format!("wss://localhost:{}/{room}", addr.port());
        let (ws, resp) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(url, tls))
            .await
            .expect("upgrade in time")
            .expect("websocket upgrade over tls");
        assert_eq!(resp.status(), 101);
        let mut peer = WssPeer {
            doc: Doc::new(),
            ws,
        };
        let sv = peer.doc.transact().state_vector().encode_v1();
        peer.ws
            .send(WsMessage::Binary(encode_sync_step1(&sv).into()))
            .await
            .expect("send step1");
        peer.wait_until("sync step 2", |m| {
            matches!(m, Message::Sync(SyncMessage::SyncStep2(_)))
        })
        .await;
        peer
    }

    /// Reads frames, applying every update, until one message satisfies `done`.
    async fn wait_until(&mut self, what: &str, done: impl Fn(&Message) -> bool) {
        loop {
            let msg = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .unwrap_or_else(|| panic!("closed while waiting for {what}"))
                .expect("read frame");
            let WsMessage::Binary(bytes) = msg else {
                continue;
            };
            for m in decode_frame(&bytes).expect("valid frame") {
                if let Message::Sync(SyncMessage::SyncStep2(u) | SyncMessage::Update(u)) = &m {
                    let update = Update::decode_v1(u).expect("valid update");
                    self.doc
                        .transact_mut()
                        .apply_update(update)
                        .expect("apply update");
                }
                if done(&m) {
                    return;
                }
            }
        }
    }

    fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("text");
        text.get_string(&self.doc.transact())
    }

    fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    /// Reads until the server closes the socket; returns the close code.
    async fn wait_closed(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("close in time")
            {
                Some(Ok(WsMessage::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

#[tokio::test]
async fn https_healthz_and_demo_with_a_trusted_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, cert) = tls_server(dir.path()).await;
    let (status, body) = https_get(server.addr, &cert.der, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = https_get(server.addr, &cert.der, "/").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") || body.contains("<!doctype"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn http2_is_offered_and_served_and_told_to_go_away_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, cert) = tls_server(dir.path()).await;
    let mut tls = tls_connect(server.addr, &cert.der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // the client preface and an empty SETTINGS frame; an HTTP/2 server answers with SETTINGS
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("write preface");
    let first = read_h2_frame(&mut tls).await;
    assert_eq!(first, 0x4, "the first server frame is SETTINGS");
    // graceful shutdown asks the open connection to go away (GOAWAY) instead of cutting it
    let stopping = tokio::spawn(server.stop());
    while read_h2_frame(&mut tls).await != 0x7 {}
    drop(tls);
    tokio::time::timeout(TIMEOUT, stopping)
        .await
        .expect("server stops in time")
        .expect("stop task");
}

/// Reads one HTTP/2 frame; returns its type.
async fn read_h2_frame(tls: &mut TlsStream<TcpStream>) -> u8 {
    let mut header = [0u8; 9];
    tokio::time::timeout(TIMEOUT, tls.read_exact(&mut header))
        .await
        .expect("frame in time")
        .expect("read frame header");
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload)
        .await
        .expect("read frame payload");
    header[3]
}

#[tokio::test]
async fn wss_peers_sync_and_are_closed_with_1001_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, cert) = tls_server(dir.path()).await;
    let mut a = WssPeer::synced(server.addr, &cert.der, "secure-room").await;
    let mut b = WssPeer::synced(server.addr, &cert.der, "secure-room").await;

    let update = {
        let text = a.doc.get_or_insert_text("text");
        let mut txn = a.doc.transact_mut();
        text.insert(&mut txn, 0, "over wss");
        txn.encode_update_v1()
    };
    a.ws.send(WsMessage::Binary(encode_update(&update).into()))
        .await
        .expect("send update");
    let target = a.state_vector();
    b.wait_until("a's update", |m| {
        matches!(m, Message::Sync(SyncMessage::Update(_)))
    })
    .await;
    assert_eq!(b.text(), "over wss");
    assert_eq!(b.state_vector(), target);

    let addr = server.addr;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(a.wait_closed().await, Some(1001));
    assert_eq!(b.wait_closed().await, Some(1001));
    tokio::time::timeout(TIMEOUT, stopping)
        .await
        .expect("server stops in time")
        .expect("stop task");
    // the listener is gone
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn plain_http_and_silent_clients_on_the_tls_port_are_dropped_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, cert) = tls_server(dir.path()).await;

    // a client that connects and never starts a handshake must not hold up anyone else
    let silent = TcpStream::connect(server.addr).await.expect("connect");

    // plain HTTP to the TLS port: the connection is closed without an HTTP answer
    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut raw))
        .await
        .expect("the server closes a plain-HTTP connection");
    assert!(!raw.starts_with(b"HTTP/"), "plain answer: {raw:?}");

    // garbage bytes: same
    let mut garbage = TcpStream::connect(server.addr).await.expect("connect");
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3, 4, 5, 6, 7])
        .await
        .expect("write");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, garbage.read_to_end(&mut raw))
        .await
        .expect("the server closes a garbage connection");

    // a client that does not trust the certificate fails its handshake; the server is unharmed
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    let refused = tokio::time::timeout(
        TIMEOUT,
        connector(stranger.cert.der(), &[b"http/1.1"]).connect(name, tcp),
    )
    .await
    .expect("handshake ends in time");
    assert!(
        refused.is_err(),
        "a client trusting another certificate connected"
    );

    // and the port still serves HTTPS, while the silent client is still connected
    let (status, body) = https_get(server.addr, &cert.der, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    drop(silent);
    server.stop().await;
}

#[test]
fn unreadable_or_mismatched_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = self_signed(dir.path());
    let missing = dir.path().join("missing-key.pem");

    let err = TlsConfig::from_pem_files(&cert.cert_path, &missing).expect_err("missing key");
    assert!(matches!(err, TlsError::Key { .. }), "{err:?}");
    assert!(err.to_string().contains("missing-key.pem"), "{err}");

    let err = TlsConfig::from_pem_files(&dir.path().join("missing-cert.pem"), &cert.key_path)
        .expect_err("missing cert");
    assert!(matches!(err, TlsError::Cert { .. }), "{err:?}");
    assert!(err.to_string().contains("missing-cert.pem"), "{err}");

    // a key where the certificate belongs, and the other way round
    let err = TlsConfig::from_pem_files(&cert.key_path, &cert.key_path).expect_err("no cert");
    assert!(matches!(err, TlsError::NoCert { .. }), "{err:?}");
    assert!(err.to_string().contains("key.pem"), "{err}");
    let err = TlsConfig::from_pem_files(&cert.cert_path, &cert.cert_path).expect_err("no key");
    assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
    assert!(err.to_string().contains("cert.pem"), "{err}");

    // a valid key that does not belong to the certificate
    let other_key = dir.path().join("other-key.pem");
    let pair = rcgen::KeyPair::generate().expect("key pair");
    std::fs::write(&other_key, pair.serialize_pem()).expect("write");
    let err = TlsConfig::from_pem_files(&cert.cert_path, &other_key).expect_err("mismatch");
    assert!(matches!(err, TlsError::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("other-key.pem"), "{err}");

    // truncated PEM
    let broken = dir.path().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nMIIB\n").expect("write");
    let err = TlsConfig::from_pem_files(&broken, &cert.key_path).expect_err("broken");
    assert!(matches!(err, TlsError::Cert { .. }), "{err:?}");

    TlsConfig::from_pem_files(&cert.cert_path, &cert.key_path).expect("the good pair loads");
}
