//! Starts a site in-process on 127.0.0.1 and stops it when dropped.

use std::sync::Arc;

use model::{Level, Scope, SiteId};
use server::{AppState, SiteInfo};
use store::SqliteStore;
use tokio::sync::oneshot;

pub struct Site {
    pub url: String,
    pub http: reqwest::Client,
    pub store: Arc<SqliteStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Site {
    pub async fn start() -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let site = SiteId::new("global-control").expect("site id");
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("global-control.sqlite3"), site.clone(), 300_000)
                .expect("open store"),
        );
        let info = SiteInfo { id: site, scope: Scope::new("global").expect("scope"), level: Level::Global };
        let state = AppState::new(info, store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::run(listener, state, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        });
        Site { url, http: reqwest::Client::new(), store, stop: Some(stop), task: Some(task), _dir: dir }
    }

    pub fn object_url(&self, kind: &str, scope: &str, name: &str) -> String {
        format!("{}/v1/objects/{kind}/{scope}/{name}", self.url)
    }

    /// Stops the server and waits for it to finish its requests.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
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
