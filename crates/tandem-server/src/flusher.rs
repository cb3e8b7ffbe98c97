//! Group commit: callers ask for a flush and wait; every request that arrives while a flush is
//! running is served together by the next one, so N concurrent writers cost about two fsyncs,
//! not N.
//!
//! Flushes also start at most once per `min_interval`: under a steady stream of writes, requests
//! gather for that long and share one flush. Each sled flush wakes its whole I/O thread pool,
//! so at hundreds of writes per second this spacing, not the fsync, is what the CPU cost hangs
//! on. An isolated write (none in the last interval) is flushed at once.

use std::sync::Arc;

use tandem_store::DocStore;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant};

type Waiter = oneshot::Sender<Result<(), String>>;

enum Request {
    Flush(Waiter),
    /// Flush once more, then end the task (releasing its handle on the store).
    Stop,
}

#[derive(Clone)]
pub struct Flusher {
    // Unbounded is safe: each room task has at most one request outstanding.
    tx: mpsc::UnboundedSender<Request>,
}

impl Flusher {
    /// Starts the flushing task; it ends when every `Flusher` clone is dropped.
    pub fn spawn(
        store: Arc<dyn DocStore>,
        min_interval: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        let task = tokio::spawn(async move {
            let mut stopping = false;
            let mut last_start: Option<Instant> = None;
            while let Some(first) = rx.recv().await {
                if let Some(due) = last_start.map(|last| last + min_interval)
                    && due > Instant::now()
                {
                    tokio::time::sleep_until(due).await;
                }
                last_start = Some(Instant::now());
                let mut waiters = Vec::new();
                for request in
                    std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok()))
                {
                    match request {
                        Request::Flush(w) => waiters.push(w),
                        Request::Stop => stopping = true,
                    }
                }
                let store = store.clone();
                let result = match tokio::task::spawn_blocking(move || store.flush()).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("flush task failed: {e}")),
                };
                for w in waiters {
                    let _ = w.send(result.clone());
                }
                if stopping {
                    break;
                }
            }
        });
        (Flusher { tx }, task)
    }

    /// Returns once everything written before the call is on disk.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Flush(tx))
            .map_err(|_| "flusher stopped".to_owned())?;
        rx.await.map_err(|_| "flusher stopped".to_owned())?
    }

    /// Asks the task to flush a last time and end.
    pub fn stop(&self) {
        let _ = self.tx.send(Request::Stop);
    }
}
