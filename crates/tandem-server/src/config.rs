//! Server configuration: every tunable with its default. The `tandem` binary maps its command
//! line onto this struct.

use std::time::Duration;

use tandem_room::RoomConfig;
use tandem_store::Durability;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// When an accepted update may be echoed: after an fsync (`Sync`), or at once with background
    /// flushes (`Async`).
    pub durability: Durability,
    /// Sync durability: the shortest time between two group-commit flushes. Writes arriving
    /// within it share the next flush (fewer, larger flushes under load).
    pub group_commit: Duration,
    /// Largest WebSocket message accepted, in bytes; larger ones close the connection (4413).
    pub max_frame_bytes: usize,
    /// Frames queued for one peer before it counts as too slow and is disconnected (4029).
    pub send_queue_frames: usize,
    /// Frames queued from all peers into one room before readers wait (backpressure).
    pub room_queue_frames: usize,
    /// Rooms with no peers for this long are flushed and unloaded from memory.
    pub idle_unload: Duration,
    /// Interval between WebSocket pings; a peer silent for two intervals is dropped (4000).
    pub ping_interval: Duration,
    /// How often rooms run periodic work (awareness expiry).
    pub tick_interval: Duration,
    pub room: RoomConfig,
    /// Token verification; `None` (the default) lets everyone read and write everything.
    pub auth: Option<crate::auth::AuthConfig>,
    /// Browser origins allowed to open WebSockets (empty: any). Checked before the upgrade.
    pub allowed_origins: Vec<String>,
    /// Serve HTTPS/WSS with this certificate and key instead of plain HTTP/WS.
    pub tls: Option<crate::tls::TlsConfig>,
    /// An HTTP/1 client must send a request's headers within this long (also while a
    /// keep-alive connection waits for its next request), or the connection is closed.
    pub header_read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            durability: Durability::Sync,
            group_commit: Duration::from_millis(2),
            max_frame_bytes: 16 * 1024 * 1024,
            send_queue_frames: 1024,
            room_queue_frames: 256,
            idle_unload: Duration::from_secs(30),
            ping_interval: Duration::from_secs(15),
            tick_interval: Duration::from_secs(5),
            room: RoomConfig::default(),
            auth: None,
            allowed_origins: Vec::new(),
            tls: None,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}
