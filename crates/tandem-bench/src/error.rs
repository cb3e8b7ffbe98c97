use thiserror::Error;

/// Everything that can stop a benchmark run.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("I/O error while {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("WebSocket error on {0}: {1}")]
    Ws(String, #[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("trace {0}: {1}")]
    Trace(String, String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("invalid option: {0}")]
    Config(String),
    #[error("server control: {0}")]
    Server(String),
}

pub type Result<T> = std::result::Result<T, BenchError>;
