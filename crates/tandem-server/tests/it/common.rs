//! Test fixtures: an in-process server on a random port with a sled store in a temp dir, and a
//! client that speaks y-websocket like a stock browser client (a yrs Doc behind it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tandem_protocol::{
    AwarenessEntry, Message, SyncMessage, decode_frame, encode_awareness_message,
    encode_sync_step1, encode_sync_step2, encode_update,
};
use tandem_server::{Hub, ServerConfig};
use tandem_store::{SledStore, StoreConfig};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// How long any single wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(dir: &Path, config: ServerConfig) -> TestServer {
        let store_config = StoreConfig::new(dir);
        let store = SledStore::open(&store_config).expect("open store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hub = Hub::new(Arc::new(store), config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tandem_server::serve(listener, hub.clone(), async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, room: &str) -> String {
        format!("ws://{}/{}", self.addr, room)
    }

    /// Graceful shutdown: flush, close sockets, release the store.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
    }
}

pub fn test_config() -> ServerConfig {
    ServerConfig::default()
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A y-websocket client: a yrs Doc synced over one WebSocket.
pub struct Client {
    pub doc: Doc,
    ws: Ws,
    /// Awareness states seen, by client id (None = removed).
    pub awareness: HashMap<u64, Option<String>>,
    /// How the server closed us, if it did.
    pub closed: Option<(u16, String)>,
    /// Auth messages received (permission denied reasons).
    pub denied: Vec<String>,
    /// Sync Update messages received (echoes of our own updates included).
    pub updates_received: usize,
}

impl Client {
    pub async fn connect(url: &str, client_id: u64) -> Client {
        let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut c = Client {
            doc: Doc::with_client_id(client_id),
            ws,
            awareness: HashMap::new(),
            closed: None,
            denied: Vec::new(),
            updates_received: 0,
        };
        let sv = c.doc.transact().state_vector().encode_v1();
        c.send(encode_sync_step1(&sv)).await;
        c
    }

    /// Connects and waits until the initial sync finished (the server answered our SyncStep1).
    pub async fn synced(url: &str, client_id: u64) -> Client {
        let mut c = Client::connect(url, client_id).await;
        c.wait_for_step2().await;
        c
    }

    pub async fn send(&mut self, frame: Vec<u8>) {
        self.ws
            .send(WsMessage::Binary(frame.into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, msg: WsMessage) -> Result<(), tungstenite::Error> {
        self.ws.send(msg).await
    }

    /// Makes a local edit and sends it as an Update, like y-websocket on a doc update event.
    pub async fn edit(&mut self, f: impl FnOnce(&Doc, &mut yrs::TransactionMut)) {
        let update = {
            let mut txn = self.doc.transact_mut();
            f(&self.doc, &mut txn);
            txn.encode_update_v1()
        };
        self.send(encode_update(&update)).await;
    }

    /// Makes a local edit and waits until the server echoes an update back (the echo is the
    /// server's receipt: the update is stored).
    pub async fn edit_confirmed(&mut self, f: impl FnOnce(&Doc, &mut yrs::TransactionMut)) {
        let before = self.updates_received;
        self.edit(f).await;
        self.wait_until("echo", |c| c.updates_received > before)
            .await;
    }

    pub async fn insert_text(&mut self, name: &str, index: u32, s: &str) {
        let text = self.doc.get_or_insert_text(name);
        self.edit(|_, txn| text.insert(txn, index, s)).await;
    }

    pub fn text(&self, name: &str) -> String {
        let text = self.doc.get_or_insert_text(name);
        text.get_string(&self.doc.transact())
    }

    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }

    pub async fn set_awareness(&mut self, clock: u64, state: &str) {
        let id = self.doc.client_id().get();
        let frame = encode_awareness_message(&[AwarenessEntry {
            client_id: id,
            clock,
            state,
        }]);
        self.send(frame).await;
    }

    /// Reads and handles one incoming frame. Returns false once the connection is closed.
    pub async fn pump(&mut self) -> bool {
        let msg = match tokio::time::timeout(TIMEOUT, self.ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(_))) | Ok(None) => {
                self.closed.get_or_insert((1006, "abnormal".into()));
                return false;
            }
            Err(_) => panic!("no message from the server within {TIMEOUT:?}"),
        };
        match msg {
            WsMessage::Binary(bytes) => {
                self.on_frame(&bytes).await;
                true
            }
            WsMessage::Close(frame) => {
                self.closed = Some(frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                }));
                false
            }
            _ => true,
        }
    }

    async fn on_frame(&mut self, frame: &[u8]) {
        let msgs = decode_frame(frame).expect("server sends valid frames");
        assert_eq!(
            msgs.len(),
            1,
            "one message per frame for y-websocket clients"
        );
        for msg in msgs {
            match msg {
                Message::Sync(SyncMessage::SyncStep1(sv)) => {
                    let sv = StateVector::decode_v1(&tandem_protocol::encode_state_vector(sv))
                        .expect("sv");
                    let diff = self.doc.transact().encode_diff_v1(&sv);
                    self.send(encode_sync_step2(&diff)).await;
                }
                Message::Sync(SyncMessage::SyncStep2(u)) => self.apply_remote(u),
                Message::Sync(SyncMessage::Update(u)) => {
                    self.updates_received += 1;
                    self.apply_remote(u);
                }
                Message::Awareness(entries) => {
                    for e in entries {
                        let state = (!e.is_removal()).then(|| e.state.to_owned());
                        self.awareness.insert(e.client_id, state);
                    }
                }
                Message::Auth(tandem_protocol::AuthMessage::PermissionDenied(r)) => {
                    self.denied.push(r.to_owned())
                }
                Message::Auth(_) | Message::QueryAwareness => {}
            }
        }
    }

    fn apply_remote(&mut self, update: &[u8]) {
        let update = Update::decode_v1(update).expect("server sends valid updates");
        self.doc
            .transact_mut()
            .apply_update(update)
            .expect("apply server update");
    }

    async fn wait_for_step2(&mut self) {
        // the first SyncStep2 we receive answers our SyncStep1
        loop {
            let msg = tokio::time::timeout(TIMEOUT, self.ws.next())
                .await
                .expect("sync in time")
                .expect("open")
                .expect("ok");
            if let WsMessage::Binary(bytes) = msg {
                let is_step2 = matches!(
                    decode_frame(&bytes).expect("valid").first(),
                    Some(Message::Sync(SyncMessage::SyncStep2(_)))
                );
                self.on_frame(&bytes).await;
                if is_step2 {
                    return;
                }
            }
        }
    }

    /// Pumps messages until `cond` holds; panics after [`TIMEOUT`] or if the server closes us.
    pub async fn wait_until(&mut self, what: &str, cond: impl Fn(&Client) -> bool) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !cond(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            assert!(
                self.pump().await,
                "closed while waiting for {what}: {:?}",
                self.closed
            );
        }
    }

    /// Waits until our document covers `target` (every client's clock at least as far).
    pub async fn wait_for_state(&mut self, target: &StateVector) {
        let target = target.clone();
        self.wait_until("state vector", move |c| covers(&c.state_vector(), &target))
            .await;
    }

    /// Pumps until the server closes the connection; returns the close code and reason.
    pub async fn wait_closed(&mut self) -> (u16, String) {
        while self.pump().await {}
        self.closed.clone().expect("closed")
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(TIMEOUT, self.ws.next()).await {}
    }
}

/// Whether `have` includes everything in `want`.
pub fn covers(have: &StateVector, want: &StateVector) -> bool {
    want.iter()
        .all(|(client, &clock)| have.get(client) >= clock)
}

/// The union of several state vectors.
pub fn merged(svs: impl IntoIterator<Item = StateVector>) -> StateVector {
    let mut out = StateVector::default();
    for sv in svs {
        out.merge(sv);
    }
    out
}

pub fn full_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}
