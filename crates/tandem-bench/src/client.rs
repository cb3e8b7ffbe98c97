//! A minimal y-websocket client over tokio-tungstenite: connect, frame, parse, hand-shake.
//!
//! Two framings: the stock y-websocket one (one y-protocols message per frame), and Hocuspocus',
//! where every message is prefixed with the document name and the first message is an auth
//! token.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tandem_protocol::codec::{Reader, write_str, write_var_u64};
use tandem_protocol::{
    decode_state_vector, encode_state_vector, encode_sync_step1, encode_sync_step2,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact};

use crate::error::{BenchError, Result};

type WsStream = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How y-protocols messages are put into WebSocket frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// Stock y-websocket: the room is in the URL, one message per frame.
    Yws,
    /// Hocuspocus: each message starts with the document name; an auth message opens the session.
    Hocuspocus,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `ws://host:port/prefix/{room}/suffix`, or a base URL to which `/<room>` is appended.
    pub url_template: String,
    pub framing: Framing,
    /// `http://host:port/path` to POST `{"docId":"<room>"}` to before a room's first connection.
    pub create_room: Option<String>,
    pub connect_timeout: Duration,
}

/// A message received from the server that the generator cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    SyncStep1(Vec<(u64, u32)>),
    SyncStep2(Vec<u8>),
    Update(Vec<u8>),
}

impl Endpoint {
    pub fn url(&self, room: &str) -> String {
        if self.url_template.contains("{room}") {
            self.url_template.replace("{room}", room)
        } else {
            format!("{}/{}", self.url_template.trim_end_matches('/'), room)
        }
    }

    /// Creates the room on servers that need it (see `create_room`); a no-op otherwise.
    pub async fn prepare_room(&self, room: &str) -> Result<()> {
        let Some(url) = &self.create_room else {
            return Ok(());
        };
        let body = serde_json::json!({ "docId": room }).to_string();
        let status = tokio::time::timeout(self.connect_timeout, http_post_json(url, &body))
            .await
            .map_err(|_| BenchError::Timeout(format!("POST {url}")))??;
        if !(200..300).contains(&status) {
            return Err(BenchError::Protocol(format!(
                "POST {url} for room {room}: HTTP {status}"
            )));
        }
        Ok(())
    }

    pub async fn connect(&self, room: &str) -> Result<Conn> {
        let url = self.url(room);
        let (ws, _) = tokio::time::timeout(
            self.connect_timeout,
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), true),
        )
        .await
        .map_err(|_| BenchError::Timeout(format!("connecting to {url}")))?
        .map_err(|e| BenchError::Ws(url.clone(), Box::new(e)))?;
        let mut conn = Conn {
            ws,
            framing: self.framing,
            name: room.to_owned(),
            url,
        };
        if self.framing == Framing::Hocuspocus {
            // Auth message (2), token subtype (0), empty token.
            let mut m = Vec::new();
            write_var_u64(&mut m, 2);
            write_var_u64(&mut m, 0);
            write_str(&mut m, "");
            conn.send(&m).await?;
        }
        Ok(conn)
    }
}

/// The generator's socket settings. tungstenite zero-fills `read_buffer_size` bytes before every
/// socket read; its 128 KiB default made that `memset` half of the generator's CPU in `fanout`
/// (perf), where every read returns one small frame. 16 KiB still takes a large document in a
/// few dozen reads. Nagle is off (`disable_nagle` above), as browsers do for WebSockets, so a
/// client's keystroke is never held back behind its previous one.
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024)
}

/// One open connection to one room.
pub struct Conn {
    ws: WsStream,
    framing: Framing,
    name: String,
    url: String,
}

impl Conn {
    /// Sends one y-protocols message.
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        let frame = match self.framing {
            Framing::Yws => msg.to_vec(),
            Framing::Hocuspocus => {
                let mut f = Vec::with_capacity(msg.len() + self.name.len() + 4);
                write_str(&mut f, &self.name);
                f.extend_from_slice(msg);
                f
            }
        };
        if debug_frames() {
            eprintln!(
                "bench -> {}: {:?}",
                self.name,
                &frame[..frame.len().min(48)]
            );
        }
        self.ws
            .send(WsMessage::Binary(frame.into()))
            .await
            .map_err(|e| BenchError::Ws(self.url.clone(), Box::new(e)))
    }

    /// The next frame's interesting messages; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Result<Option<Vec<Incoming>>> {
        loop {
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(BenchError::Ws(self.url.clone(), Box::new(e))),
                Some(Ok(WsMessage::Binary(b))) => return Ok(Some(self.parse(&b))),
                Some(Ok(WsMessage::Close(_))) => return Ok(None),
                Some(Ok(_)) => {}
            }
        }
    }

    fn parse(&self, frame: &[u8]) -> Vec<Incoming> {
        if debug_frames() {
            eprintln!(
                "bench <- {}: {:?}",
                self.name,
                &frame[..frame.len().min(48)]
            );
        }
        let mut r = Reader::new(frame);
        if self.framing == Framing::Hocuspocus && r.read_str("document name").is_err() {
            return Vec::new();
        }
        parse_messages(&mut r)
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Sends our SyncStep1 and waits for the server's SyncStep2, answering its SyncStep1 from
    /// `doc`. Returns every update received on the way (the SyncStep2 payload last).
    pub async fn handshake(&mut self, doc: &yrs::Doc, timeout: Duration) -> Result<Vec<Vec<u8>>> {
        let sv = doc.transact().state_vector();
        self.send(&encode_sync_step1(
            &yrs::updates::encoder::Encode::encode_v1(&sv),
        ))
        .await?;
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msgs = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| BenchError::Timeout(format!("sync handshake with {}", self.url)))??
                .ok_or_else(|| {
                    BenchError::Protocol(format!("{} closed during the handshake", self.url))
                })?;
            for m in msgs {
                match m {
                    Incoming::SyncStep1(sv) => self.answer_step1(doc, &sv).await?,
                    Incoming::Update(u) => got.push(u),
                    Incoming::SyncStep2(u) => {
                        got.push(u);
                        return Ok(got);
                    }
                }
            }
        }
    }

    /// Answers a server SyncStep1 with what `doc` has beyond the server's state vector.
    pub async fn answer_step1(&mut self, doc: &yrs::Doc, sv: &[(u64, u32)]) -> Result<()> {
        let bytes = encode_state_vector(sv.iter().copied());
        let sv = StateVector::decode_v1(&bytes)
            .map_err(|e| BenchError::Protocol(format!("state vector: {e}")))?;
        let diff = doc.transact().encode_state_as_update_v1(&sv);
        self.send(&encode_sync_step2(&diff)).await
    }
}

/// `TANDEM_BENCH_DEBUG_FRAMES=1` prints the start of every frame sent and received to stderr.
fn debug_frames() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TANDEM_BENCH_DEBUG_FRAMES").is_some_and(|v| v == "1"))
}

/// Parses y-protocols messages leniently: sync messages are returned, awareness skipped, and
/// anything else (auth, server-specific types) ends parsing of the frame.
pub fn parse_messages(r: &mut Reader<'_>) -> Vec<Incoming> {
    let mut out = Vec::new();
    while !r.is_empty() {
        let Ok(kind) = r.read_var_u64("message type") else {
            break;
        };
        match kind {
            0 => {
                let (Ok(sub), Ok(payload)) = (r.read_var_u64("sync type"), r.read_buf("payload"))
                else {
                    break;
                };
                match sub {
                    0 => {
                        if let Ok(sv) = decode_state_vector(payload) {
                            out.push(Incoming::SyncStep1(sv));
                        }
                    }
                    1 => out.push(Incoming::SyncStep2(payload.to_vec())),
                    2 => out.push(Incoming::Update(payload.to_vec())),
                    _ => break,
                }
            }
            1 => {
                if r.read_buf("awareness").is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
    out
}

/// A bare-bones HTTP/1.1 POST of a JSON body over plain TCP; returns the status code.
async fn http_post_json(url: &str, body: &str) -> Result<u16> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| BenchError::Config(format!("--create-room needs an http:// URL: {url}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let io = |e| BenchError::Io(format!("POST {url}"), e);
    let mut s = tokio::net::TcpStream::connect(host).await.map_err(io)?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(io)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.map_err(io)?;
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| BenchError::Protocol(format!("POST {url}: bad response {text:.80}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_protocol::{encode_sync_step1, encode_update};

    #[test]
    fn url_template() {
        let mut e = Endpoint {
            url_template: "ws://h:1/".into(),
            framing: Framing::Yws,
            create_room: None,
            connect_timeout: Duration::from_secs(1),
        };
        assert_eq!(e.url("r1"), "ws://h:1/r1");
        e.url_template = "ws://h:1/d/{room}/ws".into();
        assert_eq!(e.url("r1"), "ws://h:1/d/r1/ws");
    }

    #[test]
    fn lenient_parse() {
        let mut frame = encode_sync_step1(&encode_state_vector([(5, 3)]));
        frame.extend_from_slice(&[1, 2, 0, 0]); // awareness with a 2-byte payload
        frame.extend_from_slice(&encode_update(&[0, 0]));
        frame.extend_from_slice(&[8, 1, 2, 3]); // unknown type: parsing stops
        let got = parse_messages(&mut Reader::new(&frame));
        assert_eq!(
            got,
            vec![
                Incoming::SyncStep1(vec![(5, 3)]),
                Incoming::Update(vec![0, 0])
            ]
        );
    }
}
