//! Starts a site in-process on 127.0.0.1 over a real SQLite file, and stops it.

use std::sync::Arc;

use config::SiteConfig;
use server::{RunningSite, SystemClock};

pub struct Site {
    pub url: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn store::Store>,
    running: Option<RunningSite>,
    _dir: tempfile::TempDir,
}

impl Site {
    /// The embedded default site (`global-control`), in a temporary data directory.
    pub async fn start() -> Site {
        Site::start_with(SiteConfig::embedded_default()).await
    }

    /// A site with this configuration, in a temporary data directory. Its `SiteStatus`
    /// publisher is held off (an interval of a day), so the site writes nothing on its own.
    pub async fn start_with(mut config: SiteConfig) -> Site {
        config.status_interval = std::time::Duration::from_secs(86_400).into();
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let running = RunningSite::start(&config, dir.path(), listener, Arc::new(SystemClock))
            .await
            .expect("site starts");
        Site {
            url: running.url.clone(),
            http: reqwest::Client::new(),
            store: running.store.clone(),
            running: Some(running),
            _dir: dir,
        }
    }

    pub fn object_url(&self, kind: &str, scope: &str, name: &str) -> String {
        format!("{}/v1/objects/{kind}/{scope}/{name}", self.url)
    }

    /// `GET {url}{path}` as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.http.get(format!("{}{path}", self.url)).send().await.expect("get").json().await.expect("json")
    }

    /// Stops the server and waits for it to finish its requests.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("site stops cleanly");
        }
    }
}

pub fn policy(name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "souverix/v1",
        "kind": "Policy",
        "metadata": {"name": name, "scope": "global", "labels": {"team": "security"}},
        "spec": spec,
    })
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `deadline` with `what`.
pub async fn eventually<T, F, Fut>(deadline: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The `manual` strategy for every object: a test double of the sync engine's site directory.
pub struct Manual;

impl store::ConflictPolicy for Manual {
    fn strategy(&self, _: &model::ObjectKey) -> model::Strategy {
        model::Strategy::Manual
    }
    fn rank(&self, _: &model::SiteId) -> u8 {
        0
    }
    fn audit(&self) -> bool {
        true
    }
}

pub fn policy_key(name: &str) -> model::ObjectKey {
    model::ObjectKey::parse("Policy", "global", name).expect("a valid key")
}

/// A version of `Policy/global/<name>` written at `origin`, as a peer would send it: its
/// vector counts one write by `origin` on top of `seen`.
pub fn remote_version(
    name: &str,
    origin: &str,
    wall_ms: u64,
    seen: &[(&str, u64)],
    spec: serde_json::Value,
    deleted: bool,
) -> store::RemoteVersion {
    let key = policy_key(name);
    let origin = model::SiteId::new(origin).expect("a valid site id");
    let mut vv = model::VersionVector::new();
    for (site, count) in seen {
        let site = model::SiteId::new(*site).expect("a valid site id");
        for _ in 0..*count {
            vv.increment(&site);
        }
    }
    vv.increment(&origin);
    let labels = if deleted {
        std::collections::BTreeMap::new()
    } else {
        std::collections::BTreeMap::from([("origin".to_owned(), origin.to_string())])
    };
    let spec = if deleted { serde_json::Value::Null } else { spec };
    store::RemoteVersion {
        version: model::Version {
            hlc: model::Hlc::new(wall_ms, 0),
            origin,
            vv,
            author: "peer-operator".into(),
            content_hash: model::ContentHash::of(&key, &labels, &spec, deleted),
            deleted,
        },
        key,
        labels,
        spec: model::SpecText::of(&spec),
    }
}

/// Two versions applied to the site's store one after the other, each as if it came from its
/// origin. Returns their version ids.
pub async fn concurrent_versions<P>(
    site: &Site,
    a: store::RemoteVersion,
    b: store::RemoteVersion,
    policy: P,
) -> (model::VersionId, model::VersionId)
where
    P: store::ConflictPolicy + Send + 'static,
{
    let store = site.store.clone();
    let ids = (a.version.id(), b.version.id());
    let now = model::Clock::now_ms(&SystemClock);
    tokio::task::spawn_blocking(move || {
        store.apply_remote(&a.version.origin.clone(), &[a], now, &policy).expect("a applies");
        store.apply_remote(&b.version.origin.clone(), &[b], now, &policy).expect("b applies");
    })
    .await
    .expect("apply task");
    ids
}

/// A conflict on `Policy/global/<name>` between `edge-zone-a1`'s `spec_a` and
/// `region-a-control`'s `spec_b`, decided by `policy`.
pub async fn conflict<P>(
    site: &Site,
    name: &str,
    spec_a: serde_json::Value,
    spec_b: serde_json::Value,
    policy: P,
) -> (model::VersionId, model::VersionId)
where
    P: store::ConflictPolicy + Send + 'static,
{
    let now = model::Clock::now_ms(&SystemClock);
    let a = remote_version(name, "edge-zone-a1", now - 2_000, &[], spec_a, false);
    let b = remote_version(name, "region-a-control", now - 1_000, &[], spec_b, false);
    concurrent_versions(site, a, b, policy).await
}

/// The machine's time, as the site reads it.
pub fn now_ms() -> u64 {
    model::Clock::now_ms(&SystemClock)
}

/// Asserts `response` is a problem document with `status` whose detail holds `detail_contains`.
pub async fn assert_problem(
    response: reqwest::Response,
    status: reqwest::StatusCode,
    detail_contains: &str,
) -> serde_json::Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: serde_json::Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains(detail_contains), "detail `{detail}` lacks `{detail_contains}`");
    body
}
