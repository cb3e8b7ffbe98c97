//! The JSON error reply of the HTTP API (`{"code": "...", "message": "..."}`, codes listed in
//! `docs/openapi.yaml`). Neutral ground: used by `api/` and by the bearer-token checks in
//! `bearer.rs` (which `routes.rs` also uses for `/metrics`), so none of them imports another.

use serde_json::json;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

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

    pub(crate) fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found(room: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "room_not_found",
            format!("room {room:?} has no stored data"),
        )
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "room_unavailable", message)
    }

    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_error",
            e.to_string(),
        )
    }

    pub(crate) fn shutting_down() -> Self {
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
