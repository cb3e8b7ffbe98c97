//! The server under test: either started and restarted by the generator (`--server-cmd`), or
//! running elsewhere and only observed (`--server-pid`).

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::error::{BenchError, Result};
use crate::proc_stats::{self, ProcSample, Target};

/// How a managed server is stopped before a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopSignal {
    /// SIGKILL: a crash; only durably acknowledged data may be expected back.
    Kill,
    /// SIGTERM: a graceful shutdown.
    Term,
}

pub struct ServerCtl {
    cmd: Option<String>,
    child: Option<Child>,
    observed_pid: Option<u32>,
    /// `host:port` the server listens on, from the WebSocket URL.
    addr: String,
    stop: StopSignal,
    start_timeout: Duration,
}

impl ServerCtl {
    pub fn new(
        cmd: Option<String>,
        pid: Option<u32>,
        url_template: &str,
        stop: StopSignal,
        start_timeout: Duration,
    ) -> Result<Self> {
        let addr = host_port(url_template)?;
        Ok(ServerCtl {
            cmd,
            child: None,
            observed_pid: pid,
            addr,
            stop,
            start_timeout,
        })
    }

    /// Starts the managed server (if any) and waits until its port accepts connections.
    pub async fn start(&mut self) -> Result<()> {
        if let Some(cmd) = &self.cmd {
            let child = Command::new("sh")
                .arg("-c")
                .arg(format!("exec {cmd}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| BenchError::Io(format!("starting {cmd:?}"), e))?;
            self.child = Some(child);
        }
        self.wait_listening().await
    }

    async fn wait_listening(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.start_timeout;
        loop {
            if tokio::net::TcpStream::connect(&self.addr).await.is_ok() {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(BenchError::Server(format!(
                    "server command exited with {status} before listening on {}",
                    self.addr
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BenchError::Timeout(format!(
                    "server listening on {}",
                    self.addr
                )));
            }
            // Polling a port that is not open yet: there is no event to wait on.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether `restart` can be used.
    pub fn can_restart(&self) -> bool {
        self.cmd.is_some()
    }

    /// Stops the managed server with the configured signal, waits for it, starts it again.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// Stops the managed server with the configured signal and waits for it to exit.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Err(BenchError::Config(
                "restarting needs --server-cmd (the generator must own the server)".into(),
            ));
        };
        match self.stop {
            StopSignal::Kill => child
                .start_kill()
                .map_err(|e| BenchError::Io("SIGKILL server".into(), e))?,
            StopSignal::Term => {
                if let Some(pid) = child.id() {
                    let _ = Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                        .await;
                }
            }
        }
        tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .map_err(|_| BenchError::Timeout("server exit after signal".into()))?
            .map_err(|e| BenchError::Io("waiting for the server".into(), e))?;
        Ok(())
    }

    pub fn stop_signal(&self) -> StopSignal {
        self.stop
    }

    pub fn pid(&self) -> Option<u32> {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .or(self.observed_pid)
    }

    pub fn sample(&self) -> Option<ProcSample> {
        self.pid().and_then(|p| proc_stats::sample(Target::Pid(p)))
    }

    /// Stops a managed server gracefully at the end of a run.
    pub async fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

/// `host:port` of a `ws://` or `wss://` URL (default ports 80 / 443).
pub fn host_port(url: &str) -> Result<String> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("ws://") {
        (r, 80)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (r, 443)
    } else {
        return Err(BenchError::Config(format!(
            "--url must be ws:// or wss://: {url}"
        )));
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.is_empty() {
        return Err(BenchError::Config(format!("--url has no host: {url}")));
    }
    if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        Ok(authority.to_owned())
    } else {
        Ok(format!("{authority}:{default_port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_urls() {
        assert_eq!(
            host_port("ws://127.0.0.1:9/x").ok().as_deref(),
            Some("127.0.0.1:9")
        );
        assert_eq!(
            host_port("ws://h/d/{room}/ws").ok().as_deref(),
            Some("h:80")
        );
        assert_eq!(host_port("wss://h").ok().as_deref(), Some("h:443"));
        assert!(host_port("http://h").is_err());
    }
}
