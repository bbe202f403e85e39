//! A deterministic simulator of a whole federation in one process.
//!
//! Each run takes a seed and draws from it a federation (1 global site, 2–3 regions, 3–6 edge
//! zones, random sync modes, batch sizes, strategies and autonomy), a workload of client writes
//! and deletes at every site, and faults: partitions of single links (both ways or one way), of
//! a region's subtree and of every link of one site; message loss, duplication and long delays
//! that reorder messages; crashes at arbitrary points (some placed between a write's commit and
//! its answer) with restart from the store; clock skew within and beyond the maximum; link
//! signals. After the fault phase everything heals; the run waits, bounded, until every link
//! has drained and the sites agree, then checks the promises ([`check`]).
//!
//! The sites are the product's own: real [`store::SqliteStore`] files and real
//! [`replication::SyncEngine`]s, reached through the engine's seams: a [`world::SimClock`] per
//! site, a [`world::SimTransport`] that hands requests to the peer's engine as its HTTP handlers
//! would, and store calls run in place ([`replication::StoreCalls::Inline`]). Everything runs
//! on one tokio current-thread runtime with paused time, which jumps to the next timer when
//! every task waits, so an hour of simulated time costs only the work done in it, and the same
//! seed replays the same run exactly.

pub mod check;
pub mod crashable;
pub mod dice;
pub mod plan;
pub mod run;
pub mod topology;
pub mod trace;
pub mod world;

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub use check::Violation;
pub use run::{ClientStats, FaultStats, Outcome, run_seed};
pub use world::NetStats;

/// Why a run could not be carried out (as opposed to a broken promise, which is a
/// [`Violation`] in the [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("setting up the run failed: {0}")]
    Setup(String),
    #[error("a store failed: {0}")]
    Store(#[from] store::StoreError),
}

/// The size of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// How long the fault phase lasts (simulated seconds).
    pub fault_secs: u64,
    /// How many client writes, at least and at most.
    pub writes: (u64, u64),
    pub max_partitions: u64,
    pub max_crashes: u64,
    /// Per mille of writes followed by a crash between their commit and their answer.
    pub crash_before_ack_pm: u32,
    /// How long the settle phase may take after the heal, beyond three times the largest
    /// maximum clock skew (simulated seconds).
    pub settle_secs: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            fault_secs: 180,
            writes: (20, 80),
            max_partitions: 4,
            max_crashes: 3,
            crash_before_ack_pm: 50,
            settle_secs: 1800,
        }
    }
}

/// Totals over many runs.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub seeds: u64,
    pub failed: Vec<u64>,
    pub simulated_ms: u64,
    pub fault_ms: u64,
    pub settle_ms: u64,
    pub clients: ClientStats,
    pub faults: FaultStats,
    pub net: NetStats,
    pub conflicts: u64,
    pub versions: u64,
    pub violations: BTreeMap<&'static str, u64>,
}

impl Totals {
    pub fn add(&mut self, o: &Outcome) {
        self.seeds += 1;
        if !o.violations.is_empty() {
            self.failed.push(o.seed);
        }
        self.simulated_ms += o.simulated_ms;
        self.fault_ms += o.fault_ms;
        self.settle_ms += o.settled_after_ms.unwrap_or(0);
        self.clients.add(&o.clients);
        self.faults.add(&o.faults);
        self.net.add(&o.net);
        self.conflicts += o.conflicts;
        self.versions += o.versions;
        for violation in &o.violations {
            *self.violations.entry(violation.rule).or_default() += 1;
        }
    }

    /// The totals as a few lines of text.
    pub fn render(&self) -> String {
        let hours = |ms: u64| ms as f64 / 3_600_000.0;
        let mut out = String::new();
        let _ = writeln!(out, "seeds: {} run, {} failed", self.seeds, self.failed.len());
        let _ = writeln!(
            out,
            "simulated: {:.1} h ({:.1} h of faults, {:.1} h settling after the heals)",
            hours(self.simulated_ms),
            hours(self.fault_ms),
            hours(self.settle_ms)
        );
        let _ = writeln!(
            out,
            "writes: {} attempted, {} committed, {} acknowledged, {} committed but unanswered (crash), {} refused by authority, {} precondition failed, {} at a site that was down",
            self.clients.attempted,
            self.clients.committed,
            self.clients.acknowledged,
            self.clients.unacknowledged,
            self.clients.refused,
            self.clients.precondition_failed,
            self.clients.site_down
        );
        let partitions: Vec<String> =
            self.faults.partitions.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "faults: partitions ({}), crashes {} ({} between a write's commit and its answer, {} just before a chosen store call), clock skews {} ({} beyond the maximum), link signals {}",
            if partitions.is_empty() { "none".to_owned() } else { partitions.join(", ") },
            self.faults.crashes,
            self.faults.crashes_before_ack,
            self.faults.crashes_at_store_call,
            self.faults.skews,
            self.faults.skews_beyond_max,
            self.faults.signals
        );
        let _ = writeln!(
            out,
            "network: {} messages, {} lost, {} duplicated, {} delayed past others, {} dropped by partitions, {} refused by a down site, {} batches refused for clock skew",
            self.net.messages,
            self.net.lost,
            self.net.duplicated,
            self.net.delayed,
            self.net.partitioned,
            self.net.refused_down,
            self.net.refused_skew
        );
        let _ = writeln!(out, "outcome: {} versions, {} conflicts recorded", self.versions, self.conflicts);
        let violations: Vec<String> = self.violations.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "violations: {}",
            if violations.is_empty() { "none".to_owned() } else { violations.join(", ") }
        );
        if !self.failed.is_empty() {
            let shown: Vec<String> = self.failed.iter().take(50).map(u64::to_string).collect();
            let _ = writeln!(out, "failed seeds: {}", shown.join(" "));
        }
        out
    }
}

/// A failed run explained: the seed, the violations, and the events that led to them (faults,
/// crashes, and everything that happened to the objects involved), bounded.
pub fn explain(o: &Outcome, max_lines: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "seed {} broke {} promise(s):", o.seed, o.violations.len());
    for violation in o.violations.iter().take(20) {
        let _ = writeln!(out, "  {violation}");
    }
    let keys: Vec<String> =
        o.violations.iter().filter_map(|v| v.key.as_ref().map(ToString::to_string)).collect();
    let _ = writeln!(out, "topology:");
    for line in o.topology.lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "trace (faults, and the objects involved):");
    let relevant: Vec<&(u64, String)> = o
        .trace
        .lines()
        .iter()
        .filter(|(_, line)| {
            !line.starts_with("site ")
                && (keys.iter().any(|k| line.contains(k.as_str()))
                    || !(line.starts_with("write #") || line.starts_with("delete #")))
        })
        .collect();
    let skip = relevant.len().saturating_sub(max_lines);
    if skip > 0 {
        let _ = writeln!(out, "  … {skip} earlier lines");
    }
    for (at, line) in relevant.into_iter().skip(skip) {
        let _ = writeln!(out, "  {} {line}", trace::at(*at));
    }
    let command = if cfg!(feature = "broken-cursor-before-ack") { "cargo sim-broken" } else { "cargo sim" };
    let _ = writeln!(out, "replay: {command} --seed {}", o.seed);
    out
}
