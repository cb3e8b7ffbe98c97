//! The embedded web demo over plain HTTP on a real socket: the page, every asset it references,
//! content types, and 404 for unknown assets.

use std::time::Duration;

use tandem_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{TIMEOUT, TestServer};

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Response {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("http response in time");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

#[tokio::test]
async fn demo_page_and_every_asset_it_references_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), ServerConfig::default()).await;

    // The room lives in the query string; the page is always `/`.
    let index = get(server.addr, "/?room=abc").await;
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8(index.body).expect("utf-8 page");
    let refs: Vec<&str> = html
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    assert!(refs.contains(&"/assets/app.js"), "{refs:?}");
    assert!(refs.contains(&"/assets/app.css"), "{refs:?}");
    for path in refs {
        let res = get(server.addr, path).await;
        assert_eq!(res.status, 200, "{path}");
        assert!(res.body.len() > 1000, "{path} is suspiciously small");
        let expected = if path.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(res.header("content-type"), Some(expected), "{path}");
    }

    let missing = get(server.addr, "/assets/nope.js").await;
    assert_eq!(missing.status, 404);
    let outside = get(server.addr, "/assets/..%2Findex.html").await;
    assert_eq!(outside.status, 404);

    tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("shutdown in time");
}
