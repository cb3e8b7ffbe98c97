//! `tandem bench`: a load generator for any y-websocket server (Tandem and its peers).
//!
//! A Rust client (tokio-tungstenite + yrs) speaking y-protocols sync over WebSocket, cheap enough
//! to share a machine with the server it measures. Workloads:
//!
//! * [`fanout`] — R rooms × C clients typing at H Hz; fan-out latency attributed from each
//!   update's (client, clock), deliveries/s, missing deliveries, server CPU and peak RSS;
//! * `saturate` — fanout at rising rates until p99 > 50 ms or deliveries go missing;
//! * [`ingest`] — one writer replays an editing trace with readers attached, then the server is
//!   restarted and a fresh client must see exactly the trace's final text;
//! * [`coldload`] — store large Yjs documents, restart, time connect → full verified text;
//! * [`connections`] — K idle clients over K/10 rooms: server RSS per connection and per room.
//!
//! Each workload prints a table, then one line of JSON (the last stdout line).
//!
//! [`relay`] (`tandem bench-relay`) is the floor those figures are read against: a relay that
//! forwards frames and does nothing else.

pub mod client;
pub mod coldload;
pub mod connections;
pub mod error;
pub mod fanout;
pub mod ingest;
pub mod measure;
pub mod proc_stats;
pub mod relay;
pub mod server;
pub mod trace;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::{BenchError, Result};

use client::{Endpoint, Framing};
use proc_stats::{ProcSample, Target};
use server::{ServerCtl, StopSignal};

/// Options shared by every workload.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// WebSocket URL of the server; `{room}` is replaced by the room name, otherwise `/<room>` is
    /// appended (y-sweet: `ws://HOST/d/{room}/ws`).
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// Pid of an already running server, for its CPU time and RSS (`/proc/PID`).
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Shell command that starts the server; the generator starts it, waits for the URL's port,
    /// samples its pid, restarts it where a workload needs that, and stops it at the end.
    #[arg(long, global = true)]
    pub server_cmd: Option<String>,
    /// How a restart stops the managed server: `kill` (SIGKILL, a crash) or `term` (graceful).
    #[arg(long, global = true, value_enum, default_value = "kill")]
    pub stop_signal: StopSignal,
    /// Wait this long after the last write before a restart (servers that persist in the
    /// background need it; Tandem in `sync` mode does not).
    #[arg(long, global = true, default_value_t = 0)]
    pub settle_ms: u64,
    /// Message framing: stock y-websocket, or Hocuspocus' document-name-prefixed messages.
    #[arg(long, global = true, value_enum, default_value = "yws")]
    pub framing: Framing,
    /// HTTP URL to POST `{"docId": ROOM}` to before a room is first used (y-sweet: `http://HOST/doc/new`).
    #[arg(long, global = true)]
    pub create_room: Option<String>,
    /// Directory of the editing traces and Yjs documents (default: the repository's `bench/traces`).
    #[arg(long, global = true)]
    pub traces: Option<PathBuf>,
    /// Seconds allowed for a connection, a handshake, a server start or a verification.
    #[arg(long, global = true, default_value_t = 60.0)]
    pub timeout_secs: f64,
    /// Name of the server under test, copied into the JSON line.
    #[arg(long, global = true, default_value = "server")]
    pub label: String,
    #[command(subcommand)]
    pub workload: Workload,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Workload {
    /// R rooms × C clients, each typing one character at H Hz; fan-out latency and throughput.
    Fanout(FanoutArgs),
    /// Fanout at rising rates until p99 > the limit or deliveries go missing.
    Saturate(SaturateArgs),
    /// Replay an editing trace through one writer with readers; restart; verify the final text.
    Ingest(ingest::IngestArgs),
    /// Store Yjs documents, restart, time a fresh client's connect → full verified text.
    Coldload(coldload::ColdloadArgs),
    /// K idle clients over K/10 rooms: server RSS per connection and per loaded room.
    Connections(connections::ConnectionsArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Characters typed per second by each client.
    #[arg(long, default_value_t = 10.0)]
    pub hz: f64,
    /// Seconds of typing.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// Seconds to wait for outstanding deliveries after typing stops.
    #[arg(long, default_value_t = 5.0)]
    pub drain_secs: f64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SaturateArgs {
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Rate of the first step, characters per second per client.
    #[arg(long, default_value_t = 5.0)]
    pub start_hz: f64,
    /// Each step multiplies the rate by this.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    #[arg(long, default_value_t = 5.0)]
    pub step_secs: f64,
    #[arg(long, default_value_t = 12)]
    pub max_steps: usize,
    /// A step fails when its p99 exceeds this.
    #[arg(long, default_value_t = 50.0)]
    pub max_p99_ms: f64,
}

/// What every workload shares: the endpoint, the clock epoch, the observed server pid.
#[derive(Clone)]
pub struct Ctx {
    pub endpoint: Endpoint,
    epoch: std::time::Instant,
    server_pid: Arc<Mutex<Option<u32>>>,
    errors: Arc<Mutex<Vec<String>>>,
    pub traces: PathBuf,
    pub timeout: Duration,
    pub settle: Duration,
    settled: Arc<std::sync::atomic::AtomicBool>,
}

impl Ctx {
    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn server_sample(&self) -> Option<ProcSample> {
        let pid = self.server_pid.lock().ok().and_then(|p| *p)?;
        proc_stats::sample(Target::Pid(pid))
    }

    fn set_pid(&self, pid: Option<u32>) {
        if let Ok(mut p) = self.server_pid.lock() {
            *p = pid;
        }
    }

    /// Keeps the first few errors for the report.
    pub fn note_error(&self, e: &BenchError) {
        if let Ok(mut v) = self.errors.lock()
            && v.len() < 5
        {
            v.push(e.to_string());
        }
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Restarts the managed server and records its new pid.
    pub async fn restart(&self, server: &mut ServerCtl) -> Result<()> {
        // Only the first restart follows fresh writes; later ones (cold loads) need no settling.
        if !self.settle.is_zero()
            && !self
                .settled
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tokio::time::sleep(self.settle).await;
        }
        server.restart().await?;
        self.set_pid(server.pid());
        Ok(())
    }

    /// A fresh, unique prefix for this run's room names.
    pub fn room_prefix(workload: &str) -> String {
        format!("bench-{workload}-{:08x}", rand::random::<u32>())
    }
}

/// The traces vendored in the repository (`bench/traces`): found beside the sources this binary
/// was built from, else relative to the working directory (run from the repository root).
fn default_traces() -> PathBuf {
    let from_source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/traces");
    for candidate in [from_source, PathBuf::from("bench/traces")] {
        if candidate.is_dir() {
            return candidate;
        }
    }
    PathBuf::from("bench/traces")
}

/// Runs one workload: prints its table, then its JSON line, to stdout.
pub async fn run(args: BenchArgs) -> Result<()> {
    let timeout = Duration::try_from_secs_f64(args.timeout_secs)
        .map_err(|e| BenchError::Config(format!("--timeout-secs: {e}")))?;
    let mut server = ServerCtl::new(
        args.server_cmd.clone(),
        args.server_pid,
        &args.url,
        args.stop_signal,
        timeout,
    )?;
    let ctx = Ctx {
        endpoint: Endpoint {
            url_template: args.url.clone(),
            framing: args.framing,
            create_room: args.create_room.clone(),
            connect_timeout: timeout,
        },
        epoch: std::time::Instant::now(),
        server_pid: Arc::new(Mutex::new(None)),
        errors: Arc::new(Mutex::new(Vec::new())),
        traces: args.traces.clone().unwrap_or_else(default_traces),
        timeout,
        settle: Duration::from_millis(args.settle_ms),
        settled: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    server.start().await?;
    ctx.set_pid(server.pid());
    let result = run_workload(&ctx, &mut server, &args).await;
    server.shutdown().await;
    let (table, mut json) = result?;
    if let serde_json::Value::Object(m) = &mut json {
        m.insert("label".into(), args.label.clone().into());
        m.insert("url".into(), args.url.clone().into());
        m.insert("errors".into(), ctx.errors().into());
    }
    println!("{table}");
    let errors = ctx.errors();
    if !errors.is_empty() {
        println!("first errors: {}", errors.join(" | "));
    }
    println!("{json}");
    Ok(())
}

async fn run_workload(
    ctx: &Ctx,
    server: &mut ServerCtl,
    args: &BenchArgs,
) -> Result<(String, serde_json::Value)> {
    match &args.workload {
        Workload::Fanout(a) => {
            let p = fanout::FanoutParams {
                rooms: a.rooms,
                clients: a.clients,
                hz: a.hz,
                secs: a.secs,
                drain_secs: a.drain_secs,
            };
            let r = fanout::run(ctx, p, &Ctx::room_prefix("fanout")).await?;
            let table = format!(
                "fanout: {} rooms x {} clients x {} Hz for {} s\n{}",
                a.rooms,
                a.clients,
                a.hz,
                a.secs,
                fanout::table(&[(args.label.clone(), &r)])
            );
            let mut json = serde_json::to_value(&r).unwrap_or_default();
            tag(&mut json, "fanout");
            Ok((table, json))
        }
        Workload::Saturate(a) => saturate(ctx, a, &args.label).await,
        Workload::Ingest(a) => ingest::run(ctx, server, a).await,
        Workload::Coldload(a) => coldload::run(ctx, server, a).await,
        Workload::Connections(a) => connections::run(ctx, a).await,
    }
}

/// Sets `"workload": name` on a JSON object.
pub fn tag(json: &mut serde_json::Value, name: &str) {
    if let serde_json::Value::Object(m) = json {
        m.insert("workload".into(), name.into());
    }
}

async fn saturate(ctx: &Ctx, a: &SaturateArgs, label: &str) -> Result<(String, serde_json::Value)> {
    let mut hz = a.start_hz;
    let mut steps = Vec::new();
    let mut best: Option<fanout::FanoutResult> = None;
    let mut stop_reason = "max steps reached".to_owned();
    for step in 0..a.max_steps {
        let p = fanout::FanoutParams {
            rooms: a.rooms,
            clients: a.clients,
            hz,
            secs: a.step_secs,
            drain_secs: 2.0,
        };
        let r = fanout::run(ctx, p, &Ctx::room_prefix(&format!("sat{step}"))).await?;
        let target_rate = (a.rooms * a.clients) as f64 * hz;
        let ok = r.missing == 0
            && r.connect_failures == 0
            && r.disconnects == 0
            && r.latency.p99_ms <= a.max_p99_ms;
        let generator_bound = r.send_rate < 0.8 * target_rate;
        steps.push(r.clone());
        if !ok {
            stop_reason = format!(
                "at {hz:.1} Hz: p99 {:.1} ms, {} missing, {} connect failures, {} disconnects",
                r.latency.p99_ms, r.missing, r.connect_failures, r.disconnects
            );
            break;
        }
        if best
            .as_ref()
            .is_none_or(|b| r.deliveries_per_sec > b.deliveries_per_sec)
        {
            best = Some(r.clone());
        }
        if generator_bound {
            stop_reason = format!(
                "generator could not send at {hz:.1} Hz (sent {:.0}/s of {target_rate:.0}/s)",
                r.send_rate
            );
            break;
        }
        hz *= a.factor;
    }
    let rows: Vec<(String, &fanout::FanoutResult)> = steps
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("{label} step {i}"), r))
        .collect();
    let best_rate = best.as_ref().map_or(0.0, |b| b.deliveries_per_sec);
    let table = format!(
        "saturate: {} rooms x {} clients, x{} per {} s step, limit p99 {} ms\n{}\
         highest sustained: {best_rate:.0} deliveries/s ({stop_reason})",
        a.rooms,
        a.clients,
        a.factor,
        a.step_secs,
        a.max_p99_ms,
        fanout::table(&rows)
    );
    let json = serde_json::json!({
        "workload": "saturate",
        "max_sustained_deliveries_per_sec": best_rate,
        "best": best,
        "stop_reason": stop_reason,
        "steps": steps,
    });
    Ok((table, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh clone must run every workload without `--traces`: the default directory is the
    /// repository's own copy, and it holds every file a workload reads by default.
    #[test]
    fn default_traces_are_vendored_in_the_repository() {
        let dir = default_traces();
        assert!(
            dir.ends_with("bench/traces"),
            "default traces dir is {}",
            dir.display()
        );
        for file in [
            "automerge-paper.json.gz",
            "S1.yjs",
            "C1.yjs",
            "A1.yjs",
            "README.md",
        ] {
            let path = dir.join(file);
            assert!(path.is_file(), "missing {}", path.display());
        }
        let readme = std::fs::read_to_string(dir.join("README.md")).expect("traces README");
        assert!(readme.contains("CC BY 4.0"), "attribution kept");
    }
}
