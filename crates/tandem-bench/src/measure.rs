//! Measurement logic, free of I/O: when each (client, clock) was sent, which of them a receiver
//! has seen, and the latency histogram.
//!
//! Latency is attributed from the ids inside a received update, not from frame boundaries: a
//! server may merge several updates into one frame or re-encode them, and every newly covered
//! (client, clock) still maps back to the instant its sender sent it.

use std::collections::HashMap;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, up to one hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Send instants of every (client, clock) sent in one room, as nanoseconds since the run's
/// epoch (stored +1 so that 0 means "not sent by this run").
#[derive(Debug, Default)]
pub struct SendLog {
    by_client: HashMap<u64, Vec<u64>>,
}

impl SendLog {
    /// Records that `client` sent clocks `clock..clock+len` at `at_ns`.
    pub fn record(&mut self, client: u64, clock: u32, len: u32, at_ns: u64) {
        let v = self.by_client.entry(client).or_default();
        let end = clock as usize + len as usize;
        if v.len() < end {
            v.resize(end, 0);
        }
        for slot in &mut v[clock as usize..end] {
            *slot = at_ns.saturating_add(1);
        }
    }

    /// When (client, clock) was sent, if this run sent it.
    pub fn sent_at(&self, client: u64, clock: u32) -> Option<u64> {
        match self.by_client.get(&client)?.get(clock as usize) {
            Some(&t) if t > 0 => Some(t - 1),
            _ => None,
        }
    }

    /// Number of (client, clock) pairs sent.
    pub fn sent_count(&self) -> u64 {
        self.by_client
            .values()
            .map(|v| v.iter().filter(|&&t| t > 0).count() as u64)
            .sum()
    }
}

/// What one receiver has seen: per sender client, the clock up to which it has received.
#[derive(Debug, Default)]
pub struct Receiver {
    seen: HashMap<u64, u32>,
    /// Deliveries attributed (each (client, clock) counts once).
    pub delivered: u64,
}

impl Receiver {
    /// Attributes a received update's struct ranges `(client, start, end)`: every (client, clock)
    /// not seen before and sent by this run (and not by `own_client`) is one delivery, with
    /// latency `now_ns - sent_at`, recorded in microseconds. Returns the new deliveries.
    pub fn attribute(
        &mut self,
        ranges: &[(u64, u32, u32)],
        own_client: Option<u64>,
        log: &SendLog,
        now_ns: u64,
        hist: &mut Histogram<u64>,
    ) -> u64 {
        let mut new = 0;
        for &(client, start, end) in ranges {
            if Some(client) == own_client {
                continue;
            }
            let wm = self.seen.entry(client).or_insert(0);
            let from = start.max(*wm);
            if end > *wm {
                *wm = end;
            }
            for clock in from..end {
                if let Some(sent) = log.sent_at(client, clock) {
                    let micros = now_ns.saturating_sub(sent) / 1000;
                    hist.saturating_record(micros.max(1));
                    new += 1;
                }
            }
        }
        self.delivered += new;
        new
    }

    /// The clock up to which `client` has been received.
    pub fn seen(&self, client: u64) -> u32 {
        self.seen.get(&client).copied().unwrap_or(0)
    }
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn summarize(hist: &Histogram<u64>) -> LatencySummary {
    if hist.is_empty() {
        return LatencySummary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        count: hist.len(),
        p50_ms: ms(hist.value_at_quantile(0.50)),
        p95_ms: ms(hist.value_at_quantile(0.95)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
    }
}

/// Expected minus attributed deliveries, never negative.
pub fn missing(expected: u64, delivered: u64) -> u64 {
    expected.saturating_sub(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_each_clock_once_even_when_merged() {
        let mut log = SendLog::default();
        for clock in 0..5 {
            log.record(7, clock, 1, 1_000_000 * clock as u64);
        }
        let mut hist = new_histogram();
        let mut r = Receiver::default();
        // Clocks 0..2 arrive one by one, then a merged update covering 0..5 (re-encoded).
        assert_eq!(
            r.attribute(&[(7, 0, 1)], None, &log, 3_000_000, &mut hist),
            1
        );
        assert_eq!(
            r.attribute(&[(7, 1, 2)], None, &log, 3_000_000, &mut hist),
            1
        );
        assert_eq!(
            r.attribute(&[(7, 0, 5)], None, &log, 10_000_000, &mut hist),
            3
        );
        // A duplicate adds nothing.
        assert_eq!(
            r.attribute(&[(7, 0, 5)], None, &log, 20_000_000, &mut hist),
            0
        );
        assert_eq!(r.delivered, 5);
        assert_eq!(r.seen(7), 5);
        assert_eq!(hist.len(), 5);
        // Latencies: 3ms, 2ms, then 8ms, 7ms, 6ms (10ms - sent at 2,3,4 ms).
        assert_eq!(hist.min(), 2000);
        assert!(hist.equivalent(hist.max(), 8000), "max {}", hist.max());
    }

    #[test]
    fn ignores_own_and_foreign_clocks() {
        let mut log = SendLog::default();
        log.record(1, 0, 2, 0);
        let mut hist = new_histogram();
        let mut r = Receiver::default();
        // Own client 1 is skipped; client 99 was never sent by this run (e.g. stored content).
        let n = r.attribute(&[(1, 0, 2), (99, 0, 10)], Some(1), &log, 5_000, &mut hist);
        assert_eq!(n, 0);
        assert!(hist.is_empty());
        assert_eq!(r.seen(99), 10);
        assert_eq!(r.seen(1), 0);
    }

    #[test]
    fn multi_clock_sends_and_out_of_range_clocks() {
        let mut log = SendLog::default();
        log.record(3, 0, 4, 100_000); // one update carrying 4 characters
        assert_eq!(log.sent_count(), 4);
        assert_eq!(log.sent_at(3, 3), Some(100_000));
        assert_eq!(log.sent_at(3, 4), None);
        let mut hist = new_histogram();
        let mut r = Receiver::default();
        assert_eq!(
            r.attribute(&[(3, 2, 6)], None, &log, 1_100_000, &mut hist),
            2
        );
        assert_eq!(hist.value_at_quantile(1.0), 1000);
    }

    #[test]
    fn missing_delivery_accounting() {
        // 3 clients in a room, each sends 10 updates: each update is expected by 2 others.
        let mut log = SendLog::default();
        for c in 1..=3u64 {
            for clock in 0..10 {
                log.record(c, clock, 1, 0);
            }
        }
        let expected = log.sent_count() * 2;
        let mut hist = new_histogram();
        let mut receivers: Vec<Receiver> = (0..3).map(|_| Receiver::default()).collect();
        // Receiver of client 1 sees everything; receiver 2 misses client 3's last 4 clocks;
        // receiver 3 sees nothing from client 1.
        receivers[0].attribute(&[(2, 0, 10), (3, 0, 10)], Some(1), &log, 1, &mut hist);
        receivers[1].attribute(&[(1, 0, 10), (3, 0, 6)], Some(2), &log, 1, &mut hist);
        receivers[2].attribute(&[(2, 0, 10)], Some(3), &log, 1, &mut hist);
        let delivered: u64 = receivers.iter().map(|r| r.delivered).sum();
        assert_eq!(delivered, 20 + 16 + 10);
        assert_eq!(missing(expected, delivered), 60 - 46);
        assert_eq!(missing(5, 9), 0);
    }

    #[test]
    fn summary_percentiles() {
        let mut hist = new_histogram();
        for us in 1..=1000u64 {
            hist.record(us * 100).expect("in range");
        }
        let s = summarize(&hist);
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert_eq!(summarize(&new_histogram()), LatencySummary::default());
    }
}
