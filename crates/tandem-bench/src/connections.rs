//! `connections`: K idle clients over K/10 rooms; the server's RSS per loaded room and per
//! idle connection.

use std::time::Duration;

use tandem_protocol::encode_update;
use tokio::sync::{Semaphore, watch};
use yrs::{Text, Transact};

use crate::{Ctx, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionsArgs {
    /// Idle clients in total; rooms = clients / 10.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Seconds to let the server settle before each RSS reading.
    #[arg(long, default_value_t = 1.0)]
    pub settle_secs: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct ConnectionsResult {
    pub workload: &'static str,
    pub clients: usize,
    pub rooms: usize,
    pub connected: usize,
    pub connect_failures: usize,
    pub rss_baseline_kib: u64,
    pub rss_rooms_kib: u64,
    pub rss_all_kib: u64,
    /// (RSS with one client in each room − baseline) / rooms: a loaded small room + 1 connection.
    pub kib_per_room: f64,
    /// (RSS with all clients − RSS with one per room) / the other clients.
    pub kib_per_connection: f64,
}

pub async fn run(ctx: &Ctx, a: &ConnectionsArgs) -> Result<(String, serde_json::Value)> {
    let rooms = (a.clients / 10).max(1);
    let prefix = Ctx::room_prefix("conn");
    let settle = Duration::from_secs_f64(a.settle_secs.max(0.0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = std::sync::Arc::new(Semaphore::new(64));
    tokio::time::sleep(settle).await;
    let baseline = ctx.server_sample().map_or(0, |s| s.rss_kib);

    // Phase 1: one client per room, each writing a few characters (a small, loaded room).
    let mut handles = Vec::new();
    for r in 0..rooms {
        let room = format!("{prefix}-{r}");
        ctx.endpoint.prepare_room(&room).await?;
        handles.push(tokio::spawn(idle_client(
            ctx.clone(),
            room,
            Some(format!("room {r}")),
            stop_rx.clone(),
            gate.clone(),
        )));
    }
    let mut connected = 0;
    let mut idle = Vec::new();
    for h in handles.drain(..) {
        if let Ok(Some(t)) = h.await {
            connected += 1;
            idle.push(t);
        }
    }
    tokio::time::sleep(settle).await;
    let with_rooms = ctx.server_sample().map_or(0, |s| s.rss_kib);

    // Phase 2: the other clients, idle.
    for i in rooms..a.clients {
        let room = format!("{prefix}-{}", i % rooms);
        handles.push(tokio::spawn(idle_client(
            ctx.clone(),
            room,
            None,
            stop_rx.clone(),
            gate.clone(),
        )));
    }
    for h in handles.drain(..) {
        if let Ok(Some(t)) = h.await {
            connected += 1;
            idle.push(t);
        }
    }
    tokio::time::sleep(settle).await;
    let with_all = ctx.server_sample().map_or(0, |s| s.rss_kib);
    let _ = stop_tx.send(true);
    for t in idle {
        let _ = t.await;
    }
    let others = a.clients.saturating_sub(rooms).max(1);
    let res = ConnectionsResult {
        workload: "connections",
        clients: a.clients,
        rooms,
        connected,
        connect_failures: a.clients - connected.min(a.clients),
        rss_baseline_kib: baseline,
        rss_rooms_kib: with_rooms,
        rss_all_kib: with_all,
        kib_per_room: with_rooms.saturating_sub(baseline) as f64 / rooms as f64,
        kib_per_connection: with_all.saturating_sub(with_rooms) as f64 / others as f64,
    };
    let table = format!(
        "connections: {} idle clients over {} rooms\n\
         {:>10} {:>9} {:>12} {:>12} {:>12} {:>10} {:>10}\n\
         {:>10} {:>9} {:>12} {:>12} {:>12} {:>10.1} {:>10.1}",
        a.clients,
        rooms,
        "connected",
        "failures",
        "base KiB",
        "rooms KiB",
        "all KiB",
        "KiB/room",
        "KiB/conn",
        res.connected,
        res.connect_failures,
        res.rss_baseline_kib,
        res.rss_rooms_kib,
        res.rss_all_kib,
        res.kib_per_room,
        res.kib_per_connection
    );
    Ok((table, serde_json::to_value(&res).unwrap_or_default()))
}

/// Connects and synchronises one client (writing `text` first if given); returns a task that
/// keeps reading the socket (answering pings) until `stop`.
async fn idle_client(
    ctx: Ctx,
    room: String,
    text: Option<String>,
    mut stop: watch::Receiver<bool>,
    gate: std::sync::Arc<Semaphore>,
) -> Option<tokio::task::JoinHandle<()>> {
    let doc = yrs::Doc::new();
    let mut conn = {
        let _permit = gate.acquire().await.ok()?;
        let mut conn = match ctx.endpoint.connect(&room).await {
            Ok(c) => c,
            Err(e) => {
                ctx.note_error(&e);
                return None;
            }
        };
        if let Err(e) = conn.handshake(&doc, ctx.timeout).await {
            ctx.note_error(&e);
            return None;
        }
        if let Some(t) = text {
            let shared = doc.get_or_insert_text("text");
            let update = {
                let mut txn = doc.transact_mut();
                shared.insert(&mut txn, 0, &t);
                txn.encode_update_v1()
            };
            if let Err(e) = conn.send(&encode_update(&update)).await {
                ctx.note_error(&e);
                return None;
            }
        }
        conn
    };
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                r = conn.recv() => {
                    if !matches!(r, Ok(Some(_))) {
                        return;
                    }
                }
                _ = stop.changed() => break,
            }
        }
        conn.close().await;
    }))
}
