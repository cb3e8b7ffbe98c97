//! Live mode: the generated scenarios against a running server over real WebSockets.
//!
//! Network faults come from the real network and from closing connections; `Crash` steps run the
//! `--restart-cmd`. At the end every client pushes its full state and pulls the server's (a
//! y-protocols resync), then a fresh client's full sync is compared with every client, and the
//! awareness of clients that left must be gone.

use std::io::Write;
use std::time::{Duration, Instant};

use futures::{FutureExt, SinkExt, StreamExt};
use tandem_protocol::{
    AwarenessEntry, Message, SyncMessage, decode_frame, encode_awareness_message,
    encode_query_awareness, encode_sync_step1, encode_sync_step2, encode_update,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, StateVector, Transact};

use crate::ops::{Replica, doc_view};
use crate::sim::{Counters, Scenario, Step};
use crate::{FuzzError, Options, Summary};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long to wait for the server at any one point (connect, an answer).
const WAIT: Duration = Duration::from_secs(20);

struct LiveClient {
    replica: Replica,
    id: u64,
    ws: Option<Socket>,
    online: bool,
    departed: bool,
    partitioned: bool,
    /// Frames held back while partitioned.
    held: Vec<Vec<u8>>,
    last_sent: Option<Vec<u8>>,
    /// SyncStep1s sent on this connection that no SyncStep2 answered yet.
    pending_step2: u32,
    awareness_clock: u64,
    awareness: Option<String>,
}

impl LiveClient {
    /// A client with a fresh document, not yet connected.
    fn new(id: u64) -> Self {
        LiveClient {
            replica: Replica::new(id),
            id,
            ws: None,
            online: true,
            departed: false,
            partitioned: false,
            held: Vec::new(),
            last_sent: None,
            pending_step2: 0,
            awareness_clock: 0,
            awareness: None,
        }
    }
}

struct Live<'a> {
    url: String,
    restart_cmd: Option<&'a str>,
    clients: Vec<LiveClient>,
    counters: Counters,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn open(url: &str) -> Result<Socket, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout(WAIT, connect_async(url)).await {
            Ok(Ok((ws, _))) => return Ok(ws),
            Ok(Err(e)) if Instant::now() >= deadline => return Err(format!("connect {url}: {e}")),
            Err(_) => return Err(format!("connect {url}: timed out")),
            // the server may be restarting: retry until the deadline
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Answers to send, whether a SyncStep2 arrived, awareness entries seen (client id, removed).
type FrameOutcome = (Vec<Vec<u8>>, bool, Vec<(u64, bool)>);

/// Applies one incoming frame to a client; returns frames to answer with and whether it
/// carried a SyncStep2.
fn on_frame(replica: &Replica, frame: &[u8]) -> Result<FrameOutcome, String> {
    let mut answers = Vec::new();
    let mut step2 = false;
    let mut awareness = Vec::new();
    for msg in decode_frame(frame).map_err(err)? {
        match msg {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let sv = StateVector::decode_v1(&tandem_protocol::encode_state_vector(sv))
                    .map_err(err)?;
                answers.push(encode_sync_step2(
                    &replica.doc.transact().encode_diff_v1(&sv),
                ));
            }
            Message::Sync(SyncMessage::SyncStep2(u) | SyncMessage::Update(u)) => {
                if matches!(msg, Message::Sync(SyncMessage::SyncStep2(_))) {
                    step2 = true;
                }
                replica.apply_remote(u)?;
                answers.extend(replica.take_outgoing().iter().map(|u| encode_update(u)));
            }
            Message::Awareness(entries) => {
                awareness.extend(entries.iter().map(|e| (e.client_id, e.is_removal())));
            }
            Message::QueryAwareness | Message::Auth(_) => {}
        }
    }
    Ok((answers, step2, awareness))
}

impl LiveClient {
    fn awareness_frame(&self) -> Option<Vec<u8>> {
        self.awareness.as_deref().map(|state| {
            encode_awareness_message(&[AwarenessEntry {
                client_id: self.id,
                clock: self.awareness_clock,
                state,
            }])
        })
    }

    async fn send(&mut self, frame: Vec<u8>) -> Result<(), String> {
        if self.partitioned {
            self.held.push(frame);
            return Ok(());
        }
        if frame.starts_with(&[0, 0]) {
            self.pending_step2 += 1;
        }
        self.last_sent = Some(frame.clone());
        if let Some(ws) = &mut self.ws
            && ws.send(Ws::binary(frame)).await.is_err()
        {
            self.ws = None;
        }
        Ok(())
    }

    async fn connect(&mut self, url: &str) -> Result<(), String> {
        self.ws = Some(open(url).await?);
        self.held.clear();
        self.pending_step2 = 0;
        let sv = self.replica.doc.transact().state_vector().encode_v1();
        self.send(encode_sync_step1(&sv)).await?;
        if let Some(f) = self.awareness_frame() {
            self.send(f).await?;
        }
        Ok(())
    }

    async fn close(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }

    /// Handles every frame already received, without waiting; returns how many.
    async fn pump(&mut self, limit: usize) -> Result<u64, String> {
        let mut n = 0;
        while n < limit as u64 && !self.partitioned {
            let Some(ws) = &mut self.ws else { break };
            let Some(next) = ws.next().now_or_never() else {
                break;
            };
            match next {
                Some(Ok(Ws::Binary(b))) => {
                    n += 1;
                    let (answers, step2, _) = on_frame(&self.replica, &b)?;
                    if step2 {
                        self.pending_step2 = self.pending_step2.saturating_sub(1);
                    }
                    for a in answers {
                        self.send(a).await?;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => self.ws = None,
            }
        }
        Ok(n)
    }

    /// Waits until every SyncStep1 sent on this connection is answered, handling everything
    /// received meanwhile.
    async fn until_step2(&mut self) -> Result<Vec<(u64, bool)>, String> {
        let mut seen = Vec::new();
        loop {
            let ws = self.ws.as_mut().ok_or("connection lost while syncing")?;
            let next = tokio::time::timeout(WAIT, ws.next())
                .await
                .map_err(|_| "timed out waiting for SyncStep2".to_owned())?;
            match next {
                Some(Ok(Ws::Binary(b))) => {
                    let (answers, step2, awareness) = on_frame(&self.replica, &b)?;
                    seen.extend(awareness);
                    for a in answers {
                        self.send(a).await?;
                    }
                    if step2 {
                        self.pending_step2 = self.pending_step2.saturating_sub(1);
                        if self.pending_step2 == 0 {
                            return Ok(seen);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("connection failed while syncing: {e}")),
                None => return Err("connection closed while syncing".into()),
            }
        }
    }
}

impl Live<'_> {
    async fn step(&mut self, step: &Step) -> Result<(), String> {
        let n = self.clients.len();
        match step {
            Step::Edit { client, edit } if *client < n => {
                let cl = &mut self.clients[*client];
                if cl.replica.edit(edit) {
                    self.counters.ops += 1;
                }
                for u in cl.replica.take_outgoing() {
                    if cl.ws.is_some() {
                        cl.send(encode_update(&u)).await?;
                    }
                }
            }
            Step::Deliver { n } => {
                tokio::task::yield_now().await;
                for cl in &mut self.clients {
                    self.counters.messages += cl.pump(*n as usize).await?;
                }
            }
            Step::Duplicate { client } if *client < n => {
                let cl = &mut self.clients[*client];
                if let Some(f) = cl.last_sent.clone() {
                    cl.send(f).await?;
                }
            }
            Step::Drop { client } if *client < n => {
                let cl = &mut self.clients[*client];
                if cl.ws.is_some() {
                    cl.ws = None; // dropped without a close frame
                    cl.connect(&self.url).await?;
                }
            }
            Step::Partition { client } if *client < n => self.clients[*client].partitioned = true,
            Step::Heal { client } if *client < n => {
                let cl = &mut self.clients[*client];
                cl.partitioned = false;
                for f in std::mem::take(&mut cl.held) {
                    cl.send(f).await?;
                }
            }
            Step::Offline { client } if *client < n => {
                let cl = &mut self.clients[*client];
                cl.online = false;
                cl.close().await;
            }
            Step::Leave { client } if *client < n => {
                let cl = &mut self.clients[*client];
                cl.online = false;
                cl.departed = true;
                cl.close().await;
            }
            Step::Online { client } if *client < n => {
                let cl = &mut self.clients[*client];
                cl.online = true;
                cl.departed = false;
                if cl.ws.is_none() {
                    cl.partitioned = false;
                    cl.connect(&self.url).await?;
                }
            }
            Step::Awareness { client, value } if *client < n => {
                let cl = &mut self.clients[*client];
                cl.awareness_clock += 1;
                cl.awareness = Some(format!(
                    r#"{{"user":{{"name":"client {client}","v":{value}}}}}"#
                ));
                if let Some(f) = cl.awareness_frame()
                    && cl.ws.is_some()
                {
                    cl.send(f).await?;
                }
            }
            Step::Crash => {
                if let Some(cmd) = self.restart_cmd {
                    self.counters.restarts += 1;
                    let status = tokio::process::Command::new("sh")
                        .arg("-c")
                        .arg(cmd)
                        .status()
                        .await
                        .map_err(|e| format!("running --restart-cmd: {e}"))?;
                    if !status.success() {
                        return Err(format!("--restart-cmd failed: {status}"));
                    }
                    for cl in &mut self.clients {
                        cl.ws = None;
                        if cl.online {
                            cl.partitioned = false;
                            cl.connect(&self.url).await?;
                        }
                    }
                }
            }
            _ => {}
        }
        // a connection the server closed is reopened, as y-websocket does
        for cl in &mut self.clients {
            if cl.online && cl.ws.is_none() {
                cl.partitioned = false;
                cl.connect(&self.url).await?;
            }
        }
        Ok(())
    }

    async fn settle_and_check(&mut self) -> Result<(), String> {
        let mut connected = Vec::new();
        for (i, cl) in self.clients.iter_mut().enumerate() {
            if cl.departed {
                continue;
            }
            cl.online = true;
            cl.partitioned = false;
            if cl.ws.is_none() {
                cl.connect(&self.url).await?;
            }
            for f in std::mem::take(&mut cl.held) {
                cl.send(f).await?;
            }
            connected.push(i);
        }
        // push: everyone's full state reaches the server; the SyncStep2 answering our
        // SyncStep1 comes after the server handled it (frames are ordered per connection)
        for &i in &connected {
            let cl = &mut self.clients[i];
            let full = cl
                .replica
                .doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            cl.send(encode_sync_step2(&full)).await?;
            let sv = cl.replica.doc.transact().state_vector().encode_v1();
            cl.send(encode_sync_step1(&sv)).await?;
            cl.until_step2().await?;
        }
        // pull: everyone gets the union
        for &i in &connected {
            let cl = &mut self.clients[i];
            let sv = cl.replica.doc.transact().state_vector().encode_v1();
            cl.send(encode_sync_step1(&sv)).await?;
            cl.until_step2().await?;
        }
        let mut fresh = LiveClient::new(999_999);
        fresh.ws = Some(open(&self.url).await?);
        fresh.send(encode_query_awareness()).await?;
        fresh.send(encode_sync_step1(&[0])).await?;
        let awareness = fresh.until_step2().await?;
        let want = doc_view(&fresh.replica.doc);
        let want_state = {
            let t = fresh.replica.doc.transact();
            (t.state_vector(), t.snapshot())
        };
        for &i in &connected {
            let cl = &self.clients[i];
            if cl.replica.doc.transact().has_missing_updates() {
                return Err(format!("client {i} has pending structs"));
            }
            if doc_view(&cl.replica.doc) != want {
                return Err(format!(
                    "client {i} differs from a fresh client's full sync:\n  client: {}\n  fresh:  {}",
                    doc_view(&cl.replica.doc).0,
                    want.0
                ));
            }
            let t = cl.replica.doc.transact();
            if (t.state_vector(), t.snapshot()) != want_state {
                return Err(format!(
                    "client {i}'s state vector or delete set differs from a fresh client's"
                ));
            }
        }
        for cl in self.clients.iter().filter(|c| c.departed) {
            if awareness
                .iter()
                .any(|(id, removed)| *id == cl.id && !removed)
            {
                return Err(format!(
                    "awareness of departed client {} is still served",
                    cl.id
                ));
            }
        }
        fresh.close().await;
        for cl in &mut self.clients {
            cl.close().await;
        }
        Ok(())
    }
}

async fn run_one(
    scenario: &Scenario,
    base: &str,
    index: u64,
    restart_cmd: Option<&str>,
) -> (Result<(), String>, Counters) {
    let url = format!(
        "{}/fuzz-{}-{index}",
        base.trim_end_matches('/'),
        scenario.seed
    );
    let mut live = Live {
        url: url.clone(),
        restart_cmd,
        clients: (0..scenario.clients)
            .map(|i| LiveClient::new(1000 + i as u64))
            .collect(),
        counters: Counters::default(),
    };
    let result = async {
        for cl in &mut live.clients {
            cl.connect(&url).await?;
        }
        for (i, step) in scenario.steps.iter().enumerate() {
            live.step(step)
                .await
                .map_err(|e| format!("step {i}: {e}"))?;
        }
        live.settle_and_check().await
    }
    .await;
    (result, live.counters)
}

/// Runs a live campaign against `url` (ws://HOST:PORT); each scenario uses a fresh room.
pub async fn run(
    opts: &Options,
    url: &str,
    restart_cmd: Option<&str>,
    out: &mut dyn Write,
) -> Result<Summary, FuzzError> {
    if !url.starts_with("ws://") && !url.starts_with("wss://") {
        return Err(FuzzError::Live(format!(
            "--url must start with ws:// or wss://, got {url:?}"
        )));
    }
    let started = Instant::now();
    let mut summary = Summary::default();
    let bar = crate::progress_bar(opts);
    for (i, scenario) in crate::campaign(opts, started, None) {
        let (result, c) = run_one(&scenario, url, i, restart_cmd).await;
        summary.scenarios += 1;
        summary.add(c);
        bar.inc(1);
        if let Err(e) = result {
            summary.failures += 1;
            bar.suspend(|| {
                writeln!(
                    out,
                    "FAILURE in live scenario {i} (campaign seed {}, scenario seed {}): {e}",
                    opts.seed, scenario.seed
                )
            })?;
        }
    }
    bar.finish_and_clear();
    summary.elapsed = started.elapsed();
    Ok(summary)
}
