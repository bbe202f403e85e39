//! The rules of applying a version received from a peer that do not depend on the backend:
//! how it changes the object's causal context, whether it is concurrent with what the site has
//! seen, whether it becomes the current version, and the object's `created` afterwards. Every
//! backend calls [`merge`] inside its apply transaction, so all backends (and all sites) agree.

use std::cmp::Ordering;

use model::{Causality, Hlc, StoredObject, Version, VersionVector};

use crate::local_write::created_after;

/// What applying one new version does to its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Merge {
    /// The object's causal context afterwards: the old one merged with the version's vector.
    pub context: VersionVector,
    /// Neither the version's vector nor the object's context dominates the other: a conflict.
    pub concurrent: bool,
    /// The version is now the object's current version (the greatest in last-write-wins order).
    pub becomes_current: bool,
    /// The object's `created` afterwards.
    pub created: Hlc,
}

/// Applies `version`, new to this site, to the object whose current version (tombstones
/// included) is `current`. The current version stays the greatest of all versions held under
/// [`Version::lww_cmp`], so the outcome does not depend on the order versions arrive in.
/// `created` follows the rule of local writes when the version becomes current (kept while
/// the object stays in existence, restarted by a re-creation) and is unchanged otherwise.
pub(crate) fn merge(current: Option<&StoredObject>, version: &Version) -> Merge {
    let Some(current) = current else {
        return Merge {
            context: version.vv.clone(),
            concurrent: false,
            becomes_current: true,
            created: version.hlc,
        };
    };
    let concurrent = version.vv.compare(&current.context) == Causality::Concurrent;
    let mut context = current.context.clone();
    context.merge(&version.vv);
    let becomes_current = version.lww_cmp(&current.version) == Ordering::Greater;
    let created = if becomes_current { created_after(Some(current), version.hlc) } else { current.created };
    Merge { context, concurrent, becomes_current, created }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use model::{ContentHash, Kind, ObjectKey, ObjectName, Scope, SiteId};

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

    #[test]
    fn a_new_object_takes_the_version_as_it_is() {
        let v = version(10, "a", vv(&[("a", 1)]), false);
        let m = merge(None, &v);
        assert_eq!(
            m,
            Merge { context: v.vv.clone(), concurrent: false, becomes_current: true, created: v.hlc }
        );
    }

    #[test]
    fn an_older_concurrent_version_merges_the_context_but_stays_in_history() {
        let cur = version(20, "b", vv(&[("b", 1)]), false);
        let o = object(cur.clone(), cur.vv.clone(), cur.hlc);
        let m = merge(Some(&o), &version(10, "a", vv(&[("a", 1)]), false));
        assert!(m.concurrent && !m.becomes_current);
        assert_eq!(m.context, vv(&[("a", 1), ("b", 1)]));
        assert_eq!(m.created, cur.hlc);
    }

    #[test]
    fn a_later_version_keeps_created_unless_it_recreates() {
        let first = version(10, "a", vv(&[("a", 1)]), false);
        let live = object(first.clone(), first.vv.clone(), first.hlc);
        let next = version(20, "b", vv(&[("a", 1), ("b", 1)]), false);
        let m = merge(Some(&live), &next);
        assert!(!m.concurrent && m.becomes_current);
        assert_eq!(m.created, first.hlc);

        let tomb = version(15, "a", vv(&[("a", 2)]), true);
        let dead = object(tomb.clone(), tomb.vv.clone(), first.hlc);
        let m = merge(Some(&dead), &next);
        assert!(m.concurrent && m.becomes_current);
        assert_eq!(m.created, next.hlc, "a version replacing a tombstone re-creates the object");
    }
}
