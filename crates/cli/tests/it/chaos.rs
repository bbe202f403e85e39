//! Chaos between real processes: the demo federation's seven sites as `souverix serve`
//! processes on loopback, writers at several sites writing continuously within their
//! authority, sites killed with SIGKILL and restarted, links cut and restored through
//! `POST /v1/links/{peer}/signal`. Then every fault stops, every link heals, and the design's
//! consistency promises are checked over the HTTP API alone.
//!
//! The fault sequence comes from a seeded generator: the test prints its seed, and
//! `SOUVERIX_CHAOS_SEED=<seed>` replays the same choices (the writers' timing is the machine's).
//! `SOUVERIX_CHAOS_ROUNDS=<n>` runs longer than the default.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::FederationConfig;
use model::{SiteId, VersionId};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::fed_harness::{Api, DEMO_SITES, ProcessFederation, WriteOutcome, eventually};

/// Fault rounds of a default run (about a minute here); `SOUVERIX_CHAOS_ROUNDS` overrides.
const DEFAULT_ROUNDS: usize = 40;
/// Acknowledged writes between two fault decisions: the pace of the test, in work done rather
/// than in time.
const ACKS_PER_ROUND: u64 = 600;
/// How long a round may wait for that many acknowledgements.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
/// How long the federation may take to converge once every fault stopped.
const HEAL_DEADLINE: Duration = Duration::from_secs(120);
/// How long one write may wait for its answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most writes one writer makes, whatever happens.
const MAX_WRITES_PER_WRITER: usize = 100_000;
/// Objects per writer's name set: few, so that writers at two sites collide on them.
const NAMES: u64 = 4;
/// At most this many sites are down at once.
const MAX_DOWN: usize = 2;

/// Who writes what: `(site, scope, name prefix)`. Every write is within the site's authority:
/// its own scope, a descendant's, or an ancestor's as a local override where its full autonomy
/// allows one at any time (`edge-zone-b1`, `edge-zone-c`). Writers share a prefix where two
/// sites write the same objects, so conflicts arise.
const WRITERS: [(&str, &str, &str); 12] = [
    ("edge-zone-b1", "region-b", "rb"),
    ("edge-zone-c", "global", "g"),
    ("global-control", "global", "g"),
    ("global-control", "region-a", "ra"),
    ("region-a-control", "region-a", "ra"),
    ("region-a-control", "edge-zone-a1", "a1"),
    ("edge-zone-a1", "edge-zone-a1", "a1"),
    ("edge-zone-a2", "edge-zone-a2", "a2"),
    ("region-b-control", "region-b", "rb"),
    ("global-control", "edge-zone-b1", "b1"),
    ("edge-zone-b1", "edge-zone-b1", "b1"),
    ("edge-zone-c", "edge-zone-c", "c"),
];

/// SplitMix64: the seeded choices of the fault sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).expect("small")).expect("small")
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn env_number(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    Some(raw.trim().parse().unwrap_or_else(|e| panic!("{name}=`{raw}` is not a number: {e}")))
}

/// A seed that differs between runs: the process id and the moment, hashed.
fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish()
}

/// The demo tree as the promises need it: each site's scope, and who holds and may write each
/// scope.
struct Tree {
    /// Site id → its scope.
    scope_of: BTreeMap<String, String>,
    /// Site id → the scopes it may hold: its own, its ancestors', its descendants'.
    holds: BTreeMap<String, BTreeSet<String>>,
    /// Scope → the sites whose writes to it may be within authority: its owner, the owner's
    /// ancestors, and the descendants whose autonomy allows them to override it (under
    /// `conditional` autonomy only the parent's scope, while isolated, which the test does not
    /// see).
    writers_of: BTreeMap<String, BTreeSet<String>>,
}

impl Tree {
    fn demo() -> Tree {
        let federation = FederationConfig::embedded_demo();
        let scope_of: BTreeMap<String, String> =
            federation.sites().iter().map(|s| (s.id().to_string(), s.config.scope.to_string())).collect();
        let mut holds = BTreeMap::new();
        let mut writers_of = BTreeMap::new();
        for site in federation.sites() {
            let id = site.id();
            let ancestors = federation.ancestors(id);
            let subtree = federation.subtree(id);
            let related = ancestors.iter().chain(subtree.iter()).map(|s| scope_of[s.as_str()].clone());
            holds.insert(id.to_string(), related.collect::<BTreeSet<_>>());
            let overriders = federation.subtree(id).into_iter().filter(|d| {
                let below = &federation.get(d).expect("a site of the tree").config;
                let reach = match below.autonomy.mode {
                    model::Autonomy::Full => true,
                    model::Autonomy::Conditional => federation.ancestors(d).first() == Some(id),
                    model::Autonomy::None => false,
                };
                d != id && below.autonomy.can_modify_policies && reach
            });
            let may_write =
                std::iter::once(id.clone()).chain(ancestors).chain(overriders).map(|s| s.to_string());
            writers_of.insert(scope_of[id.as_str()].clone(), may_write.collect::<BTreeSet<_>>());
        }
        Tree { scope_of, holds, writers_of }
    }

    /// The sites that hold objects of `scope`.
    fn holders(&self, scope: &str) -> BTreeSet<String> {
        self.holds.iter().filter(|(_, scopes)| scopes.contains(scope)).map(|(id, _)| id.clone()).collect()
    }
}

/// A version acknowledged to a client: the site that answered, the object, the version.
#[derive(Debug, Clone)]
struct Ack {
    site: String,
    object: String,
    version: String,
}

/// What the writers share with the fault loop: which sites are up (and how often each was
/// started), and whether to stop.
#[derive(Debug, Clone, Default)]
struct Liveness {
    up: BTreeMap<String, u64>,
    stopped: bool,
}

/// What the writers found, for the checks.
#[derive(Default)]
struct Ledger {
    acks: Mutex<Vec<Ack>>,
    acked: AtomicU64,
    unanswered: AtomicU64,
    /// Answers no write within authority should get (403s, 5xx, malformed answers).
    unexpected: Mutex<Vec<String>>,
}

/// One writer: writes and deletes its objects at its site until told to stop. While its site
/// is down it waits for the site to be started again.
async fn writer(
    api: Api,
    url: String,
    (site, scope, prefix): (&'static str, &'static str, &'static str),
    seed: u64,
    ledger: Arc<Ledger>,
    mut live: watch::Receiver<Liveness>,
) {
    let mut rng = Rng(seed);
    for i in 0..MAX_WRITES_PER_WRITER {
        let seen = {
            let state = live.borrow();
            if state.stopped {
                return;
            }
            state.up.get(site).copied()
        };
        let Some(generation) = seen else {
            // Down: wait until it is started again (or the run stops).
            let _ = live.wait_for(|s| s.stopped || s.up.contains_key(site)).await;
            continue;
        };
        let name = format!("{prefix}-{}", rng.next() % NAMES);
        let spec = (rng.below(10) != 0).then(|| json!({"by": site, "i": i}));
        match api.try_write(&url, scope, &name, spec, WRITE_TIMEOUT).await {
            WriteOutcome::Acknowledged(version) => {
                let object = format!("Policy/{scope}/{name}");
                ledger.acks.lock().expect("acks").push(Ack { site: site.to_owned(), object, version });
                ledger.acked.fetch_add(1, Ordering::SeqCst);
            }
            WriteOutcome::NotFound => {}
            WriteOutcome::Unanswered(why) => {
                ledger.unanswered.fetch_add(1, Ordering::SeqCst);
                // Killed under the request: wait for the restart. Up and the same process
                // all along: an unanswered write within authority is itself a finding.
                let still_up = live.borrow().up.get(site) == Some(&generation);
                if still_up {
                    let _ = live.wait_for(|s| s.stopped || s.up.get(site) != Some(&generation)).await;
                    if live.borrow().up.get(site) == Some(&generation) {
                        ledger.unexpected.lock().expect("unexpected").push(format!(
                            "{site} did not answer a write to {scope}/{name} while it ran: {why}"
                        ));
                    }
                }
            }
            WriteOutcome::Refused(problem) => ledger
                .unexpected
                .lock()
                .expect("unexpected")
                .push(format!("{site} refused a write to {scope}/{name}: {problem}")),
            WriteOutcome::Other(answer) => ledger
                .unexpected
                .lock()
                .expect("unexpected")
                .push(format!("{site} answered a write to {scope}/{name} with {answer}")),
        }
    }
}

/// A link of the tree, as `(child, parent)`.
fn links(tree: &FederationConfig) -> Vec<(String, String)> {
    tree.sites()
        .iter()
        .filter_map(|s| s.parent.as_ref().map(|p| (s.id().to_string(), p.to_string())))
        .collect()
}

/// What the fault loop did.
#[derive(Debug, Default)]
struct Faults {
    kills: usize,
    restarts: usize,
    cuts: usize,
    restores: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promises_hold_after_kills_and_cuts_between_real_processes() {
    let seed = env_number("SOUVERIX_CHAOS_SEED").unwrap_or_else(fresh_seed);
    let rounds =
        env_number("SOUVERIX_CHAOS_ROUNDS").map_or(DEFAULT_ROUNDS, |n| usize::try_from(n).expect("rounds"));
    eprintln!("chaos: seed {seed} (replay with SOUVERIX_CHAOS_SEED={seed}), {rounds} rounds");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let tree = Tree::demo();
    let federation = FederationConfig::embedded_demo();
    let all_links = links(&federation);

    let mut fed = ProcessFederation::new();
    tokio::task::block_in_place(|| fed.start_all());
    let api = fed.api.clone();
    let url: BTreeMap<&str, String> = DEMO_SITES.iter().map(|id| (*id, fed.url(id))).collect();
    wait_linked(&api, &url, &all_links).await;

    let (live_tx, live_rx) = watch::channel(Liveness {
        up: DEMO_SITES.iter().map(|id| (id.to_string(), 0)).collect(),
        stopped: false,
    });
    let ledger = Arc::new(Ledger::default());
    let mut writers = tokio::task::JoinSet::new();
    for (i, writes) in WRITERS.into_iter().enumerate() {
        let writer_seed = seed ^ (0xA5A5_0000 + u64::try_from(i).expect("small"));
        writers.spawn(writer(
            api.clone(),
            url[writes.0].clone(),
            writes,
            writer_seed,
            ledger.clone(),
            live_rx.clone(),
        ));
    }

    // The faults: each round restarts the sites whose downtime is over, then kills a site,
    // cuts a link or restores one, then waits until the writers got more acknowledgements.
    let mut faults = Faults::default();
    let mut down: BTreeMap<String, usize> = BTreeMap::new(); // site → the round it comes back
    let mut cut: BTreeSet<(String, String)> = BTreeSet::new(); // (site that cut, peer)
    for round in 0..rounds {
        let due: Vec<String> =
            down.iter().filter(|(_, back)| **back <= round).map(|(s, _)| s.clone()).collect();
        for site in due {
            down.remove(&site);
            tokio::task::block_in_place(|| fed.start(&site));
            faults.restarts += 1;
            live_tx.send_modify(|s| {
                let generation = u64::try_from(round).expect("small") + 1;
                s.up.insert(site.clone(), generation);
            });
        }
        match rng.below(3) {
            0 if down.len() < MAX_DOWN => {
                let running: Vec<&str> =
                    DEMO_SITES.iter().copied().filter(|s| !down.contains_key(*s)).collect();
                let site = rng.pick(&running).to_string();
                live_tx.send_modify(|s| {
                    s.up.remove(&site);
                });
                fed.kill_9(&site);
                faults.kills += 1;
                down.insert(site, round + 1 + rng.below(2));
            }
            1 if !cut.is_empty() => {
                let all: Vec<(String, String)> = cut.iter().cloned().collect();
                let (site, peer) = rng.pick(&all).clone();
                if !down.contains_key(&site) {
                    api.signal(&url[site.as_str()], &peer, "up").await;
                    cut.remove(&(site, peer));
                    faults.restores += 1;
                }
            }
            _ => {
                let (child, parent) = rng.pick(&all_links).clone();
                let (site, peer) = if rng.below(2) == 0 { (child, parent) } else { (parent, child) };
                if !down.contains_key(&site) && cut.insert((site.clone(), peer.clone())) {
                    api.signal(&url[site.as_str()], &peer, "down").await;
                    faults.cuts += 1;
                }
            }
        }
        let target = ledger.acked.load(Ordering::SeqCst) + ACKS_PER_ROUND;
        let ledger = ledger.clone();
        eventually(
            ROUND_DEADLINE,
            format!("{ACKS_PER_ROUND} more acknowledged writes in round {round}"),
            || {
                let ledger = ledger.clone();
                async move {
                    let acked = ledger.acked.load(Ordering::SeqCst);
                    if acked >= target { Ok(()) } else { Err(format!("{acked} of {target}")) }
                }
            },
        )
        .await;
    }

    // Stop the writers, then every fault.
    live_tx.send_modify(|s| s.stopped = true);
    while let Some(done) = writers.join_next().await {
        done.expect("a writer task");
    }
    let chaos_time = started.elapsed();
    tokio::task::block_in_place(|| fed.start_all());
    for (child, parent) in &all_links {
        api.signal(&url[child.as_str()], parent, "up").await;
        api.signal(&url[parent.as_str()], child, "up").await;
    }
    let acks = ledger.acks.lock().expect("acks").clone();
    eprintln!(
        "chaos: {} kills, {} restarts, {} cuts, {} restores, {} writes acknowledged, {} unanswered, in {chaos_time:?}",
        faults.kills,
        faults.restarts,
        faults.cuts,
        faults.restores,
        acks.len(),
        ledger.unanswered.load(Ordering::SeqCst),
    );

    let healed = Instant::now();
    let sync_now_every = Duration::from_secs(2);
    let last_sync_now = Mutex::new(None::<Instant>);
    eventually(HEAL_DEADLINE, "every link's debt to clear and every holder to agree", || async {
        let due = last_sync_now.lock().expect("lock").is_none_or(|at| at.elapsed() >= sync_now_every);
        if due {
            for id in DEMO_SITES {
                api.sync_now(&url[id]).await;
            }
            *last_sync_now.lock().expect("lock") = Some(Instant::now());
        }
        let debts = debts(&api, &url).await;
        if !debts.is_empty() {
            return Err(debts.join("; "));
        }
        let snapshot = current_versions(&api, &url).await;
        let disagreements = disagreements(&tree, &snapshot);
        if disagreements.is_empty() { Ok(()) } else { Err(disagreements.join("; ")) }
    })
    .await;
    eprintln!("chaos: converged {:?} after the last fault", healed.elapsed());

    let state = read_federation(&api, &url).await;
    let mut broken = Vec::new();
    broken.extend(check_convergence(&tree, &state));
    broken.extend(check_acknowledged(&state, &acks));
    broken.extend(check_scopes_and_authority(&tree, &state));
    broken.extend(check_conflicts(&state));
    broken.extend(debts(&api, &url).await);
    broken.extend(ledger.unexpected.lock().expect("unexpected").iter().cloned());
    let conflicts: BTreeSet<&String> = state.values().flat_map(|s| s.conflicts.keys()).collect();
    eprintln!(
        "chaos: checked {} objects, {} history entries, {} conflicts, {} audit entries in {:?} overall",
        state.values().map(|s| s.current.len()).sum::<usize>(),
        state.values().map(|s| s.history.values().map(Vec::len).sum::<usize>()).sum::<usize>(),
        conflicts.len(),
        state.values().map(|s| s.audit.len()).sum::<usize>(),
        started.elapsed()
    );
    assert!(
        broken.is_empty(),
        "seed {seed}: {} broken promises:\n{}",
        broken.len(),
        broken.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(acks.len() >= rounds * usize::try_from(ACKS_PER_ROUND).expect("small"), "the writers wrote");
    assert!(!conflicts.is_empty(), "writers at two sites on the same objects made conflicts");
}

/// Waits until every link has completed a round in both directions (scopes and cards learned).
async fn wait_linked(api: &Api, url: &BTreeMap<&str, String>, links: &[(String, String)]) {
    for (child, parent) in links {
        for (site, peer) in [(child, parent), (parent, child)] {
            let site_url = &url[site.as_str()];
            eventually(
                Duration::from_secs(45),
                format!("{site}'s link with {peer} to sync"),
                || async move {
                    let link = api.link(site_url, peer).await;
                    if link.last_sync.is_some() && !link.peer_scopes.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("{link:?}"))
                    }
                },
            )
            .await;
        }
    }
}

/// Every link, at every site, with changes its peer has not acknowledged.
async fn debts(api: &Api, url: &BTreeMap<&str, String>) -> Vec<String> {
    let mut found = Vec::new();
    for id in DEMO_SITES {
        for link in api.sync_status(&url[id]).await.links {
            if link.pending > 0 || link.debt_seconds.is_some() {
                found.push(format!(
                    "{id} → {}: {} pending, debt {:?} s, {} ({:?})",
                    link.peer, link.pending, link.debt_seconds, link.state, link.last_error
                ));
            }
        }
    }
    found
}

/// Every object every site holds, deletes included: site → object → current version.
async fn current_versions(
    api: &Api,
    url: &BTreeMap<&str, String>,
) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut all = BTreeMap::new();
    for id in DEMO_SITES {
        let mut objects = BTreeMap::new();
        let mut after: Option<String> = None;
        for _page in 0..1000 {
            let mut path = "/v1/objects?include_deleted=true&limit=1000".to_owned();
            if let Some(after) = &after {
                path.push_str(&format!("&after={after}"));
            }
            let page = api.get_json(&url[id], &path).await;
            for item in page["items"].as_array().expect("items") {
                let meta = &item["metadata"];
                let object = format!(
                    "{}/{}/{}",
                    item["kind"].as_str().expect("kind"),
                    meta["scope"].as_str().expect("scope"),
                    meta["name"].as_str().expect("name")
                );
                objects.insert(object, meta["version"].as_str().expect("version").to_owned());
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        all.insert(id.to_owned(), objects);
    }
    all
}

/// The scope part of `Kind/scope/name`.
fn scope_of_object(object: &str) -> &str {
    object.split('/').nth(1).expect("Kind/scope/name")
}

/// Objects whose holders disagree on the current version, or that a site that should hold
/// them does not.
fn disagreements(tree: &Tree, snapshot: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<String> {
    let objects: BTreeSet<&String> = snapshot.values().flat_map(BTreeMap::keys).collect();
    let mut found = Vec::new();
    for object in objects {
        let by_site: BTreeMap<&String, Option<&String>> = tree
            .holders(scope_of_object(object))
            .iter()
            .map(|site| {
                let (site, _) = snapshot.get_key_value(site).expect("every site read");
                (site, snapshot[site].get(object))
            })
            .collect();
        let versions: BTreeSet<Option<&String>> = by_site.values().copied().collect();
        if versions.len() > 1 {
            found.push(format!("{object}: {by_site:?}"));
        }
    }
    found
}

/// One version in an object's history at a site.
#[derive(Debug, Clone)]
struct Held {
    id: VersionId,
}

/// What one site shows over its API once everything settled.
#[derive(Default)]
struct SiteState {
    /// Object → current version.
    current: BTreeMap<String, String>,
    /// Object → the versions in its history.
    history: BTreeMap<String, Vec<Held>>,
    /// Conflict id → the record.
    conflicts: BTreeMap<String, Value>,
    /// The whole audit log.
    audit: Vec<Value>,
}

async fn read_federation(api: &Api, url: &BTreeMap<&str, String>) -> BTreeMap<String, SiteState> {
    let current = current_versions(api, url).await;
    let mut all = BTreeMap::new();
    for id in DEMO_SITES {
        let site = &url[id];
        let mut state = SiteState { current: current[id].clone(), ..SiteState::default() };
        for object in state.current.keys() {
            let page = api.get_json(site, &format!("/v1/objects/{object}/history")).await;
            let items = page["items"].as_array().expect("history items");
            let held = items
                .iter()
                .map(|item| Held {
                    id: item["version"].as_str().expect("version").parse().expect("a version id"),
                })
                .collect();
            state.history.insert(object.clone(), held);
        }
        let conflicts = api.get_json(site, "/v1/conflicts?status=all&limit=1000").await;
        let listed = if conflicts["more"].as_bool() == Some(true) {
            // More than a page: read them object by object.
            let mut items = Vec::new();
            for object in state.current.keys() {
                let page =
                    api.get_json(site, &format!("/v1/conflicts?status=all&limit=1000&object={object}")).await;
                assert_ne!(page["more"].as_bool(), Some(true), "{id}: over 1000 conflicts of {object}");
                items.extend(page["items"].as_array().expect("items").iter().cloned());
            }
            items
        } else {
            conflicts["items"].as_array().expect("items").clone()
        };
        for record in listed {
            state.conflicts.insert(record["id"].as_str().expect("conflict id").to_owned(), record);
        }
        let mut after = 0;
        for _page in 0..10_000 {
            let page = api.get_json(site, &format!("/v1/audit?after={after}&limit=1000")).await;
            let items = page["items"].as_array().expect("audit items");
            state.audit.extend(items.iter().cloned());
            match page["next"].as_u64() {
                Some(next) => after = next,
                None => break,
            }
        }
        all.insert(id.to_owned(), state);
    }
    all
}

/// Whether `history` holds `version`, or a later version from the same origin.
fn held_or_superseded(history: &[Held], version: &VersionId) -> bool {
    history.iter().any(|h| h.id.origin == version.origin && h.id.hlc >= version.hlc)
}

fn in_history(history: &[Held], version: &VersionId) -> bool {
    history.iter().any(|h| &h.id == version)
}

/// Every holder has the same current version; histories hold the same versions apart from
/// intermediate ones a later version from the same origin superseded.
fn check_convergence(tree: &Tree, state: &BTreeMap<String, SiteState>) -> Vec<String> {
    let snapshot: BTreeMap<String, BTreeMap<String, String>> =
        state.iter().map(|(id, s)| (id.clone(), s.current.clone())).collect();
    let mut found = disagreements(tree, &snapshot);
    let objects: BTreeSet<&String> = state.values().flat_map(|s| s.history.keys()).collect();
    for object in objects {
        let holders: Vec<(&String, &Vec<Held>)> =
            state.iter().filter_map(|(id, s)| s.history.get(object).map(|h| (id, h))).collect();
        for (a, history_a) in &holders {
            for (b, history_b) in &holders {
                for held in history_a.iter() {
                    if !held_or_superseded(history_b, &held.id) {
                        found.push(format!(
                            "{object}: {a} holds {} in history, {b} neither it nor a later version from {}",
                            held.id, held.id.origin
                        ));
                    }
                }
            }
        }
    }
    found
}

/// Every acknowledged version is in history at the site that accepted it, and at every site
/// that holds the object it is there or superseded by a later version from the same origin.
fn check_acknowledged(state: &BTreeMap<String, SiteState>, acks: &[Ack]) -> Vec<String> {
    let mut found = Vec::new();
    for ack in acks {
        let version: VersionId = ack.version.parse().expect("an acknowledged version id");
        assert_eq!(
            version.origin,
            SiteId::new(&ack.site).expect("a site id"),
            "{ack:?}: the accepting site's"
        );
        let at_origin = state[&ack.site].history.get(&ack.object);
        if !at_origin.is_some_and(|h| in_history(h, &version)) {
            found.push(format!(
                "{}: {} acknowledged {} but its history lacks it",
                ack.object, ack.site, ack.version
            ));
        }
        for (id, site) in state {
            if let Some(history) = site.history.get(&ack.object)
                && !held_or_superseded(history, &version)
            {
                found.push(format!(
                    "{}: {id} lacks {} (acknowledged by {}) and every later version from it",
                    ack.object, ack.version, ack.site
                ));
            }
        }
    }
    found
}

/// No site holds an object outside its subtree rule; every version's origin had authority.
fn check_scopes_and_authority(tree: &Tree, state: &BTreeMap<String, SiteState>) -> Vec<String> {
    let mut found = Vec::new();
    for (id, site) in state {
        for (object, history) in &site.history {
            let scope = scope_of_object(object);
            if !tree.holds[id].contains(scope) {
                found.push(format!("{id} holds {object}, outside its subtree"));
            }
            let allowed = tree.writers_of.get(scope).cloned().unwrap_or_default();
            for held in history {
                if !allowed.contains(held.id.origin.as_str()) {
                    found.push(format!(
                        "{id} applied {} to {object}: {} has no authority over {scope} (owner {:?})",
                        held.id,
                        held.id.origin,
                        tree.scope_of.iter().find(|(_, s)| s.as_str() == scope).map(|(site, _)| site)
                    ));
                }
            }
        }
        for entry in &site.audit {
            if entry["outcome"].as_str().is_some_and(|o| o.contains("refused")) {
                found.push(format!("{id} refused something no writer should have sent: {entry}"));
            }
        }
    }
    found
}

/// Every conflict a site recorded has both sides in its history and an audit entry there, and
/// every site that recorded it reached the same outcome.
fn check_conflicts(state: &BTreeMap<String, SiteState>) -> Vec<String> {
    let mut found = Vec::new();
    let mut outcomes: BTreeMap<&String, BTreeMap<(String, String), Vec<&String>>> = BTreeMap::new();
    for (id, site) in state {
        for (conflict, record) in &site.conflicts {
            let object = record["object"].as_str().expect("object");
            let history = site.history.get(object).map(Vec::as_slice).unwrap_or_default();
            for side in record["sides"].as_array().expect("sides") {
                let version: VersionId =
                    side["version"].as_str().expect("version").parse().expect("a version id");
                if !in_history(history, &version) {
                    found.push(format!(
                        "{id}: conflict {conflict} on {object} has side {version} outside history"
                    ));
                }
            }
            let audited = site.audit.iter().any(|entry| {
                entry["action"] == "conflict"
                    && entry["detail"].as_str().is_some_and(|d| d.contains(conflict.as_str()))
            });
            if !audited {
                found.push(format!("{id}: conflict {conflict} on {object} has no audit entry"));
            }
            let outcome = (
                record["winner"].as_str().expect("winner").to_owned(),
                record["strategy"].as_str().expect("strategy").to_owned(),
            );
            outcomes.entry(conflict).or_default().entry(outcome).or_default().push(id);
        }
    }
    for (conflict, by_outcome) in outcomes {
        if by_outcome.len() > 1 {
            found.push(format!("conflict {conflict} has different outcomes: {by_outcome:?}"));
        }
    }
    found
}

/// The checks themselves: each finds what it looks for in a made-up federation state, so a
/// green chaos run means the promises held, not that nothing was compared.
mod checks {
    use super::*;

    fn held(ids: &[&str]) -> Vec<Held> {
        ids.iter().map(|id| Held { id: id.parse().expect("a version id") }).collect()
    }

    /// a1 and region-a both hold `Policy/edge-zone-a1/x`; global holds it too.
    fn state(a1: &[&str], region_a: &[&str], global: &[&str]) -> BTreeMap<String, SiteState> {
        let object = "Policy/edge-zone-a1/x".to_owned();
        [("edge-zone-a1", a1), ("region-a-control", region_a), ("global-control", global)]
            .into_iter()
            .map(|(id, history)| {
                let current = history.last().map(|v| (object.clone(), (*v).to_owned())).into_iter().collect();
                let history = BTreeMap::from([(object.clone(), held(history))]);
                (id.to_owned(), SiteState { current, history, ..SiteState::default() })
            })
            .collect()
    }

    const V1: &str = "1000.0@edge-zone-a1";
    const V2: &str = "2000.0@edge-zone-a1";
    const R1: &str = "1500.0@region-a-control";

    #[test]
    fn a_superseded_intermediate_version_is_not_a_divergence_but_a_missing_one_is() {
        let tree = Tree::demo();
        let fine = state(&[V1, R1, V2], &[R1, V2], &[R1, V2]);
        assert_eq!(check_convergence(&tree, &fine), Vec::<String>::new());
        let missing = state(&[V1, R1, V2], &[V1, V2], &[R1, V2]);
        let found = check_convergence(&tree, &missing);
        let expected = format!("edge-zone-a1 holds {R1} in history, region-a-control neither");
        assert!(found.iter().any(|f| f.contains(&expected)), "{found:?}");
    }

    #[test]
    fn an_acknowledged_version_missing_everywhere_is_found() {
        let ack = |version: &str| Ack {
            site: "edge-zone-a1".into(),
            object: "Policy/edge-zone-a1/x".into(),
            version: version.into(),
        };
        let s = state(&[V1, V2], &[V2], &[V2]);
        assert_eq!(check_acknowledged(&s, &[ack(V1), ack(V2)]), Vec::<String>::new());
        let lost = state(&[V1], &[V1], &[V1]);
        let found = check_acknowledged(&lost, &[ack(V2)]);
        assert_eq!(found.len(), 4, "its origin's history and three holders: {found:?}");
    }

    #[test]
    fn a_version_from_a_sibling_and_an_object_outside_the_subtree_are_found() {
        let tree = Tree::demo();
        let s = state(&[V1, "3000.0@edge-zone-a2"], &[V1], &[V1]);
        let found = check_scopes_and_authority(&tree, &s);
        assert!(found.iter().any(|f| f.contains("edge-zone-a2 has no authority")), "{found:?}");
        let mut outside = state(&[V1], &[V1], &[V1]);
        outside.get_mut("edge-zone-a1").expect("a1").history.insert("Policy/region-b/y".into(), held(&[V1]));
        let found = check_scopes_and_authority(&tree, &outside);
        assert!(found.iter().any(|f| f.contains("outside its subtree")), "{found:?}");
    }

    #[test]
    fn a_conflict_without_audit_or_with_two_outcomes_is_found() {
        let record = |winner: &str| {
            json!({
                "id": "c1", "object": "Policy/edge-zone-a1/x", "strategy": "last-write-wins", "winner": winner,
                "sides": [{"version": V2}, {"version": R1}],
            })
        };
        let audit = json!({"action": "conflict", "detail": "conflict c1: ..."});
        let mut s = state(&[R1, V2], &[R1, V2], &[R1, V2]);
        for (id, site) in &mut s {
            site.conflicts.insert("c1".into(), record(V2));
            if id != "global-control" {
                site.audit.push(audit.clone());
            }
        }
        assert_eq!(
            check_conflicts(&s),
            vec!["global-control: conflict c1 on Policy/edge-zone-a1/x has no audit entry"]
        );
        let global = s.get_mut("global-control").expect("global");
        global.audit.push(audit);
        global.conflicts.insert("c1".into(), record(R1));
        let found = check_conflicts(&s);
        assert!(found.len() == 1 && found[0].contains("different outcomes"), "{found:?}");
    }
}
