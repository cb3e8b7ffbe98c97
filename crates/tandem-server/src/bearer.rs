//! Bearer-token checks for HTTP requests: the API (`api/`) and `GET /metrics` (`routes.rs`).
//! Refusals are JSON [`ApiError`]s and are counted in the metrics. Must never import `api` or
//! `routes` (both use it).

use warp::http::{HeaderMap, StatusCode, header};

use crate::api_error::ApiError;
use crate::auth::{Access, TokenError, now_secs};
use crate::hub::Hub;

/// For any request (the API's and `/metrics`): the bearer token in `headers` must grant `need`
/// (and `room`, when given). Refusals are counted in the metrics by their error code.
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
