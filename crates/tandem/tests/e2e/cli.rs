//! The command line and process behaviour: help text, the startup line, SIGTERM, HTTP refusals.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use crate::server::{Server, TIMEOUT, binary};

#[test]
fn help_documents_every_serve_option() {
    let out = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--listen",
        "--data",
        "--durability",
        "--flush-ms",
        "--max-frame-bytes",
        "--send-queue",
        "--idle-unload-secs",
        "--log-level",
        "--auth-secret",
        "--allowed-origins",
    ] {
        assert!(help.contains(opt), "{opt} missing from:\n{help}");
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str, upgrade: bool) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    let extra = if upgrade {
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    } else {
        ""
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("write");
    // read the response head only: after a 101 the connection stays open
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn invalid_room_names_get_400_before_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let long = format!("/{}", "x".repeat(513));
    for path in ["/%FF%FE", long.as_str()] {
        let reply = http_get(server.addr, path, true);
        assert!(reply.starts_with("HTTP/1.1 400"), "{path}: {reply}");
    }
    let ok = http_get(server.addr, "/fine", true);
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    server.kill();
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let (ws, _) = tokio_tungstenite::connect_async(server.url("term"))
        .await
        .expect("connect");
    crate::server::sigterm_closes_with_1001(ws, server).await;
}

#[test]
fn token_command_mints_a_verifiable_token() {
    use tandem_server::auth::{Access, AuthConfig, now_secs};
    let out = Command::new(binary())
        .args([
            "token", "--room", "team/", "--prefix", "--access", "read", "--ttl", "15m",
        ])
        .args(["--sub", "carol"])
        .env("TANDEM_AUTH_SECRET", "cli-secret")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let claims = AuthConfig::new("cli-secret")
        .verify(&token, now_secs())
        .expect("valid token");
    assert_eq!(claims.access, Access::Read);
    assert_eq!(claims.room_prefix.as_deref(), Some("team/"));
    assert_eq!(claims.author(), "carol");
    assert!(claims.exp > now_secs() + 800 && claims.exp <= now_secs() + 900);
    let bad = Command::new(binary())
        .args(["token", "--room", "r", "--ttl", "1y", "--secret", "s"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid duration"));
}
