//! The fleet (docs/fleet.md): heartbeats, node status under a test clock, the objects in
//! effect and their etag, drift, the `SiteStatus` summary, and views across an in-process demo
//! federation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use config::{FederationConfig, SiteConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::{RunningSite, SystemClock};

use crate::harness::{assert_problem, eventually, now_ms, policy};

/// A clock the test moves by hand.
struct TestClock(AtomicU64);

impl TestClock {
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl model::Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A lone global site on a test clock: nodes delayed after 15s, offline after 60s, a summary
/// every 100ms.
struct Fixture {
    url: String,
    http: reqwest::Client,
    clock: Arc<TestClock>,
    running: RunningSite,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let mut config = SiteConfig::embedded_default();
        config.nodes.delayed_after = Duration::from_secs(15).into();
        config.nodes.offline_after = Duration::from_secs(60).into();
        config.status_interval = Duration::from_millis(100).into();
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let clock = Arc::new(TestClock(AtomicU64::new(now_ms())));
        let running =
            RunningSite::start(&config, dir.path(), listener, clock.clone()).await.expect("site starts");
        Fixture { url: running.url.clone(), http: reqwest::Client::new(), clock, running, _dir: dir }
    }

    async fn beat(&self, node: &str, version: &str, applied: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/nodes/{node}/heartbeat", self.url))
            .json(&json!({"software_version": version, "health": "healthy", "interval_seconds": 5, "applied": applied}))
            .send()
            .await
            .expect("heartbeat")
    }

    async fn beat_ok(&self, node: &str, applied: Value) -> Value {
        let response = self.beat(node, "1.4.2", applied).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}{path}", self.url)).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("json")
    }

    async fn statuses(&self, query: &str) -> Vec<(String, String)> {
        let page = self.get(&format!("/v1/nodes{query}")).await;
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| {
                (
                    i["node"].as_str().expect("node").to_owned(),
                    i["status"].as_str().expect("status").to_owned(),
                )
            })
            .collect()
    }

    async fn stop(self) {
        self.running.stop().await.expect("site stops");
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test]
async fn nodes_go_live_delayed_offline_and_a_late_beat_stays_delayed() {
    let site = Fixture::start().await;
    let first = site.beat_ok("a2-node-01", json!({})).await;
    assert_eq!(first["node"], "a2-node-01");
    assert_eq!(first["status"], "Live");
    assert_eq!(first["effective"].as_str().expect("etag").len(), 64);
    site.beat_ok("a2-node-02", json!({})).await;
    assert_eq!(site.statuses("").await, pairs(&[("a2-node-01", "Live"), ("a2-node-02", "Live")]));

    site.clock.advance(16_000);
    assert_eq!(site.statuses("").await, pairs(&[("a2-node-01", "Delayed"), ("a2-node-02", "Delayed")]));
    // A beat 16s after the one before: the node is back, but it missed its beat.
    let late = site.beat_ok("a2-node-01", json!({})).await;
    assert_eq!(late["status"], "Delayed", "a late beat does not make the node live");
    site.clock.advance(5_000);
    let on_time = site.beat_ok("a2-node-01", json!({})).await;
    assert_eq!(on_time["status"], "Live", "a beat on time after a late one");

    site.clock.advance(40_000);
    // node-02 has been silent 61s, node-01 40s.
    assert_eq!(site.statuses("").await, pairs(&[("a2-node-01", "Delayed"), ("a2-node-02", "Offline")]));
    assert_eq!(site.statuses("?status=Offline").await, pairs(&[("a2-node-02", "Offline")]));
    assert_eq!(site.statuses("?status=live").await, Vec::new());

    let page = site.get("/v1/nodes?limit=1").await;
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
    assert_eq!(page["next"], "a2-node-01");
    let item = &page["items"][0];
    assert_eq!(item["software_version"], "1.4.2");
    assert_eq!(item["health"], "healthy");
    assert_eq!(item["interval_seconds"], 5);
    assert_eq!(item["last_heartbeat_age_seconds"], 40.0);
    assert!(item["last_heartbeat"].as_str().expect("time").ends_with('Z'));
    let rest = site.get("/v1/nodes?limit=1&after=a2-node-01").await;
    assert_eq!(rest["items"][0]["node"], "a2-node-02");
    assert!(rest.get("next").is_none(), "the last page has no next");
    site.stop().await;
}

#[tokio::test]
async fn the_effective_set_has_an_etag_and_drift_follows_what_nodes_applied() {
    let site = Fixture::start().await;
    let put = site
        .http
        .put(format!("{}/v1/objects/Policy/global/baseline", site.url))
        .json(&policy("baseline", json!({"v": 1})))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::CREATED);
    let v1 = put.json::<Value>().await.expect("json")["metadata"]["version"].as_str().expect("v").to_owned();

    let response = site.http.get(format!("{}/v1/effective", site.url)).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::OK);
    let header = response.headers()["etag"].to_str().expect("etag").to_owned();
    let set: Value = response.json().await.expect("json");
    assert_eq!(header, format!("\"{}\"", set["etag"].as_str().expect("etag")));
    assert_eq!(set["site"], "global-control");
    let kinds: Vec<&str> =
        set["items"].as_array().expect("items").iter().map(|i| i["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds, ["Policy"], "SiteStatus objects are not configuration: {set}");
    let unchanged = site
        .http
        .get(format!("{}/v1/effective", site.url))
        .header("if-none-match", &header)
        .send()
        .await
        .expect("get");
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);

    // A node that reports nothing applied drifts; one that applied v1 does not.
    let answer = site.beat_ok("n1", json!({})).await;
    assert_eq!(format!("\"{}\"", answer["effective"].as_str().expect("etag")), header);
    site.beat_ok("n2", json!({"Policy/global/baseline": v1})).await;
    let drift = site.get("/v1/drift").await;
    assert_eq!(drift["count"], 1);
    assert_eq!(drift["objects"][0]["object"], "Policy/global/baseline");
    assert_eq!(drift["objects"][0]["desired"], v1.as_str());
    assert_eq!(drift["objects"][0]["nodes"], json!([{"node": "n1", "applied": null}]));

    // A new version: n2 reports the old one until it catches up.
    let v2 = site
        .http
        .put(format!("{}/v1/objects/Policy/global/baseline", site.url))
        .json(&policy("baseline", json!({"v": 2})))
        .send()
        .await
        .expect("put")
        .json::<Value>()
        .await
        .expect("json")["metadata"]["version"]
        .as_str()
        .expect("v")
        .to_owned();
    let answer = site.beat_ok("n1", json!({"Policy/global/baseline": v2})).await;
    assert_ne!(format!("\"{}\"", answer["effective"].as_str().expect("etag")), header, "the etag changed");
    let stale =
        site.http.get(format!("{}/v1/effective", site.url)).header("if-none-match", &header).send().await;
    assert_eq!(stale.expect("get").status(), StatusCode::OK);
    let drift = site.get("/v1/drift").await;
    assert_eq!(drift["count"], 1);
    assert_eq!(drift["objects"][0]["nodes"], json!([{"node": "n2", "applied": v1}]));
    site.beat_ok("n2", json!({"Policy/global/baseline": v2})).await;
    assert_eq!(site.get("/v1/drift").await["count"], 0, "drift disappears when the node catches up");

    // An offline node does not count.
    site.clock.advance(61_000);
    site.beat_ok("n3", json!({})).await;
    assert_eq!(site.get("/v1/drift").await["count"], 1);
    site.clock.advance(61_000);
    assert_eq!(site.get("/v1/drift").await["count"], 0, "offline nodes are not drift");
    site.stop().await;
}

#[tokio::test]
async fn the_site_publishes_its_summary_as_a_site_status_object() {
    let site = Fixture::start().await;
    site.beat_ok("n1", json!({})).await;
    site.beat_ok("n2", json!({})).await;
    let path = "/v1/objects/SiteStatus/global/global-control";
    let object = eventually(Duration::from_secs(10), "a summary with two nodes", || async {
        let response = site.http.get(format!("{}{path}", site.url)).send().await.ok()?;
        let object: Value = response.json().await.ok()?;
        (object["spec"]["nodes"]["total"] == 2).then_some(object)
    })
    .await;
    assert_eq!(object["metadata"]["author"], "souverix");
    let spec = &object["spec"];
    assert_eq!(spec["site"], "global-control");
    assert_eq!(spec["scope"], "global");
    assert_eq!(spec["level"], "global");
    assert_eq!(spec["parent"], Value::Null);
    assert_eq!(spec["autonomy"], json!({"mode": "full", "isolated": false}));
    assert_eq!(spec["nodes"], json!({"total": 2, "live": 2, "delayed": 0, "offline": 0}));
    assert_eq!(spec["drift"], 0);
    assert_eq!(spec["open_conflicts"], 0);
    assert_eq!(spec["children"], json!({}));
    assert_eq!(spec["totals"]["nodes"], spec["nodes"]);
    assert!(spec["observed_ms"].as_u64().is_some());

    // The figures move with the clock.
    site.clock.advance(16_000);
    eventually(Duration::from_secs(10), "a summary with two delayed nodes", || async {
        let response = site.http.get(format!("{}{path}", site.url)).send().await.ok()?;
        let object: Value = response.json().await.ok()?;
        (object["spec"]["nodes"]["delayed"] == 2).then_some(())
    })
    .await;
    site.stop().await;
}

#[tokio::test]
async fn bad_fleet_input_gets_problem_documents() {
    let site = Fixture::start().await;
    let beat = |node: &str, body: Value| {
        site.http.post(format!("{}/v1/nodes/{node}/heartbeat", site.url)).json(&body).send()
    };
    let good = json!({"software_version": "1.0", "health": "healthy", "interval_seconds": 5});
    assert_problem(beat("Bad_Node", good.clone()).await.expect("post"), StatusCode::BAD_REQUEST, "node id")
        .await;
    let cases = [
        (json!({"software_version": "1.0", "health": "sleepy", "interval_seconds": 5}), "health"),
        (json!({"software_version": "1.0", "health": "healthy", "interval_seconds": 0}), "interval_seconds"),
        (json!({"software_version": "", "health": "healthy", "interval_seconds": 5}), "software_version"),
        (
            json!({"software_version": "1.0", "health": "healthy", "interval_seconds": 5, "color": "red"}),
            "color",
        ),
        (json!({"health": "healthy", "interval_seconds": 5}), "software_version"),
        (
            json!({"software_version": "1.0", "health": "healthy", "interval_seconds": 5, "applied": {"Policy/global": "x"}}),
            "Kind/scope/name",
        ),
        (
            json!({"software_version": "1.0", "health": "healthy", "interval_seconds": 5, "applied": {"Policy/global/p": "yesterday"}}),
            "applied[`Policy/global/p`]",
        ),
    ];
    for (body, detail) in cases {
        assert_problem(beat("n1", body).await.expect("post"), StatusCode::BAD_REQUEST, detail).await;
    }
    let raw = site
        .http
        .post(format!("{}/v1/nodes/n1/heartbeat", site.url))
        .body("not json")
        .send()
        .await
        .expect("post");
    assert_problem(raw, StatusCode::BAD_REQUEST, "not a valid heartbeat").await;
    assert_eq!(site.get("/v1/nodes").await["items"], json!([]), "refused heartbeats register nothing");

    let get = |path: &str| site.http.get(format!("{}{path}", site.url)).send();
    assert_problem(get("/v1/nodes?status=Sleeping").await.expect("get"), StatusCode::BAD_REQUEST, "Delayed")
        .await;
    assert_problem(get("/v1/nodes?limit=0").await.expect("get"), StatusCode::BAD_REQUEST, "limit").await;
    assert_problem(get("/v1/nodes?after=Bad_Id").await.expect("get"), StatusCode::BAD_REQUEST, "after").await;
    assert_problem(get("/v1/nodes?colour=red").await.expect("get"), StatusCode::BAD_REQUEST, "colour").await;
    assert_problem(get("/v1/views/site/Bad_Id").await.expect("get"), StatusCode::BAD_REQUEST, "site id")
        .await;
    assert_problem(get("/v1/views/site/nowhere").await.expect("get"), StatusCode::NOT_FOUND, "nowhere").await;

    let openapi = site.get("/v1/openapi.json").await;
    for path in [
        "/v1/nodes",
        "/v1/nodes/{id}/heartbeat",
        "/v1/effective",
        "/v1/drift",
        "/v1/views/global",
        "/v1/views/site/{id}",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} is in the OpenAPI document");
    }
    site.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A federation in this process (the demo's seven sites), as crates/cli/tests/it/fed_harness.rs
// starts it.

const DEMO_SITES: [&str; 7] = [
    "global-control",
    "region-a-control",
    "edge-zone-a1",
    "edge-zone-a2",
    "region-b-control",
    "edge-zone-b1",
    "edge-zone-c",
];

struct Federation {
    http: reqwest::Client,
    urls: Vec<String>,
    sites: Vec<RunningSite>,
    _dir: tempfile::TempDir,
}

impl Federation {
    async fn start(status_interval: Duration) -> Federation {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = Vec::new();
        for _ in DEMO_SITES {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect();
        let demo = FederationConfig::embedded_demo();
        // Lay the demo out from port 0, then point each site at its listener's real port.
        let mut configs = demo.site_configs_for_run(1, dir.path()).expect("the demo laid out");
        let url_of = |id: &model::SiteId| {
            let i = DEMO_SITES.iter().position(|s| *s == id.as_str()).expect("a demo site");
            format!("http://127.0.0.1:{}", ports[i])
        };
        for config in &mut configs {
            config.status_interval = status_interval.into();
            for (peer, url) in config.peers.iter_mut() {
                *url = url_of(peer);
            }
        }
        let mut sites = Vec::new();
        let mut urls = Vec::new();
        for (config, listener) in configs.iter().zip(listeners) {
            assert_eq!(config.site_id().as_str(), DEMO_SITES[sites.len()]);
            let site = RunningSite::start(config, dir.path(), listener, Arc::new(SystemClock))
                .await
                .unwrap_or_else(|e| panic!("{} starts: {e}", config.site_id()));
            urls.push(site.url.clone());
            sites.push(site);
        }
        Federation { http: reqwest::Client::new(), urls, sites, _dir: dir }
    }

    fn url(&self, id: &str) -> &str {
        &self.urls[DEMO_SITES.iter().position(|s| *s == id).expect("a demo site")]
    }

    async fn get(&self, site: &str, path: &str) -> Option<Value> {
        let response = self.http.get(format!("{}{path}", self.url(site))).send().await.ok()?;
        response.status().is_success().then_some(())?;
        response.json().await.ok()
    }

    async fn beat(&self, site: &str, node: &str) {
        let response = self
            .http
            .post(format!("{}/v1/nodes/{node}/heartbeat", self.url(site)))
            .json(&json!({"software_version": "1.0.0", "health": "healthy", "interval_seconds": 5}))
            .send()
            .await
            .expect("heartbeat");
        assert_eq!(response.status(), StatusCode::OK);
    }

    async fn signal(&self, site: &str, peer: &str, state: &str) {
        let response = self
            .http
            .post(format!("{}/v1/links/{peer}/signal", self.url(site)))
            .json(&json!({"state": state}))
            .send()
            .await
            .expect("signal");
        assert!(response.status().is_success(), "signal {state} at {site} for {peer}");
    }

    async fn stop(self) {
        for site in self.sites {
            site.stop().await.expect("site stops");
        }
    }
}

fn item<'a>(items: &'a Value, site: &str) -> Option<&'a Value> {
    items.as_array()?.iter().find(|i| i["site"] == site)
}

#[tokio::test]
async fn views_roll_zones_up_and_a_cut_zone_turns_autonomous_with_growing_debt() {
    let fed = Federation::start(Duration::from_secs(1)).await;
    for i in 1..=3 {
        fed.beat("edge-zone-a1", &format!("a1-node-{i:02}")).await;
    }
    for i in 1..=2 {
        fed.beat("edge-zone-a2", &format!("a2-node-{i:02}")).await;
    }
    fed.beat("edge-zone-c", "c-node-01").await;

    // Global sees region A's totals rolled up from its zones, with the figures' age.
    let view = {
        let fed = &fed;
        eventually(Duration::from_secs(60), "region A with 5 nodes in the global view", || async move {
            let view = fed.get("global-control", "/v1/views/global").await?;
            let region = item(&view["items"], "region-a-control")?;
            let c = item(&view["items"], "edge-zone-c")?;
            let ok =
                region["nodes"]["total"] == 5 && region["status"] == "Healthy" && c["nodes"]["total"] == 1;
            ok.then_some(view)
        })
        .await
    };
    assert_eq!(view["title"], "Global Fleet View");
    assert_eq!(view["site"], "global-control");
    let names: Vec<&str> =
        view["items"].as_array().expect("items").iter().map(|i| i["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["Region A", "Region B", "Edge Zone C"]);
    let region = item(&view["items"], "region-a-control").expect("region a");
    assert_eq!(region["authority"], "Regional");
    assert_eq!(region["nodes"], json!({"total": 5, "live": 5, "delayed": 0, "offline": 0}));
    assert!(region["age_seconds"].as_f64().expect("age") >= 0.0);
    assert_eq!(region["sync_debt_seconds"], Value::Null);
    let zones: Vec<(&str, u64)> = region["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|z| (z["name"].as_str().expect("name"), z["nodes"]["total"].as_u64().expect("total")))
        .collect();
    assert_eq!(zones, [("Edge Zone A1", 3), ("Edge Zone A2", 2)]);
    let c = item(&view["items"], "edge-zone-c").expect("zone c");
    assert_eq!((c["status"].as_str(), c["authority"].as_str()), (Some("Live"), Some("Autonomous")));

    // The region view, at the global site.
    let region_view =
        fed.get("global-control", "/v1/views/site/region-a-control").await.expect("region view");
    assert_eq!(region_view["title"], "Region A View");
    let statuses: Vec<&str> = region_view["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["Live", "Live"]);

    // Cut edge-zone-c off: global shows it autonomous, with the age of its last figures as debt.
    fed.signal("global-control", "edge-zone-c", "down").await;
    fed.signal("edge-zone-c", "global-control", "down").await;
    let first_debt = {
        let fed = &fed;
        eventually(Duration::from_secs(30), "edge-zone-c autonomous", || async move {
            let view = fed.get("global-control", "/v1/views/global").await?;
            let c = item(&view["items"], "edge-zone-c")?.clone();
            (c["status"] == "Autonomous").then(|| c["sync_debt_seconds"].as_f64()).flatten()
        })
        .await
    };
    let fed_ref = &fed;
    eventually(Duration::from_secs(30), "edge-zone-c's sync debt growing", || async move {
        let view = fed_ref.get("global-control", "/v1/views/global").await?;
        let c = item(&view["items"], "edge-zone-c")?;
        let debt = c["sync_debt_seconds"].as_f64()?;
        let age = c["age_seconds"].as_f64()?;
        (c["status"] == "Autonomous" && debt > first_debt + 1.0 && (debt - age).abs() < 0.001).then_some(())
    })
    .await;
    fed.stop().await;
}
