//! The promises, checked on the sites' stores once the federation has settled:
//!
//! - no site holds an object outside its subtree rule, and every version any site applied
//!   passes the authority rules (origin's relation to the scope, its flags);
//! - convergence: every site whose rule covers an object holds it, with the same current
//!   version, and their histories hold the same versions apart from intermediate ones that a
//!   later version from the same origin superseded;
//! - nothing lost: every acknowledged version is in history at the site that accepted it, and
//!   at every site that holds its object it is in history or superseded by a later version from
//!   the same origin that is there; both sides of every recorded conflict are in history there;
//! - conflicts: every record has its audit entry (where conflicts are audited) naming the same
//!   winner, every site that recorded a conflict recorded the same outcome, and a conflict left
//!   open is not one the current version already follows;
//! - sync debt is zero on every link.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use model::{Causality, ObjectKey, SiteId, StoredObject, Version, VersionId};
use replication::SyncStatus;
use store::{ConflictFilter, ConflictRecord, ConflictStatus, ListFilter, MAX_PAGE, Store};

use crate::SimError;
use crate::run::Acked;
use crate::topology::Topology;

/// The most pages any listing is read for.
const MAX_PAGES: usize = 10_000;

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which promise: `subtree`, `authority`, `convergence`, `history`, `acknowledged`,
    /// `conflict-sides`, `conflict-audit`, `conflict-outcome`, `conflict-status`, `debt`,
    /// `settle`, `store`.
    pub rule: &'static str,
    pub site: Option<SiteId>,
    pub key: Option<ObjectKey>,
    pub detail: String,
}

impl Violation {
    pub fn new(rule: &'static str, site: Option<SiteId>, key: Option<ObjectKey>, detail: String) -> Self {
        Violation { rule, site, key, detail }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.rule, self.detail)
    }
}

/// What the checks found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub state_hash: u64,
    /// Distinct conflicts recorded anywhere.
    pub conflicts: u64,
    /// Distinct versions held anywhere.
    pub versions: u64,
}

struct SiteData {
    objects: BTreeMap<ObjectKey, StoredObject>,
    /// Each object's history, by version id.
    histories: BTreeMap<ObjectKey, BTreeMap<VersionId, Version>>,
    conflicts: Vec<ConflictRecord>,
    /// The `conflict` audit entries: (detail, version).
    conflict_audits: Vec<(String, Option<VersionId>)>,
}

impl SiteData {
    fn read(store: &dyn Store) -> Result<SiteData, SimError> {
        let mut objects = BTreeMap::new();
        let mut after = None;
        for _ in 0..MAX_PAGES {
            let page = store.list(&ListFilter {
                include_deleted: true,
                after,
                limit: MAX_PAGE,
                ..ListFilter::default()
            })?;
            let full = page.len() >= MAX_PAGE;
            after = page.last().map(|o| o.key.clone());
            for object in page {
                objects.insert(object.key.clone(), object);
            }
            if !full {
                break;
            }
        }
        let mut histories = BTreeMap::new();
        for key in objects.keys() {
            let versions = store.history(key)?.into_iter().map(|h| (h.version.id(), h.version)).collect();
            histories.insert(key.clone(), versions);
        }
        let conflicts = store.conflicts(&ConflictFilter { limit: MAX_PAGE, ..ConflictFilter::default() })?;
        let mut conflict_audits = Vec::new();
        let mut after = 0;
        for _ in 0..MAX_PAGES {
            let page = store.audit(after, MAX_PAGE)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in page {
                if entry.record.action == "conflict" {
                    conflict_audits.push((entry.record.detail, entry.record.version));
                }
            }
        }
        Ok(SiteData { objects, histories, conflicts, conflict_audits })
    }

    /// Whether this site has `v`, or a later version of the object from the same origin.
    fn has_or_supersedes(&self, key: &ObjectKey, v: &VersionId) -> bool {
        self.histories
            .get(key)
            .is_some_and(|h| h.contains_key(v) || h.keys().any(|w| w.origin == v.origin && w.hlc > v.hlc))
    }
}

fn mix(hash: &mut u64, text: &str) {
    for b in text.as_bytes().iter().chain(b"\n") {
        *hash = (*hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

fn dominates(a: &Version, b: &Version) -> bool {
    matches!(a.vv.compare(&b.vv), Causality::Dominates | Causality::Equal)
}

/// Checks every promise against the stores of the running sites.
pub fn check(
    topo: &Topology,
    stores: &BTreeMap<SiteId, Arc<dyn Store>>,
    statuses: &BTreeMap<SiteId, SyncStatus>,
    acked: &[Acked],
) -> Result<Report, SimError> {
    let mut out = Report { state_hash: 0xcbf2_9ce4_8422_2325, ..Report::default() };
    let mut data = BTreeMap::new();
    for (id, store) in stores {
        data.insert(id.clone(), SiteData::read(store.as_ref())?);
    }
    let v = &mut out.violations;

    for id in topo.sites.keys() {
        if !data.contains_key(id) {
            v.push(Violation::new(
                "settle",
                Some(id.clone()),
                None,
                format!("{id} is not running at the end"),
            ));
        }
    }

    // Subtree rule and authority.
    for (id, site) in &data {
        for (key, history) in &site.histories {
            if !topo.holders(&key.scope).contains(id) {
                v.push(Violation::new(
                    "subtree",
                    Some(id.clone()),
                    Some(key.clone()),
                    format!("{id} holds {key}, outside the scopes it may hold"),
                ));
            }
            for version in history.values() {
                if let Err(refusal) = topo.directory.check_write(&version.origin, &key.scope, key.kind, None)
                {
                    v.push(Violation::new(
                        "authority",
                        Some(id.clone()),
                        Some(key.clone()),
                        format!(
                            "{id} applied {} of {key}, which its origin had no authority to write: rule {}: {}",
                            version.id(),
                            refusal.rule.as_str(),
                            refusal.detail
                        ),
                    ));
                }
            }
        }
    }

    // Convergence and histories.
    let keys: BTreeSet<ObjectKey> = data.values().flat_map(|s| s.objects.keys().cloned()).collect();
    let mut all_versions = BTreeSet::new();
    for key in &keys {
        let holders: Vec<SiteId> =
            topo.holders(&key.scope).into_iter().filter(|h| data.contains_key(h)).collect();
        let mut current: BTreeMap<VersionId, Vec<&SiteId>> = BTreeMap::new();
        for h in &holders {
            match data[h].objects.get(key) {
                Some(o) => current.entry(o.version.id()).or_default().push(h),
                None => v.push(Violation::new(
                    "convergence",
                    Some(h.clone()),
                    Some(key.clone()),
                    format!("{h} does not hold {key}, which other sites hold"),
                )),
            }
        }
        if current.len() > 1 {
            let shown: Vec<String> = current
                .iter()
                .map(|(ver, at)| {
                    format!("{ver} at {}", at.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
                })
                .collect();
            v.push(Violation::new(
                "convergence",
                None,
                Some(key.clone()),
                format!("the sites holding {key} disagree on its current version: {}", shown.join("; ")),
            ));
        }
        let union: BTreeSet<VersionId> = holders
            .iter()
            .filter_map(|h| data[h].histories.get(key))
            .flat_map(|hist| hist.keys().cloned())
            .collect();
        for h in &holders {
            let Some(hist) = data[h].histories.get(key) else { continue };
            for ver in &union {
                if !hist.contains_key(ver) && !data[h].has_or_supersedes(key, ver) {
                    v.push(Violation::new(
                        "history",
                        Some(h.clone()),
                        Some(key.clone()),
                        format!(
                            "{h} lacks {ver} of {key} (another site has it) and no later version from {} supersedes it there",
                            ver.origin
                        ),
                    ));
                }
            }
        }
        all_versions.extend(union.into_iter().map(|ver| (key.clone(), ver)));
    }

    // Acknowledged writes.
    for ack in acked {
        let at_site = data.get(&ack.site);
        if !at_site.and_then(|s| s.histories.get(&ack.key)).is_some_and(|h| h.contains_key(&ack.version)) {
            v.push(Violation::new(
                "acknowledged",
                Some(ack.site.clone()),
                Some(ack.key.clone()),
                format!(
                    "write #{} ({} of {}) was acknowledged by {} but is not in its history",
                    ack.no, ack.version, ack.key, ack.site
                ),
            ));
        }
        for h in topo.holders(&ack.key.scope) {
            let Some(site) = data.get(&h) else { continue };
            if !site.has_or_supersedes(&ack.key, &ack.version) {
                v.push(Violation::new(
                    "acknowledged",
                    Some(h.clone()),
                    Some(ack.key.clone()),
                    format!(
                        "write #{} ({} of {}, acknowledged by {}) is neither in {h}'s history nor superseded there by a later version from its origin",
                        ack.no, ack.version, ack.key, ack.site
                    ),
                ));
            }
        }
    }

    // Conflicts.
    let mut outcomes: BTreeMap<String, BTreeMap<(VersionId, &'static str), Vec<SiteId>>> = BTreeMap::new();
    for (id, site) in &data {
        let audited = topo.sites.get(id).is_some_and(|s| s.engine.audit_conflicts);
        for record in &site.conflicts {
            outcomes
                .entry(record.id.clone())
                .or_default()
                .entry((record.winner.clone(), record.strategy.as_str()))
                .or_default()
                .push(id.clone());
            let history = site.histories.get(&record.key);
            for side in &record.sides {
                if !history.is_some_and(|h| h.contains_key(&side.version)) {
                    v.push(Violation::new(
                        "conflict-sides",
                        Some(id.clone()),
                        Some(record.key.clone()),
                        format!(
                            "{id} recorded conflict {} but {} is not in its history",
                            record.id, side.version
                        ),
                    ));
                }
            }
            if audited {
                let prefix = format!("conflict {}:", record.id);
                let found = site.conflict_audits.iter().any(|(detail, version)| {
                    detail.starts_with(&prefix) && version.as_ref() == Some(&record.winner)
                });
                if !found {
                    v.push(Violation::new(
                        "conflict-audit",
                        Some(id.clone()),
                        Some(record.key.clone()),
                        format!(
                            "{id} recorded conflict {} (winner {}) without an audit entry for it",
                            record.id, record.winner
                        ),
                    ));
                }
            }
            if record.status != ConflictStatus::Resolved {
                let sides: Option<Vec<&Version>> =
                    record.sides.iter().map(|s| history.and_then(|h| h.get(&s.version))).collect();
                let current = site.objects.get(&record.key).map(|o| &o.version);
                if let (Some(sides), Some(current)) = (sides, current)
                    && sides.iter().all(|side| dominates(current, side))
                    && !sides.iter().any(|side| side.id() == current.id())
                {
                    v.push(Violation::new(
                        "conflict-status",
                        Some(id.clone()),
                        Some(record.key.clone()),
                        format!(
                            "conflict {} is {} at {id}, but its current version {} follows both sides",
                            record.id,
                            record.status.as_str(),
                            current.id()
                        ),
                    ));
                }
            }
        }
    }
    for (id, by_outcome) in &outcomes {
        if by_outcome.len() > 1 {
            let shown: Vec<String> = by_outcome
                .iter()
                .map(|((winner, strategy), sites)| {
                    format!(
                        "{strategy} keeps {winner} at {}",
                        sites.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })
                .collect();
            v.push(Violation::new(
                "conflict-outcome",
                None,
                None,
                format!("sites resolved conflict {id} differently: {}", shown.join("; ")),
            ));
        }
    }

    // Sync debt.
    for (id, status) in statuses {
        for link in &status.links {
            if link.pending > 0 {
                v.push(Violation::new(
                    "debt",
                    Some(id.clone()),
                    None,
                    format!(
                        "{id}'s link with {} still has {} changes pending (state {}, last error {})",
                        link.peer,
                        link.pending,
                        link.state,
                        link.last_error.as_deref().unwrap_or("none")
                    ),
                ));
            }
        }
    }

    for (id, site) in &data {
        mix(&mut out.state_hash, id.as_str());
        for (key, object) in &site.objects {
            mix(&mut out.state_hash, &format!("{key} {}", object.version.id()));
            for ver in site.histories.get(key).into_iter().flat_map(|h| h.keys()) {
                mix(&mut out.state_hash, &ver.to_string());
            }
        }
        for record in &site.conflicts {
            mix(&mut out.state_hash, &format!("{} {} {}", record.id, record.winner, record.status.as_str()));
        }
    }
    out.conflicts = outcomes.len() as u64;
    out.versions = all_versions.len() as u64;
    Ok(out)
}
