//! `ingest`: one writer replays an editing trace as fast as the server takes it, with readers
//! attached; then the server is restarted and a fresh client must hold exactly the final text.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tandem_protocol::{UpdateLimits, encode_update, validate_update_v1};
use tokio::sync::Notify;
use tokio::time::Instant;
use yrs::updates::decoder::Decode;
use yrs::{GetString, Map, ReadTxn, Transact};

use crate::client::{Conn, Incoming};
use crate::measure::Receiver;
use crate::proc_stats::{self, Target};
use crate::server::ServerCtl;
use crate::trace::{Trace, to_updates};
use crate::{BenchError, Ctx, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// Trace file inside --traces (or a path).
    #[arg(long, default_value = "automerge-paper.json.gz")]
    pub trace: String,
    /// Replay only the first N transactions (default: the whole trace).
    #[arg(long)]
    pub ops: Option<usize>,
    /// Readers attached while the writer pushes.
    #[arg(long, default_value_t = 3)]
    pub readers: usize,
    /// Most characters in flight (sent by the writer, not yet seen by the first reader).
    #[arg(long, default_value_t = 512)]
    pub window: u32,
    /// Skip the restart even when the server is managed.
    #[arg(long)]
    pub no_restart: bool,
    /// Give up (an error naming how far the push got) once pushing has taken this long.
    #[arg(long)]
    pub max_secs: Option<f64>,
}

#[derive(Debug, serde::Serialize)]
pub struct IngestResult {
    pub workload: &'static str,
    pub trace: String,
    pub updates: usize,
    pub secs: f64,
    pub updates_per_sec: f64,
    pub readers_complete: usize,
    pub server_cpu_secs: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
    pub generator_cpu_secs: f64,
    /// `kill`, `term`, or `none` when the server was not restarted.
    pub restart: String,
    pub verified: bool,
    pub expected_chars: usize,
    pub got_chars: usize,
    /// Writer clocks (inserted characters) the server no longer had after the restart.
    pub lost_clocks: u64,
}

pub async fn run(
    ctx: &Ctx,
    server: &mut ServerCtl,
    a: &IngestArgs,
) -> Result<(String, serde_json::Value)> {
    let path = if a.trace.contains('/') {
        a.trace.clone().into()
    } else {
        ctx.traces.join(&a.trace)
    };
    let mut trace = Trace::load(&path)?;
    if let Some(n) = a.ops {
        trace = trace.truncated(n);
    }
    let writer_id = u64::from(rand::random_range(1..u32::MAX));
    let (updates, doc) = to_updates(&trace, writer_id)?;
    // The sentinel: one more update, on a separate root map, so readers can tell the end.
    let (sentinel, final_clock) = {
        let map = doc.get_or_insert_map("bench");
        let mut txn = doc.transact_mut();
        map.insert(&mut txn, "done", true);
        let clock = txn.state_vector().get(&yrs::ClientID::new(writer_id));
        (txn.encode_update_v1(), clock)
    };
    drop(doc);
    let room = Ctx::room_prefix("ingest");
    ctx.endpoint.prepare_room(&room).await?;

    let seen = Arc::new(AtomicU32::new(0));
    let progress = Arc::new(Notify::new());
    let mut readers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(a.readers.max(1));
    for i in 0..a.readers {
        let ctx = ctx.clone();
        let room = room.clone();
        let seen = seen.clone();
        let progress = progress.clone();
        let ready = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            let r = reader(
                ctx,
                &room,
                writer_id,
                final_clock,
                i == 0,
                seen,
                progress,
                ready,
            )
            .await;
            r.ok()
        }));
    }
    drop(ready_tx);
    for _ in 0..a.readers {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => break,
        }
    }
    let doc = yrs::Doc::with_client_id(writer_id);
    let mut writer = ctx.endpoint.connect(&room).await?;
    writer.handshake(&doc, ctx.timeout).await?;

    let server_before = ctx.server_sample();
    let gen_before = proc_stats::sample(Target::OwnProcess);
    let t0 = Instant::now();
    let mut sent_clock: u32 = 0;
    let limits = UpdateLimits::default();
    let all = updates.iter().chain(std::iter::once(&sentinel));
    let mut all = all.peekable();
    let mut pushed = 0usize;
    while let Some(u) = all.peek() {
        if let Some(max) = a.max_secs
            && t0.elapsed().as_secs_f64() > max
        {
            let secs = t0.elapsed().as_secs_f64();
            return Err(BenchError::Timeout(format!(
                "gave up after {secs:.0} s (--max-secs): {pushed} of {} updates pushed, {:.0} updates/s",
                updates.len(),
                pushed as f64 / secs
            )));
        }
        let in_flight = sent_clock.saturating_sub(seen.load(Ordering::Acquire));
        if in_flight <= a.window || a.readers == 0 {
            let u = *u;
            all.next();
            if let Ok(info) = validate_update_v1(u, &limits)
                && let Some(&(_, _, end)) = info.struct_ranges.last()
            {
                sent_clock = sent_clock.max(end);
            }
            writer.send(&encode_update(u)).await?;
            pushed += 1;
            continue;
        }
        // Window full: read the writer's own socket (echoes) while waiting for progress.
        tokio::select! {
            m = writer.recv() => {
                if m?.is_none() {
                    return Err(BenchError::Protocol("server closed the writer".into()));
                }
            }
            _ = progress.notified() => {}
            _ = tokio::time::sleep(ctx.timeout) => {
                return Err(BenchError::Timeout("readers made no progress".into()));
            }
        }
    }
    // Keep draining the writer while readers finish.
    let mut complete = 0;
    let mut handles = readers.into_iter();
    let deadline = Instant::now() + ctx.timeout;
    let mut pending = handles.next();
    while let Some(h) = pending.as_mut() {
        tokio::select! {
            r = h => {
                if matches!(r, Ok(Some(()))) { complete += 1; }
                pending = handles.next();
            }
            m = writer.recv() => {
                if !matches!(m, Ok(Some(_))) {
                    // The writer's own socket is not needed any more.
                    tokio::time::sleep_until(deadline).await;
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let server_after = ctx.server_sample();
    let gen_after = proc_stats::sample(Target::OwnProcess);
    writer.close().await;

    let restart = if server.can_restart() && !a.no_restart {
        ctx.restart(server).await?;
        format!("{:?}", server.stop_signal()).to_lowercase()
    } else {
        "none".to_owned()
    };
    let (text, server_clock, _) = fetch_text(ctx, &room, &trace.end, writer_id).await?;
    let expected_clock = final_clock.saturating_sub(1); // the sentinel is not part of the text
    let res = IngestResult {
        workload: "ingest",
        trace: a.trace.clone(),
        updates: updates.len(),
        secs,
        updates_per_sec: updates.len() as f64 / secs.max(1e-9),
        readers_complete: complete,
        server_cpu_secs: server_before
            .zip(server_after)
            .map(|(b, a)| a.cpu_secs - b.cpu_secs),
        server_peak_rss_mib: server_after.map(|s| s.hwm_kib as f64 / 1024.0),
        generator_cpu_secs: gen_before
            .zip(gen_after)
            .map_or(0.0, |(b, a)| a.cpu_secs - b.cpu_secs),
        restart,
        verified: text == trace.end,
        expected_chars: trace.end.chars().count(),
        got_chars: text.chars().count(),
        lost_clocks: u64::from(expected_clock.saturating_sub(server_clock.min(expected_clock))),
    };
    let table = format!(
        "ingest: {} ({} updates), {} readers, window {}\n\
         {:<10} {:>10} {:>12} {:>8} {:>10} {:>9} {:>10} {:>9} {:>12}\n\
         {:<10} {:>10.2} {:>12.0} {:>8} {:>10} {:>9} {:>10} {:>9} {:>12}",
        a.trace,
        res.updates,
        a.readers,
        a.window,
        "server",
        "secs",
        "updates/s",
        "readers",
        "srv CPU s",
        "restart",
        "verified",
        "lost",
        "srv MiB",
        "",
        res.secs,
        res.updates_per_sec,
        res.readers_complete,
        res.server_cpu_secs
            .map_or("-".into(), |v| format!("{v:.2}")),
        res.restart,
        res.verified,
        res.lost_clocks,
        res.server_peak_rss_mib
            .map_or("-".into(), |v| format!("{v:.1}")),
    );
    Ok((table, serde_json::to_value(&res).unwrap_or_default()))
}

#[allow(clippy::too_many_arguments)]
async fn reader(
    ctx: Ctx,
    room: &str,
    writer: u64,
    final_clock: u32,
    publish: bool,
    seen: Arc<AtomicU32>,
    progress: Arc<Notify>,
    ready: tokio::sync::mpsc::Sender<Result<()>>,
) -> Result<()> {
    let doc = yrs::Doc::new();
    let setup = async {
        let mut c = ctx.endpoint.connect(room).await?;
        c.handshake(&doc, ctx.timeout).await?;
        Ok::<Conn, BenchError>(c)
    };
    let mut conn = match setup.await {
        Ok(c) => {
            let _ = ready.send(Ok(())).await;
            c
        }
        Err(e) => {
            let msg = e.to_string();
            let _ = ready.send(Err(e)).await;
            return Err(BenchError::Protocol(msg));
        }
    };
    drop(ready);
    let limits = UpdateLimits::default();
    let mut recv = Receiver::default();
    let log = crate::measure::SendLog::default();
    let mut hist = crate::measure::new_histogram();
    while recv.seen(writer) < final_clock {
        let msgs = tokio::time::timeout(ctx.timeout, conn.recv())
            .await
            .map_err(|_| BenchError::Timeout("reader waiting for updates".into()))??
            .ok_or_else(|| BenchError::Protocol("server closed a reader".into()))?;
        for m in msgs {
            match m {
                Incoming::Update(u) | Incoming::SyncStep2(u) => {
                    if let Ok(info) = validate_update_v1(&u, &limits) {
                        recv.attribute(&info.struct_ranges, None, &log, 0, &mut hist);
                    }
                }
                Incoming::SyncStep1(sv) => conn.answer_step1(&doc, &sv).await?,
            }
        }
        if publish {
            seen.store(recv.seen(writer), Ordering::Release);
            progress.notify_one();
        }
    }
    conn.close().await;
    Ok(())
}

/// Connects a fresh client, applies what the server sends until the root text `text` equals
/// `expected` (servers that load in the background send the content after the handshake) or the
/// timeout passes. Returns the text, the server's clock for `client`, and the milliseconds from
/// connect to that text.
pub async fn fetch_text(
    ctx: &Ctx,
    room: &str,
    expected: &str,
    client: u64,
) -> Result<(String, u32, f64)> {
    let t0 = std::time::Instant::now();
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("text");
    let mut conn = ctx.endpoint.connect(room).await?;
    let updates = conn.handshake(&doc, ctx.timeout).await?;
    apply_all(&doc, &updates)?;
    let deadline = tokio::time::Instant::now() + ctx.timeout;
    let mut got = text.get_string(&doc.transact());
    while got != expected {
        let msgs = match tokio::time::timeout_at(deadline, conn.recv()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        };
        for m in msgs {
            match m {
                Incoming::Update(u) | Incoming::SyncStep2(u) => {
                    apply_all(&doc, std::slice::from_ref(&u))?
                }
                Incoming::SyncStep1(sv) => conn.answer_step1(&doc, &sv).await?,
            }
        }
        got = text.get_string(&doc.transact());
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    conn.close().await;
    let clock = doc
        .transact()
        .state_vector()
        .get(&yrs::ClientID::new(client));
    Ok((got, clock, ms))
}

/// Applies received updates to `doc`, behind `catch_unwind`.
pub fn apply_all(doc: &yrs::Doc, updates: &[Vec<u8>]) -> Result<()> {
    for u in updates {
        let update = yrs::Update::decode_v1(u)
            .map_err(|e| BenchError::Protocol(format!("decoding a received update: {e}")))?;
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.transact_mut().apply_update(update)
        }));
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(BenchError::Protocol(format!("applying an update: {e}"))),
            Err(_) => {
                return Err(BenchError::Protocol(
                    "yrs panicked applying an update".into(),
                ));
            }
        }
    }
    Ok(())
}
