//! Digests for anti-entropy: the objects two sites should both hold are split into buckets by
//! a hash of their key; each bucket's digest is a hash over its `(key, current version)` pairs.
//! Sites compare bucket digests, then list only the buckets that differ.

use std::collections::BTreeMap;

use model::{ObjectKey, VersionId};
use sha2::{Digest, Sha256};

/// How many buckets a digest has.
pub const BUCKETS: usize = 256;

fn key_hash(key: &ObjectKey) -> [u8; 32] {
    Sha256::digest(key.to_string().as_bytes()).into()
}

/// The bucket of a key.
pub fn bucket_of(key: &ObjectKey) -> usize {
    usize::from(key_hash(key)[0])
}

/// Bucket digests over `(key, version)` entries: each is the XOR of SHA-256 over `key@version`,
/// so it does not depend on the order of the entries. Hex-encoded, one per bucket.
pub fn bucket_digests(entries: &[(ObjectKey, VersionId)]) -> Vec<String> {
    let mut buckets = vec![[0u8; 16]; BUCKETS];
    for (key, version) in entries {
        let h: [u8; 32] = Sha256::digest(format!("{key}@{version}").as_bytes()).into();
        let bucket = &mut buckets[bucket_of(key)];
        for (b, x) in bucket.iter_mut().zip(h.iter()) {
            *b ^= x;
        }
    }
    buckets.iter().map(hex::encode).collect()
}

/// The buckets whose digests differ (a list of the wrong length differs everywhere).
pub fn differing(mine: &[String], theirs: &[String]) -> Vec<usize> {
    if mine.len() != theirs.len() {
        return (0..BUCKETS).collect();
    }
    mine.iter().zip(theirs).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect()
}

/// Entries of the given buckets, by key.
pub fn entries_in(entries: &[(ObjectKey, VersionId)], buckets: &[usize]) -> BTreeMap<ObjectKey, VersionId> {
    let wanted: std::collections::BTreeSet<usize> = buckets.iter().copied().collect();
    entries
        .iter()
        .filter(|(k, _)| wanted.contains(&bucket_of(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether the peer, whose current version of an object is `theirs` (`None`: it has none),
/// needs `ours` sent. Not when it holds the same version, nor when it holds a later version
/// written by the same site as ours: a site writes with its own earlier versions in hand, so that
/// later version supersedes ours (it is one this site has yet to receive, not a gap in the peer).
/// An unreadable version is treated as different.
pub fn needs_repair(ours: &VersionId, theirs: Option<&str>) -> bool {
    let Some(theirs) = theirs else { return true };
    match theirs.parse::<VersionId>() {
        Ok(theirs) => theirs != *ours && !(theirs.origin == ours.origin && theirs.hlc > ours.hlc),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, wall: u64) -> (ObjectKey, VersionId) {
        (
            ObjectKey::parse("Policy", "global", name).unwrap(),
            format!("{wall}.0@global-control").parse().unwrap(),
        )
    }

    #[test]
    fn equal_sets_have_equal_digests_whatever_the_order() {
        let a = vec![entry("a", 1), entry("b", 2), entry("c", 3)];
        let mut b = a.clone();
        b.reverse();
        assert!(differing(&bucket_digests(&a), &bucket_digests(&b)).is_empty());
    }

    #[test]
    fn only_a_version_the_peer_has_not_superseded_is_repaired() {
        let ours: VersionId = "2000.0@edge-zone-a1".parse().unwrap();
        assert!(needs_repair(&ours, None), "the peer lacks the object");
        assert!(!needs_repair(&ours, Some("2000.0@edge-zone-a1")), "the peer holds it");
        assert!(!needs_repair(&ours, Some("2500.3@edge-zone-a1")), "the writer has moved on");
        assert!(needs_repair(&ours, Some("1000.0@edge-zone-a1")), "the peer is behind");
        assert!(needs_repair(&ours, Some("2500.0@region-a-control")), "another site's write");
        assert!(needs_repair(&ours, Some("not a version")));
    }

    #[test]
    fn a_changed_version_shows_in_exactly_its_bucket() {
        let a = vec![entry("a", 1), entry("b", 2), entry("c", 3)];
        let mut b = a.clone();
        b[1] = entry("b", 5);
        let diff = differing(&bucket_digests(&a), &bucket_digests(&b));
        assert_eq!(diff, vec![bucket_of(&a[1].0)]);
        let listed = entries_in(&b, &diff);
        assert_eq!(listed.get(&a[1].0), Some(&b[1].1));
    }
}
