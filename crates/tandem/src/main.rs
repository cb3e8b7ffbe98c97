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
    /// Run the server: y-websocket rooms at ws://ADDR/<room>, the demo at http://ADDR/.
    Serve(ServeArgs),
    /// Mint a signed room token (JWT HS256) for --auth-secret servers; prints it to stdout.
    Token(TokenArgs),
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
    /// Largest WebSocket message accepted, in bytes (larger: close 1009).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_frame_bytes: usize,
    /// Frames queued per peer before it is disconnected as too slow (close 4429).
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
        Command::Token(args) => token(args),
    }
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
    println!("{}", AuthConfig::new(args.secret).mint(&claims));
    Ok(())
}

fn secs(v: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("invalid {what}: {v}"))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
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
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").context("writing to stdout")?;
        out.flush().context("flushing stdout")?;
    }
    tracing::info!(%addr, data = %args.data.display(), durability = ?durability, "tandem serving");
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
