//! The rules of applying a version received from a peer that do not depend on the backend:
//! how it changes the object's causal context, which held versions it conflicts with, which
//! version is current afterwards, and the object's `created`. Every backend calls [`place`]
//! inside its apply transaction, so all backends (and all sites) agree.
//!
//! The object's **frontier** is the set of versions it holds that no other held version
//! dominates (by version vector): the tips of its concurrent branches. A new version
//!
//! - that a held version dominates arrived late: it goes to history, conflicts with nothing
//!   (its successor already stands for it) and leaves the frontier as it was;
//! - otherwise conflicts with every frontier version whose vector is concurrent with its own,
//!   joins the frontier, and pushes out of it the versions it dominates.
//!
//! The current version is then the frontier version the object's strategy prefers
//! ([`prefers`]). Because an HLC orders a causal successor after what it saw, the greatest
//! version in last-write-wins order is always on the frontier, so under `last-write-wins` (and
//! `manual`) the current version is the greatest of all versions held, as before conflicts
//! were recorded. Every site holding the same versions computes the same frontier and so the
//! same current version, whatever order the versions came in.

use std::cmp::Ordering;

use model::{Causality, Hlc, SiteId, StoredObject, Strategy, Version, VersionVector};

use crate::local_write::created_after;

/// The order a strategy prefers versions in: the greatest wins. `last-write-wins` and `manual`
/// (provisionally) use [`Version::lww_cmp`]; `authority-wins` compares the origins' authority
/// rank first, then the same `(hlc, origin, content hash)`.
pub(crate) fn prefers(
    strategy: Strategy,
    rank: &dyn Fn(&SiteId) -> u8,
    a: &Version,
    b: &Version,
) -> Ordering {
    match strategy {
        Strategy::LastWriteWins | Strategy::Manual => a.lww_cmp(b),
        Strategy::AuthorityWins => rank(&a.origin).cmp(&rank(&b.origin)).then_with(|| a.lww_cmp(b)),
    }
}

/// The version of the two that `strategy` prefers.
pub(crate) fn winner<'a>(
    strategy: Strategy,
    rank: &dyn Fn(&SiteId) -> u8,
    a: &'a Version,
    b: &'a Version,
) -> &'a Version {
    if prefers(strategy, rank, a, b) == Ordering::Less { b } else { a }
}

/// Whether `a`'s vector dominates `b`'s (has seen all of it, and more).
pub(crate) fn dominates(a: &VersionVector, b: &VersionVector) -> bool {
    a.compare(b) == Causality::Dominates
}

/// Whether `version` dominates every version the object holds (its vector dominates the
/// object's causal context, the merge of them all). Then nothing else needs to be read: it
/// conflicts with nothing and becomes the whole frontier. This is the common case of sync.
pub(crate) fn supersedes_all(current: Option<&StoredObject>, version: &Version) -> bool {
    current.is_none_or(|c| dominates(&version.vv, &c.context))
}

/// The indexes of the frontier of `held`: the versions no other one dominates, in index order.
pub(crate) fn frontier(held: &[Version]) -> Vec<usize> {
    // Greatest timestamp first: honest histories then never push a version out once it is in.
    let mut order: Vec<usize> = (0..held.len()).collect();
    order.sort_by(|&a, &b| held[b].lww_cmp(&held[a]));
    let mut tips: Vec<usize> = Vec::new();
    for i in order {
        if tips.iter().any(|&t| dominates(&held[t].vv, &held[i].vv)) {
            continue;
        }
        tips.retain(|&t| !dominates(&held[i].vv, &held[t].vv));
        tips.push(i);
    }
    tips.sort_unstable();
    tips
}

/// Which version is current after a new one is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Current {
    /// The new version.
    New,
    /// A version already held, by its index in `held` (it may be the one that was current).
    Held(usize),
}

/// What applying one new version does to its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The object's causal context afterwards: the old one merged with the version's vector.
    pub context: VersionVector,
    /// A held version already dominated the new one when it arrived.
    pub dominated: bool,
    /// The frontier versions (indexes into `held`) the new version conflicts with.
    pub conflicts: Vec<usize>,
    /// The current version afterwards.
    pub current: Current,
    /// The object's `created` afterwards.
    pub created: Hlc,
}

impl Placement {
    pub fn becomes_current(&self) -> bool {
        self.current == Current::New
    }
}

/// Applies `version`, new to this site, to the object whose current version (tombstones
/// included) is `current` and which holds the versions `held` (every version of it this site
/// holds; the caller may pass none when [`supersedes_all`] holds, as nothing in them matters
/// then). `strategy` and `rank` pick the current version among the frontier afterwards.
/// `created` follows the rule of local writes when the current version changes (kept while the
/// object stays in existence, restarted by a re-creation) and is unchanged otherwise.
pub(crate) fn place(
    current: Option<&StoredObject>,
    held: &[Version],
    version: &Version,
    strategy: Strategy,
    rank: &dyn Fn(&SiteId) -> u8,
) -> Placement {
    let Some(current) = current else {
        return Placement {
            context: version.vv.clone(),
            dominated: false,
            conflicts: Vec::new(),
            current: Current::New,
            created: version.hlc,
        };
    };
    let mut context = current.context.clone();
    context.merge(&version.vv);

    let tips = frontier(held);
    let dominated = tips.iter().any(|&t| dominates(&held[t].vv, &version.vv));
    let (conflicts, after): (Vec<usize>, Vec<usize>) = if dominated {
        (Vec::new(), tips)
    } else {
        let conflicts = tips
            .iter()
            .copied()
            .filter(|&t| version.vv.compare(&held[t].vv) == Causality::Concurrent)
            .collect();
        (conflicts, tips.into_iter().filter(|&t| !dominates(&version.vv, &held[t].vv)).collect())
    };
    let mut pick = if dominated { None } else { Some(Current::New) };
    for t in after {
        let better = match pick {
            None => true,
            Some(Current::New) => prefers(strategy, rank, &held[t], version) == Ordering::Greater,
            Some(Current::Held(p)) => prefers(strategy, rank, &held[t], &held[p]) == Ordering::Greater,
        };
        if better {
            pick = Some(Current::Held(t));
        }
    }
    // An empty frontier means nothing was held after all: the new version stands alone.
    let pick = pick.unwrap_or(Current::New);
    let picked = match pick {
        Current::New => version,
        Current::Held(i) => &held[i],
    };
    let created = if picked.id() == current.version.id() {
        current.created
    } else {
        created_after(Some(current), picked.hlc)
    };
    Placement { context, dominated, conflicts, current: pick, created }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use model::{ContentHash, Kind, ObjectKey, ObjectName, Scope};

    use super::*;

    fn site(name: &str) -> SiteId {
        SiteId::new(name).unwrap()
    }

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new("p").unwrap())
    }

    fn vv(entries: &[(&str, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for (s, n) in entries {
            for _ in 0..*n {
                v.increment(&site(s));
            }
        }
        v
    }

    fn version(wall: u64, origin: &str, vector: VersionVector, deleted: bool) -> Version {
        Version {
            hlc: Hlc::new(wall, 0),
            origin: site(origin),
            vv: vector,
            author: "alice".into(),
            content_hash: ContentHash::of(&key(), &BTreeMap::new(), &serde_json::Value::Null, deleted),
            deleted,
        }
    }

    fn object(version: Version, context: VersionVector, created: Hlc) -> StoredObject {
        StoredObject {
            key: key(),
            version,
            labels: BTreeMap::new(),
            spec: serde_json::Value::Null,
            created,
            context,
        }
    }

    fn lww(strategy: Strategy, current: Option<&StoredObject>, held: &[Version], v: &Version) -> Placement {
        place(current, held, v, strategy, &|s: &SiteId| if s.as_str() == "a" { 3 } else { 1 })
    }

    #[test]
    fn a_new_object_takes_the_version_as_it_is() {
        let v = version(10, "a", vv(&[("a", 1)]), false);
        let p = lww(Strategy::LastWriteWins, None, &[], &v);
        assert_eq!(
            p,
            Placement {
                context: v.vv.clone(),
                dominated: false,
                conflicts: vec![],
                current: Current::New,
                created: v.hlc
            }
        );
    }

    #[test]
    fn an_older_concurrent_version_conflicts_merges_the_context_but_stays_in_history() {
        let cur = version(20, "b", vv(&[("b", 1)]), false);
        let o = object(cur.clone(), cur.vv.clone(), cur.hlc);
        let v = version(10, "a", vv(&[("a", 1)]), false);
        assert!(!supersedes_all(Some(&o), &v));
        let p = lww(Strategy::LastWriteWins, Some(&o), std::slice::from_ref(&cur), &v);
        assert_eq!(p.conflicts, vec![0]);
        assert!(!p.becomes_current() && !p.dominated);
        assert_eq!(p.current, Current::Held(0));
        assert_eq!(p.context, vv(&[("a", 1), ("b", 1)]));
        assert_eq!(p.created, cur.hlc);
        // Authority-wins prefers the older version from the higher-ranked origin.
        let p = lww(Strategy::AuthorityWins, Some(&o), std::slice::from_ref(&cur), &v);
        assert!(p.becomes_current());
        assert_eq!(p.created, cur.hlc, "the object stayed in existence");
    }

    #[test]
    fn a_later_version_keeps_created_unless_it_recreates() {
        let first = version(10, "a", vv(&[("a", 1)]), false);
        let live = object(first.clone(), first.vv.clone(), first.hlc);
        let next = version(20, "b", vv(&[("a", 1), ("b", 1)]), false);
        assert!(supersedes_all(Some(&live), &next));
        let p = lww(Strategy::LastWriteWins, Some(&live), &[], &next);
        assert!(p.conflicts.is_empty() && p.becomes_current());
        assert_eq!(p.created, first.hlc);

        let tomb = version(15, "a", vv(&[("a", 2)]), true);
        let dead = object(tomb.clone(), tomb.vv.clone(), first.hlc);
        let p = lww(Strategy::LastWriteWins, Some(&dead), &[first, tomb], &next);
        assert_eq!(p.conflicts, vec![1], "concurrent with the tombstone");
        assert!(p.becomes_current());
        assert_eq!(p.created, next.hlc, "a version replacing a tombstone re-creates the object");
    }

    #[test]
    fn a_late_version_already_dominated_conflicts_with_nothing() {
        // a1 < a2, b1 concurrent with both; a1 arrives last.
        let a1 = version(10, "a", vv(&[("a", 1)]), false);
        let a2 = version(20, "a", vv(&[("a", 2)]), false);
        let b1 = version(15, "b", vv(&[("b", 1)]), false);
        let held = [a2.clone(), b1.clone()];
        let mut context = a2.vv.clone();
        context.merge(&b1.vv);
        let o = object(a2.clone(), context.clone(), a2.hlc);
        let p = lww(Strategy::LastWriteWins, Some(&o), &held, &a1);
        assert!(p.dominated && p.conflicts.is_empty());
        assert_eq!(p.current, Current::Held(0));
        assert_eq!(p.context, context);
    }

    #[test]
    fn the_frontier_ignores_dominated_versions_in_any_order() {
        let a1 = version(10, "a", vv(&[("a", 1)]), false);
        let a2 = version(20, "a", vv(&[("a", 2)]), false);
        let b1 = version(15, "b", vv(&[("a", 1), ("b", 1)]), false);
        let c1 = version(30, "c", vv(&[("a", 2), ("b", 1), ("c", 1)]), false);
        assert_eq!(frontier(&[a1.clone(), a2.clone(), b1.clone()]), vec![1, 2]);
        assert_eq!(frontier(&[b1.clone(), a1.clone(), a2.clone()]), vec![0, 2]);
        assert_eq!(frontier(&[c1.clone(), a1.clone(), a2.clone(), b1.clone()]), vec![0]);
        // Timestamps that disagree with the vectors (a forged or broken clock) still give the
        // maximal versions.
        let mut early = c1.clone();
        early.hlc = Hlc::new(1, 0);
        assert_eq!(frontier(&[a1, a2, b1, early]), vec![3]);
        assert!(frontier(&[]).is_empty());
    }

    #[test]
    fn authority_wins_can_make_an_older_frontier_version_current() {
        // Frontier {x (rank 3, current), y (rank 1)}; z from a rank-1 site dominates x only:
        // the new frontier is {y, z} and the later of the two equals wins.
        let x = version(10, "a", vv(&[("a", 1)]), false);
        let y = version(30, "b", vv(&[("b", 1)]), false);
        let z = version(20, "c", vv(&[("a", 1), ("c", 1)]), false);
        let mut context = x.vv.clone();
        context.merge(&y.vv);
        let o = object(x.clone(), context, x.hlc);
        let p = lww(Strategy::AuthorityWins, Some(&o), &[x, y], &z);
        assert_eq!(p.conflicts, vec![1]);
        assert_eq!(p.current, Current::Held(1), "y is later than z, and x left the frontier");
        assert!(!p.becomes_current());
    }
}
