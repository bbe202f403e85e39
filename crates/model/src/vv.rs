//! Per-object version vectors: they, not the clocks, decide whether two versions conflict.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SiteId;

/// How two version vectors relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    Equal,
    /// The left side has seen everything the right side has, and more.
    Dominates,
    /// The right side has seen everything the left side has, and more.
    DominatedBy,
    /// Each side has seen something the other has not: a conflict.
    Concurrent,
}

/// `{site: counter}`: how many writes of this object each site has made, as far as this
/// version knows. Absent entries are zero.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<SiteId, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, site: &SiteId) -> u64 {
        self.0.get(site).copied().unwrap_or(0)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&SiteId, u64)> {
        self.0.iter().map(|(s, c)| (s, *c))
    }

    /// Records one more write by `site`.
    pub fn increment(&mut self, site: &SiteId) {
        let counter = self.0.entry(site.clone()).or_insert(0);
        *counter = counter.saturating_add(1);
    }

    /// The pointwise maximum: a vector that has seen everything either side has.
    pub fn merge(&mut self, other: &VersionVector) {
        for (site, counter) in &other.0 {
            let mine = self.0.entry(site.clone()).or_insert(0);
            *mine = (*mine).max(*counter);
        }
    }

    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut ahead = false;
        let mut behind = false;
        let sites = self.0.keys().chain(other.0.keys());
        for site in sites {
            match self.get(site).cmp(&other.get(site)) {
                Ordering::Greater => ahead = true,
                Ordering::Less => behind = true,
                Ordering::Equal => {}
            }
        }
        match (ahead, behind) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Dominates,
            (false, true) => Causality::DominatedBy,
            (true, true) => Causality::Concurrent,
        }
    }
}

impl FromIterator<(SiteId, u64)> for VersionVector {
    /// Builds a vector from `(site, counter)` pairs; zero counters are left out (absent is zero)
    /// and a repeated site keeps its largest counter.
    fn from_iter<I: IntoIterator<Item = (SiteId, u64)>>(iter: I) -> Self {
        let mut map = BTreeMap::new();
        for (site, counter) in iter {
            if counter > 0 {
                let entry = map.entry(site).or_insert(0);
                *entry = counter.max(*entry);
            }
        }
        Self(map)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn site(n: u8) -> SiteId {
        SiteId::new(format!("site-{n}")).unwrap()
    }

    fn vector() -> impl Strategy<Value = VersionVector> {
        proptest::collection::btree_map(0u8..4, 0u64..4, 0..4).prop_map(|m| {
            VersionVector(m.into_iter().map(|(s, c)| (site(s), c)).filter(|(_, c)| *c > 0).collect())
        })
    }

    #[test]
    fn compare_names_each_relation() {
        let mut a = VersionVector::new();
        a.increment(&site(1));
        let mut b = a.clone();
        assert_eq!(a.compare(&b), Causality::Equal);
        b.increment(&site(1));
        assert_eq!(b.compare(&a), Causality::Dominates);
        assert_eq!(a.compare(&b), Causality::DominatedBy);
        a.increment(&site(2));
        assert_eq!(a.compare(&b), Causality::Concurrent);
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged.compare(&a), Causality::Dominates);
        assert_eq!(merged.compare(&b), Causality::Dominates);
    }

    proptest! {
        #[test]
        fn compare_is_antisymmetric(a in vector(), b in vector()) {
            let flipped = match a.compare(&b) {
                Causality::Dominates => Causality::DominatedBy,
                Causality::DominatedBy => Causality::Dominates,
                other => other,
            };
            prop_assert_eq!(b.compare(&a), flipped);
        }

        #[test]
        fn merge_dominates_or_equals_both(a in vector(), b in vector()) {
            let mut m = a.clone();
            m.merge(&b);
            prop_assert!(matches!(m.compare(&a), Causality::Dominates | Causality::Equal));
            prop_assert!(matches!(m.compare(&b), Causality::Dominates | Causality::Equal));
            let mut m2 = b.clone();
            m2.merge(&a);
            prop_assert_eq!(m.compare(&m2), Causality::Equal, "merge is commutative");
        }
    }
}
