//! Group commit: callers ask for a flush and wait; every request that arrives while a flush is
//! running is served together by the next one, so N concurrent writers cost about two fsyncs,
//! not N.

use std::sync::Arc;

use tandem_store::DocStore;
use tokio::sync::{mpsc, oneshot};

type Waiter = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Flusher {
    // Unbounded is safe: each room task has at most one request outstanding.
    tx: mpsc::UnboundedSender<Waiter>,
}

impl Flusher {
    /// Starts the flushing task; it ends when every `Flusher` clone is dropped.
    pub fn spawn(store: Arc<dyn DocStore>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let store = store.clone();
                let result = match tokio::task::spawn_blocking(move || store.flush()).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("flush task failed: {e}")),
                };
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        });
        (Flusher { tx }, task)
    }

    /// Returns once everything written before the call is on disk.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| "flusher stopped".to_owned())?;
        rx.await.map_err(|_| "flusher stopped".to_owned())?
    }
}
