//! The web page in a real browser: Debian's headless `chromium` driven through `chromedriver`
//! (WebDriver, with `fantoccini`) against the demo federation in this process. Each test saves
//! a screenshot under `target/ui-screenshots/`.

use std::future::Future;
use std::sync::Arc;

use fantoccini::Locator;
use serde_json::{Value, json};

use crate::browser::{Browser, DEADLINE};
use crate::fed_harness::{Federation, ProcessFederation, eventually};

/// Runs `body` with a browser and `fixture` (which the body owns, and drops if it panics);
/// the browser is closed whether the body passes or panics. Returns the body's outcome.
async fn in_browser<T, F, Fut>(fixture: T, body: F) -> Result<(), tokio::task::JoinError>
where
    F: FnOnce(T, Arc<Browser>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let browser = Arc::new(Browser::start().await);
    let outcome = tokio::spawn(body(fixture, browser.clone())).await;
    let browser = Arc::try_unwrap(browser).ok().expect("the test let go of the browser");
    browser.close().await;
    outcome
}

/// Runs `body` with a browser; the browser and the federation are closed whether it passes or
/// panics.
async fn with_browser<F, Fut>(fed: Federation, body: F)
where
    F: FnOnce(Arc<Federation>, Arc<Browser>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fed = Arc::new(fed);
    let outcome = in_browser(fed.clone(), body).await;
    let fed = Arc::try_unwrap(fed).ok().expect("the test let go of the federation");
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

/// What the topology and the tree say under the overlay: per site, its classes in the SVG, and
/// the markers on its tree row.
const OVERLAY: &str = r#"
    const sites = {};
    for (const g of document.querySelectorAll('#topology .site')) sites[g.dataset.site] = [g.getAttribute('class'), ''];
    for (const r of document.querySelectorAll('#tree .row[data-site]')) {
      const marks = [...r.querySelectorAll('.mor, .held-tag, .override-tag')].map(m => m.textContent).join(' ');
      if (sites[r.dataset.site]) sites[r.dataset.site][1] = marks;
    }
    const box = document.getElementById('overlay');
    return [sites, box.hidden ? null : box.textContent, location.search];
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_domains_are_drawn_and_a_policy_overlay_marks_its_master_holders_and_overrides() {
    let fed = federation().await;
    let (global, region_b, b1) =
        (fed.url("global-control"), fed.url("region-b-control"), fed.url("edge-zone-b1"));
    // Region B writes a policy of its scope; its zone, once it holds it, overrides it locally.
    fed.api.put_policy(&region_b, "region-b", "ingress", json!({"max_rps": 100})).await;
    eventually(DEADLINE, "edge-zone-b1 to hold Region B's policy", || async {
        fed.api.get_policy(&b1, "region-b", "ingress").await.map(|_| ()).ok_or_else(|| "not yet".to_owned())
    })
    .await;
    fed.api.put_policy(&b1, "region-b", "ingress", json!({"max_rps": 500})).await;
    eventually(DEADLINE, "global to hold both versions", || async {
        let history = fed.api.get_json(&global, "/v1/objects/Policy/region-b/ingress/history").await;
        let n = history["items"].as_array().map_or(0, Vec::len);
        if n == 2 { Ok(()) } else { Err(format!("{n} versions")) }
    })
    .await;
    with_browser(fed, |fed, browser| async move {
        let global = fed.url("global-control");
        browser.client.goto(&global).await.expect("open the page");
        let domains = r#"
            return Object.fromEntries([...document.querySelectorAll('#topology .trust-domain')]
              .map(g => [g.dataset.trustDomain, g.dataset.sites.split(' ').sort()]));
        "#;
        let expected = json!({
            "global": ["global-control"],
            "region-a": ["edge-zone-a1", "edge-zone-a2", "region-a-control"],
            "region-b": ["region-b-control"],
            "edge-zone-b1": ["edge-zone-b1"],
            "edge-zone-c": ["edge-zone-c"],
        });
        browser.wait("the demo's trust domains around their sites", domains, |d| *d == expected).await;
        browser.js("window.__sameDocument = true; return null").await;

        // Choosing the policy in the filter bar overlays it and keeps it in the URL.
        let select = browser.client.find(Locator::Id("policy")).await.expect("the policy selector");
        browser
            .wait(
                "the policy to be offered",
                "return [...document.querySelectorAll('#policy option')].map(o => o.value)",
                |v| v.as_array().is_some_and(|o| o.iter().any(|x| x == "Policy/region-b/ingress")),
            )
            .await;
        select.select_by_value("Policy/region-b/ingress").await.expect("select the policy");
        let shown = browser
            .wait("the overlay in the topology and on every row of the tree", OVERLAY, |v| {
                // The tree and the topology read different endpoints: wait until both show
                // edge-zone-b1 (its summary travels up on an opportunistic link).
                v[0]["edge-zone-b1"][0].as_str().is_some_and(|c| c.contains("override"))
                    && v[0]["edge-zone-b1"][1].as_str().is_some_and(|m| !m.is_empty())
            })
            .await;
        let class = |site: &str| shown[0][site][0].as_str().unwrap_or("").to_owned();
        let marks = |site: &str| shown[0][site][1].as_str().unwrap_or("").to_owned();
        assert!(
            class("region-b-control").contains("master") && class("region-b-control").contains("held"),
            "{shown}"
        );
        assert_eq!(marks("region-b-control"), "★ M", "the master of record's row is marked: {shown}");
        for held in ["global-control", "edge-zone-b1"] {
            assert!(
                class(held).contains("held") && !class(held).contains("not-held"),
                "{held} holds it: {shown}"
            );
        }
        assert_eq!(marks("edge-zone-b1"), "● held ↑ override", "the override from below stands out: {shown}");
        for other in ["region-a-control", "edge-zone-a1", "edge-zone-a2", "edge-zone-c"] {
            assert!(class(other).contains("not-held"), "{other} does not hold Region B's scope: {shown}");
            assert_eq!(marks(other), "", "{other} carries no marker: {shown}");
        }
        let text = shown[1].as_str().expect("the overlay's summary");
        assert!(text.contains("master of record ★ region-b-control"), "{text}");
        assert!(text.contains("edge-zone-b1 (override from below, 1 version)"), "{text}");
        assert!(text.contains("region-b-control (own, 1 version)"), "{text}");
        assert_eq!(shown[2], "?policy=Policy%2Fregion-b%2Fingress", "the overlay is kept in the URL");
        assert_eq!(browser.js("return window.__sameDocument === true").await, true, "no reload");
        browser.screenshot("policy-overlay").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_and_resumes_after_its_site_is_killed_and_restarted() {
    const REGION_A: &str = "region-a-control";
    let mut fed = ProcessFederation::new();
    fed.start(REGION_A);
    let outcome = in_browser(fed, |mut fed, browser| async move {
        let url = fed.url(REGION_A);
        browser.client.goto(&url).await.expect("open the page");
        let live = "return [document.getElementById('live').dataset.state, window.__sameDocument === true]";
        browser.wait("the page to be live", live, |v| v[0] == "live").await;
        fed.api.put_policy(&url, "region-a", "before", json!({"n": 1})).await;
        let options = "return [...document.querySelectorAll('#policy option')].map(o => o.value)";
        let offered =
            |name: &'static str| move |v: &Value| v.as_array().is_some_and(|o| o.iter().any(|x| x == name));
        browser.wait("the first policy to arrive live", options, offered("Policy/region-a/before")).await;
        browser.js("window.__sameDocument = true; return null").await;

        fed.kill_9(REGION_A);
        browser.wait("the page to say it is reconnecting", live, |v| v[0] == "reconnecting").await;
        browser.screenshot("site-restarting").await;
        fed.start(REGION_A);
        browser
            .wait("the page to be live again without a reload", live, |v| v[0] == "live" && v[1] == true)
            .await;

        // A write after the restart arrives through the resumed stream.
        fed.api.put_policy(&url, "region-a", "after", json!({"n": 2})).await;
        browser
            .wait("the write after the restart to arrive", options, offered("Policy/region-a/after"))
            .await;
        assert_eq!(browser.js("return window.__sameDocument === true").await, true, "no reload");
        browser.screenshot("site-restarted").await;
    })
    .await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
