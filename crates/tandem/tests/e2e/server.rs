//! The child-process fixture: start `tandem serve`, read the bound address from its first stdout
//! line, stop it with SIGTERM or SIGKILL.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn binary() -> String {
    env!("CARGO_BIN_EXE_tandem").to_owned()
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The startup line, e.g. `listening on http://127.0.0.1:43210`.
    pub first_line: String,
}

impl Server {
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env("TANDEM_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tandem");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the first stdout line");
        let line = line.trim();
        let addr = line
            .strip_prefix("listening on http://")
            .or_else(|| line.strip_prefix("listening on https://"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        let first_line = line.to_owned();
        Server {
            child,
            addr,
            first_line,
        }
    }

    pub fn url(&self, room: &str) -> String {
        format!("ws://{}/{}", self.addr, room)
    }

    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.child.wait().expect("exit")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ws` is a live room connection to `server`: waits for the room's greeting (SyncStep1), sends
/// the server SIGTERM, and checks that the socket is closed with 1001 and the process exits 0.
pub async fn sigterm_closes_with_1001<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    server: Server,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let first = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("greeting");
    assert!(matches!(first, Some(Ok(Message::Binary(_)))));
    let status = tokio::task::spawn_blocking(move || server.terminate());
    let mut code = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(TIMEOUT, ws.next()).await {
        if let Message::Close(frame) = msg {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(code, Some(1001));
    let status = status.await.expect("join");
    assert!(status.success(), "exit status {status:?}");
}
