//! `GET /metrics`: scraped before and after real WebSocket traffic, the counters move.

use tandem_room::close;
use tandem_server::auth::{Access, AuthConfig, Claims, now_secs};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::{Client, TestServer, test_config};
use crate::http::{Resp, get, request};

/// The value of the sample `series` (name with labels, exactly as exposed), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("numeric sample"))
}

fn body(resp: &Resp) -> String {
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert!(
        resp.headers
            .get("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        resp.headers
    );
    String::from_utf8(resp.body.clone()).expect("utf-8 metrics")
}

#[tokio::test]
async fn metrics_move_with_websocket_traffic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), test_config()).await;
    let before = body(&get(server.addr, "/metrics").await);
    assert!(before.ends_with("# EOF\n"), "{before}");
    assert_eq!(sample(&before, "tandem_peers_connected"), 0.0);
    assert_eq!(sample(&before, "tandem_rooms_loaded"), 0.0);

    let url = server.url("metrics-room");
    let mut a = Client::synced(&url, 1).await;
    let mut b = Client::synced(&url, 2).await;
    for i in 0..5u32 {
        a.insert_text("t", i, "x").await;
    }
    b.wait_until("edits", |c| c.text("t") == "xxxxx").await;

    let during = body(&get(server.addr, "/metrics").await);
    assert_eq!(sample(&during, "tandem_peers_connected"), 2.0, "{during}");
    assert_eq!(sample(&during, "tandem_rooms_loaded"), 1.0, "{during}");
    assert!(
        sample(&during, "tandem_updates_applied_total") >= 5.0,
        "{during}"
    );
    for counter in [
        "tandem_websocket_received_bytes_total",
        "tandem_websocket_sent_bytes_total",
        "tandem_update_apply_seconds_count",
        "tandem_fanout_seconds_count",
        "tandem_flush_seconds_count",
    ] {
        assert!(
            sample(&during, counter) > sample(&before, counter),
            "{counter} did not move:\n{during}"
        );
    }

    // a text frame is not part of the protocol: the peer is closed and the rejection counted
    let series = format!(
        "tandem_rejected_messages_total{{code=\"{}\"}}",
        close::BAD_MESSAGE
    );
    assert_eq!(sample(&during, &series), 0.0);
    let mut evil = Client::connect(&url, 3).await;
    evil.send_raw(WsMessage::text("hello")).await.expect("send");
    let (code, _) = evil.wait_closed().await;
    assert_eq!(code, close::BAD_MESSAGE);
    let after = body(&get(server.addr, "/metrics").await);
    assert_eq!(sample(&after, &series), 1.0, "{after}");
    a.close().await;
    b.close().await;
    server.stop().await;
}

fn token(secret: &str, access: Access) -> String {
    AuthConfig::new(secret)
        .mint(&Claims {
            sub: Some("ops".into()),
            room: None,
            room_prefix: Some(String::new()),
            access,
            exp: now_secs() + 3600,
        })
        .expect("mint")
}

#[tokio::test]
async fn metrics_need_an_admin_token_and_count_auth_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.auth = Some(AuthConfig::new("metrics-secret"));
    let server = TestServer::start(dir.path(), config).await;
    let admin = format!("Bearer {}", token("metrics-secret", Access::Admin));
    let headers = [("authorization", admin.as_str())];
    let scrape = || request(server.addr, "GET", "/metrics", &headers, b"");

    assert_eq!(get(server.addr, "/metrics").await.status, 401);
    let writer = format!("Bearer {}", token("metrics-secret", Access::Write));
    let resp = request(
        server.addr,
        "GET",
        "/metrics",
        &[("authorization", &writer)],
        b"",
    )
    .await;
    assert_eq!(resp.status, 403);
    let before = body(&scrape().await);
    assert_eq!(
        sample(
            &before,
            "tandem_auth_failures_total{reason=\"token_missing\"}"
        ),
        1.0
    );

    // a WebSocket with a token signed by another secret is refused and counted
    let forged = token("another-secret", Access::Write);
    let url = format!("{}?token={forged}", server.url("r"));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        other => panic!("expected a refused handshake, got {:?}", other.map(|r| r.1)),
    }
    let after = body(&scrape().await);
    assert_eq!(
        sample(
            &after,
            "tandem_auth_failures_total{reason=\"token_bad_signature\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "tandem_auth_failures_total{reason=\"insufficient_access\"}"
        ),
        1.0,
        "{after}"
    );
    server.stop().await;
}
