//! `tandem serve --tls-cert --tls-key`: the https startup line, HTTPS and WSS from the real
//! binary with a self-signed certificate made at test time, and startup errors.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

use crate::server::{Server, TIMEOUT, binary};

struct Cert {
    der: CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
}

fn self_signed(dir: &Path) -> Cert {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("generate a cert");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    Cert {
        der: made.cert.der().clone(),
        cert,
        key,
    }
}

fn client_config(trusted: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("add root");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("server name")
}

/// `GET path` over HTTPS with a blocking rustls client; returns the raw response.
fn https_get(addr: SocketAddr, trusted: &CertificateDer<'static>, path: &str) -> String {
    let conn = rustls::ClientConnection::new(client_config(trusted), localhost()).expect("conn");
    let tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).expect("read response");
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test]
async fn serve_with_tls_speaks_https_and_wss_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = self_signed(dir.path());
    let (cert_arg, key_arg) = (cert.cert.to_string_lossy(), cert.key.to_string_lossy());
    let server = Server::start(
        &dir.path().join("data"),
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
    );
    assert_eq!(
        server.first_line,
        format!("listening on https://{}", server.addr)
    );

    let (addr, der) = (server.addr, cert.der.clone());
    let reply = tokio::task::spawn_blocking(move || https_get(addr, &der, "/healthz"))
        .await
        .expect("join");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nok"), "{reply}");

    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(client_config(&cert.der))
        .connect(localhost(), tcp)
        .await
        .expect("tls handshake");
    let url = format!("wss://localhost:{}/secure", server.addr.port());
    let (ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("wss upgrade");
    crate::server::sigterm_closes_with_1001(ws, server).await;
}

/// Runs `tandem serve` expecting it to exit by itself; a server that starts instead is killed
/// after [`TIMEOUT`] and fails the test. Returns (success, stdout, stderr).
fn serve_expecting_exit(
    data: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> (bool, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(args)
        .env_remove("TANDEM_TLS_CERT")
        .env_remove("TANDEM_TLS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn tandem");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => {
            let out = out.expect("wait for tandem");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("tandem serve {args:?} kept running instead of failing at startup");
        }
    }
}

#[test]
fn tls_options_need_each_other_and_bad_files_fail_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = self_signed(dir.path());
    let data = dir.path().join("data");
    let cert_arg = cert.cert.to_string_lossy().into_owned();
    let key_arg = cert.key.to_string_lossy().into_owned();

    let (ok, stdout, stderr) = serve_expecting_exit(&data, &["--tls-cert", &cert_arg], &[]);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let (ok, stdout, stderr) = serve_expecting_exit(&data, &["--tls-key", &key_arg], &[]);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    // the environment counts like the flags
    let (ok, _, stderr) = serve_expecting_exit(&data, &[], &[("TANDEM_TLS_CERT", &cert.cert)]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");

    let missing = dir.path().join("no-such-key.pem");
    let (ok, stdout, stderr) = serve_expecting_exit(
        &data,
        &[],
        &[
            ("TANDEM_TLS_CERT", &cert.cert),
            ("TANDEM_TLS_KEY", &missing),
        ],
    );
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("no-such-key.pem"), "{stderr}");

    // the key where the certificate belongs
    let (ok, stdout, stderr) =
        serve_expecting_exit(&data, &["--tls-cert", &key_arg, "--tls-key", &key_arg], &[]);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("holds no PEM certificate") && stderr.contains("key.pem"),
        "{stderr}"
    );
    // nothing was opened: a bad certificate fails before the store
    assert!(!data.exists());
}

#[test]
fn help_documents_the_tls_options() {
    let out = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--tls-cert",
        "--tls-key",
        "TANDEM_TLS_CERT",
        "TANDEM_TLS_KEY",
    ] {
        assert!(help.contains(opt), "{opt} missing from:\n{help}");
    }
}
