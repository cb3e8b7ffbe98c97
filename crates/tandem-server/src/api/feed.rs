//! The audit log (`GET /api/rooms/{room}/log`) and the Server-Sent Events change feed
//! (`GET /api/rooms/{room}/events`): a replay from storage, then live entries from the hub's
//! broadcast, in position order without gaps or repeats. Must never send an entry that is not
//! durable yet (a replay stops at the hub's unflushed mark).

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tandem_store::LogEntry;
use warp::Reply;

use super::{ApiError, ApiResult, Req, blocking, existing, json_ok, page_limit, stats, u64_param};
use crate::hub::Hub;

/// Log entries read per step while replaying the change feed.
const REPLAY_BATCH: usize = 256;

pub(super) async fn get_log(hub: &Arc<Hub>, room: &str, req: &Req) -> ApiResult {
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

pub(super) async fn events(hub: &Arc<Hub>, room: &str, req: &Req) -> ApiResult {
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
    use crate::api::rooms::delete_room;
    use crate::hub::{ApplyError, RoomCmd};
    use std::sync::{Condvar, Mutex};
    use tandem_store::{
        DocStore, LogRecord, RoomStats, SledStore, Snapshot, StoreConfig, StoreError, StoredRoom,
    };
    use yrs::{GetString, ReadTxn, Text, Transact};

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
