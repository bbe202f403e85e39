//! Fleet summary benchmark: 1 global site, 10 regions, 1,000 zones and 1,000,000 node records.
//!
//! The global site and the 10 regions run as real `souverix serve --config` processes on
//! loopback (real SQLite files, fsync on every commit), so the global site's resident memory is
//! that of a real site. The 1,000 zones are simulated in this process: each zone pushes its
//! `SiteStatus/<zone>/<zone>` summary (1,000 nodes: `nodes.total = 1000`) to its region's
//! `/v1/sync/batch` as an encoded sync batch, exactly as a zone's sync engine would (its hello
//! carries its scope and its site card; the region's link to it has no address, so it only
//! receives). From there on everything is the product's own path: the region applies the batch,
//! its publisher rolls its 100 children up into its own `SiteStatus` every `status_interval`,
//! that replicates to the global site over the continuous upstream link, and the global site
//! builds `GET /v1/views/global` from what it holds.
//!
//! Measures:
//! - propagation: one zone's counts change (some nodes turn `Delayed`); time from sending the
//!   zone's new summary until its region's own view shows it, and until the global site's
//!   `/v1/views/global` shows it in that region's totals (polled every 20 ms);
//! - the latency of `GET /v1/views/global` at the global site (sequential requests, p50/p99);
//! - the global site's resident memory (`VmRSS`, `VmHWM` from `/proc/<pid>/status`);
//! - the web page's time to first full render at the global site with the 1,000 zones in its
//!   tree (headless Chromium through `chromedriver`, when installed): from navigation until the
//!   page has drawn the tree, the sync relationships and the conflicts (`data-render-ms`).
//!
//! Prints a table and writes the figures to `target/bench/fleet.json`. Run with
//! `cargo bench -p cli --bench fleet`. `SOUVERIX_BENCH_STATUS_INTERVAL` (default `1s`) sets every
//! site's `status_interval`; `SOUVERIX_BENCH_SAMPLES` (default 5) the propagation samples.

mod common;

#[allow(dead_code)]
#[path = "../tests/it/browser.rs"]
mod browser;

use common::{free_base_port, write_figures};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use config::{FederationConfig, SiteConfig};
use model::{ContentHash, Hlc, Kind, Level, ObjectKey, ObjectName, Scope, SiteId, Version, VersionVector};
use replication::codec::{self, Batch, Hello};
use replication::{Direction, LinkState};
use server::SiteSummary;
use server::fleet::{AutonomyState, NodeCounts, SummaryLink, Totals};
use store::RemoteVersion;

const REGIONS: usize = 10;
const ZONES_PER_REGION: usize = 100;
const NODES_PER_ZONE: u64 = 1_000;
const SENDERS: usize = 8;
const VIEW_REQUESTS: usize = 200;
const POLL: Duration = Duration::from_millis(20);
const DEADLINE: Duration = Duration::from_secs(300);
const START_DEADLINE: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let interval = std::env::var("SOUVERIX_BENCH_STATUS_INTERVAL").unwrap_or_else(|_| "1s".to_owned());
    let samples: usize =
        std::env::var("SOUVERIX_BENCH_SAMPLES").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(&interval, samples))
}

fn region(r: usize) -> String {
    format!("region-{r:02}")
}

fn region_site(r: usize) -> String {
    format!("region-{r:02}-control")
}

fn zone(r: usize, z: usize) -> String {
    format!("zone-{r:02}-{z:03}")
}

/// The federation file: global, 10 regions (continuous upstream, full autonomy), 100 local
/// zones under each region.
fn federation_yaml(interval: &str) -> String {
    let mut out = String::from("Federation:\n  name: fleet-bench\n  sites:\n");
    out.push_str(&format!(
        "    global-control:\n      Site: {{trust_domain: global, status_interval: {interval}}}\n      Authority: {{level: global, master: global-control}}\n"
    ));
    for r in 0..REGIONS {
        let (region, site) = (region(r), region_site(r));
        out.push_str(&format!(
            "    {site}:\n      Site: {{trust_domain: {region}, status_interval: {interval}}}\n      Authority: {{level: regional, region: {region}, master: {site}, autonomy: {{mode: full}}, sync: {{upstream: global-control, frequency: 15s, mode: continuous}}}}\n      SyncStrategy: {{downstream: {{frequency: 2s, mode: push}}}}\n"
        ));
    }
    for r in 0..REGIONS {
        let (region, site) = (region(r), region_site(r));
        for z in 0..ZONES_PER_REGION {
            let zone = zone(r, z);
            out.push_str(&format!(
                "    {zone}:\n      Site: {{trust_domain: {region}, status_interval: {interval}}}\n      Authority: {{level: local, region: {region}, master: {zone}, autonomy: {{mode: conditional}}, sync: {{upstream: {site}, frequency: 15s, mode: continuous}}}}\n"
            ));
        }
    }
    out
}

/// A `souverix serve --config <file>` process, killed when dropped.
struct SiteProcess {
    id: String,
    child: Child,
    url: String,
}

impl SiteProcess {
    fn start(bin: &Path, id: &str, config: &Path, log: &Path) -> anyhow::Result<SiteProcess> {
        let log = std::fs::File::create(log)?;
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut site = SiteProcess { id: id.to_owned(), child, url: String::new() };
        let line = rx
            .recv_timeout(START_DEADLINE)
            .map_err(|_| anyhow::anyhow!("souverix serve for {id} did not say where it serves"))?;
        site.url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .ok_or_else(|| anyhow::anyhow!("no address in `{line}`"))?
            .trim_end_matches(['.', ','])
            .to_owned();
        Ok(site)
    }

    /// `(VmRSS, VmHWM)` in KiB.
    fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{}/status", self.child.id()))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for SiteProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `souverix` binary of this build (cargo builds it with the bench).
fn binary() -> anyhow::Result<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_souverix"));
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --release -p cli`",
        bin.display()
    );
    Ok(bin)
}

/// One simulated zone: its card, its summary and the counter of its versions.
struct Zone {
    id: SiteId,
    scope: Scope,
    region: SiteId,
    region_url: String,
    card: model::SiteCard,
    counter: u64,
}

fn now_ms() -> u64 {
    use server::Clock;
    server::SystemClock.now_ms()
}

impl Zone {
    /// The zone's summary as its own publisher would write it.
    fn summary(&self, delayed: u64, observed_ms: u64) -> SiteSummary {
        let nodes = NodeCounts { total: NODES_PER_ZONE, live: NODES_PER_ZONE - delayed, delayed, offline: 0 };
        SiteSummary {
            site: self.id.to_string(),
            scope: self.scope.to_string(),
            level: Level::Local,
            parent: Some(self.region.to_string()),
            trust_domain: Some(self.region.to_string()),
            observed_ms,
            autonomy: AutonomyState { mode: self.card.autonomy, isolated: false },
            nodes,
            drift: 0,
            open_conflicts: 0,
            links: vec![SummaryLink {
                peer: self.region.to_string(),
                direction: Direction::Upstream,
                state: LinkState::Connected,
                pending: 0,
                debt_seconds: None,
                last_sync_ms: Some(observed_ms),
            }],
            children: BTreeMap::new(),
            totals: Totals { nodes, drift: 0, open_conflicts: 0 },
        }
    }

    /// The encoded batch carrying the zone's next `SiteStatus` version.
    fn batch(&mut self, delayed: u64) -> anyhow::Result<Vec<u8>> {
        self.counter += 1;
        let now = now_ms();
        let key = ObjectKey::new(Kind::SiteStatus, self.scope.clone(), ObjectName::new(self.id.as_str())?);
        let spec = serde_json::to_value(self.summary(delayed, now))?;
        let labels = BTreeMap::new();
        let vv: VersionVector = [(self.id.clone(), self.counter)].into_iter().collect();
        let version = Version {
            hlc: Hlc::new(now, 0),
            origin: self.id.clone(),
            vv,
            author: server::site_status::STATUS_AUTHOR.to_owned(),
            content_hash: ContentHash::of(&key, &labels, &spec, false),
            deleted: false,
        };
        let batch = Batch {
            from: self.id.clone(),
            to: self.region.clone(),
            hello: Hello {
                site: self.id.clone(),
                scope: self.scope.clone(),
                level: Level::Local,
                scopes: BTreeSet::from([self.scope.clone()]),
                sites: vec![self.card.clone()],
            },
            up_to: self.counter,
            repair: false,
            versions: vec![RemoteVersion { key, version, labels, spec: model::SpecText::of(&spec) }],
        };
        Ok(codec::encode(&batch))
    }

    /// Sends the zone's summary with `delayed` delayed nodes to its region.
    async fn send(&mut self, http: &reqwest::Client, delayed: u64) -> anyhow::Result<()> {
        let body = self.batch(delayed)?;
        let response = http
            .post(format!("{}/v1/sync/batch", self.region_url))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "{} refused the batch of {}: {status} {text}",
            self.region,
            self.id
        );
        let ack: serde_json::Value = serde_json::from_str(&text)?;
        anyhow::ensure!(
            ack["applied"].as_u64() == Some(1),
            "{} did not apply the summary of {}: {text}",
            self.region,
            self.id
        );
        Ok(())
    }
}

/// `site`'s item (searched among the items and their children) in the view at `url` + `path`.
async fn view_item(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    site: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let view: serde_json::Value = http.get(format!("{url}{path}")).send().await?.json().await?;
    fn find<'a>(items: &'a serde_json::Value, site: &str) -> Option<&'a serde_json::Value> {
        items
            .as_array()?
            .iter()
            .find_map(|item| if item["site"] == site { Some(item) } else { find(&item["children"], site) })
    }
    Ok(find(&view["items"], site).cloned())
}

/// The `nodes` of `site`'s item in the global view at `url`.
async fn view_nodes(http: &reqwest::Client, url: &str, site: &str) -> anyhow::Result<Option<NodeCounts>> {
    match view_item(http, url, "/v1/views/global", site).await? {
        Some(item) => Ok(Some(serde_json::from_value(item["nodes"].clone())?)),
        None => Ok(None),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn run(interval: &str, samples: usize) -> anyhow::Result<()> {
    let bin = binary()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let text = federation_yaml(interval);
    let file = dir.path().join("federation.yaml");
    std::fs::write(&file, &text)?;
    let federation = FederationConfig::parse(&text, &file, dir.path())?;
    let real = 1 + REGIONS;
    let base = free_base_port(u16::try_from(real)?)?;
    // Global and the regions come first in the file, so they get `base..base + 11`; the zones'
    // ports are never bound. A region's links to its zones have no address: they only receive.
    let configs = federation.site_configs_for_run(base, &data)?;
    let mut sites = Vec::new();
    let started = Instant::now();
    for config in configs.iter().take(real) {
        let mut config: SiteConfig = config.clone();
        let zones: Vec<SiteId> = config.downstream.targets.clone();
        for zone in &zones {
            config.peers.remove(zone);
        }
        let id = config.site_id.to_string();
        let path = dir.path().join(format!("{id}.yaml"));
        std::fs::write(&path, config.to_yaml())?;
        sites.push(SiteProcess::start(&bin, &id, &path, &dir.path().join(format!("{id}.log")))?);
    }
    let startup = started.elapsed();
    let global = &sites[0];
    anyhow::ensure!(global.id == "global-control", "the first site is {}", global.id);
    let url_of = |id: &str| sites.iter().find(|s| s.id == id).map(|s| s.url.clone());

    let mut zones = Vec::new();
    for config in configs.iter().skip(real) {
        let region = config.upstream.as_ref().expect("a zone has an upstream").target.clone();
        zones.push(Zone {
            id: config.site_id.clone(),
            scope: config.scope.clone(),
            region_url: url_of(region.as_str()).expect("a running region"),
            region,
            card: server::site::site_card(config),
            counter: 0,
        });
    }
    anyhow::ensure!(zones.len() == REGIONS * ZONES_PER_REGION, "{} zones", zones.len());
    let (rss_idle, _) = global.memory_kib()?;

    // Every zone sends its summary once (SENDERS at a time).
    let http = reqwest::Client::builder().pool_max_idle_per_host(SENDERS).build()?;
    let loaded = Instant::now();
    let mut chunks: Vec<Vec<Zone>> = (0..SENDERS).map(|_| Vec::new()).collect();
    for (i, zone) in zones.into_iter().enumerate() {
        chunks[i % SENDERS].push(zone);
    }
    let mut tasks = Vec::new();
    for mut chunk in chunks {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            for zone in &mut chunk {
                zone.send(&http, 0).await?;
            }
            anyhow::Ok(chunk)
        }));
    }
    let mut zones = Vec::new();
    for task in tasks {
        zones.extend(task.await??);
    }
    let sent = loaded.elapsed();
    zones.sort_by(|a, b| a.id.cmp(&b.id));
    // Until the global view shows every region with its 100,000 nodes.
    let expected = NODES_PER_ZONE * ZONES_PER_REGION as u64;
    loop {
        let mut complete = 0;
        for r in 0..REGIONS {
            if view_nodes(&http, &global.url, &region_site(r)).await?.is_some_and(|n| n.total == expected) {
                complete += 1;
            }
        }
        if complete == REGIONS {
            break;
        }
        anyhow::ensure!(
            loaded.elapsed() < DEADLINE,
            "after {DEADLINE:?} the global view shows {complete} of {REGIONS} regions with {expected} nodes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_visible = loaded.elapsed();
    let view: serde_json::Value =
        http.get(format!("{}/v1/views/global", global.url)).send().await?.json().await?;
    let total_nodes: u64 = view["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["nodes"]["total"].as_u64()).sum())
        .unwrap_or(0);
    let view_bytes = serde_json::to_vec(&view)?.len();

    // Propagation of one zone's change.
    let target = 3 * ZONES_PER_REGION + 42;
    anyhow::ensure!(zones[target].id.as_str() == zone(3, 42), "the zones are out of order");
    let region_id = zones[target].region.to_string();
    let region_url = zones[target].region_url.clone();
    let zone_id = zones[target].id.to_string();
    let region_view = format!("/v1/views/site/{region_id}");
    let mut at_region = Vec::new();
    let mut at_global = Vec::new();
    for sample in 0..samples {
        let delayed = sample as u64 + 3;
        let want = |n: Option<NodeCounts>| n.is_some_and(|n| n.delayed == delayed && n.total == expected);
        let t0 = Instant::now();
        zones[target].send(&http, delayed).await?;
        let (mut region_seen, mut global_seen) = (None, None);
        while global_seen.is_none() {
            if region_seen.is_none() {
                let item = view_item(&http, &region_url, &region_view, &zone_id).await?;
                if item.is_some_and(|i| i["nodes"]["delayed"].as_u64() == Some(delayed)) {
                    region_seen = Some(t0.elapsed());
                }
            }
            if want(view_nodes(&http, &global.url, &region_id).await?) {
                global_seen = Some(t0.elapsed());
            }
            anyhow::ensure!(
                t0.elapsed() < DEADLINE,
                "global did not show {delayed} delayed nodes in {region_id}"
            );
            tokio::time::sleep(POLL).await;
        }
        let global_seen = global_seen.expect("seen");
        at_region.push(region_seen.unwrap_or(global_seen));
        at_global.push(global_seen);
        // Let a publication pass, so the samples start at different phases of the interval.
        tokio::time::sleep(Duration::from_millis(337)).await;
    }

    let region_item =
        view_item(&http, &global.url, "/v1/views/global", &region_id).await?.unwrap_or_default();
    let region_status = region_item["status"].as_str().unwrap_or("?").to_owned();

    // Latency of the global view.
    let mut latencies = Vec::with_capacity(VIEW_REQUESTS);
    for _ in 0..VIEW_REQUESTS {
        let t = Instant::now();
        let response = http.get(format!("{}/v1/views/global", global.url)).send().await?;
        anyhow::ensure!(response.status().is_success(), "GET /v1/views/global: {}", response.status());
        let _ = response.bytes().await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let page = page_render(&global.url).await?;
    let (rss, hwm) = global.memory_kib()?;
    let region_memory = sites[1].memory_kib()?;
    let store_bytes = std::fs::metadata(data.join("global-control.sqlite3")).map(|m| m.len()).unwrap_or(0);
    drop(sites);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    println!(
        "fleet benchmark: 1 global + {REGIONS} regions (souverix serve processes), {} simulated zones x {NODES_PER_ZONE} nodes = {total_nodes} node records summarised, status_interval {interval}",
        REGIONS * ZONES_PER_REGION
    );
    println!("{:<56} {:>12}", "measure", "value");
    println!("{:<56} {:>12.2}", "sites started (s)", startup.as_secs_f64());
    println!("{:<56} {:>12.2}", "1,000 zone summaries sent to their regions (s)", sent.as_secs_f64());
    println!("{:<56} {:>12.2}", "all 1,000,000 nodes in the global view (s)", all_visible.as_secs_f64());
    println!("{:<56} {:>12}", "global view: nodes across regions", total_nodes);
    println!("{:<56} {:>12}", "global view: response bytes", view_bytes);
    println!(
        "{:<56} {:>12.0}",
        "zone change -> zone item in region's view, median (ms)",
        ms(median(&at_region))
    );
    println!("{:<56} {:>12.0}", "zone change -> global view, median (ms)", ms(median(&at_global)));
    println!("{:<56} {:>12.0}", "zone change -> global view, max (ms)", ms(max(&at_global)));
    println!(
        "{:<56} {:>12}",
        "zone change -> global view, samples (ms)",
        at_global.iter().map(|d| format!("{:.0}", ms(*d))).collect::<Vec<_>>().join(",")
    );
    println!("{:<56} {:>12}", format!("global view: status of {region_id}"), region_status);
    println!("{:<56} {:>12.2}", "GET /v1/views/global p50 (ms)", ms(percentile(&latencies, 0.50)));
    println!("{:<56} {:>12.2}", "GET /v1/views/global p99 (ms)", ms(percentile(&latencies, 0.99)));
    println!("{:<56} {:>12.1}", "global-control VmRSS before the zones (MiB)", rss_idle as f64 / 1024.0);
    println!("{:<56} {:>12.1}", "global-control VmRSS (MiB)", rss as f64 / 1024.0);
    println!("{:<56} {:>12.1}", "global-control VmHWM, peak (MiB)", hwm as f64 / 1024.0);
    println!("{:<56} {:>12.1}", "region-00-control VmRSS (MiB)", region_memory.0 as f64 / 1024.0);
    println!("{:<56} {:>12.1}", "global-control store file (MiB)", store_bytes as f64 / (1024.0 * 1024.0));
    match &page {
        Some(page) => {
            println!("{:<56} {:>12}", "web page: rows in the tree (sites)", page.rows);
            println!(
                "{:<56} {:>12.0}",
                "web page: first full render, median of 3 loads (ms)", page.median_ms
            );
        }
        None => println!("{:<56} {:>12}", "web page: first full render", "skipped"),
    }

    let json = serde_json::json!({
        "regions": REGIONS,
        "zones": REGIONS * ZONES_PER_REGION,
        "nodes_per_zone": NODES_PER_ZONE,
        "nodes_in_global_view": total_nodes,
        "status_interval": interval,
        "startup_seconds": startup.as_secs_f64(),
        "zone_summaries_sent_seconds": sent.as_secs_f64(),
        "all_nodes_in_global_view_seconds": all_visible.as_secs_f64(),
        "global_view_bytes": view_bytes,
        "global_view_region_status": region_status,
        "propagation_ms": {
            "zone_in_region_view": at_region.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "global_view": at_global.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "global_view_median": ms(median(&at_global)),
            "global_view_max": ms(max(&at_global)),
        },
        "global_view_latency_ms": {
            "requests": VIEW_REQUESTS,
            "p50": ms(percentile(&latencies, 0.50)),
            "p99": ms(percentile(&latencies, 0.99)),
            "max": ms(max(&latencies)),
        },
        "global_memory_kib": {"rss_before_zones": rss_idle, "rss": rss, "hwm": hwm},
        "region_00_memory_kib": {"rss": region_memory.0, "hwm": region_memory.1},
        "global_store_bytes": store_bytes,
        "web_page": page.as_ref().map(|p| serde_json::json!({
            "tree_rows": p.rows,
            "first_full_render_ms": p.loads_ms,
            "first_full_render_median_ms": p.median_ms,
        })),
    });
    write_figures("fleet", &json)?;
    Ok(())
}

/// The web page's first full render at a site, in headless Chromium.
struct PageRender {
    /// Rows in the page's tree (one per site below the answering one).
    rows: u64,
    loads_ms: Vec<f64>,
    median_ms: f64,
}

/// Loads the site's page three times and reads when each load first showed everything; `None`
/// (with a note) when `chromedriver` is not installed.
async fn page_render(url: &str) -> anyhow::Result<Option<PageRender>> {
    if Command::new("chromedriver").arg("--version").output().is_err() {
        eprintln!("web page render not measured: install chromium and chromium-driver");
        return Ok(None);
    }
    let browser = browser::Browser::start().await;
    let mut loads_ms = Vec::new();
    let mut rows = 0;
    for _ in 0..3 {
        browser.client.goto(url).await?;
        let ready = "return document.body.dataset.ready === 'true' ? \
            [Number(document.body.dataset.renderMs), parseInt(document.getElementById('tree-spacer').style.height) / 32] : null";
        let value = browser.wait("the page's first full render", ready, |v| !v.is_null()).await;
        loads_ms.push(value[0].as_f64().unwrap_or(f64::NAN));
        rows = value[1].as_f64().unwrap_or(0.0) as u64;
    }
    browser.close().await;
    let mut sorted = loads_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Some(PageRender { rows, median_ms: sorted[sorted.len() / 2], loads_ms }))
}
