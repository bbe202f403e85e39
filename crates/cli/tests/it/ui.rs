//! The web page in a real browser: Debian's headless `chromium` driven through `chromedriver`
//! (WebDriver, with `fantoccini`) against the demo federation in this process. Each test saves
//! a screenshot under `target/ui-screenshots/`.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::fed_harness::{Federation, eventually};

const DEADLINE: Duration = Duration::from_secs(60);

/// `chromedriver` on a free loopback port and one headless Chromium session with a fresh
/// profile. [`Browser::close`] ends both; dropping it kills the driver.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("addr")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (apt-get install chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        let status = reqwest::Client::new();
        eventually(DEADLINE, "chromedriver to answer", || async {
            match status.get(format!("{url}/status")).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        let profile = tempfile::tempdir().expect("a profile directory");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1500,1300",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities
            .insert("goog:chromeOptions".to_owned(), json!({"binary": "/usr/bin/chromium", "args": args}));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Browser { client, driver, _profile: profile }
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    /// Runs `script` (a function body that returns a value) in the page.
    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until `check` accepts what it returns, or fails after the deadline.
    async fn wait(&self, what: &str, script: &str, check: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let value = self.js(script).await;
            if check(&value) {
                return value;
            }
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}; last seen: {value}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
    }

    /// Clicks the element `css` selects. The page re-renders as data arrives, so an element
    /// found may be replaced before the click lands: find it again until the deadline.
    async fn click(&self, css: &str) {
        let start = Instant::now();
        loop {
            let error = match self.client.find(Locator::Css(css)).await {
                Ok(element) => match element.click().await {
                    Ok(()) => return,
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(start.elapsed() < DEADLINE, "could not click `{css}`: {error}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Runs `body` with a browser; the browser and the federation are closed whether it passes or
/// panics.
async fn with_browser<F, Fut>(fed: Federation, body: F)
where
    F: FnOnce(std::sync::Arc<Federation>, std::sync::Arc<Browser>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let browser = std::sync::Arc::new(Browser::start().await);
    let fed = std::sync::Arc::new(fed);
    let outcome = tokio::spawn(body(fed.clone(), browser.clone())).await;
    let browser = std::sync::Arc::try_unwrap(browser).ok().expect("the test let go of the browser");
    browser.close().await;
    let fed = std::sync::Arc::try_unwrap(fed).ok().expect("the test let go of the federation");
    fed.stop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The demo federation with summaries every second and nodes that stay live for the test.
async fn federation() -> Federation {
    let fed = Federation::start_with(|config| {
        config.status_interval = config::Duration::from_secs(1);
        config.nodes.delayed_after = config::Duration::from_secs(600);
        config.nodes.offline_after = config::Duration::from_secs(1200);
    })
    .await;
    fed.wait_connected(DEADLINE).await;
    fed
}

/// `count` nodes heartbeat once at `zone`.
async fn nodes(fed: &Federation, zone: &str, prefix: &str, count: usize) {
    let url = fed.url(zone);
    for i in 1..=count {
        let beat = json!({"software_version": "1.4.2", "health": "healthy", "interval_seconds": 5});
        fed.api.post_json(&url, &format!("/v1/nodes/{prefix}-node-{i:02}/heartbeat"), &beat).await;
    }
}

/// The tree's rows in the DOM: site, name, level in the tree, authority letter, node total.
const ROWS: &str = r#"
    return [...document.querySelectorAll('#tree .row[data-site]')]
      .sort((a, b) => a.dataset.index - b.dataset.index)
      .map(r => [r.dataset.site, r.querySelector('.name').textContent, Number(r.getAttribute('aria-level')),
                 r.querySelector('.authority').dataset.authority,
                 r.querySelector('.nodes').title, r.getAttribute('aria-expanded')]);
"#;

fn sites(rows: &Value) -> Vec<String> {
    rows.as_array()
        .map(|r| r.iter().map(|row| row[0].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_seeds_hierarchy_and_collapsing_a_region_hides_its_zones() {
    let fed = federation().await;
    nodes(&fed, "edge-zone-a1", "a1", 3).await;
    nodes(&fed, "edge-zone-a2", "a2", 2).await;
    nodes(&fed, "edge-zone-b1", "b1", 4).await;
    nodes(&fed, "edge-zone-c", "c", 1).await;
    with_browser(fed, |fed, browser| async move {
        let global = fed.url("global-control");
        browser.client.goto(&global).await.expect("open the page");
        let expected = json!([
            ["region-a-control", "Region A", 1, "R", "5 nodes", "true"],
            ["edge-zone-a1", "Edge Zone A1", 2, "L", "3 nodes", "false"],
            ["edge-zone-a2", "Edge Zone A2", 2, "L", "2 nodes", "false"],
            ["region-b-control", "Region B", 1, "R", "4 nodes", "true"],
            ["edge-zone-b1", "Edge Zone B1", 2, "L", "4 nodes", "false"],
            ["edge-zone-c", "Edge Zone C", 1, "A", "1 nodes", "false"],
        ]);
        browser.wait("the seed's hierarchy with its node counts", ROWS, |rows| *rows == expected).await;
        let title = browser.js("return document.getElementById('title').textContent").await;
        assert_eq!(title, "Global Fleet View");
        browser.screenshot("hierarchy").await;

        // Collapsing Region A takes its zones out of the page; Region B's stay.
        browser.click(r#"#tree .row[data-site="region-a-control"] .toggle"#).await;
        let rows = browser
            .wait("Region A's zones to be hidden", ROWS, |rows| {
                !sites(rows).contains(&"edge-zone-a1".to_owned())
            })
            .await;
        assert_eq!(
            sites(&rows),
            ["region-a-control", "region-b-control", "edge-zone-b1", "edge-zone-c"],
            "{rows}"
        );
        assert_eq!(rows[0][5], "false", "Region A says it is collapsed: {rows}");
        browser.screenshot("region-a-collapsed").await;

        // The keyboard: Enter expands the active row (Region A) again, ArrowDown moves to A1.
        let tree = browser.client.find(Locator::Id("tree")).await.expect("the tree");
        tree.send_keys("\u{E007}").await.expect("Enter");
        browser
            .wait("Enter to expand Region A", ROWS, |rows| sites(rows).contains(&"edge-zone-a1".to_owned()))
            .await;
        tree.send_keys("\u{E015}").await.expect("ArrowDown");
        let active = "return document.querySelector('#tree .row.active')?.dataset.site ?? null";
        browser.wait("ArrowDown to move to Edge Zone A1", active, |site| site == "edge-zone-a1").await;

        // Filters live in the URL: a page opened with one shows only what matches.
        browser.client.goto(&format!("{global}/?level=autonomous")).await.expect("open the filtered page");
        browser.wait("only the autonomous zone", ROWS, |rows| sites(rows) == ["edge-zone-c"]).await;
        let level = browser.js("return document.querySelector('#filters [name=level]').value").await;
        assert_eq!(level, "autonomous");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_a_link_turns_its_arrow_disconnected_and_its_debt_grows_without_a_reload() {
    let fed = federation().await;
    with_browser(fed, |fed, browser| async move {
        let global = fed.url("global-control");
        browser.client.goto(&global).await.expect("open the page");
        let arrow = r#"
            const g = document.querySelector('#topology .link[data-link="global-control|edge-zone-c"]');
            const li = document.querySelector('#links li[data-link="global-control|edge-zone-c"]');
            return g ? [g.dataset.state, li.textContent, window.__sameDocument === true,
                        document.querySelector('#links li').dataset.link] : null;
        "#;
        browser.wait("a connected arrow to Edge Zone C", arrow, |v| v[0] == "connected").await;
        browser.wait("the whole tree", ROWS, |rows| sites(rows).len() == 6).await;
        browser.js("window.__sameDocument = true; return null").await;

        fed.api.signal(&global, "edge-zone-c", "down").await;
        fed.api.put_policy(&global, "global", "baseline", json!({"tls": "required"})).await;
        let cut = browser
            .wait("the arrow to turn disconnected, first in the list, with debt", arrow, |v| {
                v[0] == "disconnected"
                    && v[2] == true
                    && v[3] == "global-control|edge-zone-c"
                    && v[1].as_str().is_some_and(|t| t.contains("behind"))
            })
            .await;
        let debt = |v: &Value| -> f64 {
            let text = v[1].as_str().unwrap_or("");
            let before = text.split(" behind").next().unwrap_or("");
            let figure = before.rsplit(' ').next().unwrap_or("");
            figure.trim_end_matches('s').parse().unwrap_or(f64::NAN)
        };
        let first = debt(&cut);
        assert!(first.is_finite(), "a debt in seconds: {cut}");
        browser.wait("the debt to grow", arrow, |v| debt(v) > first && v[2] == true).await;
        browser.screenshot("link-cut").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_appears_in_the_inbox_and_is_resolved_from_the_page() {
    let fed = Federation::start_with(|config| {
        config.status_interval = config::Duration::from_secs(1);
        if config.site_id().as_str() == "region-a-control" {
            config.conflicts.strategy = config::ConflictStrategy::Manual;
        }
    })
    .await;
    let (regional, local) = crate::authority::conflicting_writes(&fed).await;
    with_browser(fed, |fed, browser| async move {
        let global = fed.url("global-control");
        browser.client.goto(&global).await.expect("open the page");
        let card = r#"
            const c = document.querySelector('#conflicts [data-conflict]');
            return c ? [c.dataset.status, c.querySelector('header strong').textContent,
                        [...c.querySelectorAll('.side')].map(s => [s.dataset.version, s.querySelector('pre').textContent]),
                        c.querySelector('.outcome').textContent, !!c.querySelector('.ack'), c.dataset.conflict]
                     : document.getElementById('conflicts').textContent;
        "#;
        let shown = browser
            .wait("the open conflict with both sides", card, |v| {
                v[0] == "open" && v[2].as_array().is_some_and(|s| s.len() == 2 && s[0][1].as_str().is_some_and(|t| t.contains("max_pods")))
            })
            .await;
        assert_eq!(shown[1], "Policy/region-a/limits", "{shown}");
        let versions: Vec<&str> = shown[2].as_array().expect("sides").iter().map(|s| s[0].as_str().expect("version")).collect();
        assert!(versions.contains(&regional.as_str()) && versions.contains(&local.as_str()), "{shown}");
        assert!(shown[4] == true, "an open conflict offers Acknowledge: {shown}");
        browser.screenshot("conflict-inbox").await;

        browser.click("#conflicts .ack").await;
        browser.wait("the conflict to be acknowledged", card, |v| v[0] == "acknowledged").await;

        browser.click(&format!(r#"#conflicts button[data-pick="{regional}"]"#)).await;
        browser
            .wait("the inbox to be empty", card, |v| v.as_str().is_some_and(|t| t.contains("No conflicts")))
            .await;
        let id = shown[5].as_str().expect("an id");
        let record = fed.api.get_json(&global, &format!("/v1/conflicts/{id}")).await;
        assert_eq!(record["conflict"]["status"], "resolved", "{record}");
        assert_eq!(record["conflict"]["acknowledgedBy"], "web-ui", "{record}");
        let doc = fed.api.get_policy(&global, "region-a", "limits").await.expect("the policy");
        assert_eq!(doc["spec"], json!({"max_pods": 20}), "the regional side was picked: {doc}");
        browser.screenshot("conflict-resolved").await;
    })
    .await;
}
