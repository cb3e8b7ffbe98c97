//! The document of `/api/rooms/{room}`: `GET .../update` (v1 or v2, optionally a diff against
//! a state vector), `GET .../state-vector`, `GET .../json`, and writes with `POST .../update`.
//! Writes are validated before the room is loaded and applied only through the room task.

use std::sync::Arc;

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use serde_json::json;
use tandem_room::PeerError;
use warp::http::{StatusCode, header};
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact};

use super::{
    ApiError, ApiResult, Req, V2_CONTENT_TYPE, binary, blocking, existing, inspect, json_ok, stats,
    v2, v2_out,
};
use crate::hub::{ApplyError, Hub, RoomCmd};
use crate::json::doc_to_json;

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

pub(super) async fn get_update(hub: &Arc<Hub>, room: &str, req: &Req) -> ApiResult {
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

pub(super) async fn get_state_vector(hub: &Arc<Hub>, room: &str) -> ApiResult {
    existing(hub, room).await?;
    let bytes = inspect(hub, room, |r| r.state_vector_v1()).await?;
    Ok(binary(bytes))
}

pub(super) async fn get_json(hub: &Arc<Hub>, room: &str) -> ApiResult {
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

pub(super) async fn post_update(
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
