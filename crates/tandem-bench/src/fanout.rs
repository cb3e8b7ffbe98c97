//! `fanout` and `saturate`: R rooms × C clients, each typing one character at H Hz into its own
//! Yjs document; every other client of the room must receive each character.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tandem_protocol::{UpdateLimits, encode_update, validate_update_v1};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use yrs::{Text, Transact};

use crate::client::Incoming;
use crate::measure::{LatencySummary, Receiver, SendLog, missing, new_histogram, summarize};
use crate::proc_stats::{self, Target};
use crate::{Ctx, Result};

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FanoutParams {
    pub rooms: usize,
    pub clients: usize,
    pub hz: f64,
    pub secs: f64,
    pub drain_secs: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FanoutResult {
    pub params: FanoutParams,
    pub connected: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub sent: u64,
    pub send_rate: f64,
    pub expected: u64,
    pub delivered: u64,
    pub missing: u64,
    pub deliveries_per_sec: f64,
    pub latency: LatencySummary,
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_pct: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
    pub generator_cpu_secs: f64,
    pub generator_cpu_pct: f64,
    pub secs: f64,
}

#[derive(Default)]
struct Outcome {
    hist: Option<Histogram<u64>>,
    delivered: u64,
    sent: u64,
    connected: bool,
    disconnected: bool,
}

struct Shared {
    logs: Vec<std::sync::Mutex<SendLog>>,
    delivered: AtomicU64,
    expected: AtomicU64,
}

/// Start signal: the instant typing starts and the number of connected clients per room.
#[derive(Clone, Default)]
struct Go {
    start: Option<Instant>,
    per_room: Arc<Vec<u64>>,
    stop: bool,
}

pub async fn run(ctx: &Ctx, p: FanoutParams, room_prefix: &str) -> Result<FanoutResult> {
    let shared = Arc::new(Shared {
        logs: (0..p.rooms)
            .map(|_| std::sync::Mutex::new(SendLog::default()))
            .collect(),
        delivered: AtomicU64::new(0),
        expected: AtomicU64::new(0),
    });
    let (ready_tx, mut ready_rx) = mpsc::channel::<(usize, bool)>(p.rooms * p.clients + 1);
    let (go_tx, go_rx) = watch::channel(Go::default());
    let connect_gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(p.rooms * p.clients);
    for room in 0..p.rooms {
        let name = format!("{room_prefix}-{room}");
        ctx.endpoint.prepare_room(&name).await?;
        for _ in 0..p.clients {
            let client_id = u64::from(rand::random_range(1..u32::MAX));
            tasks.push(tokio::spawn(client_task(
                ctx.clone(),
                p,
                room,
                name.clone(),
                client_id,
                shared.clone(),
                ready_tx.clone(),
                go_rx.clone(),
                connect_gate.clone(),
            )));
        }
    }
    drop(ready_tx);
    let mut per_room = vec![0u64; p.rooms];
    let mut failures = 0u64;
    while let Some((room, ok)) = ready_rx.recv().await {
        if ok {
            per_room[room] += 1;
        } else {
            failures += 1;
        }
    }
    let server_before = ctx.server_sample();
    let gen_before = proc_stats::sample(Target::OwnProcess);
    let start = Instant::now() + Duration::from_millis(50);
    let _ = go_tx.send(Go {
        start: Some(start),
        per_room: Arc::new(per_room.clone()),
        stop: false,
    });
    let send_end = start + Duration::from_secs_f64(p.secs);
    tokio::time::sleep_until(send_end).await;
    // Drain: wait until every expected delivery arrived, or the drain time is up.
    let drain_end = send_end + Duration::from_secs_f64(p.drain_secs);
    let settle = Duration::from_millis(200);
    loop {
        let now = Instant::now();
        let done = shared.delivered.load(Ordering::Relaxed)
            >= shared.expected.load(Ordering::Relaxed)
            && now >= send_end + settle;
        if done || now >= drain_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed_end = Instant::now();
    let server_after = ctx.server_sample();
    let gen_after = proc_stats::sample(Target::OwnProcess);
    let _ = go_tx.send(Go {
        start: Some(start),
        per_room: Arc::new(per_room.clone()),
        stop: true,
    });
    let mut hist = new_histogram();
    let mut res_sent = 0;
    let mut delivered = 0;
    let mut connected = 0;
    let mut disconnects = 0;
    for t in tasks {
        let Ok(o) = t.await else { continue };
        if let Some(h) = &o.hist {
            let _ = hist.add(h);
        }
        res_sent += o.sent;
        delivered += o.delivered;
        connected += o.connected as u64;
        disconnects += o.disconnected as u64;
    }
    let expected = shared.expected.load(Ordering::Relaxed);
    let wall = (elapsed_end - start).as_secs_f64().max(1e-9);
    let server_cpu = match (server_before, server_after) {
        (Some(a), Some(b)) => Some(b.cpu_secs - a.cpu_secs),
        _ => None,
    };
    let gen_cpu = match (gen_before, gen_after) {
        (Some(a), Some(b)) => b.cpu_secs - a.cpu_secs,
        _ => 0.0,
    };
    Ok(FanoutResult {
        params: p,
        connected,
        connect_failures: failures,
        disconnects,
        sent: res_sent,
        send_rate: res_sent as f64 / p.secs,
        expected,
        delivered,
        missing: missing(expected, delivered),
        deliveries_per_sec: delivered as f64 / p.secs,
        latency: summarize(&hist),
        server_cpu_secs: server_cpu,
        server_cpu_pct: server_cpu.map(|c| 100.0 * c / wall),
        server_peak_rss_mib: server_after.map(|s| s.hwm_kib as f64 / 1024.0),
        generator_cpu_secs: gen_cpu,
        generator_cpu_pct: 100.0 * gen_cpu / wall,
        secs: wall,
    })
}

#[allow(clippy::too_many_arguments)]
async fn client_task(
    ctx: Ctx,
    p: FanoutParams,
    room: usize,
    name: String,
    client_id: u64,
    shared: Arc<Shared>,
    ready: mpsc::Sender<(usize, bool)>,
    mut go: watch::Receiver<Go>,
    gate: Arc<Semaphore>,
) -> Outcome {
    let doc = yrs::Doc::with_client_id(client_id);
    let text = doc.get_or_insert_text("text");
    let conn = {
        let _permit = gate.acquire().await;
        match ctx.endpoint.connect(&name).await {
            Ok(mut c) => match c.handshake(&doc, ctx.endpoint.connect_timeout).await {
                Ok(_) => Some(c),
                Err(e) => {
                    ctx.note_error(&e);
                    None
                }
            },
            Err(e) => {
                ctx.note_error(&e);
                None
            }
        }
    };
    let _ = ready.send((room, conn.is_some())).await;
    drop(ready);
    let Some(conn) = conn else {
        return Outcome::default();
    };
    let mut out = Outcome {
        connected: true,
        ..Outcome::default()
    };
    // Wait for the start signal.
    let go_state = loop {
        let g = go.borrow_and_update().clone();
        if g.start.is_some() {
            break g;
        }
        if go.changed().await.is_err() {
            return out;
        }
    };
    let (Some(start), per_room) = (go_state.start, go_state.per_room) else {
        return out;
    };
    let others = per_room.get(room).copied().unwrap_or(1).saturating_sub(1);
    let period = Duration::from_secs_f64(1.0 / p.hz.max(1e-6));
    let phase = period.mul_f64(rand::random::<f64>());
    let mut tick = tokio::time::interval_at(start + phase, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let send_end = start + Duration::from_secs_f64(p.secs);
    let mut hist = new_histogram();
    let mut receiver = Receiver::default();
    let mut clock: u32 = 0;
    let mut sending = true;
    let limits = UpdateLimits::default();
    let mut conn = conn;
    loop {
        tokio::select! {
            _ = tick.tick(), if sending => {
                if Instant::now() >= send_end {
                    sending = false;
                    continue;
                }
                let update = {
                    let mut txn = doc.transact_mut();
                    let len = text.len(&txn);
                    text.insert(&mut txn, len, "x");
                    txn.encode_update_v1()
                };
                let msg = encode_update(&update);
                let at = ctx.now_ns();
                if let Ok(mut log) = shared.logs[room].lock() {
                    log.record(client_id, clock, 1, at);
                }
                clock += 1;
                shared.expected.fetch_add(others, Ordering::Relaxed);
                if conn.send(&msg).await.is_err() {
                    out.disconnected = true;
                    break;
                }
                out.sent += 1;
            }
            changed = go.changed() => {
                if changed.is_err() || go.borrow().stop {
                    break;
                }
            }
            msgs = conn.recv() => {
                let msgs = match msgs {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => { out.disconnected = true; break; }
                };
                for m in msgs {
                    let payload = match m {
                        Incoming::Update(u) | Incoming::SyncStep2(u) => u,
                        Incoming::SyncStep1(sv) => {
                            let _ = conn.answer_step1(&doc, &sv).await;
                            continue;
                        }
                    };
                    let Ok(info) = validate_update_v1(&payload, &limits) else { continue };
                    let now = ctx.now_ns();
                    let new = match shared.logs[room].lock() {
                        Ok(log) => receiver.attribute(&info.struct_ranges, Some(client_id), &log, now, &mut hist),
                        Err(_) => 0,
                    };
                    shared.delivered.fetch_add(new, Ordering::Relaxed);
                }
            }
        }
    }
    out.delivered = receiver.delivered;
    out.hist = Some(hist);
    conn.close().await;
    out
}

pub fn table(rows: &[(String, &FanoutResult)]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<18} {:>5} {:>5} {:>6} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}\n",
        "run",
        "rooms",
        "cl",
        "Hz",
        "sent/s",
        "deliv/s",
        "missing",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "srv CPU%",
        "srv MiB",
        "gen CPU%"
    ));
    for (label, r) in rows {
        s.push_str(&format!(
            "{:<18} {:>5} {:>5} {:>6.1} {:>9.0} {:>10.0} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>8} {:>8.1}\n",
            label,
            r.params.rooms,
            r.params.clients,
            r.params.hz,
            r.send_rate,
            r.deliveries_per_sec,
            r.missing,
            r.latency.p50_ms,
            r.latency.p95_ms,
            r.latency.p99_ms,
            r.latency.max_ms,
            r.server_cpu_pct.map_or("-".into(), |v| format!("{v:.1}")),
            r.server_peak_rss_mib.map_or("-".into(), |v| format!("{v:.1}")),
            r.generator_cpu_pct,
        ));
        if r.connect_failures > 0 || r.disconnects > 0 {
            s.push_str(&format!(
                "{:<18} connect failures {}, disconnects {}\n",
                "", r.connect_failures, r.disconnects
            ));
        }
    }
    s
}
