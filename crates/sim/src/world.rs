//! The simulated world the sites live in: their clocks (simulated time plus a per-site skew),
//! the network between them (latency, loss, duplication, long delays, partitions) and which of
//! them are running. Everything is behind one mutex that is never held across an await, and
//! every random draw comes from one seeded generator, in an order the single-threaded runtime
//! fixes, so a seed replays exactly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use model::{Clock, SiteId};
use replication::transport::Reply;
use replication::{DigestRequest, ReceiveError, SyncEngine, Transport, TransportError};
use store::Store;
use tokio::time::Instant;

use crate::crashable::CrashPoint;
use crate::dice::Dice;
use crate::run::FaultStats;
use crate::trace::Trace;

/// 2025-11-24T00:00:00Z: where every site's clock starts.
pub const EPOCH_MS: u64 = 1_763_942_400_000;
/// How long a sender waits for an answer that never comes.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A site's clock: the runtime's (paused, simulated) time plus the site's skew.
#[derive(Debug)]
pub struct SimClock {
    start: Instant,
    skew_ms: AtomicI64,
}

impl SimClock {
    pub fn new(start: Instant) -> Self {
        SimClock { start, skew_ms: AtomicI64::new(0) }
    }

    pub fn set_skew(&self, ms: i64) {
        self.skew_ms.store(ms, Ordering::SeqCst);
    }

    pub fn skew(&self) -> i64 {
        self.skew_ms.load(Ordering::SeqCst)
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        EPOCH_MS.saturating_add(elapsed).saturating_add_signed(self.skew())
    }
}

/// A site as the world sees it.
pub struct Slot {
    /// `None` while the site is down.
    pub engine: Option<SyncEngine>,
    pub store: Option<Arc<dyn Store>>,
    /// Where the current life ends, if it is armed.
    pub point: Option<Arc<CrashPoint>>,
    /// How long the site stays down after a crash at a store call.
    pub down_ms: u64,
    /// Counts restarts: an answer from an earlier life never reaches its client.
    pub epoch: u64,
    pub clock: Arc<SimClock>,
}

impl Slot {
    /// Running, and its process has not died at a store call.
    pub fn alive(&self) -> bool {
        self.engine.is_some() && !self.point.as_ref().is_some_and(|p| p.is_dead())
    }
}

/// Counters of what the network and the faults did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    pub messages: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub partitioned: u64,
    pub refused_down: u64,
    /// Batches refused for a timestamp beyond the receiver's maximum skew.
    pub refused_skew: u64,
}

impl NetStats {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &NetStats) {
        self.messages += o.messages;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.delayed += o.delayed;
        self.partitioned += o.partitioned;
        self.refused_down += o.refused_down;
        self.refused_skew += o.refused_skew;
    }
}

/// The mutable state of the world.
pub struct WorldState {
    pub slots: BTreeMap<SiteId, Slot>,
    /// Directed cuts `(from, to)`, counted so that overlapping partitions compose.
    pub cuts: BTreeMap<(SiteId, SiteId), u32>,
    /// Per mille of messages lost, duplicated, and held back long enough to overtake others.
    pub loss_pm: u32,
    pub dup_pm: u32,
    pub delay_pm: u32,
    pub dice: Dice,
    pub stats: NetStats,
    pub faults: FaultStats,
    pub trace: Trace,
}

pub struct World {
    pub start: Instant,
    state: Mutex<WorldState>,
    /// Wakes the reaper when a process dies at a store call.
    pub deaths: Arc<tokio::sync::Notify>,
}

/// What happens to one message on its way.
enum Fate {
    Arrives(Duration),
    Lost,
}

impl World {
    pub fn new(start: Instant, seed: u64) -> Self {
        World {
            start,
            state: Mutex::new(WorldState {
                slots: BTreeMap::new(),
                cuts: BTreeMap::new(),
                loss_pm: 0,
                dup_pm: 0,
                delay_pm: 0,
                dice: Dice::new(seed ^ 0x6e65_7477_6f72_6b21),
                stats: NetStats::default(),
                faults: FaultStats::default(),
                trace: Trace::default(),
            }),
            deaths: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, WorldState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Milliseconds of simulated time since the run began.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn note(&self, text: String) {
        let at = self.elapsed_ms();
        self.lock().trace.note(at, text);
    }

    /// The fate of a message sent now.
    fn fate(&self) -> Fate {
        let at = self.elapsed_ms();
        let mut st = self.lock();
        st.stats.messages += 1;
        let (loss, delay) = (st.loss_pm, st.delay_pm);
        let lost = st.dice.chance(loss);
        let late = st.dice.chance(delay);
        let base = st.dice.range(1, 30);
        let extra = if late { st.dice.range(500, 8_000) } else { 0 };
        st.trace.mix(&[at, 1, u64::from(lost), base + extra]);
        if lost {
            st.stats.lost += 1;
            return Fate::Lost;
        }
        if late {
            st.stats.delayed += 1;
        }
        Fate::Arrives(Duration::from_millis(base + extra))
    }

    fn is_cut(&self, from: &SiteId, to: &SiteId) -> bool {
        let mut st = self.lock();
        let cut = st.cuts.get(&(from.clone(), to.clone())).is_some_and(|n| *n > 0);
        if cut {
            st.stats.partitioned += 1;
        }
        cut
    }

    /// The engine of a site whose process is alive.
    pub fn engine(&self, site: &SiteId) -> Option<SyncEngine> {
        self.lock().slots.get(site).filter(|s| s.alive()).and_then(|s| s.engine.clone())
    }

    pub fn alive(&self, site: &SiteId) -> bool {
        self.lock().slots.get(site).is_some_and(Slot::alive)
    }

    /// Whether this message is delivered twice; if so, when the copy arrives.
    fn duplicate(&self) -> Option<Duration> {
        let mut st = self.lock();
        let dup_pm = st.dup_pm;
        if !st.dice.chance(dup_pm) {
            return None;
        }
        st.stats.duplicated += 1;
        let delay = st.dice.range(1, 10_000);
        st.trace.mix(&[2, delay]);
        Some(Duration::from_millis(delay))
    }
}

/// Hands a request to the site's engine, as its HTTP handlers would.
async fn deliver(engine: &SyncEngine, path: &str, body: &[u8]) -> Result<Vec<u8>, TransportError> {
    match path {
        "/v1/sync/batch" => match engine.receive(body).await {
            Ok(ack) => serde_json::to_vec(&ack).map_err(|e| refused(500, e.to_string())),
            Err(err) => Err(receive_error(err)),
        },
        "/v1/sync/digest" => {
            let request: DigestRequest =
                serde_json::from_slice(body).map_err(|e| refused(400, format!("bad digest request: {e}")))?;
            match engine.digest(request).await {
                Ok(reply) => serde_json::to_vec(&reply).map_err(|e| refused(500, e.to_string())),
                Err(err) => Err(receive_error(err)),
            }
        }
        other => Err(refused(404, format!("there is nothing at {other}"))),
    }
}

fn refused(status: u16, detail: String) -> TransportError {
    TransportError::Refused { status, detail }
}

/// The status codes the server's sync endpoints answer with.
fn receive_error(err: ReceiveError) -> TransportError {
    let status = match &err {
        ReceiveError::Decode(_)
        | ReceiveError::Misaddressed { .. }
        | ReceiveError::BadHello { .. }
        | ReceiveError::Malformed(_) => 400,
        ReceiveError::NotNeighbour { .. } => 403,
        ReceiveError::LinkDown { .. } => 503,
        ReceiveError::ClockSkew(_) => 422,
        ReceiveError::Store(_) | ReceiveError::Internal(_) => 500,
    };
    refused(status, err.to_string())
}

/// One site's view of the network: POSTs to `sim://<peer>` reach the peer's engine, if the
/// network lets them.
pub struct SimTransport {
    pub world: Arc<World>,
    pub from: SiteId,
}

impl SimTransport {
    async fn exchange(&self, base_url: &str, path: &str, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let to = base_url
            .strip_prefix("sim://")
            .and_then(|id| SiteId::new(id).ok())
            .ok_or_else(|| TransportError::Unreachable(format!("no such simulated address {base_url}")))?;
        let world = &self.world;
        if !world.alive(&self.from) {
            return Err(TransportError::Unreachable("the process crashed".into()));
        }
        // The request's way.
        match world.fate() {
            Fate::Lost => {
                tokio::time::sleep(TIMEOUT).await;
                return Err(TransportError::Unreachable("timed out: the request was lost".into()));
            }
            Fate::Arrives(delay) => tokio::time::sleep(delay).await,
        }
        if world.is_cut(&self.from, &to) {
            tokio::time::sleep(TIMEOUT).await;
            return Err(TransportError::Unreachable("timed out: partitioned".into()));
        }
        let Some(engine) = world.engine(&to) else {
            world.lock().stats.refused_down += 1;
            return Err(TransportError::Unreachable("connection refused: the site is down".into()));
        };
        if let Some(later) = world.duplicate() {
            let (world, to, path, body) = (world.clone(), to.clone(), path.to_owned(), body.clone());
            tokio::spawn(async move {
                tokio::time::sleep(later).await;
                if let Some(engine) = world.engine(&to) {
                    let result = deliver(&engine, &path, &body).await;
                    let at = world.elapsed_ms();
                    world.lock().trace.mix(&[at, 3, u64::from(result.is_ok())]);
                }
            });
        }
        let reply = deliver(&engine, path, &body).await;
        drop(engine);
        if !world.alive(&to) {
            return Err(TransportError::Unreachable("connection reset: the site crashed".into()));
        }
        {
            let at = world.elapsed_ms();
            let mut st = world.lock();
            let (status, len) = match &reply {
                Ok(bytes) => (200, bytes.len() as u64),
                Err(TransportError::Refused { status, .. }) => (u64::from(*status), 0),
                Err(TransportError::Unreachable(_)) => (0, 0),
            };
            if status == 422 {
                st.stats.refused_skew += 1;
            }
            st.trace.mix(&[at, 4, body.len() as u64, status, len]);
        }
        // The answer's way back.
        match world.fate() {
            Fate::Lost => {
                tokio::time::sleep(TIMEOUT).await;
                return Err(TransportError::Unreachable("timed out: the answer was lost".into()));
            }
            Fate::Arrives(delay) => tokio::time::sleep(delay).await,
        }
        if world.is_cut(&to, &self.from) {
            tokio::time::sleep(TIMEOUT).await;
            return Err(TransportError::Unreachable("timed out: partitioned".into()));
        }
        reply
    }
}

impl Transport for SimTransport {
    fn post<'a>(
        &'a self,
        base_url: &'a str,
        path: &'a str,
        _content_type: &'static str,
        body: Vec<u8>,
    ) -> Reply<'a> {
        Box::pin(self.exchange(base_url, path, body))
    }
}
