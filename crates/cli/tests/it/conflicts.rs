//! `souverix conflicts`, `events` and `webhooks` against a real site on 127.0.0.1: conflicts
//! made by applying two concurrent versions to the site's store, as its peers' would arrive.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use config::SiteConfig;
use model::{Clock, ContentHash, Hlc, ObjectKey, SiteId, Version, VersionId, VersionVector};
use serde_json::{Value, json};
use server::{RunningSite, SystemClock};

use crate::harness::{BIN, cli, ok, stderr, stdout};

/// A site in this process, in a temporary data directory.
struct Site {
    running: Option<RunningSite>,
    url: String,
    _dir: tempfile::TempDir,
}

impl Site {
    async fn start(config: SiteConfig) -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let running = RunningSite::start(&config, dir.path(), listener, Arc::new(SystemClock))
            .await
            .expect("the site starts");
        Site { url: running.url.clone(), running: Some(running), _dir: dir }
    }

    fn store(&self) -> Arc<dyn store::Store> {
        self.running.as_ref().expect("running").store.clone()
    }

    /// Runs `souverix --server <url> <args>` on a blocking thread (the site runs on this
    /// runtime).
    async fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--server".to_owned(), self.url.clone()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            cli(&[], &refs)
        })
        .await
        .expect("cli task")
    }

    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("the site stops cleanly");
        }
    }
}

/// The `manual` strategy for every object.
struct Manual;

impl store::ConflictPolicy for Manual {
    fn strategy(&self, _: &ObjectKey) -> model::Strategy {
        model::Strategy::Manual
    }
    fn rank(&self, _: &SiteId) -> u8 {
        0
    }
    fn audit(&self) -> bool {
        true
    }
}

fn version(key: &ObjectKey, origin: &str, wall_ms: u64, spec: Value) -> store::RemoteVersion {
    let origin = SiteId::new(origin).expect("site id");
    let mut vv = VersionVector::new();
    vv.increment(&origin);
    let labels = BTreeMap::from([("team".to_owned(), origin.to_string())]);
    store::RemoteVersion {
        version: Version {
            hlc: Hlc::new(wall_ms, 0),
            origin,
            vv,
            author: "peer-operator".into(),
            content_hash: ContentHash::of(key, &labels, &spec, false),
            deleted: false,
        },
        key: key.clone(),
        labels,
        spec: model::SpecText::of(&spec),
    }
}

/// An open (manual) conflict on `Policy/global/<name>` between `edge-zone-a1`'s `spec_a` (older)
/// and `region-a-control`'s `spec_b`.
async fn manual_conflict(site: &Site, name: &str, spec_a: Value, spec_b: Value) -> (VersionId, VersionId) {
    let key = ObjectKey::parse("Policy", "global", name).expect("key");
    let now = SystemClock.now_ms();
    let a = version(&key, "edge-zone-a1", now - 2_000, spec_a);
    let b = version(&key, "region-a-control", now - 1_000, spec_b);
    let ids = (a.version.id(), b.version.id());
    let store = site.store();
    tokio::task::spawn_blocking(move || {
        for v in [a, b] {
            store.apply_remote(&v.version.origin.clone(), &[v], now, &Manual).expect("applies");
        }
    })
    .await
    .expect("apply task");
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_shows_acknowledges_and_resolves_a_conflict_with_the_cli() {
    let site = Site::start(SiteConfig::embedded_default()).await;
    let spec_a = json!({"ssh": {"password_auth": true, "port": 22}, "telnet": "denied"});
    let spec_b = json!({"ssh": {"password_auth": false, "port": 22}, "telnet": "denied"});
    let (a, b) = manual_conflict(&site, "baseline", spec_a.clone(), spec_b).await;
    let (a, b) = (a.to_string(), b.to_string());

    let table = ok(site.cli(&["conflicts", "list"]).await);
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    for column in ["ID", "OBJECT", "SIDES", "STRATEGY", "WINNER", "STATUS", "DETECTED"] {
        assert!(header.contains(column), "{table}");
    }
    let row = lines.next().expect("a row");
    assert!(row.contains("Policy/global/baseline"), "{table}");
    assert!(row.contains(&format!("{a} vs {b}")), "{table}");
    assert!(row.contains("manual") && row.contains("open"), "{table}");
    let id = row.split_whitespace().next().expect("id").to_owned();

    let listed: Value =
        serde_json::from_str(&ok(site.cli(&["conflicts", "list", "-o", "json"]).await)).expect("json");
    assert_eq!(listed["items"][0]["id"], id);
    assert_eq!(ok(site.cli(&["conflicts", "list", "--status", "resolved"]).await), "no conflicts\n");

    let shown = ok(site.cli(&["conflicts", "show", &id]).await);
    assert!(shown.starts_with(&format!("conflict {id} on Policy/global/baseline: open\n")), "{shown}");
    assert!(shown.contains(&format!("winner {b} (provisional)")), "{shown}");
    assert!(shown.contains(&format!("current version {b} (side B)")), "{shown}");
    for expected in [
        "origin",
        "edge-zone-a1",
        "region-a-control",
        "team=edge-zone-a1",
        "-   password_auth: true",
        "+   password_auth: false",
        "    port: 22",
        "  telnet: denied",
    ] {
        assert!(shown.contains(expected), "`{expected}` missing from:\n{shown}");
    }
    let yaml = ok(site.cli(&["conflicts", "show", &id, "-o", "yaml"]).await);
    let detail: Value = serde_yaml_ng::from_str(&yaml).expect("yaml");
    assert_eq!(detail["versions"][0]["spec"], spec_a);

    let acked = ok(site.cli(&["conflicts", "ack", &id]).await);
    assert_eq!(
        acked,
        format!(
            "conflict {id} on Policy/global/baseline acknowledged by tester; version {b} stays current\n"
        )
    );

    let refused = site.cli(&["conflicts", "resolve", &id, "--pick", "1.0@nowhere"]).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains(&format!("pick `{a}` or `{b}`")), "{}", stderr(&refused));

    let resolved = ok(site.cli(&["conflicts", "resolve", &id, "--pick", &a]).await);
    assert!(
        resolved.starts_with(&format!("conflict {id} on Policy/global/baseline resolved: version ")),
        "{resolved}"
    );
    assert!(resolved.ends_with(&format!("holds the content of {a}\n")), "{resolved}");

    let current: Value =
        serde_json::from_str(&ok(site.cli(&["get", "policy", "baseline", "-o", "json"]).await))
            .expect("json");
    assert_eq!(current["spec"], spec_a, "the picked side is current");
    assert_eq!(current["metadata"]["author"], "tester");
    let history = ok(site.cli(&["history", "policy", "baseline"]).await);
    assert_eq!(history.lines().count(), 4, "a header, both sides and the resolution:\n{history}");
    let resolved_list = ok(site.cli(&["conflicts", "list", "--status", "resolved"]).await);
    assert!(resolved_list.contains(&id) && resolved_list.contains("resolved"), "{resolved_list}");
    assert_eq!(ok(site.cli(&["conflicts", "list"]).await), "no conflicts\n");

    let again = site.cli(&["conflicts", "ack", &id]).await;
    assert!(!again.status.success());
    assert!(stderr(&again).contains("Conflict (409)"), "{}", stderr(&again));
    let unknown = site.cli(&["conflicts", "show", "0123456789abcdef"]).await;
    assert!(stderr(&unknown).contains("Not found (404)"), "{}", stderr(&unknown));
    let bad = site.cli(&["conflicts", "show", "../site"]).await;
    assert!(stderr(&bad).contains("is not a conflict id"), "{}", stderr(&bad));
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_prints_the_stored_events_and_follows_new_ones() {
    let site = Site::start(SiteConfig::embedded_default()).await;
    manual_conflict(&site, "contested", json!({"v": 1}), json!({"v": 2})).await;

    let once = ok(site.cli(&["events", "--once", "--kinds", "conflict"]).await);
    let lines: Vec<&str> = once.lines().collect();
    assert!(!lines.is_empty(), "{once}");
    assert!(lines.iter().all(|l| l.contains("  conflict  Policy/global/contested  ")), "{once}");
    let json_lines = ok(site.cli(&["events", "--once", "-o", "json"]).await);
    let events: Vec<Value> =
        json_lines.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert!(events.iter().any(|e| e["kind"] == "write"), "{json_lines}");
    let last = events.last().expect("events")["seq"].as_u64().expect("seq");
    assert_eq!(ok(site.cli(&["events", "--once", "--after", &last.to_string()]).await), "");

    // Following: a new write shows up on the running command's output.
    let mut child = Command::new(BIN)
        .args(["--server", &site.url, "events", "--kinds", "write", "--after", &last.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn souverix events");
    let output = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let document = json!({
        "apiVersion": "souverix/v1", "kind": "Policy",
        "metadata": {"name": "fresh", "scope": "global"}, "spec": {},
    });
    let http = reqwest::Client::new();
    let put = http.put(format!("{}/v1/objects/Policy/global/fresh", site.url)).json(&document).send().await;
    assert!(put.expect("put").status().is_success());
    let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("reader")
        .expect("a line within 10 s");
    assert!(line.contains("  write  Policy/global/fresh  "), "{line}");
    child.kill().expect("kill");
    child.wait().expect("reap");

    let bad = site.cli(&["events", "--kinds", "weather"]).await;
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid value 'weather'"), "{}", stderr(&bad));
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliveries_lists_the_attempts() {
    // A receiver that is not there: every attempt fails at once, and is recorded.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    let text = format!(
        "Site:\n  id: global-control\n  webhooks:\n    - name: pager\n      url: {url}\nAuthority:\n  level: global\n"
    );
    let config = SiteConfig::parse(&text, "site.yaml", Path::new("")).expect("valid");
    let site = Site::start(config).await;
    assert_eq!(ok(site.cli(&["webhooks", "deliveries"]).await), "no deliveries\n");
    manual_conflict(&site, "contested", json!({"v": 1}), json!({"v": 2})).await;

    let start = std::time::Instant::now();
    let table = loop {
        let table = ok(site.cli(&["webhooks", "deliveries", "--webhook", "pager"]).await);
        if table.contains("failed") {
            break table;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no failed delivery recorded:\n{table}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("ID") && header.contains("OUTCOME"), "{table}");
    let row = lines.last().expect("a row");
    assert!(
        row.contains("pager") && row.contains("failed") && row.contains("cannot reach the receiver"),
        "{table}"
    );
    let listed: Value =
        serde_json::from_str(&ok(site.cli(&["webhooks", "deliveries", "-o", "json"]).await)).expect("json");
    assert_eq!(listed["items"].as_array().expect("items").last().expect("one")["attempt"], 1);
    assert_eq!(stdout(&site.cli(&["webhooks", "deliveries", "--webhook", "other"]).await), "no deliveries\n");
    site.stop().await;
}
