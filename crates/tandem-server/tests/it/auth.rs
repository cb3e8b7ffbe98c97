//! Signed room tokens on WebSockets and the API, read-only peers, allowed origins.

use tandem_server::ServerConfig;
use tandem_server::auth::{Access, AuthConfig, Claims, now_secs};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

use crate::common::{Client, TIMEOUT, TestServer, test_config};
use crate::http::{get, request};

/// (what, method, path, Authorization header, status, error code)
type Case<'a> = (&'a str, &'a str, &'a str, Option<String>, u16, &'a str);

const SECRET: &str = "test-secret-please-change";

fn token(secret: &str, room: &str, access: Access, exp: u64, sub: &str) -> String {
    AuthConfig::new(secret)
        .mint(&Claims {
            sub: Some(sub.into()),
            room: Some(room.into()),
            room_prefix: None,
            access,
            exp,
        })
        .expect("mint")
}

fn valid(room: &str, access: Access) -> String {
    token(SECRET, room, access, now_secs() + 3600, "alice")
}

fn auth_config() -> ServerConfig {
    let mut c = test_config();
    c.auth = Some(AuthConfig::new(SECRET));
    c.allowed_origins = vec!["https://app.example".into()];
    c
}

/// The HTTP status of a refused WebSocket handshake (or 101 if it was accepted).
async fn ws_status(url: &str, origin: Option<&str>) -> u16 {
    let mut req = url.into_client_request().expect("request");
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", o.parse().expect("header"));
    }
    match tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake in time")
    {
        Ok((ws, resp)) => {
            drop(ws);
            resp.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected handshake error {e}"),
    }
}

#[tokio::test]
async fn websocket_refuses_every_bad_token_before_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), auth_config()).await;
    let base = server.url("r");
    let now = now_secs();
    let cases = [
        ("missing", base.clone(), 401),
        ("malformed", format!("{base}?token=not.a.jwt"), 401),
        ("garbage", format!("{base}?token=%%%"), 401),
        (
            "expired",
            format!(
                "{base}?token={}",
                token(SECRET, "r", Access::Write, now - 1, "a")
            ),
            401,
        ),
        (
            "wrong signature",
            format!(
                "{base}?token={}",
                token("other", "r", Access::Write, now + 60, "a")
            ),
            401,
        ),
        (
            "wrong room",
            format!(
                "{base}?token={}",
                token(SECRET, "r2", Access::Write, now + 60, "a")
            ),
            403,
        ),
        (
            "valid",
            format!("{base}?token={}", valid("r", Access::Read)),
            101,
        ),
    ];
    for (what, url, status) in cases {
        assert_eq!(ws_status(&url, None).await, status, "{what}");
    }
    let ok = format!("{base}?token={}", valid("r", Access::Write));
    assert_eq!(ws_status(&ok, Some("https://evil.example")).await, 403);
    assert_eq!(ws_status(&ok, Some("https://app.example")).await, 101);
    // prefix tokens cover every room under the prefix
    let prefix = AuthConfig::new(SECRET)
        .mint(&Claims {
            sub: None,
            room: None,
            room_prefix: Some("team/".into()),
            access: Access::Write,
            exp: now + 60,
        })
        .expect("mint");
    assert_eq!(
        ws_status(&format!("{}?token={prefix}", server.url("team%2Fa")), None).await,
        101
    );
    assert_eq!(
        ws_status(&format!("{}?token={prefix}", server.url("other")), None).await,
        403
    );
    server.stop().await;
}

#[tokio::test]
async fn api_refuses_every_bad_token_and_checks_access_levels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), auth_config()).await;
    let now = now_secs();
    let doc = Doc::with_client_id(1);
    let update = {
        let t = doc.get_or_insert_text("t");
        t.insert(&mut doc.transact_mut(), 0, "x");
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let cases: Vec<Case> = vec![
        ("missing", "GET", "/api/rooms/r", None, 401, "token_missing"),
        (
            "not bearer",
            "GET",
            "/api/rooms/r",
            Some("Basic abc".into()),
            401,
            "token_malformed",
        ),
        (
            "malformed",
            "GET",
            "/api/rooms/r",
            Some(bearer("a.b")),
            401,
            "token_malformed",
        ),
        (
            "expired",
            "GET",
            "/api/rooms/r",
            Some(bearer(&token(SECRET, "r", Access::Admin, now - 5, "a"))),
            401,
            "token_expired",
        ),
        (
            "wrong signature",
            "GET",
            "/api/rooms/r",
            Some(bearer(&token("nope", "r", Access::Admin, now + 60, "a"))),
            401,
            "token_bad_signature",
        ),
        (
            "wrong room",
            "GET",
            "/api/rooms/r",
            Some(bearer(&valid("q", Access::Admin))),
            403,
            "forbidden_room",
        ),
        (
            "read cannot write",
            "POST",
            "/api/rooms/r/update",
            Some(bearer(&valid("r", Access::Read))),
            403,
            "insufficient_access",
        ),
        (
            "write cannot delete",
            "DELETE",
            "/api/rooms/r",
            Some(bearer(&valid("r", Access::Write))),
            403,
            "insufficient_access",
        ),
        (
            "write cannot list",
            "GET",
            "/api/rooms",
            Some(bearer(&valid("r", Access::Write))),
            403,
            "insufficient_access",
        ),
    ];
    for (what, method, path, auth, status, code) in cases {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let r = request(server.addr, method, path, &headers, &update).await;
        assert_eq!((r.status, r.code().as_str()), (status, code), "{what}");
    }
    assert_eq!(get(server.addr, "/api/rooms/r/json").await.status, 401);
    // a write token writes, and the log records its subject
    let w = bearer(&token(SECRET, "r", Access::Write, now + 60, "bob"));
    let r = request(
        server.addr,
        "POST",
        "/api/rooms/r/update",
        &[("Authorization", &w)],
        &update,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    let log = request(
        server.addr,
        "GET",
        "/api/rooms/r/log",
        &[("Authorization", &w)],
        b"",
    )
    .await;
    assert_eq!(log.json()["entries"][0]["author"], "bob");
    let admin = bearer(&valid("r", Access::Admin));
    let list = request(
        server.addr,
        "GET",
        "/api/rooms",
        &[("Authorization", &admin)],
        b"",
    )
    .await;
    assert_eq!(list.status, 200);
    let del = request(
        server.addr,
        "DELETE",
        "/api/rooms/r",
        &[("Authorization", &admin)],
        b"",
    )
    .await;
    assert_eq!(del.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn read_only_peer_cannot_change_anything_but_receives_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), auth_config()).await;
    let url = |access| format!("{}?token={}", server.url("ro"), valid("ro", access));
    let mut writer = Client::synced(&url(Access::Write), 1).await;
    writer.insert_text("t", 0, "base").await;
    let mut reader = Client::synced(&url(Access::Read), 2).await;
    reader.wait_until("base", |c| c.text("t") == "base").await;
    let admin = format!("Bearer {}", valid("ro", Access::Admin));
    let auth = [("Authorization", admin.as_str())];
    let sv_before = request(server.addr, "GET", "/api/rooms/ro/state-vector", &auth, b"")
        .await
        .body;
    let log_before = request(server.addr, "GET", "/api/rooms/ro/log", &auth, b"")
        .await
        .json();

    for i in 0..1000u32 {
        reader.insert_text("t", 0, &i.to_string()).await;
    }
    // awareness is allowed; its echo proves every earlier frame was handled
    reader.set_awareness(1, r#"{"user":"reader"}"#).await;
    reader
        .wait_until("own awareness echo", |c| c.awareness.contains_key(&2))
        .await;
    assert_eq!(reader.denied.len(), 1, "told once: {:?}", reader.denied);
    assert!(reader.denied[0].contains("read-only"));

    let sv_after = request(server.addr, "GET", "/api/rooms/ro/state-vector", &auth, b"")
        .await
        .body;
    assert_eq!(sv_after, sv_before);
    assert_eq!(
        request(server.addr, "GET", "/api/rooms/ro/log", &auth, b"")
            .await
            .json(),
        log_before
    );
    // it still receives others' edits
    writer.insert_text("t", 4, "+more").await;
    reader
        .wait_until("writer's edit", |c| c.text("t").ends_with("base+more"))
        .await;
    let server_sv = StateVector::decode_v1(
        &request(server.addr, "GET", "/api/rooms/ro/state-vector", &auth, b"")
            .await
            .body,
    )
    .expect("sv");
    assert_eq!(server_sv, writer.doc.transact().state_vector());
    assert!(server_sv.get(&yrs::ClientID::new(2)) == 0);
    reader.close().await;
    writer.close().await;
    server.stop().await;
}
