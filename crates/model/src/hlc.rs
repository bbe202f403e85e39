//! Hybrid logical clocks (Kulkarni et al., 2014).
//!
//! A timestamp is `(wall_ms, logical)`: the largest physical time the clock has seen, and a
//! counter that orders events within that millisecond. The clock never goes backwards, and it
//! refuses a remote timestamp that is further ahead of local physical time than the configured
//! maximum skew, so one site with a broken clock cannot drag the federation into the future.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One hybrid logical clock timestamp. Ordered by `(wall_ms, logical)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
    /// Orders events that share `wall_ms`.
    pub logical: u32,
}

impl Hlc {
    pub const ZERO: Hlc = Hlc { wall_ms: 0, logical: 0 };

    pub fn new(wall_ms: u64, logical: u32) -> Self {
        Self { wall_ms, logical }
    }

    /// The next timestamp after `self` within the same or the next millisecond.
    fn successor(self) -> Hlc {
        match self.logical.checked_add(1) {
            Some(logical) => Hlc { wall_ms: self.wall_ms, logical },
            None => Hlc { wall_ms: self.wall_ms.saturating_add(1), logical: 0 },
        }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

impl FromStr for Hlc {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (wall, logical) = s
            .split_once('.')
            .ok_or_else(|| format!("timestamp `{s}` must look like `<milliseconds>.<counter>`"))?;
        let wall_ms =
            wall.parse().map_err(|_| format!("timestamp `{s}`: `{wall}` is not a number of milliseconds"))?;
        let logical =
            logical.parse().map_err(|_| format!("timestamp `{s}`: `{logical}` is not a counter"))?;
        Ok(Hlc { wall_ms, logical })
    }
}

/// Why the clock refused a remote timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error(
        "remote timestamp {remote} is {ahead_ms} ms ahead of local time {local_ms} ms; the maximum clock skew is {max_skew_ms} ms: check the clock of the sending site"
    )]
    SkewExceeded { remote: Hlc, local_ms: u64, ahead_ms: u64, max_skew_ms: u64 },
}

/// A site's hybrid logical clock. Pure: physical time is passed in.
#[derive(Debug, Clone)]
pub struct HlcClock {
    last: Hlc,
    max_skew_ms: u64,
}

impl HlcClock {
    /// A clock that resumes after `last`, the largest timestamp it ever issued or observed
    /// (as persisted by the store), so it never goes backwards across restarts.
    pub fn new(last: Hlc, max_skew_ms: u64) -> Self {
        Self { last, max_skew_ms }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }

    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }

    /// A timestamp for a local event at physical time `physical_ms`. Strictly greater than every
    /// timestamp issued or observed before.
    pub fn tick(&mut self, physical_ms: u64) -> Hlc {
        let next = if physical_ms > self.last.wall_ms {
            Hlc { wall_ms: physical_ms, logical: 0 }
        } else {
            self.last.successor()
        };
        self.last = next;
        next
    }

    /// Merges a timestamp received from another site at physical time `physical_ms`, and
    /// returns a local timestamp greater than both. Refuses, without changing the clock, a remote
    /// timestamp more than the maximum skew ahead of `physical_ms`.
    pub fn observe(&mut self, remote: Hlc, physical_ms: u64) -> Result<Hlc, ClockError> {
        self.check(remote, physical_ms)?;
        let wall_ms = physical_ms.max(self.last.wall_ms).max(remote.wall_ms);
        let next = if wall_ms == self.last.wall_ms && wall_ms == remote.wall_ms {
            Hlc { wall_ms, logical: self.last.logical.max(remote.logical) }.successor()
        } else if wall_ms == self.last.wall_ms {
            self.last.successor()
        } else if wall_ms == remote.wall_ms {
            remote.successor()
        } else {
            Hlc { wall_ms, logical: 0 }
        };
        self.last = next;
        Ok(next)
    }

    /// Checks a remote timestamp against the maximum skew without changing the clock.
    pub fn check(&self, remote: Hlc, physical_ms: u64) -> Result<(), ClockError> {
        let ahead_ms = remote.wall_ms.saturating_sub(physical_ms);
        if ahead_ms > self.max_skew_ms {
            return Err(ClockError::SkewExceeded {
                remote,
                local_ms: physical_ms,
                ahead_ms,
                max_skew_ms: self.max_skew_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Event {
        Tick(u64),
        Observe { remote: Hlc, physical: u64 },
        Restart,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0u64..10_000).prop_map(Event::Tick),
            ((0u64..12_000, 0u32..4), 0u64..10_000)
                .prop_map(|((w, l), physical)| Event::Observe { remote: Hlc::new(w, l), physical }),
            Just(Event::Restart),
        ]
    }

    proptest! {
        /// Whatever physical time does (stand still, jump back), and across restarts from the
        /// persisted last timestamp, every timestamp the clock hands out is strictly greater than
        /// every one before it, and an accepted remote timestamp is below the next local one.
        #[test]
        fn clock_is_strictly_monotonic(events in proptest::collection::vec(event(), 1..200)) {
            let max_skew = 1_000;
            let mut clock = HlcClock::new(Hlc::ZERO, max_skew);
            let mut persisted = Hlc::ZERO;
            let mut previous = Hlc::ZERO;
            for event in events {
                match event {
                    Event::Tick(physical) => {
                        let t = clock.tick(physical);
                        prop_assert!(t > previous, "{t} after {previous}");
                        prop_assert!(t.wall_ms >= physical);
                        previous = t;
                        persisted = t;
                    }
                    Event::Observe { remote, physical } => {
                        let before = clock.last();
                        match clock.observe(remote, physical) {
                            Ok(t) => {
                                prop_assert!(t > previous && t > remote, "{t} after {previous} and {remote}");
                                previous = t;
                                persisted = t;
                            }
                            Err(ClockError::SkewExceeded { ahead_ms, .. }) => {
                                prop_assert!(ahead_ms > max_skew);
                                prop_assert_eq!(clock.last(), before, "a refused timestamp changes nothing");
                            }
                        }
                    }
                    Event::Restart => clock = HlcClock::new(persisted, max_skew),
                }
            }
        }
    }

    #[test]
    fn refuses_a_timestamp_beyond_the_maximum_skew() {
        let mut clock = HlcClock::new(Hlc::ZERO, 500);
        assert!(clock.observe(Hlc::new(1_500, 0), 1_000).is_ok());
        let err = clock.observe(Hlc::new(1_502, 0), 1_001).unwrap_err();
        assert!(err.to_string().contains("501 ms ahead"), "{err}");
    }

    #[test]
    fn display_round_trips() {
        let t = Hlc::new(1_764_000_000_123, 7);
        assert_eq!(t.to_string(), "1764000000123.7");
        assert_eq!(t.to_string().parse::<Hlc>().unwrap(), t);
    }
}
