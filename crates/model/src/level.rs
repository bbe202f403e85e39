//! Authority levels and autonomy.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The design's four authority levels, from the top of the hierarchy down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Global,
    Regional,
    Local,
    Autonomous,
}

impl Level {
    /// Rank for `authority-wins`: a higher rank is a higher authority.
    pub fn rank(self) -> u8 {
        match self {
            Level::Global => 3,
            Level::Regional => 2,
            Level::Local | Level::Autonomous => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Global => "global",
            Level::Regional => "regional",
            Level::Local => "local",
            Level::Autonomous => "autonomous",
        }
    }

    /// The autonomy a site of this level has when its configuration does not say.
    pub fn default_autonomy(self) -> Autonomy {
        match self {
            Level::Local => Autonomy::Conditional,
            Level::Global | Level::Regional | Level::Autonomous => Autonomy::Full,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a site may act on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Autonomy {
    /// Acts on its own at all times.
    Full,
    /// Acts on its own only while isolated from its upstream.
    Conditional,
    /// Never acts beyond its own scope.
    None,
}

impl Autonomy {
    pub fn as_str(self) -> &'static str {
        match self {
            Autonomy::Full => "full",
            Autonomy::Conditional => "conditional",
            Autonomy::None => "none",
        }
    }
}

impl fmt::Display for Autonomy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
