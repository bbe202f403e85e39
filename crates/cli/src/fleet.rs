//! `souverix nodes`, `souverix drift` and `souverix view`: the fleet as a site sees it
//! (docs/fleet.md), and the design's box-drawing views.

use anyhow::Context;
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::commands::human_age;
use crate::output::{Format, Table, print};

/// `GET /v1/nodes`: one page of node records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodePage {
    pub items: Vec<NodeRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: String,
    pub status: String,
    #[serde(default)]
    pub software_version: String,
    #[serde(default)]
    pub health: String,
    #[serde(default)]
    pub last_heartbeat: String,
    #[serde(default)]
    pub last_heartbeat_age_seconds: f64,
    #[serde(default)]
    pub interval_seconds: u64,
    #[serde(default)]
    pub applied: std::collections::BTreeMap<String, String>,
}

/// `GET /v1/drift`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftReport {
    pub site: String,
    pub count: u64,
    pub objects: Vec<DriftObject>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftObject {
    pub object: String,
    pub desired: String,
    pub nodes: Vec<DriftNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftNode {
    pub node: String,
    pub applied: Option<String>,
}

/// `GET /v1/views/global` and `/v1/views/site/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    pub title: String,
    #[serde(default)]
    pub site: String,
    #[serde(default)]
    pub generated_ms: u64,
    pub items: Vec<ViewItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewItem {
    pub site: String,
    pub name: String,
    #[serde(default)]
    pub level: String,
    pub authority: String,
    pub nodes: NodeCounts,
    pub status: String,
    #[serde(default)]
    pub drift: u64,
    #[serde(default)]
    pub open_conflicts: u64,
    #[serde(default)]
    pub sync_debt_seconds: Option<f64>,
    #[serde(default)]
    pub age_seconds: Option<f64>,
    #[serde(default)]
    pub observed_ms: Option<u64>,
    #[serde(default)]
    pub autonomy: String,
    #[serde(default)]
    pub isolated: bool,
    #[serde(default)]
    pub children: Vec<ViewItem>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounts {
    pub total: u64,
    #[serde(default)]
    pub live: u64,
    #[serde(default)]
    pub delayed: u64,
    #[serde(default)]
    pub offline: u64,
}

/// Which view a layout is for: they differ in which lines they show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    /// `Global Fleet View`: Drift always on a site with children, Sync Debt when set.
    Global,
    /// `<Site> View`: Drift and Sync Debt only when not zero/unset.
    Site,
}

/// The lines shown under one item, in the design's order.
fn item_lines(item: &ViewItem, kind: ViewKind) -> Vec<String> {
    let mut lines = vec![format!("Nodes: {}", item.nodes.total), format!("Status: {}", item.status)];
    // The design's global view shows `Drift: 0 objects` for a region but no Drift line for the
    // autonomous zone C: an item with children always shows its drift there, a zone (like in
    // the site view) only when it has some.
    let show_drift = match kind {
        ViewKind::Global => {
            let zone = item.children.is_empty() && matches!(item.level.as_str(), "local" | "autonomous");
            !zone || item.drift > 0
        }
        ViewKind::Site => item.drift > 0,
    };
    if show_drift {
        lines.push(format!("Drift: {} objects", item.drift));
    }
    if let Some(debt) = item.sync_debt_seconds {
        lines.push(format!("Sync Debt: {}", human_age(debt)));
    }
    lines.push(format!("Authority: {}", item.authority));
    lines
}

/// The view as the design draws it: the title, then each item with its lines as a tree.
pub fn render(view: &View, kind: ViewKind) -> String {
    let mut out = format!("{}\n", view.title);
    for (i, item) in view.items.iter().enumerate() {
        let last_item = i + 1 == view.items.len();
        let (branch, indent) = if last_item { ("└── ", "    ") } else { ("├── ", "│   ") };
        out.push_str(&format!("{branch}{}\n", item.name));
        let lines = item_lines(item, kind);
        for (j, line) in lines.iter().enumerate() {
            let leaf = if j + 1 == lines.len() { "└── " } else { "├── " };
            out.push_str(&format!("{indent}{leaf}{line}\n"));
        }
    }
    out
}

/// `-o text|json` of `souverix view`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ViewFormat {
    Text,
    Json,
}

pub async fn view(client: &Client, site: Option<&str>, output: ViewFormat) -> anyhow::Result<()> {
    let (value, kind) = match site {
        Some(id) => {
            model::SiteId::new(id).map_err(|e| anyhow::anyhow!("--site: {e}"))?;
            (client.get_value(&format!("/v1/views/site/{id}")).await?, ViewKind::Site)
        }
        None => (client.get_value("/v1/views/global").await?, ViewKind::Global),
    };
    match output {
        ViewFormat::Json => println!("{}", serde_json::to_string_pretty(&value)?),
        ViewFormat::Text => {
            let view: View = serde_json::from_value(value).context("the site's answer is not a view")?;
            print!("{}", render(&view, kind));
        }
    }
    Ok(())
}

/// Reads node records page by page, at most `limit` of them.
pub async fn nodes(
    client: &Client,
    status: Option<String>,
    limit: Option<usize>,
    output: Format,
) -> anyhow::Result<()> {
    const PAGE: usize = 1000;
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let wanted = limit.map(|l| l.saturating_sub(items.len())).unwrap_or(PAGE).min(PAGE);
        if wanted == 0 {
            break;
        }
        let mut query = vec![("limit", wanted.to_string())];
        if let Some(status) = &status {
            query.push(("status", status.clone()));
        }
        if let Some(after) = &after {
            query.push(("after", after.clone()));
        }
        let page: NodePage = client.get_json("/v1/nodes", &query).await?;
        let got = page.items.len();
        items.extend(page.items);
        match page.next {
            Some(next) if got > 0 => after = Some(next),
            _ => break,
        }
    }
    print(output, &items, || {
        let mut t = Table::new(
            vec!["NODE", "STATUS", "HEALTH", "VERSION", "LAST HEARTBEAT", "INTERVAL", "APPLIED"],
            "no nodes",
        );
        for n in &items {
            t.row(vec![
                n.node.clone(),
                n.status.clone(),
                n.health.clone(),
                n.software_version.clone(),
                format!("{} ago", human_age(n.last_heartbeat_age_seconds)),
                format!("{}s", n.interval_seconds),
                n.applied.len().to_string(),
            ]);
        }
        t
    })
}

/// `souverix drift [--site S]`: the drift of the answering site, or of `site` when it is the
/// answering site or one of its direct neighbours (whose URL the answering site's links name).
pub async fn drift(client: &Client, site: Option<&str>, output: Format) -> anyhow::Result<()> {
    let report: DriftReport = match site {
        None => client.get_json("/v1/drift", &[]).await?,
        Some(id) => {
            let here = client.site().await?;
            if here.id == id {
                client.get_json("/v1/drift", &[]).await?
            } else {
                let status = client.sync_status(false).await?;
                let url = status.links.iter().find(|l| l.peer == id).and_then(|l| l.url.clone()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "`{id}` is neither the site at {} ({}) nor a neighbour it has an address for; pass --server <the URL of {id}>",
                        client.base(),
                        here.id
                    )
                })?;
                Client::new(&url, client.author().to_owned())?.get_json("/v1/drift", &[]).await?
            }
        }
    };
    print(output, &report, || {
        let mut t = Table::new(vec!["OBJECT", "DESIRED", "NODE", "APPLIED"], "no drift");
        for o in &report.objects {
            for n in &o.nodes {
                t.row(vec![
                    o.object.clone(),
                    o.desired.clone(),
                    n.node.clone(),
                    n.applied.clone().unwrap_or_else(|| "(missing)".to_owned()),
                ]);
            }
        }
        t
    })?;
    if output == Format::Table {
        println!("{}: {} objects drifting", report.site, report.count);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn item(
        name: &str,
        level: &str,
        authority: &str,
        nodes: u64,
        status: &str,
        drift: u64,
        debt: Option<f64>,
    ) -> serde_json::Value {
        json!({
            "site": name.to_lowercase().replace(' ', "-"), "name": name, "level": level, "authority": authority,
            "nodes": {"total": nodes, "live": nodes, "delayed": 0, "offline": 0},
            "status": status, "drift": drift, "open_conflicts": 0, "sync_debt_seconds": debt,
            "age_seconds": 1.0, "observed_ms": 1_764_000_000_123u64, "autonomy": "full", "isolated": false,
            "children": []
        })
    }

    #[test]
    fn the_global_view_reads_like_the_seed() {
        let zone = item("Edge Zone A1", "local", "Local", 25, "Live", 0, None);
        let mut region_a = item("Region A", "regional", "Regional", 50, "Healthy", 2, None);
        region_a["children"] = json!([zone]);
        let mut region_b = item("Region B", "regional", "Regional", 40, "Healthy", 0, None);
        region_b["children"] = json!([item("Edge Zone B1", "local", "Local", 40, "Live", 0, None)]);
        let zone_c = item("Edge Zone C", "autonomous", "Autonomous", 15, "Autonomous", 0, Some(13_500.0));
        let view: View = serde_json::from_value(json!({
            "title": "Global Fleet View", "site": "global-control", "generated_ms": 1_764_000_000_999u64,
            "items": [region_a, region_b, zone_c]
        }))
        .expect("a view");
        assert_eq!(
            render(&view, ViewKind::Global),
            "\
Global Fleet View
├── Region A
│   ├── Nodes: 50
│   ├── Status: Healthy
│   ├── Drift: 2 objects
│   └── Authority: Regional
├── Region B
│   ├── Nodes: 40
│   ├── Status: Healthy
│   ├── Drift: 0 objects
│   └── Authority: Regional
└── Edge Zone C
    ├── Nodes: 15
    ├── Status: Autonomous
    ├── Sync Debt: 3.75h
    └── Authority: Autonomous
"
        );
    }

    #[test]
    fn the_region_view_reads_like_the_seed() {
        let a1 = item("Edge Zone A1", "local", "Local", 25, "Live", 0, None);
        let a2 = item("Edge Zone A2", "local", "Local", 25, "Live (23/25), Delayed (2/25)", 0, None);
        let view: View = serde_json::from_value(
            json!({"title": "Region A View", "site": "region-a-control", "items": [a1, a2]}),
        )
        .expect("a view");
        assert_eq!(
            render(&view, ViewKind::Site),
            "\
Region A View
├── Edge Zone A1
│   ├── Nodes: 25
│   ├── Status: Live
│   └── Authority: Local
└── Edge Zone A2
    ├── Nodes: 25
    ├── Status: Live (23/25), Delayed (2/25)
    └── Authority: Local
"
        );
    }

    #[test]
    fn drift_and_debt_appear_when_a_zone_has_them() {
        let a2 = item("Edge Zone A2", "local", "Local", 25, "Live", 3, Some(750.0));
        let view: View =
            serde_json::from_value(json!({"title": "Region A View", "items": [a2]})).expect("a view");
        assert_eq!(
            render(&view, ViewKind::Site),
            "Region A View\n└── Edge Zone A2\n    ├── Nodes: 25\n    ├── Status: Live\n    ├── Drift: 3 objects\n    ├── Sync Debt: 12.5m\n    └── Authority: Local\n"
        );
        // In the global view a zone straight under global shows its drift once it has some.
        let c = item("Edge Zone C", "autonomous", "Autonomous", 15, "Live", 1, None);
        let view: View =
            serde_json::from_value(json!({"title": "Global Fleet View", "items": [c]})).expect("a view");
        assert!(render(&view, ViewKind::Global).contains("    ├── Drift: 1 objects\n"));
    }
}
