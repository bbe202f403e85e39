//! Simulated fleets: many [`Agent`]s with a [`SimulatedApplier`] in one process, heartbeating
//! for real over HTTP through one shared client (`souverix agent simulate`, and the fleet of
//! `souverix demo`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use replication::backoff::{Rng, SplitMix64};

use crate::agent::{Agent, AgentConfig, HttpTransport, SimulatedApplier};

/// One group of simulated nodes heartbeating to one site.
#[derive(Debug, Clone)]
pub struct Group {
    /// The site of the nodes' zone.
    pub server: String,
    /// Node ids are `<prefix>-<i>`, `i` from 1, zero-padded to at least two digits.
    pub prefix: String,
    pub nodes: usize,
    /// How many of them (the last ones) heartbeat every `Plan::delayed_period` instead of
    /// every `Plan::interval`.
    pub delayed: usize,
}

/// How every simulated node behaves.
#[derive(Debug, Clone)]
pub struct Plan {
    pub interval: Duration,
    /// The real period of delayed nodes (they still declare `interval`).
    pub delayed_period: Duration,
    pub apply_delay: Duration,
    pub failure_rate: f64,
    pub seed: u64,
}

/// The id of the `i`-th node (from 1) of a group of `count`.
pub fn node_id(prefix: &str, i: usize, count: usize) -> String {
    let width = count.to_string().len().max(2);
    format!("{prefix}-{i:0width$}")
}

/// Counters every simulated node adds to.
#[derive(Debug, Default)]
pub struct Stats {
    pub rounds_ok: AtomicU64,
    pub rounds_failed: AtomicU64,
    pub apply_failures: AtomicU64,
    /// Per node: whether its last round left it with the whole set in effect applied.
    in_sync: Vec<AtomicBool>,
    /// Per node: whether its last round reached the site.
    reachable: Vec<AtomicBool>,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub nodes: usize,
    pub reachable: usize,
    pub in_sync: usize,
    pub rounds_ok: u64,
    pub rounds_failed: u64,
    pub apply_failures: u64,
}

impl Stats {
    pub fn summary(&self) -> Summary {
        let count = |v: &[AtomicBool]| v.iter().filter(|b| b.load(Ordering::Relaxed)).count();
        Summary {
            nodes: self.in_sync.len(),
            reachable: count(&self.reachable),
            in_sync: count(&self.in_sync),
            rounds_ok: self.rounds_ok.load(Ordering::Relaxed),
            rounds_failed: self.rounds_failed.load(Ordering::Relaxed),
            apply_failures: self.apply_failures.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} nodes: {} reaching their site, {} up to date; {} rounds ok, {} failed, {} apply failures",
            self.nodes, self.reachable, self.in_sync, self.rounds_ok, self.rounds_failed, self.apply_failures
        )
    }
}

/// A running simulated fleet: one tokio task per node.
pub struct Fleet {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    pub stats: Arc<Stats>,
}

impl Fleet {
    /// Starts every node of `groups`, each after a random delay within one interval so the
    /// heartbeats spread out. All nodes share one HTTP client.
    pub fn start(groups: &[Group], plan: &Plan) -> anyhow::Result<Fleet> {
        let http = HttpTransport::client()?;
        let total: usize = groups.iter().map(|g| g.nodes).sum();
        let stats = Arc::new(Stats {
            in_sync: (0..total).map(|_| AtomicBool::new(false)).collect(),
            reachable: (0..total).map(|_| AtomicBool::new(false)).collect(),
            ..Stats::default()
        });
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let mut rng = SplitMix64::new(plan.seed);
        let mut slot = 0;
        for group in groups {
            let transport = HttpTransport::new(http.clone(), &group.server);
            for i in 1..=group.nodes {
                let node = node_id(&group.prefix, i, group.nodes);
                let mut config = AgentConfig::new(node.clone(), plan.interval);
                if i > group.nodes.saturating_sub(group.delayed) {
                    config.period = plan.delayed_period;
                }
                let node_seed = plan.seed ^ crate::agent::seed_from(&node);
                let applier = SimulatedApplier::new(plan.apply_delay, plan.failure_rate, node_seed);
                let agent = Agent::new(config, transport.clone(), applier, node_seed.rotate_left(17))?;
                let interval_ms = u64::try_from(plan.interval.as_millis()).unwrap_or(u64::MAX).max(1);
                let start_after = Duration::from_millis(rng.next_u64() % interval_ms);
                let (stats, mut shutdown) = (stats.clone(), shutdown.clone());
                tasks.spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(start_after) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                    agent
                        .run(shutdown, move |result| match result {
                            Ok(round) => {
                                stats.rounds_ok.fetch_add(1, Ordering::Relaxed);
                                stats.apply_failures.fetch_add(round.failed as u64, Ordering::Relaxed);
                                stats.in_sync[slot].store(round.in_sync, Ordering::Relaxed);
                                stats.reachable[slot].store(true, Ordering::Relaxed);
                            }
                            Err(_) => {
                                stats.rounds_failed.fetch_add(1, Ordering::Relaxed);
                                stats.reachable[slot].store(false, Ordering::Relaxed);
                            }
                        })
                        .await;
                });
                slot += 1;
            }
        }
        Ok(Fleet { stop, tasks, stats })
    }

    /// Stops every node and waits for their tasks to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while let Some(done) = self.tasks.join_next().await {
            if let Err(err) = done {
                tracing::warn!(error = %err, "a simulated node's task failed");
            }
        }
    }
}

/// The design's fleet for the demo federation: (zone site, node id prefix, nodes, delayed).
pub const DEMO_FLEET: [(&str, &str, usize, usize); 4] = [
    ("edge-zone-a1", "a1-node", 25, 0),
    ("edge-zone-a2", "a2-node", 25, 2),
    ("edge-zone-b1", "b1-node", 40, 0),
    ("edge-zone-c", "c-node", 15, 0),
];

/// The demo fleet's behaviour: a 5 s interval, delayed nodes beating every 30 s (between the
/// demo's `delayed_after` of 15 s and `offline_after` of 60 s), applying in 200 ms, never failing.
pub fn demo_plan() -> Plan {
    Plan {
        interval: Duration::from_secs(5),
        delayed_period: Duration::from_secs(30),
        apply_delay: Duration::from_millis(200),
        failure_rate: 0.0,
        seed: 1,
    }
}

/// The demo fleet's groups, given each site's URL; fails when a zone of the design's fleet is not
/// a site of the federation.
pub fn demo_groups(url_of: impl Fn(&str) -> Option<String>) -> anyhow::Result<Vec<Group>> {
    DEMO_FLEET
        .iter()
        .map(|&(site, prefix, nodes, delayed)| {
            let server = url_of(site).ok_or_else(|| {
                anyhow::anyhow!(
                    "the design's fleet needs a site `{site}`, which this federation does not have"
                )
            })?;
            Ok(Group { server, prefix: prefix.to_owned(), nodes, delayed })
        })
        .collect()
}

/// `souverix agent simulate`: runs the fleet and prints a summary every `report` until Ctrl-C.
pub async fn simulate(group: Group, plan: Plan, report: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(group.nodes > 0, "--nodes must be at least 1");
    anyhow::ensure!(
        group.delayed <= group.nodes,
        "--delayed ({}) cannot exceed --nodes ({})",
        group.delayed,
        group.nodes
    );
    anyhow::ensure!((0.0..=1.0).contains(&plan.failure_rate), "--failure-rate must be between 0.0 and 1.0");
    anyhow::ensure!(!plan.interval.is_zero(), "--interval must be longer than zero");
    model::ObjectName::new(node_id(&group.prefix, 1, group.nodes))
        .map_err(|e| anyhow::anyhow!("--prefix does not make valid node ids: {e}"))?;
    let fleet = Fleet::start(std::slice::from_ref(&group), &plan)?;
    println!(
        "simulating {} nodes ({} delayed) against {} every {}s; Ctrl-C stops",
        group.nodes,
        group.delayed,
        group.server,
        plan.interval.as_secs_f64()
    );
    let shutdown = crate::serve::shutdown_signal()?;
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(report);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => println!("{}", fleet.stats.summary()),
            _ = &mut shutdown => break,
        }
    }
    let summary = fleet.stats.summary();
    fleet.stop().await;
    println!("stopped: {summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_padded_like_the_seed() {
        assert_eq!(node_id("a2-node", 7, 25), "a2-node-07");
        assert_eq!(node_id("sim", 42, 5000), "sim-0042");
        assert_eq!(node_id("x", 1, 3), "x-01");
    }
}
