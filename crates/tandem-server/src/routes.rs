//! warp filters: one small function per route, state injected with `with_hub`.
//!
//! Any request carrying a WebSocket upgrade is a room connection (the room is the URL path, as
//! y-websocket builds it); plain GETs reach the demo page and the health check.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use include_dir::{Dir, include_dir};
use tandem_room::PeerInfo;
use warp::http::{StatusCode, header};
use warp::path::FullPath;
use warp::{Filter, Rejection, Reply};

use crate::auth;
use crate::bearer::authorize_bearer;
use crate::hub::Hub;
use crate::room_name::room_from_path;
use crate::upgrade;
use crate::ws::serve_peer;

/// The built web demo (`web-demo/dist`), embedded at compile time.
static DEMO: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../web-demo/dist");

fn with_hub(hub: Arc<Hub>) -> impl Filter<Extract = (Arc<Hub>,), Error = Infallible> + Clone {
    warp::any().map(move || hub.clone())
}

pub fn routes(hub: Arc<Hub>) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    websocket(hub.clone())
        .or(crate::api::api(hub.clone()))
        .or(healthz())
        .or(readyz(hub.clone()))
        .or(metrics(hub.clone()))
        .or(demo())
        .recover(handle_rejection)
}

fn websocket(hub: Arc<Hub>) -> impl Filter<Extract = (Box<dyn Reply>,), Error = Rejection> + Clone {
    // `warp::ws()` validates the upgrade request; the upgrade itself is ours (`upgrade.rs`), so
    // the socket gets our config. Its `OnUpgrade` is cloned out first (ws() removes it).
    warp::ext::optional::<warp::hyper::upgrade::OnUpgrade>()
        .and(warp::ws())
        .and(warp::header::<String>("sec-websocket-key"))
        .and(warp::path::full())
        .and(warp::query::<HashMap<String, String>>().or_else(|_| async {
            Ok::<_, Rejection>((HashMap::new(),))
        }))
        .and(warp::header::optional::<String>("origin"))
        .and(with_hub(hub))
        .map(
            |on_upgrade,
             _ws: warp::ws::Ws,
             key: String,
             path: FullPath,
             query: HashMap<String, String>,
             origin: Option<String>,
             hub: Arc<Hub>|
             -> Box<dyn Reply> {
                let room = match room_from_path(path.as_str()) {
                    Ok(room) => room,
                    Err(reason) => {
                        return Box::new(warp::reply::with_status(reason, StatusCode::BAD_REQUEST));
                    }
                };
                if hub.is_shutting_down() {
                    return Box::new(warp::reply::with_status(
                        "server is shutting down",
                        StatusCode::SERVICE_UNAVAILABLE,
                    ));
                }
                if !auth::origin_allowed(&hub.config.allowed_origins, origin.as_deref()) {
                    tracing::warn!(%room, origin = ?origin, "websocket refused: origin not allowed");
                    return Box::new(warp::reply::with_status(
                        "origin not allowed",
                        StatusCode::FORBIDDEN,
                    ));
                }
                let info = match authorize_ws(&hub, &room, query.get("token").map(String::as_str)) {
                    Ok(info) => info,
                    Err((status, reason)) => {
                        tracing::warn!(%room, %reason, "websocket refused");
                        return Box::new(warp::reply::with_status(reason, status));
                    }
                };
                let config = upgrade::config(hub.config.max_frame_bytes);
                let tracker = hub.tasks.clone();
                let req = upgrade::UpgradeRequest { key, on_upgrade };
                Box::new(upgrade::reply(req, config, move |socket| {
                    tracker.track_future(serve_peer(socket, hub, room, info))
                }))
            },
        )
}

/// The peer's rights from its `?token=` (everyone writes as `anonymous` with auth off).
fn authorize_ws(
    hub: &Hub,
    room: &str,
    token: Option<&str>,
) -> Result<PeerInfo, (StatusCode, String)> {
    let Some(auth) = &hub.config.auth else {
        return Ok(PeerInfo::default());
    };
    let Some(token) = token else {
        hub.metrics.auth_failure(auth::TokenError::Missing.code());
        return Err((
            StatusCode::UNAUTHORIZED,
            "missing token (pass ?token=)".to_owned(),
        ));
    };
    let claims = auth.verify(token, auth::now_secs()).map_err(|e| {
        hub.metrics.auth_failure(e.code());
        (StatusCode::UNAUTHORIZED, e.to_string())
    })?;
    if !claims.covers(room) {
        hub.metrics.auth_failure("forbidden_room");
        return Err((
            StatusCode::FORBIDDEN,
            "token does not grant this room".to_owned(),
        ));
    }
    Ok(PeerInfo {
        read_only: claims.access < auth::Access::Write,
        author: Arc::from(claims.author()),
    })
}

fn healthz() -> impl Filter<Extract = (&'static str,), Error = Rejection> + Clone {
    warp::path!("healthz").and(warp::get()).map(|| "ok")
}

/// 200 when the store takes a write and a flush, 503 otherwise (or while shutting down).
fn readyz(hub: Arc<Hub>) -> impl Filter<Extract = (Box<dyn Reply>,), Error = Rejection> + Clone {
    warp::path!("readyz")
        .and(warp::get())
        .and(with_hub(hub))
        .then(|hub: Arc<Hub>| async move {
            if hub.is_shutting_down() {
                return Box::new(warp::reply::with_status(
                    "shutting down".to_owned(),
                    StatusCode::SERVICE_UNAVAILABLE,
                )) as Box<dyn Reply>;
            }
            let store = hub.store().clone();
            let res = tokio::task::spawn_blocking(move || store.check_writable()).await;
            let reply = match res {
                Ok(Ok(())) => warp::reply::with_status("ready".to_owned(), StatusCode::OK),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "readiness check failed");
                    warp::reply::with_status(
                        format!("storage not writable: {e}"),
                        StatusCode::SERVICE_UNAVAILABLE,
                    )
                }
                Err(e) => warp::reply::with_status(
                    format!("readiness check failed: {e}"),
                    StatusCode::SERVICE_UNAVAILABLE,
                ),
            };
            Box::new(reply) as Box<dyn Reply>
        })
}

/// Prometheus metrics (OpenMetrics text); needs an admin token when auth is on.
fn metrics(
    hub: Arc<Hub>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(with_hub(hub))
        .map(|headers: warp::http::HeaderMap, hub: Arc<Hub>| {
            if let Err(e) = authorize_bearer(&hub, &headers, None, auth::Access::Admin) {
                return e.into_response();
            }
            let body = hub.metrics.encode();
            warp::reply::with_header(body, header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
                .into_response()
        })
}

fn demo() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let index = warp::path::end()
        .and(warp::get())
        .map(|| asset("index.html"));
    // Files live under `assets/` inside the embedded dir. A missing asset is answered with 404
    // here rather than rejected, so the WebSocket filter's rejection cannot turn it into a 400.
    let assets = warp::path!("assets" / String)
        .and(warp::get())
        .map(|name: String| {
            asset(&format!("assets/{name}")).unwrap_or_else(|| {
                warp::reply::with_status("not found", StatusCode::NOT_FOUND).into_response()
            })
        });
    index
        .and_then(|r: Option<warp::reply::Response>| async move {
            r.ok_or_else(warp::reject::not_found)
        })
        .or(assets)
        .unify()
}

fn asset(name: &str) -> Option<warp::reply::Response> {
    let file = DEMO.get_file(name)?;
    let mime = match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    let reply = warp::reply::with_header(file.contents(), header::CONTENT_TYPE, mime);
    let reply = warp::reply::with_header(reply, header::CACHE_CONTROL, "no-cache");
    Some(reply.into_response())
}

async fn handle_rejection(err: Rejection) -> Result<impl Reply, Infallible> {
    let (status, msg) = if err.is_not_found() {
        (StatusCode::NOT_FOUND, "not found".to_owned())
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_owned(),
        )
    } else {
        tracing::debug!(?err, "unhandled rejection");
        (StatusCode::BAD_REQUEST, "bad request".to_owned())
    };
    Ok(warp::reply::with_status(msg, status))
}
