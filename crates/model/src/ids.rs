//! Identifiers: sites, scopes, kinds, object names and object keys.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} `{value}` is {len} characters long; the limit is {max}")]
    TooLong { what: &'static str, value: String, len: usize, max: usize },
    #[error(
        "{what} `{value}` contains `{ch}`; use lowercase letters, digits and `-`{extra}, starting and ending with a letter or digit"
    )]
    BadCharacter { what: &'static str, value: String, ch: char, extra: &'static str },
    #[error("{what} `{value}` must start and end with a lowercase letter or digit")]
    BadEdge { what: &'static str, value: String },
    #[error("unknown kind `{value}`; known kinds are {known}")]
    UnknownKind { value: String, known: String },
}

/// Checks a DNS-label-like identifier: lowercase ASCII letters, digits and `-` (and `.` when
/// `allow_dot`), starting and ending with a letter or digit.
fn check_label(what: &'static str, value: &str, max: usize, allow_dot: bool) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    let len = value.chars().count();
    if len > max {
        return Err(IdError::TooLong { what, value: value.to_owned(), len, max });
    }
    for ch in value.chars() {
        let ok = ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || (allow_dot && ch == '.');
        if !ok {
            return Err(IdError::BadCharacter {
                what,
                value: value.to_owned(),
                ch,
                extra: if allow_dot { " and `.`" } else { "" },
            });
        }
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(value.chars().next()) || !edge_ok(value.chars().last()) {
        return Err(IdError::BadEdge { what, value: value.to_owned() });
    }
    Ok(())
}

macro_rules! label_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $dot:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_label($what, &value, $max, $dot)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_id!(
    /// A control plane site, such as `global-control` or `edge-zone-a1`.
    SiteId, "site id", 63, false
);
label_id!(
    /// The scope an object belongs to: the name of the site's domain that is master of record
    /// for it, such as `global`, `region-a` or `edge-zone-a1`.
    Scope, "scope", 63, false
);
label_id!(
    /// The name of an object within its kind and scope. DNS-subdomain-like, so it never holds
    /// a `/` and is safe in a URL path segment.
    ObjectName, "object name", 253, true
);

/// The kind of an object. The set is closed: an unknown kind is an error, so a typo never
/// creates a new kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Policy,
    Release,
    Rollout,
    SiteStatus,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Policy, Kind::Release, Kind::Rollout, Kind::SiteStatus];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Policy => "Policy",
            Kind::Release => "Release",
            Kind::Rollout => "Rollout",
            Kind::SiteStatus => "SiteStatus",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = IdError;
    /// Accepts the kind's name in any letter case (`Policy`, `policy`), as CLI users type it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            IdError::UnknownKind {
                value: s.to_owned(),
                known: Kind::ALL.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
            }
        })
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// The identity of an object: `(kind, scope, name)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub scope: Scope,
    pub name: ObjectName,
}

impl ObjectKey {
    pub fn new(kind: Kind, scope: Scope, name: ObjectName) -> Self {
        Self { kind, scope, name }
    }

    /// Parses the three parts as they appear in an API path.
    pub fn parse(kind: &str, scope: &str, name: &str) -> Result<Self, IdError> {
        Ok(Self { kind: kind.parse()?, scope: Scope::new(scope)?, name: ObjectName::new(name)? })
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.scope, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_slashes_and_uppercase() {
        assert!(ObjectName::new("baseline-security").is_ok());
        assert!(ObjectName::new("v1.2.3").is_ok());
        let err = ObjectName::new("a/b").unwrap_err();
        assert!(err.to_string().contains("contains `/`"), "{err}");
        assert!(ObjectName::new("Upper").is_err());
        assert!(ObjectName::new("-edge").is_err());
        assert!(ObjectName::new("").is_err());
        assert!(SiteId::new("edge.zone").is_err(), "site ids have no dots");
    }

    #[test]
    fn kinds_parse_case_insensitively_and_name_the_known_ones() {
        assert_eq!("policy".parse::<Kind>().unwrap(), Kind::Policy);
        assert_eq!("SiteStatus".parse::<Kind>().unwrap(), Kind::SiteStatus);
        let err = "Gadget".parse::<Kind>().unwrap_err().to_string();
        assert!(err.contains("unknown kind `Gadget`") && err.contains("`Policy`"), "{err}");
    }
}
