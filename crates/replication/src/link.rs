//! Links and their state: what an operator reads in `souverix sync status`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use config::SyncMode;
use model::SiteId;
use serde::{Deserialize, Serialize};

/// Which way a link points from this site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To the parent.
    Upstream,
    /// To a child.
    Downstream,
}

/// The state of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Reachable, and nothing pending for longer than the link tolerates.
    Connected,
    /// Reachable, but changes have waited longer than the link tolerates.
    Lagging,
    /// Not reachable (or cut by a signal).
    Disconnected,
    /// The upstream link has been down longer than the site's isolation threshold: the site runs
    /// autonomously.
    Isolated,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connected => "connected",
            LinkState::Lagging => "lagging",
            LinkState::Disconnected => "disconnected",
            LinkState::Isolated => "isolated",
        }
    }

    pub const ALL: [LinkState; 4] =
        [LinkState::Connected, LinkState::Lagging, LinkState::Disconnected, LinkState::Isolated];
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the connectivity manager says about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    Up,
    /// Cut: nothing is sent or accepted on the link; debt grows.
    Down,
    /// Up but expensive: no streaming; batches only at the link's frequency.
    Metered,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Up => "up",
            Signal::Down => "down",
            Signal::Metered => "metered",
        }
    }
}

impl FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "up" => Ok(Signal::Up),
            "down" => Ok(Signal::Down),
            "metered" => Ok(Signal::Metered),
            other => Err(format!("unknown link signal `{other}`; expected `up`, `down` or `metered`")),
        }
    }
}

/// How one link is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    pub peer: SiteId,
    /// The peer's base URL; a link without one can only receive.
    pub url: Option<String>,
    pub direction: Direction,
    pub mode: SyncMode,
    pub frequency: Duration,
    pub batch_size: usize,
}

impl LinkConfig {
    /// How long a pending change may wait before the link counts as lagging: a streaming link
    /// should deliver within seconds; a batching link within two of its periods.
    pub fn lag_tolerance(&self) -> Duration {
        match self.mode {
            SyncMode::Continuous => Duration::from_secs(10),
            SyncMode::Push | SyncMode::Opportunistic => self.frequency.saturating_mul(2),
        }
    }
}

/// The facts a link's state is computed from.
#[derive(Debug, Clone, Copy)]
pub struct StateInputs {
    pub now_ms: u64,
    pub signal: Signal,
    /// Since when the link has been failing (or cut); `None` while it works.
    pub down_since_ms: Option<u64>,
    /// Whether any round has ever succeeded since the site started.
    pub ever_reached: bool,
    /// When the oldest change still pending was accepted.
    pub oldest_pending_ms: Option<u64>,
    pub direction: Direction,
    pub lag_tolerance: Duration,
    pub isolation_after: Duration,
}

/// The state of a link from the facts.
pub fn evaluate(i: StateInputs) -> LinkState {
    let down = i.signal == Signal::Down || i.down_since_ms.is_some() || !i.ever_reached;
    if down {
        let since = i.down_since_ms.unwrap_or(i.now_ms);
        let isolated = i.direction == Direction::Upstream
            && i.now_ms.saturating_sub(since)
                > u64::try_from(i.isolation_after.as_millis()).unwrap_or(u64::MAX);
        return if isolated { LinkState::Isolated } else { LinkState::Disconnected };
    }
    let tolerance = u64::try_from(i.lag_tolerance.as_millis()).unwrap_or(u64::MAX);
    match i.oldest_pending_ms {
        Some(oldest) if i.now_ms.saturating_sub(oldest) > tolerance => LinkState::Lagging,
        _ => LinkState::Connected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> StateInputs {
        StateInputs {
            now_ms: 100_000,
            signal: Signal::Up,
            down_since_ms: None,
            ever_reached: true,
            oldest_pending_ms: None,
            direction: Direction::Upstream,
            lag_tolerance: Duration::from_secs(10),
            isolation_after: Duration::from_secs(5),
        }
    }

    #[test]
    fn states_follow_the_facts() {
        assert_eq!(evaluate(inputs()), LinkState::Connected);
        assert_eq!(
            evaluate(StateInputs { oldest_pending_ms: Some(95_000), ..inputs() }),
            LinkState::Connected
        );
        assert_eq!(evaluate(StateInputs { oldest_pending_ms: Some(80_000), ..inputs() }), LinkState::Lagging);
        assert_eq!(
            evaluate(StateInputs { down_since_ms: Some(97_000), ..inputs() }),
            LinkState::Disconnected
        );
        assert_eq!(evaluate(StateInputs { down_since_ms: Some(90_000), ..inputs() }), LinkState::Isolated);
        let downstream = StateInputs { direction: Direction::Downstream, down_since_ms: Some(0), ..inputs() };
        assert_eq!(evaluate(downstream), LinkState::Disconnected, "only an upstream link isolates a site");
        assert_eq!(evaluate(StateInputs { signal: Signal::Down, ..inputs() }), LinkState::Disconnected);
    }
}
