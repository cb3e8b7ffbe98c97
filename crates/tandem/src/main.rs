//! The `tandem` binary: `serve` runs the collaboration server.
//!
//! Command-line parsing, logging setup and signal handling live here; everything else is in the
//! library crates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tandem_server::ServerConfig;
use tandem_store::{Durability, SledStore, StoreConfig};

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "A collaborative-editing server for Yjs clients"
)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or `tandem_server=debug`).
    #[arg(long, global = true, env = "TANDEM_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: y-websocket rooms at ws://ADDR/<room>, the demo at http://ADDR/
    /// (wss:// and https:// with --tls-cert and --tls-key).
    Serve(ServeArgs),
    /// Load-test a y-websocket server (Tandem or a peer): fanout, saturate, ingest, coldload,
    /// connections. Prints a table, then one JSON line.
    Bench(tandem_bench::BenchArgs),
    /// Benchmark floor, not a server: forwards each client's frames to its room's other clients
    /// and nothing else (no CRDT, no storage), to measure what the transport alone costs.
    BenchRelay(tandem_bench::relay::RelayArgs),
    /// Run the conflict fuzzer: simulated (default) or live clients, crashes, convergence checks.
    Fuzz(FuzzArgs),
    /// Internal: runs the scenarios `tandem fuzz` sends on stdin, one JSON line each, and
    /// answers each outcome on stdout (a crash inside yrs then ends this process, not the
    /// campaign).
    #[command(hide = true)]
    FuzzWorker,
    /// Mint a signed room token (JWT HS256) for --auth-secret servers; prints it to stdout.
    Token(TokenArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum FuzzMode {
    /// Deterministic, in-process: real room and sled store, simulated network and crashes.
    Sim,
    /// Real WebSockets against a running server (--url).
    Live,
}

#[derive(clap::Args)]
struct FuzzArgs {
    /// Campaign seed (default: random; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of scenarios.
    #[arg(long, default_value_t = 100)]
    scenarios: u64,
    /// Clients per scenario.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Edit operations per scenario.
    #[arg(long, default_value_t = 100)]
    ops: usize,
    /// Stop starting new scenarios after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, value_enum, default_value = "sim")]
    mode: FuzzMode,
    /// Server to fuzz in live mode, e.g. ws://127.0.0.1:8080.
    #[arg(long)]
    url: Option<String>,
    /// Shell command that restarts the server, run (sh -c) at each crash step in live mode.
    #[arg(long)]
    restart_cmd: Option<String>,
    /// Run the scenario of a replay file written by an earlier failure.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Deliberately break the system under test to see the fuzzer catch it.
    #[arg(long, value_enum)]
    sabotage: Option<SabotageKind>,
    /// The durability mode whose promise the sim checks across crashes.
    #[arg(long, value_enum, default_value = "sync")]
    durability: DurabilityMode,
    /// Directory replay files are written to.
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// A simulated scenario (each runs in a worker process) that runs longer than this many
    /// seconds is a failure.
    #[arg(long, default_value_t = 600.0)]
    scenario_timeout: f64,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum SabotageKind {
    /// The server silently drops one client update.
    DropUpdate,
    /// One log append is skipped.
    SkipLogWrite,
    /// The room is not told that one client left (its awareness stays).
    ForgetAwarenessRemoval,
    /// A client replica aborts its process (shows that a crash is reported, not fatal).
    CrashClient,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The room the token grants (or, with --prefix, the room-name prefix).
    #[arg(long)]
    room: String,
    /// Treat --room as a prefix: the token covers every room whose name starts with it.
    #[arg(long)]
    prefix: bool,
    /// read (receive only), write, or admin (also delete rooms and list all rooms).
    #[arg(long, default_value = "write")]
    access: tandem_server::auth::Access,
    /// Lifetime: a number of seconds or e.g. 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Subject recorded as the author of this token's updates.
    #[arg(long)]
    sub: Option<String>,
    /// The server's signing secret.
    #[arg(long, env = "TANDEM_AUTH_SECRET", hide_env_values = true)]
    secret: String,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum DurabilityMode {
    /// Echo an update only after its log write is flushed to disk (group commit).
    Sync,
    /// Echo at once; flush in the background every --flush-ms (a crash loses at most that window).
    Async,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the first stdout line names it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the sled store holding every room.
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    /// When accepted updates reach disk relative to their echo.
    #[arg(long, value_enum, default_value = "sync")]
    durability: DurabilityMode,
    /// Background flush interval in async durability mode, in milliseconds.
    #[arg(long, default_value_t = 50)]
    flush_ms: u64,
    /// Sync durability: shortest time between two group-commit flushes, in milliseconds; writes
    /// arriving within it share one flush (0: flush as soon as the previous one ends).
    #[arg(long, default_value_t = 2)]
    group_commit_ms: u64,
    /// Largest WebSocket message accepted, in bytes (larger: close 4413).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_frame_bytes: usize,
    /// Frames queued per peer before it is disconnected as too slow (close 4029).
    #[arg(long, default_value_t = 1024)]
    send_queue: usize,
    /// Seconds a room without peers stays in memory before it is flushed and unloaded.
    #[arg(long, default_value_t = 30.0)]
    idle_unload_secs: f64,
    /// Seconds between WebSocket pings; a peer silent for two intervals is dropped.
    #[arg(long, default_value_t = 15.0)]
    ping_secs: f64,
    /// Compact a room's log into a snapshot after this many entries...
    #[arg(long, default_value_t = 1000)]
    compact_entries: u64,
    /// ...or after this many bytes of log.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    compact_bytes: u64,
    /// Deepest nesting accepted inside a JSON-like value of an update.
    #[arg(long, default_value_t = 64)]
    max_value_depth: usize,
    /// sled page cache size in MiB.
    #[arg(long, default_value_t = 256)]
    cache_mib: u64,
    /// Require signed tokens (mint them with `tandem token`) for every WebSocket and API
    /// request. Without it, anyone who reaches the port can read, write and delete every room.
    #[arg(long, env = "TANDEM_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// Comma-separated browser origins allowed to open WebSockets (default: any).
    #[arg(long, value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// PEM certificate chain (leaf first): serve HTTPS and WSS instead of HTTP and WS.
    /// Needs --tls-key.
    #[arg(long, env = "TANDEM_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of --tls-cert. Needs --tls-cert.
    #[arg(long, env = "TANDEM_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log_level)
                .with_context(|| format!("invalid --log-level {:?}", cli.log_level))?,
        )
        .with_writer(std::io::stderr)
        .init();
    // yrs recurses over nested shared types; generous stacks keep deep documents safe.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(64 * 1024 * 1024)
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Bench(args) => runtime
            .block_on(tandem_bench::run(args))
            .context("tandem bench"),
        Command::BenchRelay(args) => runtime
            .block_on(tandem_bench::relay::serve(args))
            .context("tandem bench-relay"),
        Command::Fuzz(args) => {
            if fuzz(args, &runtime)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::FuzzWorker => {
            tandem_fuzz::worker_main(std::io::stdin().lock(), std::io::stdout().lock())
                .context("fuzz worker")
        }
        Command::Token(args) => token(args),
    }
}

/// Runs `tandem fuzz`; returns whether any scenario failed.
fn fuzz(args: FuzzArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<bool> {
    use std::io::Write;
    use tandem_fuzz::{DurabilityMode as D, Sabotage as S};
    let mut out = std::io::stdout();
    // Simulated scenarios run in a worker process: this very binary, `tandem fuzz-worker`.
    let mut isolated = tandem_fuzz::Isolated::new(tandem_fuzz::WorkerCommand {
        program: std::env::current_exe().context("locating the tandem binary")?,
        args: vec!["fuzz-worker".into()],
        timeout: secs(args.scenario_timeout, "--scenario-timeout")?,
    });
    let summary = if let Some(path) = &args.replay {
        tandem_fuzz::replay_with(path, &mut isolated, &mut out)
            .with_context(|| format!("replaying {}", path.display()))?
    } else {
        let seed = args.seed.unwrap_or_else(tandem_fuzz::random_seed);
        writeln!(out, "seed: {seed}").context("writing to stdout")?;
        let opts = tandem_fuzz::Options {
            seed,
            scenarios: args.scenarios,
            clients: args.clients.max(1),
            ops: args.ops,
            duration: args.duration.map(|d| secs(d, "--duration")).transpose()?,
            durability: match args.durability {
                DurabilityMode::Sync => D::Sync,
                DurabilityMode::Async => D::Async,
            },
            sabotage: args.sabotage.map(|k| match k {
                SabotageKind::DropUpdate => S::DropUpdate,
                SabotageKind::SkipLogWrite => S::SkipLogWrite,
                SabotageKind::ForgetAwarenessRemoval => S::ForgetAwarenessRemoval,
                SabotageKind::CrashClient => S::CrashClient,
            }),
            out_dir: args.out_dir.clone(),
            progress: !args.no_progress,
        };
        match args.mode {
            FuzzMode::Sim => tandem_fuzz::run_sim_with(&opts, &mut isolated, &mut out)
                .context("running the fuzzer")?,
            FuzzMode::Live => {
                let url = args
                    .url
                    .as_deref()
                    .context("--mode live needs --url ws://HOST:PORT")?;
                if opts.sabotage.is_some() {
                    anyhow::bail!("--sabotage works in sim mode only");
                }
                runtime
                    .block_on(tandem_fuzz::live::run(
                        &opts,
                        url,
                        args.restart_cmd.as_deref(),
                        &mut out,
                    ))
                    .context("running the live fuzzer")?
            }
        }
    };
    writeln!(out, "{}", summary.render()).context("writing to stdout")?;
    out.flush().context("flushing stdout")?;
    Ok(summary.failures > 0)
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    use tandem_server::auth::{AuthConfig, Claims, now_secs, parse_ttl};
    if args.secret.is_empty() {
        anyhow::bail!("the secret must not be empty");
    }
    let ttl = parse_ttl(&args.ttl).map_err(anyhow::Error::msg)?;
    let (room, room_prefix) = if args.prefix {
        (None, Some(args.room))
    } else {
        (Some(args.room), None)
    };
    let claims = Claims {
        sub: args.sub,
        room,
        room_prefix,
        access: args.access,
        exp: now_secs() + ttl,
    };
    let token = AuthConfig::new(args.secret)
        .mint(&claims)
        .context("minting the token")?;
    println!("{token}");
    Ok(())
}

fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("invalid {what}: {v}"))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // before the store opens: a bad certificate or key fails startup without touching the data
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            tandem_server::tls::TlsConfig::from_pem_files(cert, key)
                .context("loading the TLS certificate and key")?,
        ),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key must be given together"),
    };
    let durability = match args.durability {
        DurabilityMode::Sync => Durability::Sync,
        DurabilityMode::Async => Durability::Async {
            flush_every_ms: args.flush_ms,
        },
    };
    let mut store_config = StoreConfig::new(&args.data);
    store_config.durability = durability;
    store_config.cache_capacity = args.cache_mib * 1024 * 1024;
    let data = args.data.clone();
    let store = tokio::task::spawn_blocking(move || SledStore::open(&store_config))
        .await
        .context("opening the store")?
        .with_context(|| format!("opening the sled store at {}", data.display()))?;
    let mut config = ServerConfig {
        durability,
        group_commit: Duration::from_millis(args.group_commit_ms),
        max_frame_bytes: args.max_frame_bytes,
        send_queue_frames: args.send_queue.max(1),
        idle_unload: secs(args.idle_unload_secs, "--idle-unload-secs")?,
        ping_interval: secs(args.ping_secs, "--ping-secs")?,
        ..ServerConfig::default()
    };
    config.room.compact_after_entries = args.compact_entries.max(1);
    config.room.compact_after_bytes = args.compact_bytes.max(1);
    config.room.update_limits.max_any_depth = args.max_value_depth;
    config.allowed_origins = args.allowed_origins;
    match args.auth_secret.filter(|s| !s.is_empty()) {
        Some(secret) => config.auth = Some(tandem_server::auth::AuthConfig::new(secret)),
        None => tracing::warn!(
            "auth is OFF: anyone who can reach this port can read, write and delete every room \
             (set --auth-secret or TANDEM_AUTH_SECRET)"
        ),
    }
    config.tls = tls;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {scheme}://{addr}").context("writing to stdout")?;
        out.flush().context("flushing stdout")?;
    }
    tracing::info!(%addr, scheme, data = %args.data.display(), durability = ?durability, "tandem serving");
    tandem_server::run(listener, Arc::new(store), config, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
