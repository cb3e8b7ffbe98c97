//! The deterministic simulator: yrs clients speaking real y-protocols frames to a real
//! [`Room`] persisted in a real [`SledStore`], through a simulated network, with crashes.
//!
//! Everything is driven by the scenario's step list and one seeded RNG (message choice); there is
//! no wall clock and no thread, so a scenario replays identically.
//!
//! Layout: this file holds the scenario, the simulated store, server and clients and the steps;
//! `net.rs` the network model (carrying out a room's effects, delivering frames, settling);
//! `checks.rs` the final phase and the convergence checks.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tandem_protocol::{AwarenessEntry, encode_awareness_message, encode_sync_step1};
use tandem_room::{PeerId, PeerInfo, Room, RoomConfig};
use tandem_store::{
    DocStore, LogEntry, LogRecord, RoomStats, SledStore, Snapshot, StoreConfig, StoreError,
    StoredRoom,
};
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, Transact};

use crate::ops::{Edit, Replica};

/// The room every simulated client joins.
mod checks;
mod net;

const ROOM: &str = "fuzz";
/// Upper bound on deliveries while waiting for quiescence.
const MAX_DRAIN: usize = 200_000;

/// When the server's writes reach disk relative to its echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityMode {
    /// Flush before echoing; a crash may lose nothing that was echoed.
    #[default]
    Sync,
    /// Echo without flushing; clients resend what a crash lost.
    Async,
}

/// A deliberate defect in the system under test, to show the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sabotage {
    /// The server silently drops one client update frame.
    DropUpdate,
    /// One log append is skipped while the room keeps the update in memory.
    SkipLogWrite,
    /// The room is not told when one client leaves, so its awareness state stays.
    ForgetAwarenessRemoval,
    /// A client replica dies (`abort()`) while applying a server frame, as a replica does when
    /// yrs corrupts memory. Only for isolated runs ([`crate::isolate`]): in process, it would
    /// end the whole campaign, which is the point of the demonstration.
    CrashClient,
}

impl Sabotage {
    /// Every sabotage a scenario reports as a failed check (in process too; not `CrashClient`).
    pub const ALL: [Sabotage; 3] = [
        Sabotage::DropUpdate,
        Sabotage::SkipLogWrite,
        Sabotage::ForgetAwarenessRemoval,
    ];
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// A client edits its document (sending the update if it is connected).
    Edit {
        client: usize,
        edit: Edit,
    },
    /// Deliver up to `n` queued messages, each from a randomly chosen link.
    Deliver {
        n: u32,
    },
    /// Deliver the head message of a client's link twice.
    Duplicate {
        client: usize,
    },
    /// Lose the head message of a client's link: the connection breaks and the client
    /// reconnects and resyncs.
    Drop {
        client: usize,
    },
    /// Hold all traffic of a client's link.
    Partition {
        client: usize,
    },
    Heal {
        client: usize,
    },
    /// The client disconnects and keeps editing offline.
    Offline {
        client: usize,
    },
    Online {
        client: usize,
    },
    /// The client leaves for good (until a later `online`).
    Leave {
        client: usize,
    },
    /// The client sets its awareness state.
    Awareness {
        client: usize,
        value: u32,
    },
    /// The server process dies (memory lost) and restarts from storage.
    Crash,
}

/// A complete, replayable scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub seed: u64,
    pub clients: usize,
    pub durability: DurabilityMode,
    pub sabotage: Option<Sabotage>,
    /// The room compacts its log after this many entries.
    pub compact_after_entries: u64,
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Generates a scenario with `ops` edits from `seed`.
    pub fn generate(
        seed: u64,
        clients: usize,
        ops: usize,
        durability: DurabilityMode,
        sabotage: Option<Sabotage>,
    ) -> Scenario {
        let clients = clients.max(1);
        let mut rng = StdRng::seed_from_u64(seed);
        let compact_after_entries = rng.random_range(3..60);
        let mut steps = Vec::new();
        let mut edits = 0;
        let mut crashes = 0;
        while edits < ops {
            let client = rng.random_range(0..clients);
            let step = match rng.random_range(0..1000) {
                0..=499 => {
                    edits += 1;
                    Step::Edit {
                        client,
                        edit: Edit::generate(&mut rng),
                    }
                }
                500..=799 => Step::Deliver {
                    n: rng.random_range(1..12),
                },
                800..=829 => Step::Duplicate { client },
                830..=849 => Step::Drop { client },
                850..=874 => Step::Partition { client },
                875..=909 => Step::Heal { client },
                910..=929 => Step::Offline { client },
                930..=959 => Step::Online { client },
                960..=969 => Step::Leave { client },
                970..=989 => Step::Awareness {
                    client,
                    value: rng.random_range(0..1000),
                },
                _ => {
                    crashes += 1;
                    Step::Crash
                }
            };
            steps.push(step);
        }
        if crashes == 0 && !steps.is_empty() {
            let at = rng.random_range(0..=steps.len());
            steps.insert(at, Step::Crash);
        }
        Scenario {
            seed,
            clients,
            durability,
            sabotage,
            compact_after_entries,
            steps,
        }
    }
}

/// Counters of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub ops: u64,
    pub messages: u64,
    pub restarts: u64,
}

/// A `DocStore` around sled that the fuzzer can sabotage (skip one append).
struct FuzzStore {
    inner: SledStore,
    skip_next_append: AtomicBool,
}

impl DocStore for FuzzStore {
    fn load(&self, room: &str) -> Result<StoredRoom, StoreError> {
        self.inner.load(room)
    }
    fn append(&self, room: &str, entries: &[(u64, LogRecord)]) -> Result<(), StoreError> {
        if self.skip_next_append.swap(false, Ordering::SeqCst) {
            // lose the batch's first record, keep the rest
            return self
                .inner
                .append(room, entries.get(1..).unwrap_or_default());
        }
        self.inner.append(room, entries)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
    fn compact(&self, room: &str, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.compact(room, snapshot)
    }
    fn delete(&self, room: &str) -> Result<(), StoreError> {
        self.inner.delete(room)
    }
    fn list_rooms(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.list_rooms(after, limit)
    }
    fn stats(&self, room: &str) -> Result<Option<RoomStats>, StoreError> {
        self.inner.stats(room)
    }
    fn log_after(&self, room: &str, after: u64, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        self.inner.log_after(room, after, limit)
    }
}

struct Server {
    dir: PathBuf,
    store: Option<Arc<FuzzStore>>,
    room: Room,
    config: RoomConfig,
}

fn open_store(dir: &PathBuf) -> Result<Arc<FuzzStore>, String> {
    // Background flushing off in both modes: whether a write survives depends only on the steps.
    let config = StoreConfig {
        cache_capacity: 8 * 1024 * 1024,
        ..StoreConfig::new(dir)
    };
    let inner = SledStore::open(&config).map_err(|e| format!("open store: {e}"))?;
    Ok(Arc::new(FuzzStore {
        inner,
        skip_next_append: AtomicBool::new(false),
    }))
}

impl Server {
    fn store(&self) -> Result<&Arc<FuzzStore>, String> {
        self.store
            .as_ref()
            .ok_or_else(|| "store not open".to_owned())
    }

    fn load_fresh(&self) -> Result<Room, String> {
        let stored = self
            .store()?
            .load(ROOM)
            .map_err(|e| format!("load from storage: {e}"))?;
        Room::load(&stored, self.config.clone()).map_err(|e| format!("room from storage: {e}"))
    }
}

struct Client {
    replica: Replica,
    /// Also the awareness client id.
    id: u64,
    conn: Option<PeerId>,
    online: bool,
    departed: bool,
    partitioned: bool,
    /// Client → server frames in flight.
    up: VecDeque<Vec<u8>>,
    /// Server → client frames in flight.
    down: VecDeque<Vec<u8>>,
    awareness_clock: u32,
    awareness: Option<String>,
}

/// The simulation of one scenario.
pub struct Sim {
    scenario: Scenario,
    clients: Vec<Client>,
    server: Server,
    rng: StdRng,
    next_peer: PeerId,
    now_ms: u64,
    pub counters: Counters,
    /// Sabotage is armed once the scenario's own steps are done (see [`Sim::finish`]).
    armed: bool,
    _tmp: tempfile::TempDir,
}

fn state_of(doc: &Doc) -> (yrs::StateVector, yrs::Snapshot) {
    let txn = doc.transact();
    (txn.state_vector(), txn.snapshot())
}

impl Sim {
    pub fn new(scenario: Scenario) -> Result<Sim, String> {
        let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let dir = tmp.path().join("store");
        let config = RoomConfig {
            compact_after_entries: scenario.compact_after_entries,
            ..RoomConfig::default()
        };
        let store = open_store(&dir)?;
        let server = Server {
            dir,
            store: Some(store),
            room: Room::new(config.clone()),
            config,
        };
        // one extra client: the visitor of the final phase
        let clients = (0..=scenario.clients)
            .map(|i| Client {
                replica: Replica::new(1000 + i as u64),
                id: 1000 + i as u64,
                conn: None,
                online: i < scenario.clients,
                departed: false,
                partitioned: false,
                up: VecDeque::new(),
                down: VecDeque::new(),
                awareness_clock: 0,
                awareness: None,
            })
            .collect();
        Ok(Sim {
            rng: StdRng::seed_from_u64(scenario.seed ^ 0x0005_EED0_F4E7),
            scenario,
            clients,
            server,
            next_peer: 1,
            now_ms: 0,
            counters: Counters::default(),
            armed: false,
            _tmp: tmp,
        })
    }

    fn sabotage(&self, kind: Sabotage) -> bool {
        self.armed && self.scenario.sabotage == Some(kind)
    }

    /// Runs every step, then the final phase and the checks.
    pub fn run(&mut self) -> Result<(), String> {
        for c in 0..self.scenario.clients {
            self.connect(c)?;
        }
        let steps = self.scenario.steps.clone();
        for (i, step) in steps.iter().enumerate() {
            self.now_ms += 1;
            self.step(step)
                .map_err(|e| format!("step {i} ({}): {e}", step_name(step)))?;
            let fx = self.server.room.tick(self.now_ms);
            self.dispatch(fx)?;
        }
        self.finish()
    }

    fn client(&mut self, c: usize) -> Option<usize> {
        (c < self.scenario.clients).then_some(c)
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Edit { client, edit } => {
                let Some(c) = self.client(*client) else {
                    return Ok(());
                };
                self.edit(c, edit)?;
            }
            Step::Deliver { n } => {
                for _ in 0..*n {
                    if !self.deliver_one()? {
                        break;
                    }
                }
            }
            Step::Duplicate { client } => {
                if let Some(c) = self.client(*client) {
                    let cl = &mut self.clients[c];
                    if let Some(f) = cl.down.front().cloned() {
                        cl.down.push_front(f);
                    } else if let Some(f) = cl.up.front().cloned() {
                        cl.up.push_front(f);
                    }
                }
            }
            Step::Drop { client } => {
                if let Some(c) = self.client(*client)
                    && self.clients[c].conn.is_some()
                {
                    let cl = &mut self.clients[c];
                    if cl.down.pop_front().is_none() {
                        cl.up.pop_front();
                    }
                    self.disconnect(c)?;
                    self.connect(c)?;
                }
            }
            Step::Partition { client } => {
                if let Some(c) = self.client(*client) {
                    self.clients[c].partitioned = true;
                }
            }
            Step::Heal { client } => {
                if let Some(c) = self.client(*client) {
                    self.clients[c].partitioned = false;
                }
            }
            Step::Offline { client } => {
                if let Some(c) = self.client(*client) {
                    self.clients[c].online = false;
                    self.disconnect(c)?;
                }
            }
            Step::Online { client } => {
                if let Some(c) = self.client(*client) {
                    self.clients[c].online = true;
                    self.clients[c].departed = false;
                    if self.clients[c].conn.is_none() {
                        self.connect(c)?;
                    }
                }
            }
            Step::Leave { client } => {
                if let Some(c) = self.client(*client) {
                    self.clients[c].online = false;
                    self.clients[c].departed = true;
                    self.disconnect(c)?;
                }
            }
            Step::Awareness { client, value } => {
                if let Some(c) = self.client(*client) {
                    self.set_awareness(c, *value);
                }
            }
            Step::Crash => self.crash()?,
        }
        Ok(())
    }

    fn edit(&mut self, c: usize, edit: &Edit) -> Result<(), String> {
        let cl = &mut self.clients[c];
        if cl.replica.edit(edit) {
            self.counters.ops += 1;
        }
        cl.flush_outgoing();
        Ok(())
    }

    fn set_awareness(&mut self, c: usize, value: u32) {
        let cl = &mut self.clients[c];
        cl.awareness_clock += 1;
        cl.awareness = Some(format!(r#"{{"user":{{"name":"client {c}","v":{value}}}}}"#));
        if cl.conn.is_some() {
            let frame = awareness_frame(cl);
            cl.up.push_back(frame);
        }
    }

    fn connect(&mut self, c: usize) -> Result<(), String> {
        let peer = self.next_peer;
        self.next_peer += 1;
        let cl = &mut self.clients[c];
        cl.conn = Some(peer);
        cl.up.clear();
        cl.down.clear();
        // y-websocket on open: SyncStep1, then the local awareness state
        let sv = cl.replica.doc.transact().state_vector().encode_v1();
        cl.up.push_back(encode_sync_step1(&sv));
        if cl.awareness.is_some() {
            let frame = awareness_frame(cl);
            cl.up.push_back(frame);
        }
        let fx = self.server.room.connect(peer, PeerInfo::default());
        self.dispatch(fx)
    }

    fn disconnect(&mut self, c: usize) -> Result<(), String> {
        let cl = &mut self.clients[c];
        cl.up.clear();
        cl.down.clear();
        let Some(peer) = cl.conn.take() else {
            return Ok(());
        };
        if self.sabotage(Sabotage::ForgetAwarenessRemoval) {
            self.armed = false;
            return Ok(());
        }
        let fx = self.server.room.disconnect(peer, self.now_ms);
        self.dispatch(fx)
    }

    /// Crash: everything in memory is gone; storage is reopened and the room reloaded.
    fn crash(&mut self) -> Result<(), String> {
        self.counters.restarts += 1;
        let before = state_of(self.server.room.doc());
        // the connections die with the process
        for cl in &mut self.clients {
            cl.conn = None;
            cl.up.clear();
            cl.down.clear();
        }
        let config = self.server.config.clone();
        self.server.room = Room::new(config);
        self.server.store = None;
        let store = open_store(&self.server.dir)?;
        self.server.store = Some(store);
        self.server.room = self.server.load_fresh()?;
        let after = state_of(self.server.room.doc());
        if self.scenario.durability == DurabilityMode::Sync && after != before {
            return Err(format!(
                "after restart storage lacks echoed updates: state before crash {:?}, after {:?}",
                before.0, after.0
            ));
        }
        for c in 0..self.scenario.clients {
            if self.clients[c].online {
                self.connect(c)?;
            }
        }
        Ok(())
    }
}

fn awareness_frame(cl: &Client) -> Vec<u8> {
    encode_awareness_message(&[AwarenessEntry {
        client_id: cl.id,
        clock: u64::from(cl.awareness_clock),
        state: cl.awareness.as_deref().unwrap_or("null"),
    }])
}

fn step_name(step: &Step) -> String {
    serde_json::to_string(step).unwrap_or_else(|_| format!("{step:?}"))
}

/// Runs one scenario to completion; `Err` describes the first failed check.
pub fn run_scenario(scenario: &Scenario) -> (Result<(), String>, Counters) {
    match Sim::new(scenario.clone()) {
        Ok(mut sim) => {
            let r = sim.run();
            (r, sim.counters)
        }
        Err(e) => (Err(e), Counters::default()),
    }
}
