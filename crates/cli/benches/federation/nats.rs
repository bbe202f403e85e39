//! The peer: NATS JetStream 2.9 (`nats-server`) with leaf nodes, in the topology an operator
//! would use to move configuration from a hub to edge sites with store-and-forward: a hub, two
//! region leaf servers under it and two edge leaf servers under each region, each server its
//! own JetStream domain. A KV bucket at the hub is mirrored by each region and mirrored again by
//! each edge (W1); an edge's own KV bucket is sourced up by its region and again by the hub
//! (W2). Every server runs on loopback on ports of the bench's own, started and stopped here;
//! the edge `a1`'s leaf connection goes through a TCP relay of the bench's, which is how the
//! link is cut and restored.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt as _;
use hyper::body::Bytes;
use tokio::process::{Child, Command};

use crate::workload::{
    DEADLINE, Drain, FanOut, LATENCY_EVERY, LATENCY_WRITES, Paced, WRITERS, Writes, arrival_latencies,
    sequential_then_concurrent, spec, write_concurrently,
};

/// The servers, each its own JetStream domain of the same name, and their parents.
pub const SERVERS: [(&str, Option<&str>); 7] = [
    ("hub", None),
    ("region_a", Some("hub")),
    ("region_b", Some("hub")),
    ("a1", Some("region_a")),
    ("a2", Some("region_a")),
    ("b1", Some("region_b")),
    ("b2", Some("region_b")),
];
pub const EDGES: [&str; 4] = ["a1", "a2", "b1", "b2"];
/// Debian's `nats-server` package (2.9).
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// Ports the topology takes from its base: three per server and one for the relay.
pub const PORTS: u16 = 22;

struct Server {
    name: &'static str,
    client_port: u16,
    http_port: u16,
    child: Child,
}

/// The running NATS topology.
pub struct Nats {
    servers: Vec<Server>,
    relay: Relay,
    http: reqwest::Client,
}

impl Nats {
    /// Starts the seven servers with ports from `base` (3 per server, one for the relay) and
    /// waits until every leaf connection is up.
    pub async fn start(base: u16, dir: &Path) -> anyhow::Result<Nats> {
        let port = |i: usize, k: u16| base + (i as u16) * 3 + k;
        let relay_port = base + 21;
        let leaf_port_of = |name: &str| {
            let i = SERVERS.iter().position(|(n, _)| *n == name).expect("a server");
            port(i, 2)
        };
        let a1_parent = leaf_port_of("region_a");
        let relay = Relay::start(relay_port, a1_parent).await?;
        let mut servers = Vec::new();
        for (i, (name, parent)) in SERVERS.iter().enumerate() {
            let store = dir.join(name);
            std::fs::create_dir_all(&store)?;
            let remote = match parent {
                None => String::new(),
                Some(_) if *name == "a1" => {
                    format!("remotes: [{{url: \"nats-leaf://127.0.0.1:{relay_port}\"}}]")
                }
                Some(p) => format!("remotes: [{{url: \"nats-leaf://127.0.0.1:{}\"}}]", leaf_port_of(p)),
            };
            let conf = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{http}\"\n\
                 jetstream {{ store_dir: \"{store}\", domain: {name} }}\n\
                 leafnodes {{ listen: \"127.0.0.1:{leaf}\"\n reconnect: 1\n {remote} }}\n",
                client = port(i, 0),
                http = port(i, 1),
                leaf = port(i, 2),
                store = store.display(),
            );
            let path = dir.join(format!("{name}.conf"));
            std::fs::write(&path, conf)?;
            let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
            let child = Command::new(NATS_SERVER)
                .arg("-c")
                .arg(&path)
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {NATS_SERVER}"))?;
            servers.push(Server { name, client_port: port(i, 0), http_port: port(i, 1), child });
        }
        let nats = Nats { servers, relay, http: reqwest::Client::new() };
        nats.wait_for_leafs(Duration::from_secs(30)).await?;
        Ok(nats)
    }

    fn server(&self, name: &str) -> &Server {
        self.servers.iter().find(|s| s.name == name).expect("a NATS server of the topology")
    }

    pub fn url(&self, name: &str) -> String {
        format!("nats://127.0.0.1:{}", self.server(name).client_port)
    }

    pub async fn connect(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        Ok(async_nats::connect(self.url(name)).await?)
    }

    /// The leaf connections of a server, from its monitoring endpoint.
    async fn leafz(&self, name: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let url = format!("http://127.0.0.1:{}/leafz", self.server(name).http_port);
        let body: serde_json::Value = self.http.get(url).send().await?.json().await?;
        Ok(body["leafs"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until each server has its expected number of leaf connections.
    async fn wait_for_leafs(&self, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let mut ok = true;
            for (name, parent) in SERVERS {
                let children = SERVERS.iter().filter(|(_, p)| *p == Some(name)).count();
                let expected = children + usize::from(parent.is_some());
                let got = self.leafz(name).await.map(|l| l.len()).unwrap_or(0);
                ok &= got == expected;
            }
            if ok {
                return Ok(());
            }
            anyhow::ensure!(started.elapsed() < within, "NATS leaf connections not up after {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Bytes every server has sent on its leaf connections (message payloads and headers, as
    /// the servers count them), summed.
    pub async fn leaf_bytes_sent(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for (name, _) in SERVERS {
            for leaf in self.leafz(name).await? {
                total += leaf["out_bytes"].as_u64().unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Cuts `a1` from its region (the relay drops the connection and refuses new ones).
    pub fn cut_a1(&self) {
        self.relay.set_up(false);
    }

    /// Restores `a1`'s link: its leaf reconnects at its next attempt (every second).
    pub fn restore_a1(&self) {
        self.relay.set_up(true);
    }

    /// Whether `a1` has a leaf connection to its region.
    pub async fn a1_connected(&self) -> anyhow::Result<bool> {
        Ok(!self.leafz("a1").await?.is_empty())
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        for s in &mut self.servers {
            let _ = s.child.start_kill();
        }
        for s in &mut self.servers {
            let _ = s.child.wait().await;
        }
        self.relay.stop();
        Ok(())
    }
}

/// A jetstream context for the server `name`'s own domain, through a client connected to it.
pub fn js(client: &async_nats::Client, domain: &str) -> jetstream::Context {
    jetstream::with_domain(client.clone(), domain)
}

/// A TCP relay on loopback whose link can be cut (connections closed, new ones refused).
struct Relay {
    up: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(port: u16, target: u16) -> anyhow::Result<Relay> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (u, g) = (up.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: the link is cut
                }
                let (u, g) = (u.clone(), g.clone());
                let born = g.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let cut = async {
                        while u.load(Ordering::SeqCst) && g.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut => {}
                    }
                });
            }
        });
        Ok(Relay { up, generation, task })
    }

    fn set_up(&self, up: bool) {
        if !up {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.up.store(up, Ordering::SeqCst);
    }

    fn stop(&self) {
        self.task.abort();
    }
}

/// The buckets and streams of the workloads: `cfg` at the hub mirrored by the regions and
/// mirrored again by the edges; `edge` at `a1` sourced by `region_a` (stream `UP_A1`) and by the
/// hub (stream `UP`).
pub async fn create_buckets(nats: &Nats) -> anyhow::Result<()> {
    let hub = nats.connect("hub").await?;
    js(&hub, "hub")
        .create_key_value(kv::Config { bucket: "cfg".into(), history: 1, ..Default::default() })
        .await?;
    for (name, parent) in SERVERS.iter().skip(1) {
        let client = nats.connect(name).await?;
        let parent = parent.expect("a parent");
        js(&client, name)
            .create_key_value(kv::Config {
                bucket: "cfg".into(),
                history: 1,
                mirror: Some(stream::Source {
                    name: "KV_cfg".into(),
                    domain: Some(parent.into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
    }
    let a1 = nats.connect("a1").await?;
    js(&a1, "a1")
        .create_key_value(kv::Config { bucket: "edge".into(), history: 1, ..Default::default() })
        .await?;
    let region = nats.connect("region_a").await?;
    js(&region, "region_a")
        .create_stream(stream::Config {
            name: "UP_A1".into(),
            sources: Some(vec![stream::Source {
                name: "KV_edge".into(),
                domain: Some("a1".into()),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .await?;
    js(&hub, "hub")
        .create_stream(stream::Config {
            name: "UP".into(),
            sources: Some(vec![stream::Source {
                name: "UP_A1".into(),
                domain: Some("region_a".into()),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// The number of messages in stream `name` of `domain`.
async fn stream_messages(client: &async_nats::Client, domain: &str, name: &str) -> anyhow::Result<u64> {
    let mut s = js(client, domain).get_stream(name).await?;
    Ok(s.info().await?.state.messages)
}

type Seen = Arc<Mutex<HashMap<(usize, String), Instant>>>;

/// Watches the `cfg` bucket at each edge and records when each key under `prefix` first
/// arrives there; returns once every watch is in place.
async fn watch_edges(nats: &Nats, prefix: &str) -> anyhow::Result<(Seen, Vec<tokio::task::JoinHandle<()>>)> {
    let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
    let mut tasks = Vec::new();
    for (e, edge) in EDGES.iter().enumerate() {
        let client = nats.connect(edge).await?;
        let store = js(&client, edge).get_key_value("cfg").await?;
        let seen = seen.clone();
        let keys = format!("{prefix}.>");
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        tasks.push(tokio::spawn(async move {
            let _client = client;
            let mut watch = match store.watch(keys).await {
                Ok(watch) => watch,
                Err(_) => return,
            };
            let _ = ready.send(());
            while let Some(Ok(entry)) = watch.next().await {
                let at = Instant::now();
                lock(&seen).entry((e, entry.key)).or_insert(at);
            }
        }));
        is_ready.await.context("a watch of an edge's bucket failed")?;
    }
    Ok((seen, tasks))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn wait_for(seen: &Seen, count: usize) -> anyhow::Result<HashMap<(usize, String), Instant>> {
    let since = Instant::now();
    loop {
        let n = lock(seen).len();
        if n >= count {
            return Ok(lock(seen).clone());
        }
        anyhow::ensure!(since.elapsed() < DEADLINE, "NATS: {n} of {count} arrivals after {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value of each of `count` puts, the `i`th with content `seed + i`: built before any clock
/// starts, as for our sites.
fn values(count: usize, seed: u64) -> anyhow::Result<Arc<Vec<Bytes>>> {
    let values = (0..count)
        .map(|i| Ok(serde_json::to_vec(&spec(seed + i as u64))?.into()))
        .collect::<anyhow::Result<_>>()?;
    Ok(Arc::new(values))
}

/// Puts `keys` into `store` (the `i`th with `values[i]`) with `writers` concurrent tasks (one
/// connection); returns when each put was sent and each put's latency (until the server's
/// acknowledgement).
async fn put_all(
    store: &kv::Store,
    keys: Vec<String>,
    values: Arc<Vec<Bytes>>,
    writers: usize,
) -> anyhow::Result<(HashMap<String, Instant>, Vec<Duration>)> {
    let store = store.clone();
    write_concurrently(keys, writers, move |i, key| {
        let (store, values) = (store.clone(), values.clone());
        async move {
            let value = values.get(i).ok_or_else(|| anyhow::anyhow!("no value {i} prepared"))?;
            store.put(&key, value.clone()).await?;
            Ok(())
        }
    })
    .await
}

/// W1: puts at the hub's `cfg`, until every edge's mirror holds every key.
pub async fn fan_out(nats: &Nats, objects: usize) -> anyhow::Result<FanOut> {
    let (seen, watches) = watch_edges(nats, "w1").await?;
    let hub = nats.connect("hub").await?;
    let store = js(&hub, "hub").get_key_value("cfg").await?;
    let keys: Vec<String> = (0..objects).map(|i| format!("w1.o{i:05}")).collect();
    let values = values(objects, 1_000_000)?;
    let bytes_before = nats.leaf_bytes_sent().await?;
    let started = Instant::now();
    let (sent, _) = put_all(&store, keys, values, WRITERS).await?;
    let writes_seconds = started.elapsed().as_secs_f64();
    let arrived = wait_for(&seen, objects * EDGES.len()).await?;
    for w in watches {
        w.abort();
    }
    let last = arrived.values().max().copied().unwrap_or(started);
    let (latency, _) = arrival_latencies(&sent, &arrived, EDGES.len());
    Ok(FanOut {
        objects,
        edges: EDGES.len(),
        writes_seconds,
        seconds: last.duration_since(started).as_secs_f64(),
        latency,
        bytes_sent: nats.leaf_bytes_sent().await? - bytes_before,
    })
}

/// W1-latency: paced puts at the hub.
pub async fn paced(nats: &Nats) -> anyhow::Result<Paced> {
    let (seen, watches) = watch_edges(nats, "lat").await?;
    let hub = nats.connect("hub").await?;
    let store = js(&hub, "hub").get_key_value("cfg").await?;
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let mut tick = tokio::time::interval(LATENCY_EVERY);
    let mut tasks = Vec::new();
    for i in 0..LATENCY_WRITES {
        tick.tick().await;
        let (store, sent) = (store.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("lat.o{i:03}");
            let value = serde_json::to_vec(&spec(2_000_000 + i as u64))?;
            lock(&sent).insert(key.clone(), Instant::now());
            store.put(key, value.into()).await?;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let arrived = wait_for(&seen, LATENCY_WRITES * EDGES.len()).await?;
    for w in watches {
        w.abort();
    }
    let sent = lock(&sent).clone();
    let (all, per_edge) = arrival_latencies(&sent, &arrived, EDGES.len());
    Ok(Paced { all, per_edge: EDGES.iter().map(|e| e.to_string()).zip(per_edge).collect() })
}

/// W2: `a1` cut, puts into its `edge` bucket, the link restored; until the hub's `UP` stream
/// holds every put.
pub async fn drain(nats: &Nats, objects: usize) -> anyhow::Result<Drain> {
    nats.cut_a1();
    let since = Instant::now();
    while nats.a1_connected().await? {
        anyhow::ensure!(since.elapsed() < DEADLINE, "NATS: a1 still connected after the cut");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let a1 = nats.connect("a1").await?;
    let store = js(&a1, "a1").get_key_value("edge").await?;
    let keys: Vec<String> = (0..objects).map(|i| format!("w2.o{i:05}")).collect();
    put_all(&store, keys, values(objects, 3_000_000)?, WRITERS).await?;
    let hub = nats.connect("hub").await?;
    let bytes_before = nats.leaf_bytes_sent().await?;
    let restored = Instant::now();
    nats.restore_a1();
    loop {
        if stream_messages(&hub, "hub", "UP").await? >= objects as u64 {
            break;
        }
        anyhow::ensure!(
            restored.elapsed() < DEADLINE,
            "NATS: the hub lacks the edge's puts after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = restored.elapsed().as_secs_f64();
    Ok(Drain { objects, seconds, bytes_sent: nats.leaf_bytes_sent().await? - bytes_before })
}

/// W3: puts into a bucket of the hub's own, from one client, then from `WRITERS` at once.
pub async fn durable(nats: &Nats, writes: usize) -> anyhow::Result<(Writes, Writes)> {
    let hub = nats.connect("hub").await?;
    let store = js(&hub, "hub")
        .create_key_value(kv::Config { bucket: "w3".into(), history: 1, ..Default::default() })
        .await?;
    let values = values(writes, 5_000_000)?;
    let rounds =
        ["s", "c"].map(|prefix| (0..writes).map(|i| format!("{prefix}.o{i:05}")).collect::<Vec<_>>());
    sequential_then_concurrent(writes, |clients, round| {
        let (keys, values, store) = (rounds[round].clone(), values.clone(), store.clone());
        async move { Ok(put_all(&store, keys, values, clients).await?.1) }
    })
    .await
}
