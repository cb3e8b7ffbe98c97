//! The HTTP API under `/api/rooms`: room listing and metadata, the document as a Yjs update,
//! state vector or JSON, writes, deletion, the audit log and the Server-Sent Events change feed.
//!
//! Every error is JSON `{"code": "...", "message": "..."}` with a stable `code` (see
//! `docs/openapi.yaml`). One handler parses the path itself so room names may hold any
//! percent-encoded byte (`%2F` included) and every failure takes the same JSON shape.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD};
use bytes::Buf;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tandem_room::{PeerError, Room, close};
use tandem_store::{LogEntry, RoomStats};
use warp::http::{HeaderMap, Method, StatusCode, header};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact};

use crate::auth::{Access, TokenError, now_secs};
use crate::hub::{ApplyError, Hub, RoomCmd};
use crate::json::doc_to_json;
use crate::routes::room_from_path;

#[cfg(test)]
mod fidelity_tests;
mod v2;
mod v2_out;

/// Default and largest page of `GET /api/rooms` and `GET /api/rooms/{room}/log`.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// Log entries read per step while replaying the change feed.
const REPLAY_BATCH: usize = 256;
/// Content type selecting the v2 encoding for `POST .../update`.
pub const V2_CONTENT_TYPE: &str = "application/vnd.yjs.update.v2";

/// A JSON error reply.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(room: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "room_not_found",
            format!("room {room:?} has no stored data"),
        )
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "room_unavailable", message)
    }

    fn storage(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_error",
            e.to_string(),
        )
    }

    fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "server is shutting down",
        )
    }

    pub fn into_response(self) -> Response {
        let body = json!({ "code": self.code, "message": self.message });
        warp::reply::with_status(warp::reply::json(&body), self.status).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// One parsed API request.
struct Req {
    method: Method,
    room: Option<String>,
    action: Option<String>,
    query: HashMap<String, String>,
    headers: HeaderMap,
}

/// `/api/...` routes. Takes any method; unknown paths and methods get JSON errors.
pub fn api(hub: Arc<Hub>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path("api")
        .and(warp::method())
        .and(warp::path::full())
        .and(
            warp::query::<HashMap<String, String>>()
                .or_else(|_| async { Ok::<_, Rejection>((HashMap::new(),)) }),
        )
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || hub.clone()))
        .then(
            |method: Method,
             path: FullPath,
             query: HashMap<String, String>,
             headers: HeaderMap,
             body,
             hub: Arc<Hub>| async move {
                match handle(hub, method, path, query, headers, body).await {
                    Ok(r) => r,
                    Err(e) => e.into_response(),
                }
            },
        )
}

async fn handle<S, B>(
    hub: Arc<Hub>,
    method: Method,
    path: FullPath,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: S,
) -> ApiResult
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send,
    B: Buf,
{
    let (room, action) = parse_path(path.as_str())?;
    let req = Req {
        method,
        room,
        action,
        query,
        headers,
    };
    if hub.is_shutting_down() {
        return Err(ApiError::shutting_down());
    }
    let need = match (&req.method, &req.room) {
        (_, None) => Access::Admin,
        (&Method::DELETE, _) => Access::Admin,
        (&Method::POST, _) => Access::Write,
        _ => Access::Read,
    };
    let author = authorize(&hub, &req, need)?;
    let Some(room) = req.room.clone() else {
        return match req.method {
            Method::GET => list_rooms(&hub, &req).await,
            _ => Err(method_not_allowed()),
        };
    };
    match (req.method.clone(), req.action.as_deref()) {
        (Method::GET, None) => room_meta(&hub, &room).await,
        (Method::DELETE, None) => delete_room(&hub, &room).await,
        (Method::GET, Some("update")) => get_update(&hub, &room, &req).await,
        (Method::POST, Some("update")) => {
            let bytes = read_body(body, hub.config.max_frame_bytes).await?;
            post_update(&hub, &room, &req, bytes, author).await
        }
        (Method::GET, Some("state-vector")) => get_state_vector(&hub, &room).await,
        (Method::GET, Some("json")) => get_json(&hub, &room).await,
        (Method::GET, Some("log")) => get_log(&hub, &room, &req).await,
        (Method::GET, Some("events")) => events(&hub, &room, &req).await,
        (_, None | Some("update" | "state-vector" | "json" | "log" | "events")) => {
            Err(method_not_allowed())
        }
        (_, Some(other)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint {other:?} under /api/rooms/{{room}}"),
        )),
    }
}

/// Checks the bearer token (when auth is on) for `need` on the request's room; returns the
/// author to record. Listing all rooms needs an admin token (its room claims are not checked).
fn authorize(hub: &Hub, req: &Req, need: Access) -> Result<String, ApiError> {
    authorize_bearer(hub, &req.headers, req.room.as_deref(), need)
}

/// [`authorize`] for any request: the bearer token in `headers` must grant `need` (and `room`,
/// when given). Refusals are counted in the metrics by their error code.
pub fn authorize_bearer(
    hub: &Hub,
    headers: &HeaderMap,
    room: Option<&str>,
    need: Access,
) -> Result<String, ApiError> {
    let res = check_bearer(hub, headers, room, need);
    if let Err(e) = &res {
        hub.metrics.auth_failure(e.code);
    }
    res
}

fn check_bearer(
    hub: &Hub,
    headers: &HeaderMap,
    room: Option<&str>,
    need: Access,
) -> Result<String, ApiError> {
    let Some(auth) = &hub.config.auth else {
        return Ok("anonymous".into());
    };
    let unauthorized = |e: TokenError| {
        tracing::warn!(error = %e, "api request refused");
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(TokenError::Missing)
        .map_err(unauthorized)?;
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))
        .ok_or_else(|| TokenError::Malformed("expected `Authorization: Bearer <token>`".into()))
        .map_err(unauthorized)?;
    let claims = auth.verify(token, now_secs()).map_err(unauthorized)?;
    if let Some(room) = room
        && !claims.covers(room)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_room",
            "token does not grant this room",
        ));
    }
    if claims.access < need {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_access",
            format!("this request needs {need:?} access").to_lowercase(),
        ));
    }
    Ok(claims.author())
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// `/api/rooms[/{room}[/{action}]]` → (room, action).
fn parse_path(path: &str) -> Result<(Option<String>, Option<String>), ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    let rest = path.strip_prefix("/api/rooms").ok_or_else(not_found)?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Ok((None, None));
    }
    let rest = rest.strip_prefix('/').ok_or_else(not_found)?;
    let mut parts = rest.splitn(3, '/');
    let room_seg = parts.next().unwrap_or_default();
    let action = parts.next().map(str::to_owned);
    if parts.next().is_some() {
        return Err(not_found());
    }
    let room = room_from_path(&format!("/{room_seg}"))
        .map_err(|reason| ApiError::bad("invalid_room_name", reason))?;
    Ok((Some(room), action))
}

async fn read_body<S, B>(mut body: S, max: usize) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin + Send,
    B: Buf,
{
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::bad("bad_body", e.to_string()))?;
        if out.len() + chunk.remaining() > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body exceeds {max} bytes"),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("task failed: {e}"),
        )
    })
}

async fn stats(hub: &Hub, room: &str) -> Result<Option<RoomStats>, ApiError> {
    let store = hub.store().clone();
    let name = room.to_owned();
    blocking(move || store.stats(&name))
        .await?
        .map_err(ApiError::storage)
}

fn page_limit(req: &Req) -> Result<usize, ApiError> {
    match req.query.get("limit") {
        None => Ok(DEFAULT_PAGE),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(
                "invalid_query",
                format!("limit must be an integer from 1 to {MAX_PAGE}"),
            )),
        },
    }
}

fn u64_param(req: &Req, name: &str) -> Result<Option<u64>, ApiError> {
    req.query
        .get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad(
                    "invalid_query",
                    format!("{name} must be a non-negative integer"),
                )
            })
        })
        .transpose()
}

fn room_json(hub: &Hub, name: &str, s: Option<&RoomStats>) -> Value {
    let s = s.cloned().unwrap_or_default();
    json!({
        "name": name,
        "size_bytes": s.size_bytes,
        "log_len": s.log_len,
        "last_change_ms": s.last_change_ms,
        "snapshot_seq": s.snapshot_seq,
        "next_seq": s.next_seq.max(1),
        "peers": hub.peer_count(name),
        "loaded": hub.is_loaded(name),
    })
}

fn json_ok(v: &Value) -> Response {
    warp::reply::json(v).into_response()
}

fn binary(bytes: Vec<u8>) -> Response {
    warp::reply::with_header(bytes, header::CONTENT_TYPE, "application/octet-stream")
        .into_response()
}

async fn list_rooms(hub: &Hub, req: &Req) -> ApiResult {
    let limit = page_limit(req)?;
    let after = req.query.get("after").cloned();
    let store = hub.store().clone();
    let rows = blocking(
        move || -> Result<Vec<RoomStats>, tandem_store::StoreError> {
            let names = store.list_rooms(after.as_deref(), limit)?;
            let mut rows = Vec::with_capacity(names.len());
            for name in names {
                if let Some(s) = store.stats(&name)? {
                    rows.push(s);
                }
            }
            Ok(rows)
        },
    )
    .await?
    .map_err(ApiError::storage)?;
    let next = if rows.len() == limit {
        rows.last().map(|s| s.name.clone())
    } else {
        None
    };
    let rooms: Vec<Value> = rows
        .iter()
        .map(|s| room_json(hub, &s.name, Some(s)))
        .collect();
    Ok(json_ok(&json!({ "rooms": rooms, "next": next })))
}

/// The room's stats, or 404 when it has neither stored data nor peers.
async fn existing(hub: &Hub, room: &str) -> Result<Option<RoomStats>, ApiError> {
    let s = stats(hub, room).await?;
    if s.is_none() && hub.peer_count(room) == 0 {
        return Err(ApiError::not_found(room));
    }
    Ok(s)
}

async fn room_meta(hub: &Hub, room: &str) -> ApiResult {
    let s = existing(hub, room).await?;
    Ok(json_ok(&room_json(hub, room, s.as_ref())))
}

/// Runs `f` on the loaded room (loading it if needed).
async fn inspect<T: Send + 'static>(
    hub: &Arc<Hub>,
    room: &str,
    f: impl Fn(&Room) -> T + Send + Sync + 'static,
) -> Result<T, ApiError> {
    let f = Arc::new(f);
    let res = hub
        .call(
            room,
            |tx: tokio::sync::oneshot::Sender<Result<T, String>>| {
                let f = f.clone();
                RoomCmd::Inspect(Box::new(move |r| {
                    let _ = tx.send(r.map(|room| f(room)).map_err(str::to_owned));
                }))
            },
        )
        .await;
    match res {
        None => Err(ApiError::shutting_down()),
        Some(Err(reason)) => Err(ApiError::unavailable(reason)),
        Some(Ok(v)) => Ok(v),
    }
}

fn lenient_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    // `+` arrives as a space when the client did not percent-encode it.
    let s = s.trim().replace(' ', "+");
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if s.contains('-') || s.contains('_') {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    GeneralPurpose::new(alphabet, config).decode(s)
}

fn wants_v2(req: &Req) -> Result<bool, ApiError> {
    match req.query.get("encoding").map(String::as_str) {
        None | Some("v1") => Ok(false),
        Some("v2") => Ok(true),
        Some(other) => Err(ApiError::bad(
            "invalid_query",
            format!("encoding must be v1 or v2, not {other:?}"),
        )),
    }
}

async fn get_update(hub: &Arc<Hub>, room: &str, req: &Req) -> ApiResult {
    let v2 = wants_v2(req)?;
    let sv = match req.query.get("sv") {
        None => StateVector::default(),
        Some(b64) => {
            let bytes = lenient_base64(b64)
                .map_err(|e| ApiError::bad("invalid_state_vector", format!("not base64: {e}")))?;
            tandem_protocol::decode_state_vector(&bytes)
                .map_err(|e| ApiError::bad("invalid_state_vector", e.to_string()))?;
            StateVector::decode_v1(&bytes)
                .map_err(|e| ApiError::bad("invalid_state_vector", e.to_string()))?
        }
    };
    existing(hub, room).await?;
    let bytes = inspect(hub, room, move |r| {
        r.doc().transact().encode_state_as_update_v1(&sv)
    })
    .await?;
    if v2 {
        // off the room's thread: v2 is our own conversion of the v1 state (api/v2_out.rs)
        let v2 = blocking(move || v2_out::v1_to_v2(&bytes)).await?;
        return v2
            .map(binary)
            .map_err(|e| ApiError::unavailable(format!("cannot encode the document as v2: {e}")));
    }
    Ok(binary(bytes))
}

async fn get_state_vector(hub: &Arc<Hub>, room: &str) -> ApiResult {
    existing(hub, room).await?;
    let bytes = inspect(hub, room, |r| r.state_vector_v1()).await?;
    Ok(binary(bytes))
}

async fn get_json(hub: &Arc<Hub>, room: &str) -> ApiResult {
    existing(hub, room).await?;
    let value = inspect(hub, room, |r| doc_to_json(r.doc())).await?;
    match value {
        Ok(v) => Ok(json_ok(&v)),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_deep",
            e.to_string(),
        )),
    }
}

fn body_is_v2(req: &Req) -> Result<bool, ApiError> {
    let by_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with(V2_CONTENT_TYPE));
    Ok(by_type || wants_v2(req)?)
}

async fn post_update(
    hub: &Arc<Hub>,
    room: &str,
    req: &Req,
    body: Vec<u8>,
    author: String,
) -> ApiResult {
    let v2 = body_is_v2(req)?;
    if body.is_empty() {
        return Err(ApiError::bad("invalid_update", "empty body"));
    }
    let limits = hub.config.room.update_limits;
    let update = if v2 {
        let max_v1 = hub.config.max_frame_bytes;
        blocking(move || v2::v2_to_v1(&body, limits.max_any_depth, max_v1))
            .await?
            .map_err(|e| match e {
                v2::V2Error::TooDeep(_) => ApiError::bad("too_deep", e.to_string()),
                v2::V2Error::TooLarge(_) => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    e.to_string(),
                ),
                v2::V2Error::Invalid(_) => ApiError::bad("invalid_update", e.to_string()),
            })?
    } else {
        body
    };
    // Validate before loading the room so garbage never costs a room load.
    tandem_protocol::validate_update_v1(&update, &limits).map_err(|e| match e {
        tandem_protocol::DecodeError::TooDeep(..) => ApiError::bad("too_deep", e.to_string()),
        _ => ApiError::bad("invalid_update", e.to_string()),
    })?;
    let update = Arc::new(update);
    let res = hub
        .call(room, |reply| RoomCmd::ApplyExternal {
            update: update.as_ref().clone(),
            author: author.clone(),
            reply,
        })
        .await;
    match res {
        None => Err(ApiError::shutting_down()),
        Some(Ok(())) => {
            let s = stats(hub, room).await?;
            Ok(json_ok(&json!({
                "ok": true,
                "next_seq": s.map_or(1, |s| s.next_seq),
            })))
        }
        Some(Err(ApplyError::Rejected(PeerError::MissingDependencies { client, clock }))) => {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "missing_dependencies",
                format!(
                    "update depends on client {client} clock {clock}, which the room does not have"
                ),
            ))
        }
        Some(Err(ApplyError::Rejected(e))) => Err(ApiError::bad("invalid_update", e.to_string())),
        Some(Err(ApplyError::Unavailable(e))) => Err(ApiError::unavailable(e)),
        Some(Err(ApplyError::ShuttingDown)) => Err(ApiError::shutting_down()),
    }
}

async fn delete_room(hub: &Arc<Hub>, room: &str) -> ApiResult {
    let existed = stats(hub, room).await?.is_some() || hub.is_loaded(room);
    if !existed {
        return Err(ApiError::not_found(room));
    }
    // Held until storage is gone: peers reconnecting meanwhile are refused, not loaded.
    let _deleting = hub.begin_delete(room);
    hub.close_room(room, (close::ROOM_DELETED, "room deleted".into()))
        .await;
    let store = hub.store().clone();
    let name = room.to_owned();
    blocking(move || store.delete(&name).and_then(|()| store.flush()))
        .await?
        .map_err(ApiError::storage)?;
    tracing::info!(%room, "room deleted through the api");
    Ok(json_ok(&json!({ "deleted": room })))
}

async fn get_log(hub: &Arc<Hub>, room: &str, req: &Req) -> ApiResult {
    let limit = page_limit(req)?;
    let after = u64_param(req, "after")?.unwrap_or(0);
    let s = existing(hub, room).await?.unwrap_or_default();
    let store = hub.store().clone();
    let name = room.to_owned();
    let entries = blocking(move || store.log_after(&name, after, limit))
        .await?
        .map_err(ApiError::storage)?;
    let next = if entries.len() == limit {
        entries.last().map(|e| e.seq)
    } else {
        None
    };
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq,
                "time_ms": e.record.time_ms,
                "author": e.record.author,
                "size": e.record.update.len(),
            })
        })
        .collect();
    Ok(json_ok(&json!({
        "entries": rows,
        "snapshot_seq": s.snapshot_seq,
        "next_seq": s.next_seq.max(1),
        "next": next,
    })))
}

/// The SSE payload of one log entry.
pub fn entry_json(e: &LogEntry) -> Value {
    json!({
        "seq": e.seq,
        "time_ms": e.record.time_ms,
        "author": e.record.author,
        "update": STANDARD.encode(&e.record.update),
    })
}

fn update_event(e: &LogEntry) -> warp::sse::Event {
    warp::sse::Event::default()
        .id(e.seq.to_string())
        .event("update")
        .data(entry_json(e).to_string())
}

fn reset_event(snapshot_seq: u64, next_seq: u64) -> warp::sse::Event {
    warp::sse::Event::default()
        .id(snapshot_seq.to_string())
        .event("reset")
        .data(json!({ "snapshot_seq": snapshot_seq, "next_seq": next_seq }).to_string())
}

async fn events(hub: &Arc<Hub>, room: &str, req: &Req) -> ApiResult {
    let header_after = req
        .headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad("invalid_query", "Last-Event-ID must be a log position")
                })
        })
        .transpose()?;
    // Without a position the feed starts at the current end of the log (live changes only).
    let explicit = header_after.or(u64_param(req, "after")?);
    let (tx, rx) = tokio::sync::mpsc::channel::<warp::sse::Event>(64);
    // Subscribe before reading the log: nothing appended after the read can be missed.
    let live = hub.subscribe(room);
    let start = match explicit {
        Some(a) => a,
        None => stats(hub, room)
            .await?
            .map_or(0, |s| s.next_seq.saturating_sub(1)),
    };
    let hub2 = hub.clone();
    let name = room.to_owned();
    tokio::spawn(async move {
        let closing = hub2.closing.clone();
        tokio::select! {
            _ = feed(hub2, name, start, live, tx.clone()) => {}
            _ = tx.closed() => {}
            _ = closing.cancelled() => {}
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response())
}

/// Sends log entries after `last` from storage, resetting when they were compacted away.
/// Returns the new last position sent, or `None` when the consumer is gone.
async fn replay(
    hub: &Arc<Hub>,
    room: &str,
    mut last: u64,
    tx: &tokio::sync::mpsc::Sender<warp::sse::Event>,
) -> Option<u64> {
    loop {
        let hub2 = hub.clone();
        let name = room.to_owned();
        let read = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let store = hub2.store();
            let s = store.stats(&name).map_err(|e| e.to_string())?;
            let entries = store
                .log_after(&name, last, REPLAY_BATCH)
                .map_err(|e| e.to_string())?;
            // read after the log: entries from here on may not be durable yet; they reach the
            // consumer through the live feed once they are
            Ok((s, entries, hub2.unflushed_from(&name)))
        })
        .await;
        let (s, mut entries, unflushed) = match read {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(%room, error = %e, "change feed cannot read the log");
                return None;
            }
            Err(e) => {
                tracing::warn!(%room, error = %e, "change feed read task failed");
                return None;
            }
        };
        let s = s.unwrap_or_default();
        if last < s.snapshot_seq && entries.first().is_none_or(|e| e.seq > last + 1) {
            // Positions (last, snapshot_seq] exist only inside the snapshot now.
            tx.send(reset_event(s.snapshot_seq, s.next_seq))
                .await
                .ok()?;
            last = s.snapshot_seq;
            continue;
        }
        let n = entries.len();
        let capped = unflushed.is_some_and(|from| {
            let before = entries.len();
            entries.retain(|e| e.seq < from);
            entries.len() < before
        });
        for e in entries {
            if e.seq <= last {
                continue;
            }
            tx.send(update_event(&e)).await.ok()?;
            last = e.seq;
        }
        if n < REPLAY_BATCH || capped {
            return Some(last);
        }
    }
}

/// The change feed of one consumer: replay from the log, then live entries from the hub's
/// broadcast. Entries are sent in position order without gaps or repeats: live entries at or
/// below the last sent position are skipped, and a gap (the broadcast lagged) is filled from the
/// log.
async fn feed(
    hub: Arc<Hub>,
    room: String,
    start: u64,
    mut live: tokio::sync::broadcast::Receiver<Arc<LogEntry>>,
    tx: tokio::sync::mpsc::Sender<warp::sse::Event>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let Some(mut last) = replay(&hub, &room, start, &tx).await else {
        return;
    };
    loop {
        match live.recv().await {
            Ok(e) => {
                if e.seq <= last {
                    continue;
                }
                if e.seq > last + 1 {
                    match replay(&hub, &room, last, &tx).await {
                        Some(l) => last = l,
                        None => return,
                    }
                    if e.seq <= last {
                        continue;
                    }
                }
                if tx.send(update_event(&e)).await.is_err() {
                    return;
                }
                last = e.seq;
            }
            Err(RecvError::Lagged(_)) => match replay(&hub, &room, last, &tx).await {
                Some(l) => last = l,
                None => return,
            },
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod feed_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Condvar, Mutex};
    use tandem_store::{
        DocStore, LogRecord, RoomStats, SledStore, Snapshot, StoreConfig, StoreError, StoredRoom,
    };
    use yrs::{GetString, Text};

    /// A sled store whose `flush` and `delete` can be held: while closed, either reports that
    /// it started and then waits for the gate to open.
    struct GatedStore {
        inner: SledStore,
        closed: Mutex<bool>,
        opened: Condvar,
        entered: tokio::sync::mpsc::UnboundedSender<()>,
    }

    impl GatedStore {
        fn set_closed(&self, closed: bool) {
            *self.closed.lock().unwrap() = closed;
            self.opened.notify_all();
        }

        fn pass(&self) {
            let mut closed = self.closed.lock().unwrap();
            if *closed {
                let _ = self.entered.send(());
                while *closed {
                    closed = self.opened.wait(closed).unwrap();
                }
            }
        }
    }

    impl DocStore for GatedStore {
        fn load(&self, room: &str) -> Result<StoredRoom, StoreError> {
            self.inner.load(room)
        }
        fn append(&self, room: &str, entries: &[(u64, LogRecord)]) -> Result<(), StoreError> {
            self.inner.append(room, entries)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.pass();
            self.inner.flush()
        }
        fn compact(&self, room: &str, snapshot: &Snapshot) -> Result<(), StoreError> {
            self.inner.compact(room, snapshot)
        }
        fn delete(&self, room: &str) -> Result<(), StoreError> {
            self.pass();
            self.inner.delete(room)
        }
        fn list_rooms(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
            self.inner.list_rooms(after, limit)
        }
        fn stats(&self, room: &str) -> Result<Option<RoomStats>, StoreError> {
            self.inner.stats(room)
        }
        fn log_after(
            &self,
            room: &str,
            after: u64,
            limit: usize,
        ) -> Result<Vec<LogEntry>, StoreError> {
            self.inner.log_after(room, after, limit)
        }
    }

    /// A hub (default config: sync durability) over an open-gated store in `dir`, and the
    /// channel on which the store reports a held flush or delete.
    fn gated_hub(
        dir: &std::path::Path,
    ) -> (
        Arc<GatedStore>,
        Arc<Hub>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel();
        let store = Arc::new(GatedStore {
            inner: SledStore::open(&StoreConfig::new(dir)).unwrap(),
            closed: Mutex::new(false),
            opened: Condvar::new(),
            entered: entered_tx,
        });
        let hub = Hub::new(store.clone(), crate::ServerConfig::default());
        (store, hub, entered)
    }

    /// Opens the gate when dropped, so a failing assertion cannot leave a flush blocked (and
    /// the runtime waiting for it) forever.
    struct OpenOnDrop(Arc<GatedStore>);

    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.set_closed(false);
        }
    }

    fn edit(doc: &yrs::Doc, s: &str) -> Vec<u8> {
        let before = doc.transact().state_vector();
        let text = doc.get_or_insert_text("t");
        {
            let mut txn = doc.transact_mut();
            let len = text.get_string(&txn).len() as u32;
            text.insert(&mut txn, len, s);
        }
        doc.transact().encode_state_as_update_v1(&before)
    }

    async fn apply(hub: &Arc<Hub>, update: Vec<u8>) -> Result<(), ApplyError> {
        hub.call("feed", |reply| RoomCmd::ApplyExternal {
            update: update.clone(),
            author: "t".into(),
            reply,
        })
        .await
        .unwrap()
    }

    /// In sync mode an entry is in the store's log before it is flushed, and published to live
    /// subscribers only after. A replay in that window must stop before it: otherwise a
    /// consumer could be sent an update that a failing flush then loses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_stops_before_entries_not_yet_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, hub, mut entered) = gated_hub(dir.path());
        assert_eq!(hub.config.durability, tandem_store::Durability::Sync);
        let doc = yrs::Doc::with_client_id(5);
        apply(&hub, edit(&doc, "one")).await.unwrap();

        store.set_closed(true);
        let _open = OpenOnDrop(store.clone());
        let writer = {
            let hub = hub.clone();
            let update = edit(&doc, " two");
            tokio::spawn(async move { apply(&hub, update).await })
        };
        entered.recv().await.unwrap();
        // the second entry is in the log, not yet durable
        let logged: Vec<u64> = hub
            .store()
            .log_after("feed", 0, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(logged, [1, 2]);
        assert_eq!(hub.unflushed_from("feed"), Some(2));

        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        assert_eq!(replay(&hub, "feed", 0, &tx).await, Some(1));
        assert!(rx.try_recv().is_ok());
        assert!(
            rx.try_recv().is_err(),
            "replay sent an entry that is not durable"
        );

        store.set_closed(false);
        writer.await.unwrap().unwrap();
        assert_eq!(hub.unflushed_from("feed"), None);
        assert_eq!(replay(&hub, "feed", 1, &tx).await, Some(2));
        assert!(rx.try_recv().is_ok());
        hub.shutdown().await;
    }

    /// A peer or writer arriving while a DELETE is under way must not load the old state:
    /// storage is about to lose it, and the room would then append after positions that no
    /// longer exist. Its commands wait until the delete is done; then the room starts empty.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_room_being_deleted_loads_only_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, hub, mut entered) = gated_hub(dir.path());
        apply(&hub, edit(&yrs::Doc::with_client_id(5), "old"))
            .await
            .unwrap();

        store.set_closed(true);
        let _open = OpenOnDrop(store.clone());
        let deleting = {
            let hub = hub.clone();
            tokio::spawn(async move { delete_room(&hub, "feed").await.map(|_| ()) })
        };
        // the room's peers are closed and the delete is waiting at the store
        entered.recv().await.unwrap();
        let early = {
            let hub = hub.clone();
            tokio::spawn(
                async move { apply(&hub, edit(&yrs::Doc::with_client_id(6), "early")).await },
            )
        };
        // its room task exists while the delete is still held
        let mut loaded = hub.watch_loaded_rooms();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !hub.is_loaded("feed") {
                loaded.changed().await.unwrap();
            }
        })
        .await
        .expect("the early writer's room task started");

        store.set_closed(false);
        assert!(deleting.await.unwrap().is_ok());
        early
            .await
            .unwrap()
            .expect("applied once the delete was done");
        let stored = hub.store().load("feed").unwrap();
        assert!(stored.snapshot.is_none());
        let seqs: Vec<u64> = stored.log.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            [1],
            "only the early write, at the first position of an empty room"
        );
        apply(&hub, edit(&yrs::Doc::with_client_id(7), "fresh"))
            .await
            .unwrap();
        assert_eq!(hub.store().load("feed").unwrap().next_seq, 3);
        hub.shutdown().await;
    }
}
