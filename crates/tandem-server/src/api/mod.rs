//! The HTTP API under `/api/rooms`: room listing and metadata, the document as a Yjs update,
//! state vector or JSON, writes, deletion, the audit log and the Server-Sent Events change feed.
//!
//! Every error is JSON `{"code": "...", "message": "..."}` with a stable `code` (see
//! `docs/openapi.yaml`). One handler parses the path itself so room names may hold any
//! percent-encoded byte (`%2F` included) and every failure takes the same JSON shape.
//!
//! Layout: this file holds the filter, the dispatch, `Req` and the helpers every resource
//! shares; `rooms.rs` (list, metadata, delete), `update.rs` (the document as an update, state
//! vector or JSON; writes), `feed.rs` (the audit log and the SSE change feed), `v2.rs` /
//! `v2_out.rs` (the v2 update encoding). Must never import `routes` (which mounts this filter).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Buf;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tandem_room::Room;
use tandem_store::RoomStats;
use warp::http::{HeaderMap, Method, StatusCode, header};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::auth::Access;
use crate::hub::{Hub, RoomCmd};
use crate::room_name::room_from_path;

pub use crate::api_error::ApiError;
pub use crate::bearer::authorize_bearer;
pub use feed::entry_json;

mod feed;
#[cfg(test)]
mod fidelity_tests;
mod rooms;
mod update;
mod v2;
mod v2_out;

/// Default and largest page of `GET /api/rooms` and `GET /api/rooms/{room}/log`.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// Content type selecting the v2 encoding for `POST .../update`.
pub const V2_CONTENT_TYPE: &str = "application/vnd.yjs.update.v2";

pub(crate) type ApiResult = Result<Response, ApiError>;

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
            Method::GET => rooms::list_rooms(&hub, &req).await,
            _ => Err(method_not_allowed()),
        };
    };
    match (req.method.clone(), req.action.as_deref()) {
        (Method::GET, None) => rooms::room_meta(&hub, &room).await,
        (Method::DELETE, None) => rooms::delete_room(&hub, &room).await,
        (Method::GET, Some("update")) => update::get_update(&hub, &room, &req).await,
        (Method::POST, Some("update")) => {
            let bytes = read_body(body, hub.config.max_frame_bytes).await?;
            update::post_update(&hub, &room, &req, bytes, author).await
        }
        (Method::GET, Some("state-vector")) => update::get_state_vector(&hub, &room).await,
        (Method::GET, Some("json")) => update::get_json(&hub, &room).await,
        (Method::GET, Some("log")) => feed::get_log(&hub, &room, &req).await,
        (Method::GET, Some("events")) => feed::events(&hub, &room, &req).await,
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

fn json_ok(v: &Value) -> Response {
    warp::reply::json(v).into_response()
}

fn binary(bytes: Vec<u8>) -> Response {
    warp::reply::with_header(bytes, header::CONTENT_TYPE, "application/octet-stream")
        .into_response()
}

/// The room's stats, or 404 when it has neither stored data nor peers.
async fn existing(hub: &Hub, room: &str) -> Result<Option<RoomStats>, ApiError> {
    let s = stats(hub, room).await?;
    if s.is_none() && hub.peer_count(room) == 0 {
        return Err(ApiError::not_found(room));
    }
    Ok(s)
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
