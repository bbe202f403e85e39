//! The performance suite: fan-out, latency, drain, durable writes and resync of Souverix
//! Federation, side by side with NATS JetStream 2.9 leaf nodes, on loopback on this machine.
//!
//! - W1 fan-out: `SOUVERIX_BENCH_OBJECTS` (10,000) objects of 1 KiB written at the top as batch
//!   applies (250 documents per `POST /v1/apply`, 4 at once); time until all four edges hold all
//!   of them, edge deliveries per second, per-object latency p50/p99.
//! - W1-latency: 200 writes at the top at 50 per second; per-object latency to each edge.
//! - W2 drain: one edge cut, the objects written there, the link restored; time from the link
//!   coming up until the top holds all of them; bytes sent.
//! - W3 durable writes: the objects written one at a time by one client, then by 64 clients, at
//!   one site; writes per second and latency, next to this machine's fsync latency and
//!   sequential write bandwidth measured in the same run on the same filesystem.
//! - W5 resync (ours only): an edge cut while the top rewrites 1,000 objects 20 times each;
//!   bytes sent to the edge on reconnect ÷ bytes of the final versions.
//!
//! Ours: the seven sites of `topology.yaml` (1 global, 2 regions, 2 edge zones under each), all
//! links continuous, every commit fsynced before it is acknowledged. The peer: `nats.rs`. For
//! both, the bulk workloads' request bodies (W1, W2, W3) are built before their clocks start, as
//! a tool has its documents at hand before it sends them; W1-latency builds each as it sends it.
//! Prints a table and writes the same figures to `target/bench/federation.json`.
//!
//! `cargo bench -p cli --bench federation`; `SOUVERIX_BENCH_OBJECTS=1000` for a quick run,
//! `SOUVERIX_BENCH_PEER=0` to leave NATS out, `RUST_LOG=debug` to see what every site does.

#[path = "../common/mod.rs"]
mod common;
mod disk;
mod http;
mod nats;
mod ours;
mod stats;
mod workload;

use std::path::Path;

use serde_json::json;

use crate::common::{free_base_port, write_figures};
use crate::disk::Disk;
use crate::workload::{Drain, FanOut, Paced, Resync, SETTLE, Writes};

/// The sites run in this process: the same allocator as the `souverix` binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A mutex's guard, also after a holder panicked (the bench then fails on its own error).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Figures {
    fan_out: FanOut,
    paced: Paced,
    drain: Drain,
    sequential: Writes,
    concurrent: Writes,
}

fn main() -> anyhow::Result<()> {
    // `RUST_LOG=debug` shows what each site does, with timestamps, for profiling.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let objects: usize =
        std::env::var("SOUVERIX_BENCH_OBJECTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000).max(1);
    let peer = std::env::var("SOUVERIX_BENCH_PEER").map_or(true, |v| v != "0");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(objects, peer))
}

async fn run(objects: usize, peer: bool) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("souverix-bench-").tempdir()?;

    eprintln!("ours: W1, W1-latency, W2, W5 on seven sites");
    let (fan_out, paced, drain, resync) = {
        let data = dir.path().join("ours");
        let ours = ours::Ours::start(&data, false).await?;
        ours.settle().await?;
        let fan_out = ours.fan_out(objects).await?;
        ours.settle().await?;
        let paced = ours.paced().await?;
        ours.settle().await?;
        let drain = ours.drain(objects).await?;
        ours.settle().await?;
        let resync = ours.resync().await?;
        ours.stop().await?;
        (fan_out, paced, drain, resync)
    };
    // Right before and right after W3, since other work on a shared machine moves it; the
    // floor is the faster of the two.
    eprintln!("measuring the disk under {}", dir.path().display());
    let before = disk::measure(dir.path())?;
    eprintln!("ours: W3 on one site");
    let (sequential, concurrent) = {
        let single = ours::Ours::start(&dir.path().join("ours-w3"), true).await?;
        single.settle().await?;
        let w3 = single.durable(objects).await?;
        single.stop().await?;
        w3
    };
    let after = disk::measure(dir.path())?;
    eprintln!(
        "disk: fsync floor p50 {:.3} ms before W3, {:.3} ms after",
        before.fsync.p(50.0),
        after.fsync.p(50.0)
    );
    let disk = if before.fsync.p(50.0) <= after.fsync.p(50.0) { before } else { after };
    let ours = Figures { fan_out, paced, drain, sequential, concurrent };

    let theirs = if !peer {
        None
    } else if !Path::new(nats::NATS_SERVER).exists() {
        eprintln!(
            "{} is not installed (apt-get install nats-server): the peer is left out",
            nats::NATS_SERVER
        );
        None
    } else {
        eprintln!("NATS JetStream: W1, W1-latency, W2, W3");
        let data = dir.path().join("nats");
        let nats = nats::Nats::start(free_base_port(nats::PORTS)?, &data).await?;
        let figures = async {
            nats::create_buckets(&nats).await?;
            tokio::time::sleep(SETTLE).await;
            let fan_out = nats::fan_out(&nats, objects).await?;
            tokio::time::sleep(SETTLE).await;
            let paced = nats::paced(&nats).await?;
            tokio::time::sleep(SETTLE).await;
            let drain = nats::drain(&nats, objects).await?;
            tokio::time::sleep(SETTLE).await;
            let (sequential, concurrent) = nats::durable(&nats, objects).await?;
            anyhow::Ok(Figures { fan_out, paced, drain, sequential, concurrent })
        }
        .await;
        nats.stop().await?;
        Some(figures?)
    };

    report(objects, &disk, &ours, &resync, theirs.as_ref())
}

/// One line of the table: ours, theirs, ours ÷ theirs, the target and whether it is met.
struct Line {
    measure: String,
    ours: f64,
    theirs: Option<f64>,
    target: String,
    met: Option<bool>,
}

fn line(measure: &str, ours: f64, theirs: Option<f64>) -> Line {
    Line { measure: measure.to_owned(), ours, theirs, target: String::new(), met: None }
}

impl Line {
    fn target(mut self, target: &str, met: Option<bool>) -> Line {
        self.target = target.to_owned();
        self.met = met;
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.theirs.map(|t| self.ours / t)
    }
}

fn report(
    objects: usize,
    disk: &Disk,
    ours: &Figures,
    resync: &Resync,
    theirs: Option<&Figures>,
) -> anyhow::Result<()> {
    let t = |f: fn(&Figures) -> f64| theirs.map(f);
    let fsync_ms = disk.fsync.p(50.0);
    // What W1 must write at the seven sites: every object's content, once per site.
    let object_bytes = serde_json::to_string(&workload::spec(0))?.len() as f64;
    let w1_disk_floor = 7.0 * objects as f64 * object_bytes / disk.write_bandwidth;

    let w1 = line(
        "W1 edge deliveries per second",
        ours.fan_out.deliveries_per_second(),
        t(|f| f.fan_out.deliveries_per_second()),
    );
    let w1_ratio = w1.ratio();
    let w1 = w1.target(">= 3x NATS (ahead: > 1x)", w1_ratio.map(|r| r >= 3.0));
    let lat = line("W1-latency p99 (ms)", ours.paced.all.p(99.0), t(|f| f.paced.all.p(99.0)));
    let lat_met = lat.ratio().map(|r| r <= 1.0);
    let lat = lat.target("<= NATS", lat_met);
    let w2 = line("W2 link up to all at the top (s)", ours.drain.seconds, t(|f| f.drain.seconds));
    let w2_met = w2.ratio().map(|r| r <= 1.0 / 3.0);
    let w2 = w2.target("<= NATS / 3", w2_met);
    let seq_mean = ours.sequential.seconds * 1000.0 / ours.sequential.writes as f64;
    let w5_ratio = resync.bytes_sent as f64 / resync.final_bytes as f64;

    let lines = vec![
        line(
            "W1 writes accepted at the top (s)",
            ours.fan_out.writes_seconds,
            t(|f| f.fan_out.writes_seconds),
        ),
        line("W1 all objects at all edges (s)", ours.fan_out.seconds, t(|f| f.fan_out.seconds)),
        w1,
        line(
            "W1 propagation latency p50 (ms)",
            ours.fan_out.latency.p(50.0),
            t(|f| f.fan_out.latency.p(50.0)),
        ),
        line(
            "W1 propagation latency p99 (ms)",
            ours.fan_out.latency.p(99.0),
            t(|f| f.fan_out.latency.p(99.0)),
        ),
        line(
            "W1 bytes sent between sites",
            ours.fan_out.bytes_sent as f64,
            t(|f| f.fan_out.bytes_sent as f64),
        ),
        line("W1 disk floor: 7 sites' bytes / bandwidth (s)", w1_disk_floor, None),
        line("W1-latency p50 (ms)", ours.paced.all.p(50.0), t(|f| f.paced.all.p(50.0))),
        lat,
        w2,
        line("W2 bytes sent between sites", ours.drain.bytes_sent as f64, t(|f| f.drain.bytes_sent as f64)),
        line(
            "W3a sequential writes per second",
            ours.sequential.per_second(),
            t(|f| f.sequential.per_second()),
        ),
        line(
            "W3a latency mean (ms)",
            seq_mean,
            t(|f| f.sequential.seconds * 1000.0 / f.sequential.writes as f64),
        )
        .target(&format!("<= 1.5 x fsync p50 = {:.2}", 1.5 * fsync_ms), Some(seq_mean <= 1.5 * fsync_ms)),
        line("W3a latency p50 (ms)", ours.sequential.latency.p(50.0), t(|f| f.sequential.latency.p(50.0))),
        line("W3a latency p99 (ms)", ours.sequential.latency.p(99.0), t(|f| f.sequential.latency.p(99.0))),
        line(
            "W3b 64 clients: writes per second",
            ours.concurrent.per_second(),
            t(|f| f.concurrent.per_second()),
        )
        .target(
            &format!(">= 10 x W3a = {:.0}", 10.0 * ours.sequential.per_second()),
            Some(ours.concurrent.per_second() >= 10.0 * ours.sequential.per_second()),
        ),
        line("W3b latency p50 (ms)", ours.concurrent.latency.p(50.0), t(|f| f.concurrent.latency.p(50.0))),
        line("W3b latency p99 (ms)", ours.concurrent.latency.p(99.0), t(|f| f.concurrent.latency.p(99.0))),
        // What group commit gathered: NATS has no transactions to count.
        line("W3a writes per transaction", ours.sequential.per_transaction().unwrap_or(0.0), None),
        line("W3b writes per transaction", ours.concurrent.per_transaction().unwrap_or(0.0), None),
        line("W5 bytes sent to the edge / final versions", w5_ratio, None)
            .target("<= 1.2", Some(w5_ratio <= 1.2)),
    ];

    println!(
        "federation benchmark: {objects} objects of 1 KiB; ours fsyncs every commit before acknowledging, NATS 2.9 does not"
    );
    println!(
        "disk: 4 KiB write + fdatasync p50 {:.3} ms, p99 {:.3} ms (preallocated file: the floor); \
         {:.3} ms, p99 {:.3} ms (appending); {} WAL frames + fsync (a W3a commit's writes) p50 {:.3} ms, \
         p99 {:.3} ms; sequential writes {:.0} MB/s",
        fsync_ms,
        disk.fsync.p(99.0),
        disk.fsync_append.p(50.0),
        disk.fsync_append.p(99.0),
        disk::COMMIT_FRAMES,
        disk.commit.p(50.0),
        disk.commit.p(99.0),
        disk.write_bandwidth / 1e6
    );
    println!("{:<46} {:>12} {:>12} {:>9}  {:<28} met", "measure", "ours", "NATS", "ours/NATS", "target");
    for l in &lines {
        let theirs = l.theirs.map_or("-".to_owned(), |v| format!("{v:.2}"));
        let ratio = l.ratio().map_or("-".to_owned(), |r| format!("{r:.2}"));
        let met = match l.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!("{:<46} {:>12.2} {:>12} {:>9}  {:<28} {}", l.measure, l.ours, theirs, ratio, l.target, met);
    }
    for (edge, latencies) in &ours.paced.per_edge {
        println!("W1-latency at {edge}: p50 {:.2} ms, p99 {:.2} ms", latencies.p(50.0), latencies.p(99.0));
    }
    println!(
        "W5: {} objects x {} rewrites; {} bytes sent to the edge for {} bytes of final versions in {:.2} s",
        resync.objects, resync.rounds, resync.bytes_sent, resync.final_bytes, resync.seconds
    );

    let side = |f: &Figures| {
        json!({
            "w1": {
                "writes_seconds": f.fan_out.writes_seconds,
                "seconds": f.fan_out.seconds,
                "edge_deliveries_per_second": f.fan_out.deliveries_per_second(),
                "latency": f.fan_out.latency.json(),
                "bytes_sent": f.fan_out.bytes_sent,
            },
            "w1_latency": {
                "all": f.paced.all.json(),
                "per_edge": f.paced.per_edge.iter().map(|(e, l)| (e.clone(), l.json())).collect::<serde_json::Map<_, _>>(),
            },
            "w2": { "objects": f.drain.objects, "seconds": f.drain.seconds, "bytes_sent": f.drain.bytes_sent },
            "w3": {
                "sequential": {
                    "writes_per_second": f.sequential.per_second(),
                    "latency": f.sequential.latency.json(),
                    "transactions": f.sequential.transactions,
                },
                "concurrent": {
                    "clients": f.concurrent.clients,
                    "writes_per_second": f.concurrent.per_second(),
                    "latency": f.concurrent.latency.json(),
                    "transactions": f.concurrent.transactions,
                },
            },
        })
    };
    let mut ours_json = side(ours);
    ours_json["w5"] = json!({
        "objects": resync.objects, "rounds": resync.rounds, "bytes_sent": resync.bytes_sent,
        "final_bytes": resync.final_bytes, "ratio": w5_ratio, "seconds": resync.seconds,
    });
    let figures = json!({
        "objects": objects,
        "disk": {
            "fsync": disk.fsync.json(),
            "fsync_append": disk.fsync_append.json(),
            "commit_shaped": disk.commit.json(),
            "write_bytes_per_second": disk.write_bandwidth,
            "w1_floor_seconds": w1_disk_floor,
        },
        "ours": ours_json,
        "nats": theirs.map(side),
        "table": lines.iter().map(|l| json!({
            "measure": l.measure, "ours": l.ours, "nats": l.theirs, "ratio": l.ratio(),
            "target": l.target, "met": l.met,
        })).collect::<Vec<_>>(),
    });
    write_figures("federation", &figures)
}
