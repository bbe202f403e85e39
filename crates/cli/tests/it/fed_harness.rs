//! Federations for the sync tests: the demo's seven sites started in this process
//! ([`Federation`]) or as `souverix serve` processes ([`ProcessFederation`]), on free loopback
//! ports over real SQLite files, and an HTTP client for what a user reads and writes ([`Api`]).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use config::{FederationConfig, SiteConfig};
use model::SiteId;
use replication::{LinkStatus, SyncStatus};
use serde_json::{Value, json};
use server::{RunningSite, SystemClock};

use crate::harness::BIN;

/// The demo's sites, in file order (site `i` listens on `base_port + i`).
pub const DEMO_SITES: [&str; 7] = [
    "global-control",
    "region-a-control",
    "edge-zone-a1",
    "edge-zone-a2",
    "region-b-control",
    "edge-zone-b1",
    "edge-zone-c",
];

/// How often the sync tests' sites publish their `SiteStatus` summaries: rarely enough that
/// none is written while a test counts pending changes.
const QUIET_STATUS_INTERVAL: config::Duration = config::Duration::from_secs(3600);

/// How long a test waits for a site to start or a port to free up.
const START_DEADLINE: Duration = Duration::from_secs(30);

fn site_id(id: &str) -> SiteId {
    SiteId::new(id).expect("a valid site id")
}

/// A random number that differs between calls and between test processes.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn random_base() -> u16 {
    20_000 + u16::try_from(random() % 40_000).expect("below 40000")
}

/// A base port from which `count` consecutive ports are free right now (each was bound and
/// released). For processes that bind the ports themselves.
pub fn free_base_port(count: u16) -> u16 {
    for _ in 0..100 {
        let base = random_base();
        let all_free = (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("found no {count} consecutive free ports on 127.0.0.1 in 100 tries");
}

/// Binds `count` consecutive ports from a random base and keeps them bound.
async fn bind_consecutive(count: u16) -> (u16, Vec<tokio::net::TcpListener>) {
    'tries: for _ in 0..100 {
        let base = random_base();
        let mut listeners = Vec::new();
        for i in 0..count {
            match tokio::net::TcpListener::bind(("127.0.0.1", base + i)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => continue 'tries,
            }
        }
        return (base, listeners);
    }
    panic!("found no {count} consecutive free ports on 127.0.0.1 in 100 tries");
}

/// Polls `check` every 50 ms until it holds, or fails after `deadline` with `what` and the
/// last state `check` reported.
pub async fn eventually<F, Fut>(deadline: Duration, what: impl Display, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(()) => return,
            Err(state) => state,
        };
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A policy document.
pub fn policy(scope: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "souverix/v1",
        "kind": "Policy",
        "metadata": {"name": name, "scope": scope},
        "spec": spec,
    })
}

/// How a site answered [`Api::try_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// 200 or 201: the site committed the version it names.
    Acknowledged(String),
    /// A delete of an object that does not exist (or is already deleted).
    NotFound,
    /// 403: the site's authority rules refused the write (the problem document).
    Refused(String),
    /// No answer: the site is down, was killed mid-request, or did not answer in time. The
    /// write may or may not have been committed; it was not acknowledged.
    Unanswered(String),
    /// Any other answer.
    Other(String),
}

/// What a user does over a site's HTTP API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
}

impl Api {
    pub fn new() -> Api {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            .build()
            .expect("an HTTP client");
        Api { http }
    }

    /// Creates or updates a policy; returns the document the site answered with.
    pub async fn put_policy(&self, url: &str, scope: &str, name: &str, spec: Value) -> Value {
        let response = self
            .http
            .put(format!("{url}/v1/objects/Policy/{scope}/{name}"))
            .header("x-souverix-author", "tester")
            .json(&policy(scope, name, spec))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {name} at {url}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert!(status.is_success(), "PUT Policy/{scope}/{name} at {url}: {status} {body}");
        body
    }

    /// Writes `count` policies `<prefix>-<i>` in `scope` at `url`, eight requests at a time.
    pub async fn put_many(&self, url: &str, scope: &str, prefix: &str, count: usize) {
        const WRITERS: usize = 8;
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..WRITERS {
            let (api, url, scope, prefix) =
                (self.clone(), url.to_owned(), scope.to_owned(), prefix.to_owned());
            writers.spawn(async move {
                for i in (writer..count).step_by(WRITERS) {
                    api.put_policy(&url, &scope, &format!("{prefix}-{i:04}"), json!({"index": i})).await;
                }
            });
        }
        while let Some(done) = writers.join_next().await {
            done.expect("a writer task");
        }
    }

    /// Writes a policy (`Some(spec)`) or deletes it (`None`) at `url` within `timeout`, and says
    /// how the site answered, without asserting anything: for writers that run while sites are
    /// killed and links cut.
    pub async fn try_write(
        &self,
        url: &str,
        scope: &str,
        name: &str,
        spec: Option<Value>,
        timeout: Duration,
    ) -> WriteOutcome {
        let target = format!("{url}/v1/objects/Policy/{scope}/{name}");
        let request = match &spec {
            Some(spec) => self.http.put(&target).json(&policy(scope, name, spec.clone())),
            None => self.http.delete(&target),
        };
        let response = match request.header("x-souverix-author", "chaos").timeout(timeout).send().await {
            Ok(response) => response,
            Err(e) => return WriteOutcome::Unanswered(e.to_string()),
        };
        let status = response.status();
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(e) => return WriteOutcome::Unanswered(format!("{status}, then {e}")),
        };
        if status.is_success() {
            return match body["metadata"]["version"].as_str() {
                Some(version) => WriteOutcome::Acknowledged(version.to_owned()),
                None => WriteOutcome::Other(format!("{status} names no version: {body}")),
            };
        }
        match status {
            reqwest::StatusCode::NOT_FOUND if spec.is_none() => WriteOutcome::NotFound,
            reqwest::StatusCode::FORBIDDEN => WriteOutcome::Refused(body.to_string()),
            _ => WriteOutcome::Other(format!("{status} {body}")),
        }
    }

    /// The current document of a policy, or `None` when the site answers 404.
    pub async fn get_policy(&self, url: &str, scope: &str, name: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{url}/v1/objects/Policy/{scope}/{name}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {name} at {url}: {e}"));
        match response.status() {
            reqwest::StatusCode::NOT_FOUND => None,
            status if status.is_success() => Some(response.json().await.expect("a JSON document")),
            status => panic!("GET Policy/{scope}/{name} at {url}: {status}"),
        }
    }

    /// `GET <path>` as JSON, asserting success.
    pub async fn get_json(&self, url: &str, path: &str) -> Value {
        let response =
            self.http.get(format!("{url}{path}")).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert!(status.is_success(), "GET {url}{path}: {status} {body}");
        body
    }

    /// `POST <path>` with a JSON body, asserting success.
    pub async fn post_json(&self, url: &str, path: &str, body: &Value) -> Value {
        let response = self
            .http
            .post(format!("{url}{path}"))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON answer");
        assert!(status.is_success(), "POST {url}{path}: {status} {body}");
        body
    }

    /// Every current policy of `scope` at the site, `name -> version`, read page by page.
    pub async fn policies(&self, url: &str, scope: &str) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/objects?kind=Policy&scope={scope}&limit=1000");
            if let Some(after) = &after {
                path.push_str(&format!("&after={after}"));
            }
            let page = self.get_json(url, &path).await;
            for item in page["items"].as_array().expect("items") {
                let meta = &item["metadata"];
                found.insert(
                    meta["name"].as_str().expect("name").to_owned(),
                    meta["version"].as_str().expect("version").to_owned(),
                );
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return found,
            }
        }
    }

    /// How many policies of `scope` the site holds.
    pub async fn count(&self, url: &str, scope: &str) -> usize {
        self.policies(url, scope).await.len()
    }

    /// `GET /v1/sync`.
    pub async fn sync_status(&self, url: &str) -> SyncStatus {
        serde_json::from_value(self.get_json(url, "/v1/sync").await).expect("a sync status")
    }

    /// The link with `peer` as `GET /v1/sync` shows it.
    pub async fn link(&self, url: &str, peer: &str) -> LinkStatus {
        let status = self.sync_status(url).await;
        status
            .links
            .into_iter()
            .find(|l| l.peer == peer)
            .unwrap_or_else(|| panic!("the site at {url} has no link with {peer}"))
    }

    /// `POST /v1/links/{peer}/signal`.
    pub async fn signal(&self, url: &str, peer: &str, state: &str) -> LinkStatus {
        let body = self.post_json(url, &format!("/v1/links/{peer}/signal"), &json!({"state": state})).await;
        serde_json::from_value(body).expect("a link status")
    }

    /// `POST /v1/sync/now`.
    pub async fn sync_now(&self, url: &str) -> SyncStatus {
        serde_json::from_value(self.post_json(url, "/v1/sync/now", &json!({})).await).expect("a sync status")
    }

    /// `lastSeq` of `/healthz`: the end of the site's change log.
    pub async fn last_seq(&self, url: &str) -> u64 {
        self.get_json(url, "/healthz").await["lastSeq"].as_u64().expect("lastSeq")
    }

    /// Like [`Api::last_seq`], but `None` while the site does not answer.
    pub async fn try_last_seq(&self, url: &str) -> Option<u64> {
        let response = self.http.get(format!("{url}/healthz")).send().await.ok()?;
        let body: Value = response.json().await.ok()?;
        body["lastSeq"].as_u64()
    }
}

/// The demo federation's seven sites, each with its own listener on 127.0.0.1 and its own
/// SQLite file in one temporary data directory, all in this process.
pub struct Federation {
    pub api: Api,
    configs: Vec<SiteConfig>,
    sites: Vec<Option<RunningSite>>,
    dir: tempfile::TempDir,
}

impl Federation {
    /// Starts the seven demo sites on seven consecutive free ports.
    pub async fn start() -> Federation {
        Federation::start_with(|_| {}).await
    }

    /// Starts the seven demo sites after `adjust` has changed their configurations. Each site
    /// publishes its `SiteStatus` summary hourly unless `adjust` says otherwise (the demo: every
    /// 2 s), so the sync tests can count the changes pending on a link exactly.
    pub async fn start_with(adjust: impl Fn(&mut SiteConfig)) -> Federation {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let (base, listeners) = bind_consecutive(u16::try_from(DEMO_SITES.len()).expect("seven")).await;
        let mut configs = FederationConfig::embedded_demo()
            .site_configs_for_run(base, dir.path())
            .expect("the demo laid out on free ports");
        for config in &mut configs {
            config.status_interval = QUIET_STATUS_INTERVAL;
            adjust(config);
        }
        let mut sites = Vec::new();
        for (config, listener) in configs.iter().zip(listeners) {
            assert_eq!(config.site_id().as_str(), DEMO_SITES[sites.len()], "the demo's sites in file order");
            let site = RunningSite::start(config, dir.path(), listener, Arc::new(SystemClock))
                .await
                .unwrap_or_else(|e| panic!("{} starts: {e}", config.site_id()));
            sites.push(Some(site));
        }
        Federation { api: Api::new(), configs, sites, dir }
    }

    fn index(&self, id: &str) -> usize {
        DEMO_SITES.iter().position(|s| *s == id).unwrap_or_else(|| panic!("`{id}` is not a demo site"))
    }

    /// The data directory every site keeps its store in.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The site's base URL (also while it is stopped).
    pub fn url(&self, id: &str) -> String {
        format!("http://{}", self.configs[self.index(id)].listen)
    }

    /// Stops one site cleanly (its requests in flight finish, its store closes).
    pub async fn stop_site(&mut self, id: &str) {
        let i = self.index(id);
        let site = self.sites[i].take().unwrap_or_else(|| panic!("{id} is already stopped"));
        site.stop().await.unwrap_or_else(|e| panic!("{id} stops cleanly: {e}"));
    }

    /// Starts a stopped site again on its port, over the store in its data directory.
    pub async fn start_site(&mut self, id: &str) {
        let i = self.index(id);
        assert!(self.sites[i].is_none(), "{id} is running");
        let config = self.configs[i].clone();
        let start = Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(config.listen).await {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        start.elapsed() < START_DEADLINE,
                        "{id} cannot listen on {} again: {e}",
                        config.listen
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let site = RunningSite::start(&config, self.dir.path(), listener, Arc::new(SystemClock))
            .await
            .unwrap_or_else(|e| panic!("{id} starts again: {e}"));
        self.sites[i] = Some(site);
    }

    /// Waits until every link of every running site has completed a round with its peer and is
    /// `connected`: scopes are learned and each site knows what it holds.
    pub async fn wait_connected(&self, deadline: Duration) {
        for id in DEMO_SITES {
            if self.sites[self.index(id)].is_none() {
                continue;
            }
            let url = self.url(id);
            eventually(deadline, format!("every link of {id} to be connected"), || async {
                let status = self.api.sync_status(&url).await;
                let waiting: Vec<String> = status
                    .links
                    .iter()
                    .filter(|l| l.state != replication::LinkState::Connected || l.last_sync.is_none())
                    .map(|l| format!("{} is {} (last sync {:?})", l.peer, l.state, l.last_sync))
                    .collect();
                if waiting.is_empty() { Ok(()) } else { Err(waiting.join("; ")) }
            })
            .await;
        }
    }

    /// Stops every running site cleanly.
    pub async fn stop(mut self) {
        for i in 0..self.sites.len() {
            if let Some(site) = self.sites[i].take() {
                let id = site.id.clone();
                site.stop().await.unwrap_or_else(|e| panic!("{id} stops cleanly: {e}"));
            }
        }
    }
}

/// A `souverix serve --config <file>` process, killed when dropped.
pub struct SiteProcess {
    child: Child,
    pub url: String,
}

impl SiteProcess {
    /// Starts the site and waits for the line that says where it serves. Its log goes to
    /// `log`.
    fn start(config: &Path, log: &Path) -> SiteProcess {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("a log file");
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn souverix serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = match rx.recv_timeout(START_DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("souverix serve --config {} did not say where it serves", config.display());
            }
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in `{line}`"))
            .to_owned();
        SiteProcess { child, url }
    }

    /// SIGKILL: no chance to flush or clean up.
    fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for SiteProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo federation as one `souverix serve --config <site file>` process per site: each
/// site file is rendered by `FederationConfig::render_site_file` for free consecutive ports,
/// with every store in one temporary data directory. Only the sites a test starts run.
pub struct ProcessFederation {
    pub api: Api,
    base_port: u16,
    dir: tempfile::TempDir,
    running: BTreeMap<String, SiteProcess>,
}

impl ProcessFederation {
    /// Writes the seven site files; starts nothing.
    pub fn new() -> ProcessFederation {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let base_port = free_base_port(u16::try_from(DEMO_SITES.len()).expect("seven"));
        let federation = FederationConfig::embedded_demo();
        let data = dir.path().join("data");
        for id in DEMO_SITES {
            let file = federation.render_site_file(&site_id(id), base_port, &data).expect("a site file");
            // Summaries hourly, as in `Federation::start_with`.
            let quiet = format!("status_interval: {QUIET_STATUS_INTERVAL}");
            let file = file.replace("status_interval: 2s", &quiet);
            std::fs::write(dir.path().join(format!("{id}.yaml")), file).expect("write the site file");
        }
        ProcessFederation { api: Api::new(), base_port, dir, running: BTreeMap::new() }
    }

    fn config(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.yaml"))
    }

    fn log(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.log"))
    }

    /// The site's base URL, from its place in the federation file.
    pub fn url(&self, id: &str) -> String {
        let i =
            DEMO_SITES.iter().position(|s| *s == id).unwrap_or_else(|| panic!("`{id}` is not a demo site"));
        format!("http://127.0.0.1:{}", self.base_port + u16::try_from(i).expect("small"))
    }

    /// Starts `souverix serve --config <id>.yaml`.
    pub fn start(&mut self, id: &str) {
        assert!(!self.running.contains_key(id), "{id} is running");
        let site = SiteProcess::start(&self.config(id), &self.log(id));
        assert_eq!(site.url, self.url(id), "{id} serves on its configured port");
        self.running.insert(id.to_owned(), site);
    }

    /// `kill -9` of the site's process.
    pub fn kill_9(&mut self, id: &str) {
        self.running.remove(id).unwrap_or_else(|| panic!("{id} is not running")).kill_9();
    }

    /// Whether the site's process is running.
    pub fn is_running(&self, id: &str) -> bool {
        self.running.contains_key(id)
    }

    /// Starts every demo site that is not running.
    pub fn start_all(&mut self) {
        for id in DEMO_SITES {
            if !self.is_running(id) {
                self.start(id);
            }
        }
    }
}

impl Drop for ProcessFederation {
    fn drop(&mut self) {
        // Kill first, so the logs are complete.
        self.running.clear();
        if std::thread::panicking() {
            for id in DEMO_SITES {
                if let Ok(log) = std::fs::read_to_string(self.log(id)) {
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(40)..];
                    eprintln!("---- last lines of the log of {id} ----\n{}", tail.join("\n"));
                }
            }
        }
    }
}
