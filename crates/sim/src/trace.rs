//! What happened in a run: every event is folded into a hash (two runs of one seed must end
//! with the same hash), and the readable ones (writes, faults, crashes, refusals) are kept, up
//! to a bound, to explain a failure.

/// The most readable lines a run keeps.
const MAX_LINES: usize = 50_000;

#[derive(Debug, Clone)]
pub struct Trace {
    hash: u64,
    events: u64,
    lines: Vec<(u64, String)>,
    dropped: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace { hash: 0xcbf2_9ce4_8422_2325, events: 0, lines: Vec::new(), dropped: 0 }
    }
}

impl Trace {
    fn mix_bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash = (self.hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Folds numbers into the hash (for the many events not worth a line: network fates).
    pub fn mix(&mut self, values: &[u64]) {
        self.events += 1;
        for v in values {
            self.mix_bytes(&v.to_le_bytes());
        }
    }

    /// Records a readable event at simulated time `at_ms` (since the run began).
    pub fn note(&mut self, at_ms: u64, text: String) {
        self.events += 1;
        self.mix_bytes(&at_ms.to_le_bytes());
        self.mix_bytes(text.as_bytes());
        if self.lines.len() < MAX_LINES {
            self.lines.push((at_ms, text));
        } else {
            self.dropped += 1;
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn lines(&self) -> &[(u64, String)] {
        &self.lines
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// `t+12.345s`: simulated time since the run began.
pub fn at(ms: u64) -> String {
    format!("t+{}.{:03}s", ms / 1000, ms % 1000)
}
