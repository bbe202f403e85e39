//! The SQLite store on its own, without HTTP or the sync engine: what one durable write and one
//! applied version cost here, so a change to the schema or the write path can be measured in
//! seconds instead of through the whole federation benchmark.
//!
//! Measures, on real SQLite files in a temporary directory (WAL, `synchronous = FULL`):
//! - sequential local writes of 1 KiB objects, one transaction and one fsync each: mean, p50
//!   and p99 latency, and the bytes written per write (WAL frames and checkpoints);
//! - the same number of writes from 64 threads at once, which the store commits in groups:
//!   writes per second;
//! - the sync debt of a link behind by all of them (what one status read costs);
//! - applying all those versions at a second store, as a link delivers them (batches of 500 read
//!   with `changes_for_link`, the text sent on as stored): versions per second and
//!   microseconds per version, fsync included once per batch.
//!
//! Run with `cargo bench -p store --bench store`. `SOUVERIX_BENCH_WRITES` (default 2,000) sets
//! the number of writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use model::{Kind, ObjectKey, ObjectName, Scope, SiteId};
use store::{LastWriteWins, LinkQuery, LocalWrite, RemoteVersion, SqliteStore, Store};

const BATCH: usize = 500;
/// Threads writing at once in the group-commit measure, as many as the federation benchmark's
/// concurrent clients.
const THREADS: usize = 64;
const SPEC_BYTES: usize = 1024;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let writes: usize =
        std::env::var("SOUVERIX_BENCH_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let dir = tempfile::Builder::new().prefix("souverix-store-bench-").tempdir()?;
    let origin = SiteId::new("global-control")?;
    let source = SqliteStore::open(&dir.path().join("global.db"), origin.clone(), 60_000)?;

    let mut latencies = Vec::with_capacity(writes);
    let written_before = bytes_written();
    let started = Instant::now();
    for i in 0..writes {
        let t = Instant::now();
        source.write(write(i))?;
        latencies.push(t.elapsed());
    }
    let sequential = started.elapsed();
    let written = bytes_written().saturating_sub(written_before);

    // The same number of writes again from many threads at once: the store commits the writes
    // waiting together in one transaction (group commit).
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= writes {
                        break;
                    }
                    source.write(write(writes + i)).expect("a concurrent write commits");
                }
            });
        }
    });
    let concurrent = started.elapsed();
    latencies.sort();

    let query = |after| LinkQuery { after, peer: receiver_id(), scopes: None };
    // What one status read costs while a link is behind by every version written so far.
    let t = Instant::now();
    let debt = source.link_debt(&query(0))?;
    let debt_time = t.elapsed();
    assert_eq!(debt.pending, 2 * writes as u64, "every version is pending");

    let receiver = SqliteStore::open(&dir.path().join("edge.db"), SiteId::new("edge-zone-a1")?, 60_000)?;
    let mut after = 0;
    let mut applied = 0usize;
    let mut reading = Duration::ZERO;
    let mut applying = Duration::ZERO;
    loop {
        let t = Instant::now();
        let batch = source.changes_for_link(&query(after), BATCH)?;
        reading += t.elapsed();
        if batch.changes.is_empty() {
            break;
        }
        after = batch.scanned_to;
        let versions: Vec<RemoteVersion> = batch.changes.into_iter().map(RemoteVersion::from).collect();
        let t = Instant::now();
        let report = receiver.apply_remote(&origin, &versions, now_ms(), &LastWriteWins)?;
        applying += t.elapsed();
        applied += report.applied;
    }
    assert_eq!(applied, 2 * writes, "every version applied once");

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us_per = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!("store benchmark: {writes} objects of {SPEC_BYTES} B, SQLite WAL, synchronous = FULL");
    println!("| measure | figure |");
    println!("|---|---:|");
    println!("| sequential write mean (ms) | {:.3} |", ms(sequential) / writes as f64);
    println!("| sequential write p50 (ms) | {:.3} |", ms(pct(50)));
    println!("| sequential write p99 (ms) | {:.3} |", ms(pct(99)));
    println!("| bytes written per write (WAL and checkpoints) | {:.0} |", written as f64 / writes as f64);
    println!("| {THREADS} threads writing: writes/s | {:.0} |", writes as f64 / concurrent.as_secs_f64());
    println!("| link debt, {} versions pending (ms) | {:.2} |", debt.pending, ms(debt_time));
    println!("| link read (µs per version) | {:.1} |", us_per(reading, applied));
    println!("| apply (µs per version, batches of {BATCH}) | {:.1} |", us_per(applying, applied));
    println!("| apply (versions/s) | {:.0} |", applied as f64 / applying.as_secs_f64());
    Ok(())
}

fn receiver_id() -> SiteId {
    SiteId::new("edge-zone-a1").expect("a valid site id")
}

fn write(i: usize) -> LocalWrite {
    let key = ObjectKey::new(
        Kind::Policy,
        Scope::new("global").expect("a valid scope"),
        ObjectName::new(format!("object-{i:06}")).expect("a valid name"),
    );
    let payload = "x".repeat(SPEC_BYTES - 20);
    LocalWrite {
        key,
        labels: BTreeMap::from([("bench".to_owned(), "store".to_owned())]),
        spec: serde_json::json!({ "payload": payload, "n": i }),
        deleted: false,
        author: "bench".to_owned(),
        precondition: None,
        now_ms: now_ms(),
    }
}

/// Bytes this process has handed to `write` calls so far (`wchar` in `/proc/self/io`; 0 where
/// there is no such file).
fn bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| io.lines().find_map(|l| l.strip_prefix("wchar:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
