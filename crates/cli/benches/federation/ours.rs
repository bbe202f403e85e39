//! Souverix Federation: the bench's seven sites (`topology.yaml`) in this process, each with its
//! own SQLite file (WAL, `synchronous=FULL`: every commit fsynced before it is acknowledged)
//! and its own HTTP server on loopback; writes go through the public API: bulk writes (W1, W2)
//! as an operator's tool sends a file of many documents, `POST /v1/apply` with
//! [`APPLY_BATCH`] documents per request from [`APPLY_CLIENTS`] clients at once; single writes
//! (W1-latency, W3) as `PUT /v1/objects/...`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::FederationConfig;
use hyper::Method;
use hyper::body::Bytes;
use model::{Scope, SiteId};
use replication::Signal;
use server::{RunningSite, SystemClock};

use crate::common::free_base_port;
use crate::workload::{
    DEADLINE, Drain, FanOut, LATENCY_EVERY, LATENCY_WRITES, Paced, Resync, SETTLE, Spec, W5_OBJECTS,
    W5_ROUNDS, WRITERS, Writes, arrival_latencies, sequential_then_concurrent, spec, write_concurrently,
};
use crate::{http, lock};

const TOPOLOGY: &str = include_str!("topology.yaml");
/// Documents per `POST /v1/apply` in the bulk workloads (about 270 KB of JSON).
pub const APPLY_BATCH: usize = 250;
/// Concurrent `POST /v1/apply` requests in the bulk workloads.
pub const APPLY_CLIENTS: usize = 4;
pub const EDGES: [&str; 4] = ["edge-zone-a1", "edge-zone-a2", "edge-zone-b1", "edge-zone-b2"];
const SINGLE: &str = "Federation:
  name: single
  sites:
    global-control:
      Site: {status_interval: 60s}
      Authority: {level: global, master: global-control}
";

pub struct Ours {
    sites: Vec<RunningSite>,
    http: Arc<http::Client>,
}

impl Ours {
    /// Starts the seven sites of `topology.yaml` (or the one site of a single-site federation).
    pub async fn start(dir: &Path, single: bool) -> anyhow::Result<Ours> {
        let (text, file) = if single { (SINGLE, "single.yaml") } else { (TOPOLOGY, "topology.yaml") };
        let federation = FederationConfig::parse(text, file, dir)?;
        let base = free_base_port(federation.sites().len() as u16)?;
        let configs = federation.site_configs_for_run(base, dir)?;
        let mut sites = Vec::new();
        for config in &configs {
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            sites.push(RunningSite::start(config, dir, listener, Arc::new(SystemClock)).await?);
        }
        let http = Arc::new(http::Client::default());
        Ok(Ours { sites, http })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        for site in self.sites {
            site.stop().await?;
        }
        Ok(())
    }

    fn site(&self, id: &str) -> &RunningSite {
        self.sites.iter().find(|s| s.id.as_str() == id).expect("a site of the bench topology")
    }

    /// Waits until no link of any site has changes pending, then `SETTLE`.
    pub async fn settle(&self) -> anyhow::Result<()> {
        let since = Instant::now();
        loop {
            let mut pending = 0;
            for site in &self.sites {
                pending += site.engine.status().await.links.iter().map(|l| l.pending).sum::<u64>();
            }
            if pending == 0 {
                break;
            }
            anyhow::ensure!(since.elapsed() < DEADLINE, "{pending} changes still pending after {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(SETTLE).await;
        Ok(())
    }

    /// Encoded batch bytes every site has sent on every link since it started.
    async fn bytes_sent(&self) -> u64 {
        let mut total = 0;
        for site in &self.sites {
            total += site.engine.status().await.links.iter().map(|l| l.sent_bytes).sum::<u64>();
        }
        total
    }

    /// Encoded batch bytes `from` has sent to `to`.
    async fn link_bytes(&self, from: &str, to: &str) -> u64 {
        self.site(from)
            .engine
            .status()
            .await
            .links
            .iter()
            .filter(|l| l.peer == to)
            .map(|l| l.sent_bytes)
            .sum()
    }

    /// Cuts or restores the link between an edge and its region, at both ends at once (as a
    /// network that goes away or comes back does for both).
    async fn signal(&self, edge: &str, region: &str, signal: Signal) -> anyhow::Result<()> {
        let (edge_id, region_id) = (SiteId::new(edge)?, SiteId::new(region)?);
        tokio::try_join!(
            self.site(edge).engine.signal(&region_id, signal),
            self.site(region).engine.signal(&edge_id, signal),
        )?;
        Ok(())
    }

    /// Writes `names` in `scope` at `site` with `writers` concurrent clients; returns when each
    /// write was sent and each write's latency.
    async fn write(
        &self,
        site: &str,
        scope: &str,
        names: Vec<String>,
        writers: usize,
        seed: u64,
    ) -> anyhow::Result<(HashMap<String, Instant>, Vec<Duration>)> {
        let puts = self.puts(site, scope, &names, seed)?;
        self.send_puts(names, puts, writers).await
    }

    /// The `PUT /v1/objects/...` of each of `names` in `scope` at `site`, the `i`th with content
    /// `seed + i`: built before any clock starts, as a tool has its documents at hand before it
    /// sends them.
    fn puts(&self, site: &str, scope: &str, names: &[String], seed: u64) -> anyhow::Result<Arc<Vec<Put>>> {
        let url = &self.site(site).url;
        let puts = names
            .iter()
            .enumerate()
            .map(|(i, name)| Put::policy(url, scope, name, seed + i as u64))
            .collect::<anyhow::Result<_>>()?;
        Ok(Arc::new(puts))
    }

    /// Sends `puts` (the `i`th writes `names[i]`) with `writers` concurrent clients.
    async fn send_puts(
        &self,
        names: Vec<String>,
        puts: Arc<Vec<Put>>,
        writers: usize,
    ) -> anyhow::Result<(HashMap<String, Instant>, Vec<Duration>)> {
        let http = self.http.clone();
        write_concurrently(names, writers, move |i, _| {
            let (http, puts) = (http.clone(), puts.clone());
            async move {
                let put = puts.get(i).ok_or_else(|| anyhow::anyhow!("no write {i} prepared"))?;
                send_put(&http, put).await
            }
        })
        .await
    }

    /// Writes `names` in `scope` at `site` as batch applies: [`APPLY_BATCH`] documents per
    /// request, [`APPLY_CLIENTS`] requests at once. Returns when each document was sent.
    async fn apply_batches(
        &self,
        site: &str,
        scope: &str,
        names: Vec<String>,
        seed: u64,
    ) -> anyhow::Result<HashMap<String, Instant>> {
        let url = self.site(site).url.clone();
        let batches: Arc<Vec<(Vec<String>, Bytes)>> = Arc::new(
            names
                .chunks(APPLY_BATCH)
                .enumerate()
                .map(|(b, chunk)| {
                    let seeds = (b * APPLY_BATCH..).map(|i| seed + i as u64);
                    Ok((chunk.to_vec(), apply_body(scope, chunk.iter().zip(seeds))?))
                })
                .collect::<anyhow::Result<_>>()?,
        );
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..APPLY_CLIENTS {
            let (http, url, batches, next) = (self.http.clone(), url.clone(), batches.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    let Some((batch, body)) = batches.get(b) else { break };
                    let at = Instant::now();
                    apply(&http, &url, body.clone()).await?;
                    sent.extend(batch.iter().map(|name| (name.clone(), at)));
                }
                anyhow::Ok(sent)
            }));
        }
        let mut started = HashMap::new();
        for task in tasks {
            started.extend(task.await??);
        }
        Ok(started)
    }

    /// W1.
    pub async fn fan_out(&self, objects: usize) -> anyhow::Result<FanOut> {
        let names: Vec<String> = (0..objects).map(|i| format!("w1-{i:05}")).collect();
        let watch = Arrivals::watch(&EDGES.map(|e| self.site(e)), "w1-").await?;
        let bytes_before = self.bytes_sent().await;
        let started = Instant::now();
        let sent = self.apply_batches("global-control", "global", names, 1_000_000).await?;
        let writes_seconds = started.elapsed().as_secs_f64();
        let arrived = watch.wait_for(objects * EDGES.len()).await?;
        let last = arrived.values().max().copied().unwrap_or(started);
        let (latency, _) = arrival_latencies(&sent, &arrived, EDGES.len());
        Ok(FanOut {
            objects,
            edges: EDGES.len(),
            writes_seconds,
            seconds: last.duration_since(started).as_secs_f64(),
            latency,
            bytes_sent: self.bytes_sent().await - bytes_before,
        })
    }

    /// W1-latency.
    pub async fn paced(&self) -> anyhow::Result<Paced> {
        let watch = Arrivals::watch(&EDGES.map(|e| self.site(e)), "lat-").await?;
        let sent = Arc::new(Mutex::new(HashMap::new()));
        let mut tick = tokio::time::interval(LATENCY_EVERY);
        let mut tasks = Vec::new();
        for i in 0..LATENCY_WRITES {
            tick.tick().await;
            let (http, url, sent) =
                (self.http.clone(), self.site("global-control").url.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                let name = format!("lat-{i:03}");
                let at = Instant::now();
                lock(&sent).insert(name.clone(), at);
                send_put(&http, &Put::policy(&url, "global", &name, 2_000_000 + i as u64)?).await
            }));
        }
        for task in tasks {
            task.await??;
        }
        let arrived = watch.wait_for(LATENCY_WRITES * EDGES.len()).await?;
        let sent = lock(&sent).clone();
        let (all, per_edge) = arrival_latencies(&sent, &arrived, EDGES.len());
        Ok(Paced { all, per_edge: EDGES.iter().map(|e| e.to_string()).zip(per_edge).collect() })
    }

    /// W2.
    pub async fn drain(&self, objects: usize) -> anyhow::Result<Drain> {
        self.signal("edge-zone-a1", "region-a-control", Signal::Down).await?;
        let names: Vec<String> = (0..objects).map(|i| format!("w2-{i:05}")).collect();
        self.apply_batches("edge-zone-a1", "edge-zone-a1", names, 3_000_000).await?;
        let watch = Arrivals::watch(&[self.site("global-control")], "w2-").await?;
        let bytes_before = self.bytes_sent().await;
        let restored = Instant::now();
        self.signal("edge-zone-a1", "region-a-control", Signal::Up).await?;
        let arrived = watch.wait_for(objects).await?;
        let last = arrived.values().max().copied().unwrap_or(restored);
        Ok(Drain {
            objects,
            seconds: last.saturating_duration_since(restored).as_secs_f64(),
            bytes_sent: self.bytes_sent().await - bytes_before,
        })
    }

    /// W5: the objects exist at the edge; the edge is cut while global rewrites each of them
    /// `W5_ROUNDS` times; then the link comes back.
    pub async fn resync(&self) -> anyhow::Result<Resync> {
        let names: Vec<String> = (0..W5_OBJECTS).map(|i| format!("w5-{i:04}")).collect();
        let watch = Arrivals::watch(&[self.site("edge-zone-a1")], "w5-").await?;
        self.write("global-control", "global", names.clone(), WRITERS, 4_000_000).await?;
        watch.wait_for(W5_OBJECTS).await?;
        self.signal("edge-zone-a1", "region-a-control", Signal::Down).await?;
        for round in 1..=W5_ROUNDS {
            let seed = 4_000_000 + (round * W5_OBJECTS) as u64;
            self.write("global-control", "global", names.clone(), WRITERS, seed).await?;
        }
        // Wait until the region holds the final versions, so only the edge's link remains.
        let finals = self.current("global-control", "w5-").await?;
        self.wait_same("region-a-control", "w5-", &finals).await?;
        let global = self.site("global-control").store.clone();
        let final_bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let mut bytes = 0;
            for (key, _) in global.digest_entries(None)? {
                if key.name.as_str().starts_with("w5-") {
                    let object = global.get(&key)?.ok_or_else(|| anyhow::anyhow!("{key} is gone"))?;
                    bytes += (serde_json::to_string(&object.labels)?.len()
                        + serde_json::to_string(&object.spec)?.len()) as u64;
                }
            }
            Ok(bytes)
        })
        .await??;
        let before = self.link_bytes("region-a-control", "edge-zone-a1").await;
        let restored = Instant::now();
        self.signal("edge-zone-a1", "region-a-control", Signal::Up).await?;
        self.wait_same("edge-zone-a1", "w5-", &finals).await?;
        let seconds = restored.elapsed().as_secs_f64();
        Ok(Resync {
            objects: W5_OBJECTS,
            rounds: W5_ROUNDS,
            bytes_sent: self.link_bytes("region-a-control", "edge-zone-a1").await - before,
            final_bytes,
            seconds,
        })
    }

    /// The current version id of every object whose name starts with `prefix` at `site`.
    async fn current(&self, site: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
        let store = self.site(site).store.clone();
        let scopes = BTreeSet::from([Scope::new("global")?]);
        let prefix = prefix.to_owned();
        let entries = tokio::task::spawn_blocking(move || store.digest_entries(Some(&scopes))).await??;
        Ok(entries
            .into_iter()
            .filter(|(k, _)| k.name.as_str().starts_with(&prefix))
            .map(|(k, v)| format!("{k} {v}"))
            .collect())
    }

    async fn wait_same(&self, site: &str, prefix: &str, expected: &[String]) -> anyhow::Result<()> {
        let since = Instant::now();
        loop {
            if self.current(site, prefix).await? == expected {
                return Ok(());
            }
            anyhow::ensure!(
                since.elapsed() < DEADLINE,
                "{site} does not hold the final versions after {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// W3 on this (single) site: `writes` writes from one client, then from `WRITERS`, each
    /// with the number of transactions the site committed them in.
    pub async fn durable(&self, writes: usize) -> anyhow::Result<(Writes, Writes)> {
        let mut rounds = Vec::new();
        for prefix in ["w3s", "w3c"] {
            let names: Vec<String> = (0..writes).map(|i| format!("{prefix}-{i:05}")).collect();
            let puts = self.puts("global-control", "global", &names, 5_000_000)?;
            rounds.push((names, puts));
        }
        let engine = &self.site("global-control").engine;
        let transactions = std::sync::Mutex::new(Vec::new());
        let (mut sequential, mut concurrent) = sequential_then_concurrent(writes, |clients, round| {
            let (names, puts) = rounds[round].clone();
            let transactions = &transactions;
            async move {
                let before = engine.local_commits().transactions;
                let latencies = self.send_puts(names, puts, clients).await?.1;
                let after = engine.local_commits().transactions;
                transactions.lock().expect("not poisoned").push(after - before);
                Ok(latencies)
            }
        })
        .await?;
        let transactions = transactions.into_inner().expect("not poisoned");
        sequential.transactions = transactions.first().copied();
        concurrent.transactions = transactions.get(1).copied();
        Ok((sequential, concurrent))
    }
}

/// A document as the API takes it, borrowed: `{"apiVersion", "kind", "metadata", "spec"}`.
#[derive(serde::Serialize)]
struct Document<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata<'a>,
    spec: Spec,
}

#[derive(serde::Serialize)]
struct Metadata<'a> {
    name: &'a str,
    scope: &'a str,
}

impl<'a> Document<'a> {
    fn policy(name: &'a str, scope: &'a str, seed: u64) -> Document<'a> {
        Document {
            api_version: "souverix/v1",
            kind: "Policy",
            metadata: Metadata { name, scope },
            spec: spec(seed),
        }
    }
}

/// A `PUT` of one document, ready to send.
struct Put {
    url: String,
    body: Bytes,
}

impl Put {
    /// The `PUT` of policy `name` in `scope` with content `seed`, to the site at `url`.
    fn policy(url: &str, scope: &str, name: &str, seed: u64) -> anyhow::Result<Put> {
        Ok(Put {
            url: format!("{url}/v1/objects/Policy/{scope}/{name}"),
            body: serde_json::to_vec(&Document::policy(name, scope, seed))?.into(),
        })
    }
}

async fn send_put(http: &http::Client, put: &Put) -> anyhow::Result<()> {
    let answer = http.send(Method::PUT, &put.url, put.body.clone()).await?;
    anyhow::ensure!(answer.status.is_success(), "write refused: {}", answer.text());
    Ok(())
}

/// The body of a `POST /v1/apply` of `(name, seed)` documents in `scope`.
fn apply_body<'a>(scope: &str, batch: impl Iterator<Item = (&'a String, u64)>) -> anyhow::Result<Bytes> {
    #[derive(serde::Serialize)]
    struct Items<'a> {
        items: Vec<Document<'a>>,
    }
    let items = batch.map(|(name, seed)| Document::policy(name, scope, seed)).collect();
    Ok(serde_json::to_vec(&Items { items })?.into())
}

/// One `POST /v1/apply` of a batch of documents; every one must be written.
async fn apply(http: &http::Client, url: &str, body: Bytes) -> anyhow::Result<()> {
    let answer = http.send(Method::POST, &format!("{url}/v1/apply"), body).await?;
    anyhow::ensure!(answer.status.is_success(), "batch refused: {}", answer.text());
    let answer: server::ApplyResponse = serde_json::from_slice(&answer.body)?;
    anyhow::ensure!(
        answer.refused == 0,
        "{} documents of a batch refused: {:?}",
        answer.refused,
        answer.items.first()
    );
    Ok(())
}

/// When each object whose name starts with a prefix was first written at each of a set of
/// sites, as a client of the site would see it: a task per site waits for the site's sync
/// engine to announce a commit (`SyncEngine::commits`, what wakes `/v1/events`) and reads the
/// new events, so an arrival is seen as soon as its batch committed, with no polling.
struct Arrivals {
    seen: Arc<Mutex<HashMap<(usize, String), Instant>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Arrivals {
    async fn watch(sites: &[&RunningSite], prefix: &str) -> anyhow::Result<Arrivals> {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for (i, site) in sites.iter().enumerate() {
            let store = site.store.clone();
            let mut commits = site.engine.commits();
            let mut after = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.last_event_seq()).await??
            };
            let (seen, mut stopped, prefix) = (seen.clone(), stop.subscribe(), prefix.to_owned());
            tasks.push(tokio::spawn(async move {
                loop {
                    // Seen before reading: a commit during the read marks it again.
                    commits.borrow_and_update();
                    let store = store.clone();
                    let page =
                        tokio::task::spawn_blocking(move || store.events(after, store::MAX_PAGE)).await??;
                    if page.is_empty() {
                        tokio::select! {
                            _ = commits.changed() => continue,
                            _ = stopped.changed() => return Ok(()),
                        }
                    }
                    let at = Instant::now();
                    let mut guard = lock(&seen);
                    for event in &page {
                        after = after.max(event.seq);
                        if let Some(key) = event.event.object.as_ref().filter(|_| event.event.kind == "write")
                            && key.name.as_str().starts_with(&prefix)
                        {
                            guard.entry((i, key.name.to_string())).or_insert(at);
                        }
                    }
                }
            }));
        }
        Ok(Arrivals { seen, stop, tasks })
    }

    /// Waits until `count` arrivals were seen, then stops watching.
    async fn wait_for(self, count: usize) -> anyhow::Result<HashMap<(usize, String), Instant>> {
        let since = Instant::now();
        let outcome = loop {
            let n = lock(&self.seen).len();
            if n >= count {
                break Ok(());
            }
            if self.tasks.iter().any(|t| t.is_finished()) {
                break Err(anyhow::anyhow!("watching arrivals stopped early"));
            }
            if since.elapsed() >= DEADLINE {
                break Err(anyhow::anyhow!("{n} of {count} arrivals after {DEADLINE:?}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        self.stop.send_replace(true);
        for task in self.tasks {
            match task.await {
                Ok(result) => result?,
                Err(_) => anyhow::bail!("a task watching arrivals panicked"),
            }
        }
        outcome?;
        Ok(lock(&self.seen).clone())
    }
}
