//! `/api/rooms` (the paged room list), `GET /api/rooms/{room}` (metadata) and
//! `DELETE /api/rooms/{room}`.

use std::sync::Arc;

use serde_json::{Value, json};
use tandem_room::close;
use tandem_store::RoomStats;

use super::{ApiError, ApiResult, Req, blocking, existing, json_ok, page_limit, stats};
use crate::hub::Hub;

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

pub(super) async fn list_rooms(hub: &Hub, req: &Req) -> ApiResult {
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

pub(super) async fn room_meta(hub: &Hub, room: &str) -> ApiResult {
    let s = existing(hub, room).await?;
    Ok(json_ok(&room_json(hub, room, s.as_ref())))
}

pub(super) async fn delete_room(hub: &Arc<Hub>, room: &str) -> ApiResult {
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
