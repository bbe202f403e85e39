//! Finding the line and column of a field in a YAML text.
//!
//! The file is deserialized into plain structs through `serde_yaml_ng::Value`, which carries no
//! positions, so when something is wrong the field's position is looked up afterwards: the
//! text is walked again, following the field's path, and at the target a deliberate error is
//! raised. `serde_yaml_ng` stamps every error raised inside a visitor with the position of the
//! node being visited, which is exactly the position wanted. Safe, exact, and only paid for on
//! the error path.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::Location;

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// The path of a field from the top of the file, such as `SyncStrategy.downstream.targets[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(pub(crate) Vec<Seg>);

impl FieldPath {
    pub(crate) fn keys(keys: &[&str]) -> Self {
        Self(keys.iter().map(|k| Seg::Key((*k).to_owned())).collect())
    }

    pub(crate) fn key(mut self, key: &str) -> Self {
        self.0.push(Seg::Key(key.to_owned()));
        self
    }

    pub(crate) fn index(mut self, index: usize) -> Self {
        self.0.push(Seg::Index(index));
        self
    }

    /// `self` followed by `rest`.
    pub(crate) fn join(&self, rest: &FieldPath) -> Self {
        Self(self.0.iter().chain(&rest.0).cloned().collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Which position of a mapping entry to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The key (`mode` in `mode: pull`): for fields that are unknown or should not be there.
    Key,
    /// The value (`pull`): for values that are wrong.
    Value,
}

/// The position of `path` in `text`, or of its nearest ancestor that is in the text (then
/// without a column when the field itself is absent), or line 1.
pub(crate) fn locate(text: &str, path: &FieldPath, target: Target) -> Location {
    if let Some(found) = find(text, &path.0, target) {
        return found;
    }
    (1..path.0.len())
        .rev()
        .find_map(|len| find(text, &path.0[..len], Target::Key))
        .map(|ancestor| Location { column: None, ..ancestor })
        .unwrap_or(Location::START)
}

/// The message of the deliberate error that marks the target.
const FOUND: &str = "souverix-config: located";

fn find(text: &str, path: &[Seg], target: Target) -> Option<Location> {
    if path.is_empty() {
        return None;
    }
    let walk = Find { path, target }.deserialize(serde_yaml_ng::Deserializer::from_str(text));
    match walk {
        Err(err) if err.to_string().contains(FOUND) => err.location().map(Location::from_yaml),
        Ok(()) | Err(_) => None,
    }
}

/// Walks down `path`; at its end, raises [`FOUND`] on the key or on the value.
struct Find<'p> {
    path: &'p [Seg],
    target: Target,
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path.is_empty() { d.deserialize_any(Here) } else { d.deserialize_any(self) }
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (want, rest) = match self.path.split_first() {
            Some((Seg::Key(want), rest)) => (Some(want.as_str()), rest),
            _ => (None, self.path),
        };
        let signal = rest.is_empty() && self.target == Target::Key;
        while let Some(matched) = map.next_key_seed(KeySeed { want, signal })? {
            if matched {
                map.next_value_seed(Find { path: rest, target: self.target })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (want, rest) = match self.path.split_first() {
            Some((Seg::Index(want), rest)) => (Some(*want), rest),
            _ => (None, self.path),
        };
        let mut index = 0;
        loop {
            let more = if want == Some(index) {
                // An element has no key: its position is its value's. Below it, keys are keys.
                let target = if rest.is_empty() { Target::Value } else { self.target };
                seq.next_element_seed(Find { path: rest, target })?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<(), A::Error> {
        Err(de::Error::custom("tagged nodes are not searched"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads a mapping key: `true` when it is the wanted one, or fails with [`FOUND`] there when
/// the key itself is the target.
struct KeySeed<'w> {
    want: Option<&'w str>,
    signal: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        let matched = self.want == Some(key);
        if matched && self.signal { Err(E::custom(FOUND)) } else { Ok(matched) }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Fails with [`FOUND`] on whatever node it is given, so that the error carries its position.
struct Here;

impl<'de> Visitor<'de> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
Authority:
  level: regional
  sync:
    mode: \"pull\"
SyncStrategy:
  downstream:
    targets: [\"a\", \"b\"]
    list:
      - x
      - y
";

    fn at(line: usize, column: usize) -> Location {
        Location { line, column: Some(column) }
    }

    #[test]
    fn finds_keys_and_values_by_path() {
        let mode = FieldPath::keys(&["Authority", "sync", "mode"]);
        assert_eq!(locate(TEXT, &mode, Target::Key), at(4, 5));
        assert_eq!(locate(TEXT, &mode, Target::Value), at(4, 11));
        assert_eq!(locate(TEXT, &FieldPath::keys(&["SyncStrategy"]), Target::Key), at(5, 1));
        let second = FieldPath::keys(&["SyncStrategy", "downstream", "targets"]).index(1);
        assert_eq!(locate(TEXT, &second, Target::Key), at(7, 20));
        let y = FieldPath::keys(&["SyncStrategy", "downstream", "list"]).index(1);
        assert_eq!(locate(TEXT, &y, Target::Value), at(10, 9));
    }

    #[test]
    fn an_absent_field_is_placed_at_its_nearest_ancestor_without_a_column() {
        let absent = FieldPath::keys(&["Authority", "sync", "frequency"]);
        assert_eq!(locate(TEXT, &absent, Target::Key), Location { line: 3, column: None });
        let nowhere = FieldPath::keys(&["Site", "id"]);
        assert_eq!(locate(TEXT, &nowhere, Target::Key), Location::START);
    }

    #[test]
    fn odd_documents_are_searched_without_failing() {
        let path = FieldPath::keys(&["a", "b"]);
        for text in
            ["", "~", "[1, 2]", "? [x]\n: 1\na: !tag {b: 1}", "1: x\ntrue: y\na:\n  b: 2", "{a: [[", "a: *x"]
        {
            let _ = locate(text, &path, Target::Value);
        }
        assert_eq!(locate("1: x\ntrue: y\na:\n  b: 2", &path, Target::Value), at(4, 6));
    }
}
