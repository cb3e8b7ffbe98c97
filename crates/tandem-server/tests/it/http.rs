//! A minimal HTTP/1.1 client over a raw `TcpStream` for the API tests (no tests here).
//!
//! Hand-written instead of pulling `reqwest`/`hyper` client features: the tests need one request
//! per connection plus an incremental Server-Sent Events reader, which is ~150 lines, and the
//! raw bytes make chunked framing and headers directly observable.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::TIMEOUT;

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not json ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The stable error code of a JSON error reply.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> (u16, HashMap<String, String>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// Decodes complete chunks from `raw` into `out`; returns false once the last chunk was seen.
fn dechunk(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return true;
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        if size == 0 {
            return false;
        }
        let need = line_end + 2 + size + 2;
        if raw.len() < need {
            return true;
        }
        out.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw.drain(..need);
    }
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    tokio::time::timeout(TIMEOUT, request_inner(addr, method, path, headers, body))
        .await
        .expect("http request in time")
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write head");
    s.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let head_end = find(&raw, b"\r\n\r\n").expect("response head");
    let (status, headers) = parse_head(&raw[..head_end]);
    let mut rest = raw[head_end + 4..].to_vec();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        let mut out = Vec::new();
        dechunk(&mut rest, &mut out);
        out
    } else {
        rest
    };
    Resp {
        status,
        headers,
        body,
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"").await
}

/// `POST /api/rooms/{room}/update` with a Yjs v1 body.
pub async fn post_update(addr: SocketAddr, room: &str, update: &[u8]) -> Resp {
    request(
        addr,
        "POST",
        &format!("/api/rooms/{room}/update"),
        &[("Content-Type", "application/octet-stream")],
        update,
    )
    .await
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("event data is json")
    }
}

/// An open change-feed connection.
pub struct Sse {
    stream: TcpStream,
    raw: Vec<u8>,
    text: Vec<u8>,
    pub status: u16,
}

impl Sse {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let head_end = loop {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                break i;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
                .await
                .expect("sse head in time")
                .expect("read");
            assert!(n > 0, "connection closed before the response head");
            raw.extend_from_slice(&buf[..n]);
        };
        let (status, _) = parse_head(&raw[..head_end]);
        raw.drain(..head_end + 4);
        Sse {
            stream,
            raw,
            text: Vec::new(),
            status,
        }
    }

    /// The next event with data (comments and keep-alives are skipped); `None` at end of stream.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            let mut open = dechunk(&mut self.raw, &mut self.text);
            while let Some(end) = find(&self.text, b"\n\n") {
                let block = String::from_utf8_lossy(&self.text[..end]).to_string();
                self.text.drain(..end + 2);
                let mut ev = Event {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if has_data {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v.trim_start());
                        has_data = true;
                    }
                }
                if has_data {
                    return Some(ev);
                }
            }
            if !open {
                return None;
            }
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout(TIMEOUT, self.stream.read(&mut buf))
                .await
                .expect("sse event in time")
                .expect("read");
            if n == 0 {
                open = false;
            }
            self.raw.extend_from_slice(&buf[..n]);
            if !open {
                return None;
            }
        }
    }
}
