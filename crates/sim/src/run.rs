//! One run: start the federation, play the plan (client writes and faults), heal, wait until
//! every link has drained and every site agrees (bounded), then check the promises.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use model::{Clock, ObjectKey, ObjectName, SiteId, VersionId};
use replication::{LocalWriteError, Signal, StoreCalls, SyncEngine};
use store::{LocalWrite, Precondition, SqliteStore, Store, WriteError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::check::{self, Violation};
use crate::crashable::{CrashPoint, CrashableStore};
use crate::dice::Dice;
use crate::plan::{Action, Plan, WriteSpec};
use crate::topology::{SiteSpec, Topology};
use crate::trace::Trace;
use crate::world::{NetStats, SimClock, SimTransport, Slot, World};
use crate::{Params, SimError};

/// How often the settle phase checks whether the federation has converged.
const SETTLE_POLL: Duration = Duration::from_secs(2);

/// A write the client saw acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub no: u64,
    pub site: SiteId,
    pub key: ObjectKey,
    pub version: VersionId,
}

/// What the clients saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub attempted: u64,
    pub committed: u64,
    pub acknowledged: u64,
    /// Committed, but the site crashed before the answer left.
    pub unacknowledged: u64,
    pub refused: u64,
    pub precondition_failed: u64,
    pub site_down: u64,
}

impl ClientStats {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &ClientStats) {
        self.attempted += o.attempted;
        self.committed += o.committed;
        self.acknowledged += o.acknowledged;
        self.unacknowledged += o.unacknowledged;
        self.refused += o.refused;
        self.precondition_failed += o.precondition_failed;
        self.site_down += o.site_down;
    }
}

impl FaultStats {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &FaultStats) {
        for (kind, n) in &o.partitions {
            *self.partitions.entry(kind).or_default() += n;
        }
        self.crashes += o.crashes;
        self.crashes_before_ack += o.crashes_before_ack;
        self.crashes_at_store_call += o.crashes_at_store_call;
        self.skews += o.skews;
        self.skews_beyond_max += o.skews_beyond_max;
        self.signals += o.signals;
    }
}

/// Counts of the faults a run injected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub partitions: BTreeMap<&'static str, u64>,
    /// Every crash, of whatever kind.
    pub crashes: u64,
    /// Crashes between a write's commit and its answer.
    pub crashes_before_ack: u64,
    /// Crashes just before a chosen store call.
    pub crashes_at_store_call: u64,
    pub skews: u64,
    pub skews_beyond_max: u64,
    pub signals: u64,
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub violations: Vec<Violation>,
    /// A hash of every event, in order: the same seed gives the same hash.
    pub trace_hash: u64,
    /// A hash of every site's final objects and histories.
    pub state_hash: u64,
    pub simulated_ms: u64,
    pub fault_ms: u64,
    /// How long after the heal every link had drained and every site agreed.
    pub settled_after_ms: Option<u64>,
    pub clients: ClientStats,
    pub faults: FaultStats,
    pub net: NetStats,
    pub conflicts: u64,
    pub versions: u64,
    pub topology: String,
    pub trace: Trace,
}

/// Runs one seed in a fresh single-threaded runtime with paused time, with the sites' stores
/// in a temporary directory under `data_root`.
pub fn run_seed(seed: u64, params: &Params, data_root: &Path) -> Result<Outcome, SimError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| SimError::Setup(format!("cannot build the runtime: {e}")))?;
    let dir =
        tempfile::Builder::new().prefix(&format!("sim-{seed}-")).tempdir_in(data_root).map_err(|e| {
            SimError::Setup(format!("cannot make a directory under {}: {e}", data_root.display()))
        })?;
    let outcome = runtime.block_on(Run::play(seed, params, dir.path()));
    drop(runtime);
    outcome
}

/// What every task of a run shares.
struct Ctx {
    world: Arc<World>,
    topo: Arc<Topology>,
    dir: std::path::PathBuf,
    clients: ClientLog,
}

struct Run;

impl Run {
    async fn play(seed: u64, params: &Params, dir: &Path) -> Result<Outcome, SimError> {
        let mut dice = Dice::new(seed);
        let topo = Arc::new(Topology::random(&mut dice)?);
        let names: Vec<ObjectName> = ["p0", "p1"]
            .iter()
            .map(|n| ObjectName::new(*n).map_err(|e| SimError::Setup(e.to_string())))
            .collect::<Result<_, _>>()?;
        let plan = Plan::random(&mut dice, &topo, params, &names);
        let start = Instant::now();
        let world = Arc::new(World::new(start, seed));
        let ctx = Arc::new(Ctx {
            world: world.clone(),
            topo: topo.clone(),
            dir: dir.to_owned(),
            clients: Arc::default(),
        });
        for line in topo.describe().lines() {
            world.note(format!("site {line}"));
        }
        world.note(format!(
            "plan: {} actions over {}s; loss {}‰ duplication {}‰ long delays {}‰",
            plan.actions.len(),
            plan.fault_ms / 1000,
            plan.loss_pm,
            plan.dup_pm,
            plan.delay_pm
        ));
        {
            let mut st = world.lock();
            for id in topo.sites.keys() {
                st.slots.insert(
                    id.clone(),
                    Slot {
                        engine: None,
                        store: None,
                        point: None,
                        down_ms: 0,
                        epoch: 0,
                        clock: Arc::new(SimClock::new(start)),
                    },
                );
            }
        }
        for id in topo.sites.keys() {
            ctx.start_site(id).await?;
        }
        {
            let mut st = world.lock();
            st.loss_pm = plan.loss_pm;
            st.dup_pm = plan.dup_pm;
            st.delay_pm = plan.delay_pm;
        }
        let reaper = tokio::spawn(reap(ctx.clone()));

        let mut writers: Vec<JoinHandle<()>> = Vec::new();
        for (when, action) in plan.actions {
            tokio::time::sleep_until(start + Duration::from_millis(when)).await;
            ctx.apply(action, &mut writers).await?;
        }
        tokio::time::sleep_until(start + Duration::from_millis(plan.fault_ms)).await;
        for writer in writers {
            let _ = writer.await;
        }
        reaper.abort();
        let _ = reaper.await;

        ctx.heal().await?;
        let healed_ms = world.elapsed_ms();
        let max_skew = topo.sites.values().map(|s| s.max_skew_ms).max().unwrap_or(0);
        let deadline = healed_ms + params.settle_secs * 1000 + 3 * max_skew;
        let mut settled_after_ms = None;
        loop {
            tokio::time::sleep(SETTLE_POLL).await;
            if ctx.settled().await? {
                settled_after_ms = Some(world.elapsed_ms() - healed_ms);
                world.note("settled: every link drained and every site agrees".into());
                break;
            }
            if world.elapsed_ms() >= deadline {
                world.note("the settle phase ran out of time".into());
                break;
            }
        }

        let stores: BTreeMap<SiteId, Arc<dyn Store>> = {
            let st = world.lock();
            st.slots.iter().filter_map(|(id, s)| s.store.clone().map(|store| (id.clone(), store))).collect()
        };
        let engines: BTreeMap<SiteId, SyncEngine> = {
            let st = world.lock();
            st.slots.iter().filter_map(|(id, s)| s.engine.clone().map(|e| (id.clone(), e))).collect()
        };
        let mut statuses = BTreeMap::new();
        for (id, engine) in &engines {
            statuses.insert(id.clone(), engine.status().await);
        }
        let (clients, acked, mut violations) = {
            let guard = ctx.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.clone()
        };
        let report = check::check(&topo, &stores, &statuses, &acked)?;
        violations.extend(report.violations);
        if settled_after_ms.is_none() {
            violations.insert(
                0,
                Violation::new(
                    "settle",
                    None,
                    None,
                    format!(
                        "the federation did not drain and agree within {}s of the heal",
                        (deadline - healed_ms) / 1000
                    ),
                ),
            );
        }

        // Stop every site; the stores close when the last handle goes.
        for engine in engines.values() {
            engine.abort().await;
        }
        drop(engines);
        drop(stores);
        let simulated_ms = world.elapsed_ms();
        let (trace, net, faults) = {
            let mut st = world.lock();
            for slot in st.slots.values_mut() {
                slot.engine = None;
                slot.store = None;
                slot.point = None;
            }
            (std::mem::take(&mut st.trace), st.stats.clone(), st.faults.clone())
        };
        Ok(Outcome {
            seed,
            violations,
            trace_hash: trace.hash(),
            state_hash: report.state_hash,
            simulated_ms,
            fault_ms: plan.fault_ms,
            settled_after_ms,
            clients,
            faults,
            net,
            conflicts: report.conflicts,
            versions: report.versions,
            topology: topo.describe(),
            trace,
        })
    }
}

/// Cleans up after processes that died at a store call, and restarts them after their
/// downtime (during the fault phase only: the heal restarts whatever is still down).
async fn reap(ctx: Arc<Ctx>) {
    let mut restarts = tokio::task::JoinSet::new();
    loop {
        ctx.world.deaths.notified().await;
        let dead: Vec<(SiteId, u64)> = {
            let st = ctx.world.lock();
            st.slots
                .iter()
                .filter(|(_, s)| s.engine.is_some() && s.point.as_ref().is_some_and(|p| p.is_dead()))
                .map(|(id, s)| (id.clone(), s.down_ms))
                .collect()
        };
        for (id, down_ms) in dead {
            {
                let mut st = ctx.world.lock();
                st.faults.crashes += 1;
                st.faults.crashes_at_store_call += 1;
            }
            ctx.world.note(format!("crash {id} just before a store call"));
            ctx.crash(&id).await;
            let ctx = ctx.clone();
            restarts.spawn(async move {
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                if !ctx.is_up(&id) {
                    ctx.world.note(format!("restart {id} from its store"));
                    if let Err(e) = ctx.start_site(&id).await {
                        ctx.world.note(format!("restart of {id} failed: {e}"));
                    }
                }
            });
        }
        while restarts.try_join_next().is_some() {}
    }
}

impl Ctx {
    fn store_path(&self, site: &SiteId) -> std::path::PathBuf {
        self.dir.join(format!("{site}.sqlite3"))
    }

    async fn start_site(&self, id: &SiteId) -> Result<(), SimError> {
        let spec: &SiteSpec =
            self.topo.sites.get(id).ok_or_else(|| SimError::Setup(format!("no site {id}")))?;
        let path = self.store_path(id);
        let point = Arc::new(CrashPoint::new(self.world.deaths.clone()));
        let inner = SqliteStore::open(&path, id.clone(), spec.max_skew_ms)?;
        let store: Arc<dyn Store> = Arc::new(CrashableStore { inner, point: point.clone() });
        let clock = {
            let st = self.world.lock();
            st.slots.get(id).map(|s| s.clock.clone())
        }
        .ok_or_else(|| SimError::Setup(format!("no slot for {id}")))?;
        let transport = Arc::new(SimTransport { world: self.world.clone(), from: id.clone() });
        let engine =
            SyncEngine::start_with(spec.engine.clone(), store.clone(), clock, transport, StoreCalls::Inline)
                .await?;
        let mut st = self.world.lock();
        if let Some(slot) = st.slots.get_mut(id) {
            slot.engine = Some(engine);
            slot.store = Some(store);
            slot.point = Some(point);
            slot.epoch += 1;
        }
        Ok(())
    }

    /// Whether the site's process runs (or has died at a store call and is not reaped yet).
    fn is_up(&self, site: &SiteId) -> bool {
        self.world.lock().slots.get(site).is_some_and(|s| s.engine.is_some())
    }

    /// The process dies: nothing more reaches its store, its tasks stop wherever they are.
    async fn crash(&self, site: &SiteId) {
        let (engine, store) = {
            let mut st = self.world.lock();
            let Some(slot) = st.slots.get_mut(site) else { return };
            slot.epoch += 1;
            if let Some(point) = slot.point.take() {
                point.kill();
            }
            (slot.engine.take(), slot.store.take())
        };
        if let Some(engine) = engine {
            engine.abort().await;
        }
        drop(store);
    }

    async fn apply(&self, action: Action, writers: &mut Vec<JoinHandle<()>>) -> Result<(), SimError> {
        let world = &self.world;
        match action {
            Action::Write(spec) => {
                let (world, clients) = (world.clone(), self.clients.clone());
                writers.push(tokio::spawn(client_write(world, clients, spec)));
            }
            Action::Cut { kind, pairs } => {
                world.note(format!("partition ({}) {}", kind.as_str(), describe_pairs(&pairs)));
                let mut st = world.lock();
                *st.faults.partitions.entry(kind.as_str()).or_default() += 1;
                for pair in pairs {
                    *st.cuts.entry(pair).or_default() += 1;
                }
            }
            Action::Uncut { pairs } => {
                world.note(format!("partition over: {}", describe_pairs(&pairs)));
                let mut st = world.lock();
                for pair in pairs {
                    if let Some(n) = st.cuts.get_mut(&pair) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
            Action::Crash { site, before_ack } => {
                if world.alive(&site) {
                    {
                        let mut st = world.lock();
                        st.faults.crashes += 1;
                        if before_ack {
                            st.faults.crashes_before_ack += 1;
                        }
                    }
                    world.note(format!(
                        "crash {site}{}",
                        if before_ack { " (between a write's commit and its answer)" } else { "" }
                    ));
                    self.crash(&site).await;
                }
            }
            Action::ArmCrash { site, after_calls, down_ms } => {
                let mut st = world.lock();
                if let Some(slot) = st.slots.get_mut(&site).filter(|s| s.alive()) {
                    slot.down_ms = down_ms;
                    if let Some(point) = &slot.point {
                        point.arm(after_calls);
                    }
                    drop(st);
                    world.note(format!("{site} will crash just before store call {after_calls} from now"));
                }
            }
            Action::Restart { site } => {
                if !self.is_up(&site) {
                    world.note(format!("restart {site} from its store"));
                    self.start_site(&site).await?;
                }
            }
            Action::Skew { site, ms, beyond } => {
                {
                    let mut st = world.lock();
                    if ms != 0 {
                        st.faults.skews += 1;
                        if beyond {
                            st.faults.skews_beyond_max += 1;
                        }
                    }
                    if let Some(slot) = st.slots.get(&site) {
                        slot.clock.set_skew(ms);
                    }
                }
                world.note(format!(
                    "clock of {site} skewed {ms:+}ms{}",
                    if beyond { " (beyond the maximum)" } else { "" }
                ));
            }
            Action::Signal { site, peer, signal } => {
                if let Some(engine) = world.engine(&site) {
                    if signal != Signal::Up {
                        world.lock().faults.signals += 1;
                    }
                    world.note(format!("signal {site} -> {peer}: {}", signal.as_str()));
                    if let Err(e) = engine.signal(&peer, signal).await {
                        world.note(format!("signal failed: {e}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The faults stop: every partition and network fault ends, clocks are right again, no
    /// crash is pending, every site that is down restarts, and every link is signalled up.
    async fn heal(&self) -> Result<(), SimError> {
        self.world.note("heal: faults stop, links heal, down sites restart".into());
        let dead: Vec<SiteId> = {
            let mut st = self.world.lock();
            st.cuts.clear();
            st.loss_pm = 0;
            st.dup_pm = 0;
            st.delay_pm = 0;
            for slot in st.slots.values() {
                slot.clock.set_skew(0);
                if let Some(point) = &slot.point {
                    point.disarm();
                }
            }
            st.slots
                .iter()
                .filter(|(_, s)| s.engine.is_some() && !s.alive())
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in &dead {
            self.crash(id).await;
        }
        let ids: Vec<SiteId> = self.topo.sites.keys().cloned().collect();
        for id in &ids {
            if !self.is_up(id) {
                self.world.note(format!("restart {id} from its store"));
                self.start_site(id).await?;
            }
        }
        for id in &ids {
            let Some(engine) = self.world.engine(id) else { continue };
            for link in &self.topo.sites[id].engine.links {
                if let Err(e) = engine.signal(&link.peer, Signal::Up).await {
                    self.world.note(format!("signal failed: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Whether every link has drained and every site holding an object has the same current
    /// version of it.
    async fn settled(&self) -> Result<bool, SimError> {
        let sites: Vec<(SiteId, SyncEngine, Arc<dyn Store>)> = {
            let st = self.world.lock();
            st.slots
                .iter()
                .filter_map(|(id, s)| Some((id.clone(), s.engine.clone()?, s.store.clone()?)))
                .collect()
        };
        for (_, engine, _) in &sites {
            let status = engine.status().await;
            if status.links.iter().any(|l| l.pending > 0) {
                return Ok(false);
            }
        }
        let mut current: BTreeMap<ObjectKey, BTreeMap<SiteId, VersionId>> = BTreeMap::new();
        for (id, _, store) in &sites {
            for (key, version) in store.digest_entries(None)? {
                current.entry(key).or_default().insert(id.clone(), version);
            }
        }
        for (key, at_sites) in &current {
            let holders = self.topo.holders(&key.scope);
            let mut versions = at_sites.values();
            let first = versions.next();
            if at_sites.len() != holders.len() || versions.any(|v| Some(v) != first) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn describe_pairs(pairs: &[(SiteId, SiteId)]) -> String {
    pairs.iter().map(|(a, b)| format!("{a}->{b}")).collect::<Vec<_>>().join(" ")
}

/// What the clients saw, the writes acknowledged to them, and store failures they met.
type ClientState = (ClientStats, Vec<Acked>, Vec<Violation>);
type ClientLog = Arc<std::sync::Mutex<ClientState>>;

/// A client's request to a site, through the one write path (`SyncEngine::write_local`); the
/// write counts as acknowledged only if the answer gets out before the site crashes.
async fn client_write(world: Arc<World>, clients: ClientLog, spec: WriteSpec) {
    let log = |f: &dyn Fn(&mut ClientState)| {
        f(&mut clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    };
    log(&|c| c.0.attempted += 1);
    tokio::time::sleep(Duration::from_millis(spec.request_ms)).await;
    let what = if spec.delete { "delete" } else { "write" };
    let found = {
        let st = world.lock();
        st.slots
            .get(&spec.site)
            .filter(|s| s.alive())
            .and_then(|s| Some((s.engine.clone()?, s.store.clone()?, s.epoch, s.clock.clone())))
    };
    let Some((engine, store, epoch, clock)) = found else {
        log(&|c| c.0.site_down += 1);
        world.note(format!("{what} #{} of {} at {}: the site is down", spec.no, spec.key, spec.site));
        return;
    };
    let precondition = if spec.if_match {
        match store.get(&spec.key) {
            Ok(Some(o)) => Some(Precondition::Version(o.version.id())),
            Ok(None) => Some(Precondition::Absent),
            Err(_) => None,
        }
    } else {
        None
    };
    let write = LocalWrite {
        key: spec.key.clone(),
        labels: BTreeMap::new(),
        spec: if spec.delete {
            serde_json::Value::Null
        } else {
            serde_json::json!({"write": spec.no, "site": spec.site.as_str()})
        },
        deleted: spec.delete,
        author: "sim-client".into(),
        precondition: precondition.clone(),
        now_ms: clock.now_ms(),
    };
    let result = engine.write_local(write).await;
    drop((engine, store));
    let condition = precondition.map(|p| match p {
        Precondition::Version(v) => format!(" if-match {v}"),
        Precondition::Absent => " if-absent".to_owned(),
    });
    let condition = condition.unwrap_or_default();
    match result {
        Ok(committed) => {
            let version = committed.object.version.id();
            log(&|c| c.0.committed += 1);
            world.note(format!(
                "{what} #{} of {} at {}{condition}: committed {version}",
                spec.no, spec.key, spec.site
            ));
            tokio::time::sleep(Duration::from_millis(spec.answer_ms)).await;
            let same_life = world.lock().slots.get(&spec.site).is_some_and(|s| s.epoch == epoch && s.alive());
            if same_life {
                world.note(format!("{what} #{} of {} acknowledged: {version}", spec.no, spec.key));
                let acked = Acked { no: spec.no, site: spec.site.clone(), key: spec.key.clone(), version };
                log(&|c| {
                    c.0.acknowledged += 1;
                    c.1.push(acked.clone());
                });
            } else {
                log(&|c| c.0.unacknowledged += 1);
                world.note(format!("{what} #{} of {}: the site crashed before answering", spec.no, spec.key));
            }
        }
        Err(LocalWriteError::Refused(refusal)) => {
            log(&|c| c.0.refused += 1);
            world.note(format!(
                "{what} #{} of {} at {}: refused by rule {}",
                spec.no,
                spec.key,
                spec.site,
                refusal.rule.as_str()
            ));
        }
        Err(LocalWriteError::Write(WriteError::PreconditionFailed { .. } | WriteError::NotFound { .. })) => {
            log(&|c| c.0.precondition_failed += 1);
            world.note(format!(
                "{what} #{} of {} at {}{condition}: precondition failed",
                spec.no, spec.key, spec.site
            ));
        }
        Err(_) if !world.lock().slots.get(&spec.site).is_some_and(|s| s.epoch == epoch && s.alive()) => {
            log(&|c| c.0.site_down += 1);
            world.note(format!(
                "{what} #{} of {} at {}: the site crashed during the write",
                spec.no, spec.key, spec.site
            ));
        }
        Err(err) => {
            let detail =
                format!("{what} #{} of {} at {} failed in the store: {err}", spec.no, spec.key, spec.site);
            world.note(detail.clone());
            log(&|c| {
                c.2.push(Violation::new(
                    "store",
                    Some(spec.site.clone()),
                    Some(spec.key.clone()),
                    detail.clone(),
                ))
            });
        }
    }
}
