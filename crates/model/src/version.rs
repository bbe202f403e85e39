//! Versions of an object and the last-write-wins order.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::{Hlc, ObjectKey, SiteId, VersionVector};

/// Names one version: its timestamp and the site that wrote it, `<wall_ms>.<counter>@<site>`.
/// Unique, because a site's clock never hands out the same timestamp twice. It is the ETag of
/// the object in the API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionId {
    pub hlc: Hlc,
    pub origin: SiteId,
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.hlc, self.origin)
    }
}

/// Why a string is not a version id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a version: {reason}; a version looks like `1764000000123.0@global-control`")]
pub struct VersionIdError {
    value: String,
    reason: String,
}

impl FromStr for VersionId {
    type Err = VersionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| VersionIdError { value: s.to_owned(), reason };
        let (hlc, origin) = s.split_once('@').ok_or_else(|| bad("it has no `@`".into()))?;
        Ok(VersionId {
            hlc: hlc.parse().map_err(bad)?,
            origin: SiteId::new(origin).map_err(|e| bad(e.to_string()))?,
        })
    }
}

impl Serialize for VersionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VersionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// SHA-256 of an object's content in a canonical JSON form (keys sorted), hex encoded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentHash(String);

impl ContentHash {
    /// Hashes what a version says: the object's identity, labels, spec and whether it is a
    /// delete. Two writes of the same content hash the same at every site.
    pub fn of(
        key: &ObjectKey,
        labels: &BTreeMap<String, String>,
        spec: &serde_json::Value,
        deleted: bool,
    ) -> Self {
        Self::of_text(key, &labels_text(labels), SpecText::of(spec).as_str(), deleted)
    }

    /// [`ContentHash::of`] over content already in its JSON text: `labels` as
    /// [`labels_text`] writes them and the spec's text. The text is hashed as it is, so a
    /// version received from a peer is checked, stored and sent on byte for byte, without being
    /// parsed and written again.
    pub fn of_text(key: &ObjectKey, labels: &str, spec: &str, deleted: bool) -> Self {
        Self::from_digest(&Self::digest_of_text(key, labels, spec, deleted))
    }

    /// The 32 bytes [`ContentHash::of_text`] encodes, for comparing with a hash received as
    /// bytes without encoding either.
    pub fn digest_of_text(key: &ObjectKey, labels: &str, spec: &str, deleted: bool) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in [key.kind.as_str(), key.scope.as_str(), key.name.as_str()] {
            hasher.update(part.as_bytes());
            hasher.update(b"\n");
        }
        hasher.update(if deleted { b"deleted\n".as_slice() } else { b"present\n".as_slice() });
        hasher.update(labels.as_bytes());
        hasher.update(b"\n");
        hasher.update(spec.as_bytes());
        hasher.finalize().into()
    }

    /// The hash of these 32 bytes, hex encoded.
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        let mut text = [0u8; 64];
        // 64 bytes is exactly the room 32 bytes need, and hex digits are ASCII.
        let encoded =
            hex::encode_to_slice(digest, &mut text).ok().and_then(|()| std::str::from_utf8(&text).ok());
        Self(encoded.map_or_else(|| hex::encode(digest), str::to_owned))
    }

    /// Wraps a hash read back from storage.
    pub fn from_hex(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Labels as the JSON text that is hashed and stored: an object with its keys in sorted order.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    // A `BTreeMap` serializes its keys in order, so this is the canonical form without building a
    // JSON value first (on the path of every write and every received version). A map of strings
    // always serializes.
    serde_json::to_string(labels).unwrap_or_default()
}

/// A spec as the exact JSON text that is hashed, stored and sent to peers. Made here from a
/// value, it is the canonical form (object keys sorted, no whitespace); received from a peer, it
/// is kept byte for byte once checked to be JSON (its content hash binds those bytes), so every
/// site holds the same bytes and a value that would not print back the same (a float, say) can
/// never make two sites disagree on a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecText(String);

impl SpecText {
    /// The canonical text of a value.
    pub fn of(value: &serde_json::Value) -> Self {
        let mut out = String::new();
        write_canonical(value, &mut out);
        Self(out)
    }

    /// Checks that `text` is one JSON value (without building it) and keeps it as it is.
    pub fn parse(text: String) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The value the text holds.
    pub fn value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

/// Writes `value` as JSON with object keys in sorted order, whatever map type serde_json uses.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The metadata of one write of an object (its content travels beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub hlc: Hlc,
    pub origin: SiteId,
    pub vv: VersionVector,
    pub author: String,
    pub content_hash: ContentHash,
    /// A delete: the object's tombstone.
    pub deleted: bool,
}

impl Version {
    pub fn id(&self) -> VersionId {
        VersionId { hlc: self.hlc, origin: self.origin.clone() }
    }

    /// The last-write-wins order: by `(hlc, origin)`, total and the same at every site. The
    /// content hash breaks the tie that honest sites never produce (one site, one timestamp,
    /// two contents), so even then every site picks the same winner.
    pub fn lww_cmp(&self, other: &Version) -> Ordering {
        (self.hlc, &self.origin, &self.content_hash).cmp(&(other.hlc, &other.origin, &other.content_hash))
    }
}

/// The winner of two versions under last-write-wins.
pub fn lww_winner<'a>(a: &'a Version, b: &'a Version) -> &'a Version {
    if a.lww_cmp(b) == Ordering::Less { b } else { a }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Kind, ObjectName, Scope};

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new("baseline").unwrap())
    }

    fn version() -> impl Strategy<Value = Version> {
        (0u64..5, 0u32..3, 0u8..3, any::<bool>(), 0u8..3).prop_map(
            |(wall, logical, origin, deleted, content)| {
                let spec = serde_json::json!({ "v": content });
                Version {
                    hlc: Hlc::new(wall, logical),
                    origin: SiteId::new(format!("site-{origin}")).unwrap(),
                    vv: VersionVector::new(),
                    author: "test".into(),
                    content_hash: ContentHash::of(&key(), &BTreeMap::new(), &spec, deleted),
                    deleted,
                }
            },
        )
    }

    proptest! {
        /// Resolution's laws: whatever order the versions arrive in, folding them with
        /// last-write-wins gives the same winner (commutative, associative, idempotent).
        #[test]
        fn same_winner_whatever_the_arrival_order(
            versions in proptest::collection::vec(version(), 1..12),
            seed in any::<u64>(),
        ) {
            let fold = |vs: &[Version]| -> Version {
                let mut current = vs[0].clone();
                for v in &vs[1..] {
                    current = lww_winner(&current, v).clone();
                }
                current
            };
            let expected = fold(&versions);
            let mut shuffled = versions.clone();
            // A deterministic shuffle driven by the generated seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let j = (state % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            let mut doubled = shuffled.clone();
            doubled.extend(versions.iter().cloned());
            prop_assert_eq!(fold(&shuffled), expected.clone());
            prop_assert_eq!(fold(&doubled), expected.clone(), "duplicates change nothing");
            let max = versions.iter().max_by(|a, b| a.lww_cmp(b)).unwrap();
            prop_assert_eq!(&expected, max);
        }
    }

    #[test]
    fn later_timestamp_wins_then_origin_breaks_ties() {
        let mk = |wall, origin: &str| Version {
            hlc: Hlc::new(wall, 0),
            origin: SiteId::new(origin).unwrap(),
            vv: VersionVector::new(),
            author: "a".into(),
            content_hash: ContentHash::from_hex("00".into()),
            deleted: false,
        };
        let a = mk(10, "edge-zone-a1");
        let b = mk(11, "edge-zone-a1");
        assert_eq!(lww_winner(&a, &b), &b);
        let c = mk(11, "global-control");
        assert_eq!(lww_winner(&b, &c), &c, "same time: the greater site id wins");
    }

    #[test]
    fn a_content_hash_is_the_lowercase_hex_of_its_digest() {
        let digest = ContentHash::digest_of_text(&key(), "{}", r#"{"a":1}"#, false);
        let hash = ContentHash::of_text(&key(), "{}", r#"{"a":1}"#, false);
        assert_eq!(hash.as_str(), hex::encode(digest));
        assert_eq!(ContentHash::from_digest(&digest), hash);
        assert_eq!(hash.as_str().len(), 64);
        assert!(hash.as_str().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn content_hash_ignores_key_order() {
        let a = serde_json::json!({"a": 1, "b": {"x": [1, 2], "y": null}});
        let b: serde_json::Value =
            serde_json::from_str(r#"{"b": {"y": null, "x": [1, 2]}, "a": 1}"#).unwrap();
        let labels = BTreeMap::new();
        assert_eq!(ContentHash::of(&key(), &labels, &a, false), ContentHash::of(&key(), &labels, &b, false));
        assert_ne!(ContentHash::of(&key(), &labels, &a, false), ContentHash::of(&key(), &labels, &a, true));
    }

    #[test]
    fn the_hash_of_text_is_the_hash_of_its_value() {
        let spec: serde_json::Value =
            serde_json::from_str(r#"{"b": {"y": null, "x": [1, 2]}, "a": 1.5}"#).unwrap();
        let labels = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
        let text = SpecText::of(&spec);
        assert_eq!(text.as_str(), r#"{"a":1.5,"b":{"x":[1,2],"y":null}}"#);
        assert_eq!(labels_text(&labels), r#"{"env":"prod"}"#);
        let hash = ContentHash::of(&key(), &labels, &spec, false);
        // SHA-256 of "Policy\nglobal\nbaseline\npresent\n" + labels + "\n" + spec: the hash
        // every site has computed for this content, so stores and peers keep agreeing.
        assert_eq!(hash.as_str(), "14dc5cc40d691f895ea482c489693bfa78f899fea8eff7dfa7a1282c14183524");
        assert_eq!(ContentHash::of_text(&key(), &labels_text(&labels), text.as_str(), false), hash);
        assert_eq!(
            SpecText::parse(" {\"a\": 1} ".into()).unwrap().as_str(),
            " {\"a\": 1} ",
            "kept as received"
        );
        assert!(SpecText::parse("{\"a\": ".into()).is_err());
        assert!(SpecText::parse("{} {}".into()).is_err(), "one value only");
        assert_eq!(text.value().unwrap(), spec);
    }

    #[test]
    fn version_id_round_trips_and_explains_bad_input() {
        let id: VersionId = "1764000000123.2@edge-zone-a1".parse().unwrap();
        assert_eq!(id.to_string(), "1764000000123.2@edge-zone-a1");
        let err = "12345".parse::<VersionId>().unwrap_err().to_string();
        assert!(err.contains("has no `@`"), "{err}");
    }
}
