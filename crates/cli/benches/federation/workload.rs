//! What both systems are measured with: the objects written, who waits for what, and the
//! figures each workload yields.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::stats::Latencies;

/// Concurrent clients for the bulk writes (W1, W2, W3 b, W5).
pub const WRITERS: usize = 64;
/// W1-latency: this many writes, one every `LATENCY_EVERY`.
pub const LATENCY_WRITES: usize = 200;
pub const LATENCY_EVERY: Duration = Duration::from_millis(20);
/// W5: objects rewritten, and how many times each.
pub const W5_OBJECTS: usize = 1000;
pub const W5_ROUNDS: usize = 20;
/// The pause between workloads, after the previous one's changes have all been acknowledged,
/// so that one workload's tail (checkpoints, digests) does not land in the next one's figures.
pub const SETTLE: Duration = Duration::from_secs(2);
/// The longest any wait in the bench may take.
pub const DEADLINE: Duration = Duration::from_secs(900);

/// About 1 KiB of incompressible text, different for every object and round, so bytes sent
/// are honest.
pub fn payload(seed: u64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let bytes: Vec<u8> = (0..1000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % 64) as usize]
        })
        .collect();
    // Built as bytes, not chars (the clients share the machine with the servers they measure);
    // every byte is from the ASCII alphabet above.
    String::from_utf8(bytes).unwrap_or_default()
}

/// The object's content as both systems store it: `{"payload": "<1000 characters>"}`.
#[derive(serde::Serialize)]
pub struct Spec {
    pub payload: String,
}

/// The content of the object written with `seed`.
pub fn spec(seed: u64) -> Spec {
    Spec { payload: payload(seed) }
}

/// W1: fan-out of many objects from the top to every edge.
#[derive(Debug, Clone)]
pub struct FanOut {
    pub objects: usize,
    pub edges: usize,
    /// From the first write until the last write was acknowledged.
    pub writes_seconds: f64,
    /// From the first write until every edge held every object.
    pub seconds: f64,
    /// From the first write of an object until an edge held it, over every (object, edge).
    pub latency: Latencies,
    pub bytes_sent: u64,
}

impl FanOut {
    pub fn deliveries_per_second(&self) -> f64 {
        (self.objects * self.edges) as f64 / self.seconds
    }
}

/// W1-latency: paced writes, per-object latency to each edge.
#[derive(Debug, Clone)]
pub struct Paced {
    pub all: Latencies,
    pub per_edge: Vec<(String, Latencies)>,
}

/// W2: a backlog at a cut edge drained to the top.
#[derive(Debug, Clone)]
pub struct Drain {
    pub objects: usize,
    /// From the link coming up until the top held every object.
    pub seconds: f64,
    pub bytes_sent: u64,
}

/// W3: durable writes.
#[derive(Debug, Clone)]
pub struct Writes {
    pub clients: usize,
    pub writes: usize,
    pub seconds: f64,
    pub latency: Latencies,
    /// The transactions (each one fsync) the site committed the writes in, where it says.
    pub transactions: Option<u64>,
}

impl Writes {
    pub fn per_second(&self) -> f64 {
        self.writes as f64 / self.seconds
    }

    /// Writes per transaction: what group commit gathered, where the site says.
    pub fn per_transaction(&self) -> Option<f64> {
        self.transactions.filter(|&t| t > 0).map(|t| self.writes as f64 / t as f64)
    }
}

/// W5: resync after a long disconnection.
#[derive(Debug, Clone)]
pub struct Resync {
    pub objects: usize,
    pub rounds: usize,
    /// Bytes sent to the edge after the link came up.
    pub bytes_sent: u64,
    /// Bytes of the final versions' content.
    pub final_bytes: u64,
    pub seconds: f64,
}

/// Latencies from each object's write to its arrival at each watched site.
pub fn arrival_latencies(
    started: &HashMap<String, Instant>,
    arrived: &HashMap<(usize, String), Instant>,
    sites: usize,
) -> (Latencies, Vec<Latencies>) {
    let mut all = Vec::new();
    let mut per_site = vec![Vec::new(); sites];
    for ((site, name), at) in arrived {
        if let Some(start) = started.get(name) {
            let d = at.saturating_duration_since(*start);
            all.push(d);
            if let Some(v) = per_site.get_mut(*site) {
                v.push(d);
            }
        }
    }
    (Latencies::new(all), per_site.into_iter().map(Latencies::new).collect())
}

/// Writes every key with `writers` concurrent tasks, each taking the next key in turn:
/// `write(i, key)` writes the `i`th. Returns when each write was sent and how long it took
/// (until it was acknowledged).
pub async fn write_concurrently<F, Fut>(
    keys: Vec<String>,
    writers: usize,
    write: F,
) -> anyhow::Result<(HashMap<String, Instant>, Vec<Duration>)>
where
    F: Fn(usize, String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let keys = Arc::new(keys);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (keys, next, write) = (keys.clone(), next.clone(), write.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(i) else { break };
                let sent = Instant::now();
                write(i, key.clone()).await?;
                done.push((key.clone(), sent, sent.elapsed()));
            }
            anyhow::Ok(done)
        }));
    }
    let mut started = HashMap::new();
    let mut latencies = Vec::new();
    for task in tasks {
        for (key, sent, took) in task.await?? {
            started.insert(key, sent);
            latencies.push(took);
        }
    }
    Ok((started, latencies))
}

/// W3: `writes` single-object writes from one client, then from [`WRITERS`] at once.
/// `run(clients, round)` writes them (`round` 0 then 1, to name the objects apart) and returns
/// each write's latency.
pub async fn sequential_then_concurrent<F, Fut>(writes: usize, mut run: F) -> anyhow::Result<(Writes, Writes)>
where
    F: FnMut(usize, usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<Duration>>>,
{
    let mut measure = async |clients: usize, round: usize| -> anyhow::Result<Writes> {
        let started = Instant::now();
        let latencies = run(clients, round).await?;
        Ok(Writes {
            clients,
            writes,
            seconds: started.elapsed().as_secs_f64(),
            latency: Latencies::new(latencies),
            transactions: None,
        })
    };
    let sequential = measure(1, 0).await?;
    let concurrent = measure(WRITERS, 1).await?;
    Ok((sequential, concurrent))
}
