//! Latency samples and their percentiles.

use std::time::Duration;

/// A set of latency samples, sorted.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Latencies(samples)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p`-th percentile (nearest rank), in milliseconds; NaN without samples.
    pub fn p(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        ms(self.0[rank.clamp(1, self.0.len()) - 1])
    }

    pub fn mean(&self) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        ms(self.0.iter().sum::<Duration>()) / self.0.len() as f64
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.len(), "p50_ms": self.p(50.0), "p99_ms": self.p(99.0), "mean_ms": self.mean(),
        })
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
