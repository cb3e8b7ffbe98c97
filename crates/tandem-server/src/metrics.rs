//! Prometheus metrics (through the `prometheus-client` crate): one registry per [`crate::Hub`],
//! updated by the hub, the room tasks and the WebSocket adapter, scraped at `GET /metrics`.

use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub rooms_loaded: Gauge,
    pub peers_connected: Gauge,
    pub updates_applied: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub apply_seconds: Histogram,
    pub flush_seconds: Histogram,
    pub fanout_seconds: Histogram,
    pub slow_peer_disconnects: Counter,
    pub denied_writes: Counter,
    auth_failures: Family<Labels, Counter>,
    rejected_messages: Family<Labels, Counter>,
}

fn seconds_histogram() -> Histogram {
    // 10 µs .. ~10 s
    Histogram::new(exponential_buckets(0.000_01, 4.0, 11))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tandem");
        let m = Metrics {
            registry: Registry::default(),
            rooms_loaded: Gauge::default(),
            peers_connected: Gauge::default(),
            updates_applied: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            apply_seconds: seconds_histogram(),
            flush_seconds: seconds_histogram(),
            fanout_seconds: seconds_histogram(),
            slow_peer_disconnects: Counter::default(),
            denied_writes: Counter::default(),
            auth_failures: Family::default(),
            rejected_messages: Family::default(),
        };
        registry.register(
            "rooms_loaded",
            "Rooms loaded in memory",
            m.rooms_loaded.clone(),
        );
        registry.register(
            "peers_connected",
            "Connected WebSocket peers",
            m.peers_connected.clone(),
        );
        registry.register(
            "updates_applied",
            "Document updates applied and stored (WebSocket and API)",
            m.updates_applied.clone(),
        );
        registry.register(
            "websocket_received_bytes",
            "Bytes received in WebSocket binary frames",
            m.bytes_in.clone(),
        );
        registry.register(
            "websocket_sent_bytes",
            "Bytes sent in WebSocket binary frames",
            m.bytes_out.clone(),
        );
        registry.register(
            "update_apply_seconds",
            "Time the room spends handling one incoming message or API update",
            m.apply_seconds.clone(),
        );
        registry.register(
            "flush_seconds",
            "Time to flush the store (sync durability)",
            m.flush_seconds.clone(),
        );
        registry.register(
            "fanout_seconds",
            "From receiving a batch of frames to its broadcast frames being queued to peers",
            m.fanout_seconds.clone(),
        );
        registry.register(
            "slow_peer_disconnects",
            "Peers closed with 4029 because their send queue was full (each counted once)",
            m.slow_peer_disconnects.clone(),
        );
        registry.register(
            "denied_writes",
            "Write attempts by read-only peers, refused",
            m.denied_writes.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused for a missing, invalid or insufficient token, by reason",
            m.auth_failures.clone(),
        );
        registry.register(
            "rejected_messages",
            "Peer connections closed for bad input, by close code",
            m.rejected_messages.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a refused request; `reason` is a short stable word (e.g. `expired`).
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }

    /// Counts a peer closed for bad input with close `code`.
    pub fn rejected(&self, code: u16) {
        self.rejected_messages
            .get_or_create(&vec![("code".to_owned(), code.to_string())])
            .inc();
    }

    /// Records the seconds since `start` in `h`.
    pub fn observe_since(h: &Histogram, start: Instant) {
        h.observe(start.elapsed().as_secs_f64());
    }

    /// The registry in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn encodes_every_family() {
        let m = Metrics::new();
        m.updates_applied.inc();
        m.rejected(4400);
        m.auth_failure("expired");
        let text = m.encode();
        assert!(text.contains("tandem_updates_applied_total 1"), "{text}");
        assert!(
            text.contains("tandem_rejected_messages_total{code=\"4400\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tandem_auth_failures_total{reason=\"expired\"} 1"),
            "{text}"
        );
        assert!(text.contains("tandem_flush_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
