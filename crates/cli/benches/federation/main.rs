//! Federation sync benchmark on the demo topology, in one process on loopback with real
//! SQLite files, fsync on every commit:
//!
//! - fan-out: 10,000 policies of 1 KiB written at `global-control` (32 concurrent writers over
//!   the HTTP API); time until every edge zone (`edge-zone-a1`, `edge-zone-a2`,
//!   `edge-zone-b1`, `edge-zone-c`) holds all of them;
//! - drain: `edge-zone-a1` cut from its region, 10,000 changes written there, then the link
//!   restored; time until `global-control` holds all of them.
//!
//! Prints a table and writes the figures to `target/bench/federation.json`.
//! Run with `cargo bench -p cli --bench federation` (set `SOUVERIX_BENCH_OBJECTS` for fewer).

#[path = "../common/mod.rs"]
mod common;

use common::{free_base_port, write_figures};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::FederationConfig;
use model::{Scope, SiteId};
use server::{RunningSite, SystemClock};

const WRITERS: usize = 32;
const DEADLINE: Duration = Duration::from_secs(900);

fn main() -> anyhow::Result<()> {
    let objects: usize =
        std::env::var("SOUVERIX_BENCH_OBJECTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(objects))
}

async fn run(objects: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = free_base_port(7)?;
    let configs = FederationConfig::embedded_demo().site_configs_for_run(base, dir.path())?;
    let mut sites = Vec::new();
    for config in &configs {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        sites.push(RunningSite::start(config, dir.path(), listener, Arc::new(SystemClock)).await?);
    }
    let site = |id: &str| sites.iter().find(|s| s.id.as_str() == id).expect("a demo site");
    let http = reqwest::Client::builder().pool_max_idle_per_host(WRITERS).build()?;

    // Fan-out from global to every edge zone.
    let global = site("global-control");
    let edges = ["edge-zone-a1", "edge-zone-a2", "edge-zone-b1", "edge-zone-c"];
    let bytes_before = total_sent_bytes(&sites).await;
    let started = Instant::now();
    write_many(&http, &global.url, "global", "fanout", objects).await?;
    let written = started.elapsed();
    let mut arrivals = Vec::new();
    for edge in edges {
        wait_for_count(site(edge), "global", objects, started).await?;
        arrivals.push((edge, started.elapsed()));
    }
    let fanout = started.elapsed();
    let fanout_bytes = total_sent_bytes(&sites).await - bytes_before;

    // Drain a backlog from a cut edge zone to global.
    let a1 = site("edge-zone-a1");
    let region_a = SiteId::new("region-a-control")?;
    a1.engine.signal(&region_a, replication::Signal::Down).await?;
    write_many(&http, &a1.url, "edge-zone-a1", "drain", objects).await?;
    let pending = a1.engine.status().await.links.iter().map(|l| l.pending).sum::<u64>();
    let bytes_before = total_sent_bytes(&sites).await;
    let restored = Instant::now();
    a1.engine.signal(&region_a, replication::Signal::Up).await?;
    wait_for_count(global, "edge-zone-a1", objects, restored).await?;
    let drain = restored.elapsed();
    let drain_bytes = total_sent_bytes(&sites).await - bytes_before;

    for s in sites {
        s.stop().await?;
    }

    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "federation benchmark: demo topology (7 sites), {objects} objects of 1 KiB, fsync on every commit"
    );
    println!("{:<44} {:>12}", "measure", "value");
    println!("{:<44} {:>12.2}", "fan-out: writes accepted at global (s)", secs(written));
    println!("{:<44} {:>12.1}", "fan-out: accepted writes per second", objects as f64 / secs(written));
    for (edge, at) in &arrivals {
        println!("{:<44} {:>12.2}", format!("fan-out: all present at {edge} (s)"), secs(*at));
    }
    println!("{:<44} {:>12.2}", "fan-out: all present at every edge zone (s)", secs(fanout));
    println!("{:<44} {:>12.1}", "fan-out: objects per second (end to end)", objects as f64 / secs(fanout));
    println!(
        "{:<44} {:>12.1}",
        "fan-out: edge deliveries per second",
        (objects * edges.len()) as f64 / secs(fanout)
    );
    println!("{:<44} {:>12}", "fan-out: batch bytes sent on all links", fanout_bytes);
    println!("{:<44} {:>12}", "drain: changes pending at edge-zone-a1", pending);
    println!("{:<44} {:>12.2}", "drain: link up to all present at global (s)", secs(drain));
    println!("{:<44} {:>12.1}", "drain: objects per second", objects as f64 / secs(drain));
    println!("{:<44} {:>12}", "drain: batch bytes sent on all links", drain_bytes);

    let json = serde_json::json!({
        "objects": objects,
        "object_bytes": 1024,
        "fanout": {
            "writes_seconds": secs(written),
            "edges_seconds": arrivals.iter().map(|(e, d)| (e.to_string(), secs(*d))).collect::<std::collections::BTreeMap<_, _>>(),
            "all_edges_seconds": secs(fanout),
            "objects_per_second": objects as f64 / secs(fanout),
            "edge_deliveries_per_second": (objects * edges.len()) as f64 / secs(fanout),
            "bytes_sent": fanout_bytes,
        },
        "drain": {
            "pending": pending,
            "seconds": secs(drain),
            "objects_per_second": objects as f64 / secs(drain),
            "bytes_sent": drain_bytes,
        },
    });
    write_figures("federation", &json)?;
    Ok(())
}

/// Writes `count` policies in `scope` with `WRITERS` concurrent clients.
async fn write_many(
    http: &reqwest::Client,
    url: &str,
    scope: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (http, url, scope, prefix) = (http.clone(), url.to_owned(), scope.to_owned(), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            for i in (writer..count).step_by(WRITERS) {
                let name = format!("{prefix}-{i:05}");
                let payload = payload(i as u64);
                let doc = serde_json::json!({
                    "apiVersion": "souverix/v1", "kind": "Policy",
                    "metadata": {"name": name, "scope": scope},
                    "spec": {"payload": payload},
                });
                let response =
                    http.put(format!("{url}/v1/objects/Policy/{scope}/{name}")).json(&doc).send().await?;
                anyhow::ensure!(response.status().is_success(), "write refused: {}", response.text().await?);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// About 1 KiB of incompressible text, different for every object, so bytes sent are honest.
fn payload(seed: u64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..960)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % 64) as usize])
        })
        .collect()
}

/// Waits until `site` holds `count` objects of `scope` (polling its store every 50 ms).
async fn wait_for_count(site: &RunningSite, scope: &str, count: usize, since: Instant) -> anyhow::Result<()> {
    let scopes = BTreeSet::from([Scope::new(scope)?]);
    loop {
        let store = site.store.clone();
        let scopes = scopes.clone();
        let held = tokio::task::spawn_blocking(move || store.digest_entries(Some(&scopes))).await??.len();
        if held >= count {
            return Ok(());
        }
        anyhow::ensure!(since.elapsed() < DEADLINE, "{} holds {held} of {count} after {DEADLINE:?}", site.id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Encoded batch bytes every site has sent since it started.
async fn total_sent_bytes(sites: &[RunningSite]) -> u64 {
    let mut total = 0;
    for site in sites {
        total += site.engine.status().await.links.iter().map(|l| l.sent_bytes).sum::<u64>();
    }
    total
}
