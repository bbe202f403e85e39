//! The agent of a managed node: each interval it heartbeats to the site of its zone, fetches the
//! objects in effect there when they changed (`GET /v1/effective` with `If-None-Match`), applies
//! them through an [`Applier`] and reports the versions it applied (docs/fleet.md).
//!
//! One code path serves the real agent (`souverix agent run`, [`FileApplier`]) and the simulator
//! (`souverix agent simulate`, [`SimulatedApplier`]); only the applying differs. The site is
//! reached through a [`Transport`] ([`HttpTransport`] over HTTP; tests pass a fake one).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use model::{ObjectDocument, ObjectKey};
use replication::backoff::{Backoff, Rng, SplitMix64};
use serde::{Deserialize, Serialize};

/// `GET /v1/effective`: the objects in effect at the site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Effective {
    #[serde(default)]
    pub site: String,
    pub etag: String,
    pub items: Vec<ObjectDocument>,
}

/// The body of `POST /v1/nodes/{id}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub software_version: String,
    pub health: Health,
    pub interval_seconds: u64,
    pub applied: BTreeMap<String, String>,
}

/// The site's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    pub node: String,
    pub status: String,
    /// The etag of the objects in effect at the site.
    pub effective: String,
}

/// How the node says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Everything in effect is applied.
    Healthy,
    /// Some objects failed to apply; the others are.
    Degraded,
    /// Nothing that was tried could be applied, or what was applied could not be recorded.
    Failing,
}

/// Why a request to the site failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach the site at {base}: {reason}")]
    Unreachable { base: String, reason: String },
    #[error("the site at {base} answered {status} to {what}: {body}")]
    Status { base: String, what: &'static str, status: u16, body: String },
    #[error("the site at {base} answered {what} with a body that is not the JSON expected: {reason}")]
    Body { base: String, what: &'static str, reason: String },
}

/// How the agent talks to its site.
pub trait Transport: Send + Sync {
    /// `GET /v1/effective`; `None` when the site answers `304` to `if_none_match`.
    fn effective(
        &self,
        if_none_match: Option<&str>,
    ) -> impl Future<Output = Result<Option<Effective>, TransportError>> + Send;

    /// `POST /v1/nodes/{node}/heartbeat`.
    fn heartbeat(
        &self,
        node: &str,
        body: &Heartbeat,
    ) -> impl Future<Output = Result<HeartbeatAnswer, TransportError>> + Send;
}

/// Why an object could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("`{key}` is not an object key (Kind/scope/name)")]
    BadKey { key: String },
    #[error("simulated failure applying {key}")]
    Simulated { key: String },
}

/// What an agent applied: the object versions, and the etag of the set of objects in effect
/// when everything in it was applied (`None` while something failed to apply).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppliedState {
    pub etag: Option<String>,
    pub applied: BTreeMap<String, String>,
}

/// Puts objects in effect on the node.
pub trait Applier: Send {
    /// What was applied before this agent started (nothing for a new node).
    fn load(&mut self) -> Result<AppliedState, ApplyError>;
    /// Puts one object (key `Kind/scope/name`) in effect.
    fn apply(
        &mut self,
        key: &str,
        document: &ObjectDocument,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;
    /// Takes an object that is no longer in effect away.
    fn remove(&mut self, key: &str) -> impl Future<Output = Result<(), ApplyError>> + Send;
    /// Records what is applied, so a restart resumes from it.
    fn save(&mut self, state: &AppliedState) -> Result<(), ApplyError>;
}

/// How an agent behaves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: String,
    /// The interval the node declares in its heartbeats.
    pub interval: Duration,
    /// How often it really heartbeats: `interval`, except for simulated delayed nodes.
    pub period: Duration,
    pub software_version: String,
    /// Attempts of one request within a round when the site does not answer.
    pub attempts: u32,
    /// Waits between those attempts.
    pub retry: Backoff,
}

impl AgentConfig {
    pub fn new(node: impl Into<String>, interval: Duration) -> Self {
        Self {
            node: node.into(),
            interval,
            period: interval,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            attempts: 3,
            retry: Backoff::new(
                Duration::from_millis(200),
                interval.clamp(Duration::from_millis(200), MAX_RETRY_WAIT),
            ),
        }
    }
}

/// The longest wait between two attempts of one request.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// What one round did.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// The node's status as the site answered.
    pub status: String,
    /// Whether what is applied is the whole set in effect at the site.
    pub in_sync: bool,
    /// Objects written or removed in this round.
    pub changed: usize,
    /// Objects that failed to apply in this round.
    pub failed: usize,
}

/// Why a round failed (the agent keeps what it applied and tries again next round).
#[derive(Debug, thiserror::Error)]
#[error("round failed after {attempts} attempts: {source}")]
pub struct RoundError {
    attempts: u32,
    #[source]
    source: TransportError,
}

/// A managed node's agent.
pub struct Agent<T, A> {
    config: AgentConfig,
    transport: T,
    applier: A,
    state: AppliedState,
    health: Health,
    /// The etag the last heartbeat named, when it differs from the applied one.
    stale: bool,
    rng: SplitMix64,
}

impl<T: Transport, A: Applier> Agent<T, A> {
    /// An agent that resumes from what `applier` recorded.
    pub fn new(config: AgentConfig, transport: T, mut applier: A, seed: u64) -> Result<Self, ApplyError> {
        let state = applier.load()?;
        Ok(Self {
            config,
            transport,
            applier,
            state,
            health: Health::Healthy,
            stale: true,
            rng: SplitMix64::new(seed),
        })
    }

    pub fn state(&self) -> &AppliedState {
        &self.state
    }

    /// One interval's work: fetch and apply when the set in effect changed, then heartbeat. When
    /// the heartbeat names a set other than the one applied, fetch, apply and heartbeat again,
    /// so a change is picked up within one interval.
    pub async fn round(&mut self) -> Result<Round, RoundError> {
        let mut round = Round { status: String::new(), in_sync: false, changed: 0, failed: 0 };
        let mut fetched = false;
        if self.stale {
            self.fetch_and_apply(&mut round).await?;
            fetched = true;
        }
        let mut answer = self.heartbeat().await?;
        self.stale = self.state.etag.as_deref() != Some(answer.effective.as_str());
        if self.stale && !fetched {
            self.fetch_and_apply(&mut round).await?;
            answer = self.heartbeat().await?;
            self.stale = self.state.etag.as_deref() != Some(answer.effective.as_str());
        }
        round.status = answer.status;
        round.in_sync = !self.stale;
        Ok(round)
    }

    /// Runs rounds every `period` until `shutdown` turns true. A failed round is logged; the
    /// agent keeps what it applied and tries again at the next period.
    pub async fn run(
        mut self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        mut observe: impl FnMut(&Result<Round, RoundError>) + Send,
    ) {
        loop {
            let result = tokio::select! {
                r = self.round() => r,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            observe(&result);
            tokio::select! {
                _ = tokio::time::sleep(self.config.period) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    async fn fetch_and_apply(&mut self, round: &mut Round) -> Result<(), RoundError> {
        let mut failures = 0;
        let fetched = loop {
            match self.transport.effective(self.state.etag.as_deref()).await {
                Ok(answer) => break answer,
                Err(err) => self.after_failure(&mut failures, err).await?,
            }
        };
        let Some(effective) = fetched else {
            return Ok(());
        };
        let wanted: BTreeMap<String, &ObjectDocument> =
            effective.items.iter().map(|d| (key_of(d), d)).collect();
        let mut failed = 0;
        let mut tried = 0;
        for (key, document) in &wanted {
            let version = document.metadata.version.clone().unwrap_or_default();
            if self.state.applied.get(key) == Some(&version) {
                continue;
            }
            tried += 1;
            match self.applier.apply(key, document).await {
                Ok(()) => {
                    self.state.applied.insert(key.clone(), version);
                    round.changed += 1;
                }
                Err(err) => {
                    failed += 1;
                    tracing::warn!(node = %self.config.node, object = %key, error = %err, "apply failed");
                }
            }
        }
        let gone: Vec<String> =
            self.state.applied.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for key in gone {
            tried += 1;
            match self.applier.remove(&key).await {
                Ok(()) => {
                    self.state.applied.remove(&key);
                    round.changed += 1;
                }
                Err(err) => {
                    failed += 1;
                    tracing::warn!(node = %self.config.node, object = %key, error = %err, "removal failed");
                }
            }
        }
        round.failed += failed;
        self.state.etag = (failed == 0).then(|| effective.etag.clone());
        self.health = match failed {
            0 => Health::Healthy,
            n if n == tried => Health::Failing,
            _ => Health::Degraded,
        };
        if let Err(err) = self.applier.save(&self.state) {
            tracing::warn!(node = %self.config.node, error = %err, "cannot record what is applied");
            self.health = Health::Failing;
        }
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<HeartbeatAnswer, RoundError> {
        let body = Heartbeat {
            software_version: self.config.software_version.clone(),
            health: self.health,
            interval_seconds: self.config.interval.as_secs().max(1),
            applied: self.state.applied.clone(),
        };
        let mut failures = 0;
        loop {
            match self.transport.heartbeat(&self.config.node, &body).await {
                Ok(answer) => return Ok(answer),
                Err(err) => self.after_failure(&mut failures, err).await?,
            }
        }
    }

    /// After a failed request: waits with backoff before the next attempt, or gives up with
    /// the error once `attempts` requests failed.
    async fn after_failure(&mut self, failures: &mut u32, source: TransportError) -> Result<(), RoundError> {
        *failures += 1;
        let attempts = self.config.attempts.max(1);
        if *failures >= attempts {
            return Err(RoundError { attempts, source });
        }
        tokio::time::sleep(self.config.retry.delay(*failures, &mut self.rng)).await;
        Ok(())
    }
}

/// `Kind/scope/name` of a document.
pub fn key_of(document: &ObjectDocument) -> String {
    format!("{}/{}/{}", document.kind, document.metadata.scope, document.metadata.name)
}

/// Talks to one site over HTTP. Clones share one connection pool.
#[derive(Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
    base: Arc<str>,
}

impl HttpTransport {
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        Self { http, base: Arc::from(base.trim_end_matches('/')) }
    }

    /// An HTTP client for agents: short timeouts, a pool shared by every agent of the process.
    pub fn client() -> anyhow::Result<reqwest::Client> {
        use anyhow::Context;
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .context("failed to build the HTTP client")
    }

    fn unreachable(&self, err: &reqwest::Error) -> TransportError {
        TransportError::Unreachable { base: self.base.to_string(), reason: crate::client::root_cause(err) }
    }

    async fn answer<R: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        response: reqwest::Response,
    ) -> Result<R, TransportError> {
        let status = response.status();
        if !status.is_success() {
            let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
            return Err(TransportError::Status {
                base: self.base.to_string(),
                what,
                status: status.as_u16(),
                body,
            });
        }
        response.json().await.map_err(|e| TransportError::Body {
            base: self.base.to_string(),
            what,
            reason: crate::client::root_cause(&e),
        })
    }
}

impl Transport for HttpTransport {
    async fn effective(&self, if_none_match: Option<&str>) -> Result<Option<Effective>, TransportError> {
        let mut request = self.http.get(format!("{}/v1/effective", self.base));
        if let Some(etag) = if_none_match {
            request = request.header("if-none-match", format!("\"{etag}\""));
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        self.answer("GET /v1/effective", response).await.map(Some)
    }

    async fn heartbeat(&self, node: &str, body: &Heartbeat) -> Result<HeartbeatAnswer, TransportError> {
        let response = self
            .http
            .post(format!("{}/v1/nodes/{node}/heartbeat", self.base))
            .json(body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        self.answer("the heartbeat", response).await
    }
}

/// The name of the file in the apply directory that records what is applied.
pub const APPLIED_FILE: &str = ".souverix-applied.json";

/// Writes each object in effect to `<dir>/<Kind>/<scope>/<name>.json` (the document as the site
/// serves it, pretty-printed JSON) and records what is applied in `<dir>/.souverix-applied.json`.
/// Every file is written atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory.
pub struct FileApplier {
    dir: PathBuf,
}

impl FileApplier {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file an object is written to.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, ApplyError> {
        let bad = || ApplyError::BadKey { key: key.to_owned() };
        let mut parts = key.splitn(3, '/');
        let (Some(kind), Some(scope), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        // A valid key has no `/`, no leading `.` and no `..` segment: it stays inside `dir`.
        let parsed = ObjectKey::parse(kind, scope, name).map_err(|_| bad())?;
        Ok(self
            .dir
            .join(parsed.kind.as_str())
            .join(parsed.scope.as_str())
            .join(format!("{}.json", parsed.name.as_str())))
    }
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.tmp"));
    {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, path)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

impl Applier for FileApplier {
    fn load(&mut self) -> Result<AppliedState, ApplyError> {
        let path = self.dir.join(APPLIED_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ApplyError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(AppliedState::default()),
            Err(source) => Err(ApplyError::Io { path, source }),
        }
    }

    async fn apply(&mut self, key: &str, document: &ObjectDocument) -> Result<(), ApplyError> {
        let path = self.path_of(key)?;
        let mut bytes = serde_json::to_vec_pretty(document).map_err(|e| ApplyError::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        bytes.push(b'\n');
        write_atomically(&path, &bytes).map_err(|source| ApplyError::Io { path, source })
    }

    async fn remove(&mut self, key: &str) -> Result<(), ApplyError> {
        let path = self.path_of(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(ApplyError::Io { path, source }),
        }
        let dir = path.parent().unwrap_or(&self.dir);
        sync_dir(dir).map_err(|source| ApplyError::Io { path: dir.to_owned(), source })
    }

    fn save(&mut self, state: &AppliedState) -> Result<(), ApplyError> {
        let path = self.dir.join(APPLIED_FILE);
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| ApplyError::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        write_atomically(&path, &bytes).map_err(|source| ApplyError::Io { path, source })
    }
}

/// Applies nothing: waits `delay` per object and fails a `failure_rate` share of them (drawn from
/// a seeded generator). What it applied lives in memory only.
pub struct SimulatedApplier {
    delay: Duration,
    failure_rate: f64,
    rng: SplitMix64,
}

impl SimulatedApplier {
    pub fn new(delay: Duration, failure_rate: f64, seed: u64) -> Self {
        Self { delay, failure_rate: failure_rate.clamp(0.0, 1.0), rng: SplitMix64::new(seed) }
    }

    fn fails(&mut self) -> bool {
        // 53 random bits as a fraction in [0, 1).
        let draw = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        draw < self.failure_rate
    }
}

impl Applier for SimulatedApplier {
    fn load(&mut self) -> Result<AppliedState, ApplyError> {
        Ok(AppliedState::default())
    }

    async fn apply(&mut self, key: &str, _document: &ObjectDocument) -> Result<(), ApplyError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.fails() { Err(ApplyError::Simulated { key: key.to_owned() }) } else { Ok(()) }
    }

    async fn remove(&mut self, _key: &str) -> Result<(), ApplyError> {
        Ok(())
    }

    fn save(&mut self, _state: &AppliedState) -> Result<(), ApplyError> {
        Ok(())
    }
}

/// `souverix agent run`: one agent writing to `dir` until Ctrl-C.
pub async fn run(server: &str, node: &str, dir: &Path, interval: Duration) -> anyhow::Result<()> {
    use anyhow::Context;
    model::ObjectName::new(node).map_err(|e| anyhow::anyhow!("--node-id: {e}"))?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the apply directory {}", dir.display()))?;
    let transport = HttpTransport::new(HttpTransport::client()?, server);
    let applier = FileApplier::new(dir);
    let agent = Agent::new(AgentConfig::new(node, interval), transport, applier, seed_from(node))
        .with_context(|| format!("cannot read what was applied in {}", dir.display()))?;
    let applied = agent.state().applied.len();
    println!(
        "agent {node} applying to {} from {server} every {}s ({applied} objects applied before)",
        dir.display(),
        interval.as_secs_f64()
    );
    std::io::stdout().flush().ok();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let node_name = node.to_owned();
    let task = tokio::spawn(agent.run(shutdown, move |result| match result {
        Ok(round) if round.changed > 0 || round.failed > 0 => tracing::info!(
            node = %node_name, status = %round.status, changed = round.changed, failed = round.failed, "applied"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(node = %node_name, error = %err, "the site did not answer; keeping what is applied"),
    }));
    crate::serve::shutdown_signal()?.await;
    let _ = stop.send(true);
    task.await.context("the agent task failed")?;
    Ok(())
}

/// A seed derived from a node id, so each node's jitter differs but replays.
pub fn seed_from(node: &str) -> u64 {
    node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// A site in memory: the objects in effect, whether it answers, and what it was told.
    #[derive(Default)]
    struct FakeSite {
        items: Vec<ObjectDocument>,
        down: bool,
        heartbeats: Vec<(String, Heartbeat)>,
        not_modified: usize,
        /// Requests to fail before answering again.
        fail_next: usize,
    }

    impl FakeSite {
        fn etag(&self) -> String {
            let mut pairs: Vec<String> = self
                .items
                .iter()
                .map(|d| format!("{}={}", key_of(d), d.metadata.version.clone().unwrap_or_default()))
                .collect();
            pairs.sort();
            pairs.join(",")
        }

        fn put(&mut self, name: &str, version: &str) {
            let document: ObjectDocument = serde_json::from_value(json!({
                "apiVersion": "souverix/v1", "kind": "Policy",
                "metadata": {"name": name, "scope": "global", "version": version},
                "spec": {"version": version},
            }))
            .expect("a document");
            self.items.retain(|d| d.metadata.name != name);
            self.items.push(document);
        }

        fn last_applied(&self) -> BTreeMap<String, String> {
            self.heartbeats.last().expect("a heartbeat").1.applied.clone()
        }
    }

    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<FakeSite>>);

    impl Fake {
        fn site(&self) -> std::sync::MutexGuard<'_, FakeSite> {
            self.0.lock().expect("the fake site's lock")
        }

        fn check_up(&self) -> Result<(), TransportError> {
            let mut site = self.site();
            if site.down || site.fail_next > 0 {
                site.fail_next = site.fail_next.saturating_sub(1);
                return Err(TransportError::Unreachable {
                    base: "fake".into(),
                    reason: "connection refused".into(),
                });
            }
            Ok(())
        }
    }

    impl Transport for Fake {
        async fn effective(&self, if_none_match: Option<&str>) -> Result<Option<Effective>, TransportError> {
            self.check_up()?;
            let mut site = self.site();
            let etag = site.etag();
            if if_none_match == Some(etag.as_str()) {
                site.not_modified += 1;
                return Ok(None);
            }
            Ok(Some(Effective { site: "fake".into(), etag, items: site.items.clone() }))
        }

        async fn heartbeat(&self, node: &str, body: &Heartbeat) -> Result<HeartbeatAnswer, TransportError> {
            self.check_up()?;
            let mut site = self.site();
            site.heartbeats.push((node.to_owned(), body.clone()));
            Ok(HeartbeatAnswer { node: node.to_owned(), status: "Live".into(), effective: site.etag() })
        }
    }

    fn config() -> AgentConfig {
        let mut config = AgentConfig::new("a1-node-01", Duration::from_secs(5));
        config.retry = Backoff::new(Duration::from_millis(1), Duration::from_millis(5));
        config
    }

    fn file_agent(fake: &Fake, dir: &Path) -> Agent<Fake, FileApplier> {
        Agent::new(config(), fake.clone(), FileApplier::new(dir), 7).expect("an agent")
    }

    fn read_version(dir: &Path, name: &str) -> Option<String> {
        let text = std::fs::read_to_string(dir.join("Policy/global").join(format!("{name}.json"))).ok()?;
        let document: ObjectDocument = serde_json::from_str(&text).expect("the file is a document");
        document.metadata.version
    }

    fn temp_files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.to_string_lossy().ends_with(".tmp") {
                    found.push(path);
                }
            }
        }
        found
    }

    #[tokio::test]
    async fn writes_each_object_in_effect_as_a_file_and_reports_its_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Fake::default();
        fake.site().put("baseline", "1.0@global-control");
        fake.site().put("ssh", "2.0@global-control");
        let mut agent = file_agent(&fake, dir.path());
        let round = agent.round().await.expect("a round");
        assert!(round.in_sync);
        assert_eq!(round.changed, 2);
        assert_eq!(read_version(dir.path(), "baseline").as_deref(), Some("1.0@global-control"));
        assert_eq!(read_version(dir.path(), "ssh").as_deref(), Some("2.0@global-control"));
        assert!(temp_files(dir.path()).is_empty(), "no temporary file is left behind");
        let applied = fake.site().last_applied();
        assert_eq!(applied.get("Policy/global/baseline").map(String::as_str), Some("1.0@global-control"));
        assert_eq!(fake.site().heartbeats.last().expect("a heartbeat").1.health, Health::Healthy);
        let recorded: AppliedState =
            serde_json::from_slice(&std::fs::read(dir.path().join(APPLIED_FILE)).expect("the record"))
                .expect("JSON");
        assert_eq!(recorded.applied, applied);
    }

    #[tokio::test]
    async fn an_update_and_a_removal_are_picked_up_within_one_round() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Fake::default();
        fake.site().put("baseline", "1.0@g");
        fake.site().put("ssh", "1.0@g");
        let mut agent = file_agent(&fake, dir.path());
        agent.round().await.expect("a first round");

        fake.site().put("baseline", "2.0@g");
        fake.site().items.retain(|d| d.metadata.name != "ssh");
        let round = agent.round().await.expect("the next round");
        assert!(round.in_sync, "the heartbeat named the new set and the agent applied it at once");
        assert_eq!(read_version(dir.path(), "baseline").as_deref(), Some("2.0@g"));
        assert_eq!(
            read_version(dir.path(), "ssh"),
            None,
            "the file of an object no longer in effect is removed"
        );
        let applied = fake.site().last_applied();
        assert_eq!(applied, BTreeMap::from([("Policy/global/baseline".to_owned(), "2.0@g".to_owned())]));

        // Nothing changed: the next round asks with the etag and gets 304.
        agent.round().await.expect("a quiet round");
        assert_eq!(fake.site().not_modified, 0, "no fetch when the heartbeat names the applied set");
    }

    #[tokio::test]
    async fn an_unreachable_site_leaves_the_files_and_the_last_versions_are_reported_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Fake::default();
        fake.site().put("baseline", "1.0@g");
        let mut agent = file_agent(&fake, dir.path());
        agent.round().await.expect("a first round");

        fake.site().down = true;
        assert!(agent.round().await.is_err(), "the round fails while the site is down");
        drop(agent);
        // A restart while the site is still down: what was applied is read back, files stay.
        let mut agent = file_agent(&fake, dir.path());
        assert_eq!(agent.state().applied.get("Policy/global/baseline").map(String::as_str), Some("1.0@g"));
        assert!(agent.round().await.is_err());
        assert_eq!(read_version(dir.path(), "baseline").as_deref(), Some("1.0@g"));

        let before = fake.site().heartbeats.len();
        fake.site().down = false;
        agent.round().await.expect("a round once the site is back");
        let site = fake.site();
        assert_eq!(site.heartbeats.len(), before + 1);
        assert_eq!(site.last_applied().get("Policy/global/baseline").map(String::as_str), Some("1.0@g"));
        assert_eq!(site.not_modified, 1, "the recorded etag spared a full fetch");
    }

    #[tokio::test]
    async fn a_request_that_fails_is_retried_within_the_round() {
        let fake = Fake::default();
        fake.site().put("baseline", "1.0@g");
        fake.site().fail_next = 2;
        let applier = SimulatedApplier::new(Duration::ZERO, 0.0, 1);
        let mut agent = Agent::new(config(), fake.clone(), applier, 1).expect("an agent");
        let round = agent.round().await.expect("the third attempt answers");
        assert!(round.in_sync);
    }

    #[tokio::test]
    async fn a_simulated_node_that_always_fails_never_reports_the_new_version() {
        let fake = Fake::default();
        fake.site().put("baseline", "1.0@g");
        let applier = SimulatedApplier::new(Duration::ZERO, 1.0, 3);
        let mut agent = Agent::new(config(), fake.clone(), applier, 3).expect("an agent");
        for _ in 0..3 {
            let round = agent.round().await.expect("the site answers");
            assert!(!round.in_sync);
            assert_eq!(round.failed, 1);
        }
        fake.site().put("baseline", "2.0@g");
        for _ in 0..3 {
            agent.round().await.expect("the site answers");
        }
        let site = fake.site();
        assert!(site.heartbeats.iter().all(|(_, h)| h.applied.is_empty()), "no version is ever reported");
        assert_eq!(site.heartbeats.last().expect("a heartbeat").1.health, Health::Failing);
    }

    #[tokio::test]
    async fn a_simulated_node_with_some_failures_catches_up() {
        let fake = Fake::default();
        fake.site().put("baseline", "1.0@g");
        let applier = SimulatedApplier::new(Duration::ZERO, 0.5, 11);
        let mut agent = Agent::new(config(), fake.clone(), applier, 11).expect("an agent");
        let mut in_sync = false;
        for _ in 0..64 {
            if agent.round().await.expect("the site answers").in_sync {
                in_sync = true;
                break;
            }
        }
        assert!(in_sync, "a retry in a later round succeeds");
        assert_eq!(
            fake.site().last_applied().get("Policy/global/baseline").map(String::as_str),
            Some("1.0@g")
        );
    }

    #[test]
    fn keys_that_would_leave_the_directory_are_refused() {
        let applier = FileApplier::new("/tmp/x");
        assert!(applier.path_of("Policy/global/baseline").is_ok());
        assert!(matches!(applier.path_of("Policy/../etc"), Err(ApplyError::BadKey { .. })));
        assert!(matches!(applier.path_of("Policy/global/a/b"), Err(ApplyError::BadKey { .. })));
        assert!(matches!(applier.path_of("Policy/global/.hidden"), Err(ApplyError::BadKey { .. })));
    }
}
