//! The fleet's shapes and rules (docs/fleet.md): node status from heartbeats, the `SiteStatus`
//! summary a site publishes, and the views computed from the summaries a site holds. Pure: time
//! comes in as an argument.

use std::collections::BTreeMap;

use model::{Autonomy, Level};
use replication::{Direction, LinkState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How many status intervals old a summary may be before a view counts it as stale.
pub const STALE_INTERVALS: u64 = 3;

/// The status of a managed node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum NodeStatus {
    Live,
    Delayed,
    Offline,
}

impl NodeStatus {
    pub const ALL: [NodeStatus; 3] = [NodeStatus::Live, NodeStatus::Delayed, NodeStatus::Offline];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Live => "Live",
            NodeStatus::Delayed => "Delayed",
            NodeStatus::Offline => "Offline",
        }
    }

    /// Parses `Live`, `Delayed` or `Offline` in any letter case.
    pub fn parse(s: &str) -> Option<NodeStatus> {
        NodeStatus::ALL.into_iter().find(|n| n.as_str().eq_ignore_ascii_case(s))
    }
}

/// When a node counts as delayed or offline, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub delayed_after_ms: u64,
    pub offline_after_ms: u64,
}

/// A node's status at `now_ms` from its last two heartbeats: `Offline` after `offline_after`
/// without one; `Delayed` after `delayed_after` without one, or when the last came more than
/// `delayed_after` after the one before (a node that keeps missing its beat stays delayed);
/// `Live` otherwise.
pub fn node_status(last_ms: u64, previous_ms: Option<u64>, now_ms: u64, t: Thresholds) -> NodeStatus {
    let silent = now_ms.saturating_sub(last_ms);
    let gap = previous_ms.map_or(0, |p| last_ms.saturating_sub(p));
    if silent > t.offline_after_ms {
        NodeStatus::Offline
    } else if silent > t.delayed_after_ms || gap > t.delayed_after_ms {
        NodeStatus::Delayed
    } else {
        NodeStatus::Live
    }
}

/// Nodes by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeCounts {
    pub total: u64,
    pub live: u64,
    pub delayed: u64,
    pub offline: u64,
}

impl NodeCounts {
    pub fn add(&mut self, status: NodeStatus) {
        self.total += 1;
        match status {
            NodeStatus::Live => self.live += 1,
            NodeStatus::Delayed => self.delayed += 1,
            NodeStatus::Offline => self.offline += 1,
        }
    }

    pub fn plus(self, other: NodeCounts) -> NodeCounts {
        NodeCounts {
            total: self.total + other.total,
            live: self.live + other.live,
            delayed: self.delayed + other.delayed,
            offline: self.offline + other.offline,
        }
    }
}

/// A site's autonomy mode and whether it is isolated from its upstream right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AutonomyState {
    #[schema(value_type = String)]
    pub mode: Autonomy,
    pub isolated: bool,
}

/// One link of a site, as its summary reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SummaryLink {
    pub peer: String,
    #[schema(value_type = String)]
    pub direction: Direction,
    #[schema(value_type = String)]
    pub state: LinkState,
    pub pending: u64,
    /// Age of the oldest change the peer has not acknowledged, in seconds.
    pub debt_seconds: Option<f64>,
    pub last_sync_ms: Option<u64>,
}

/// A subtree's figures: the site's own plus each child's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    pub nodes: NodeCounts,
    pub drift: u64,
    pub open_conflicts: u64,
}

/// The spec of `SiteStatus/<scope>/<site id>`: a site's summary, with its children's as it
/// holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteSummary {
    pub site: String,
    pub scope: String,
    #[schema(value_type = String)]
    pub level: Level,
    pub parent: Option<String>,
    /// The site's trust domain (`Site.trust_domain`); absent in summaries of older sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// When the site observed these figures (ms since the epoch).
    pub observed_ms: u64,
    pub autonomy: AutonomyState,
    pub nodes: NodeCounts,
    /// Objects in effect that some non-offline node has not applied.
    pub drift: u64,
    pub open_conflicts: u64,
    #[serde(default)]
    pub links: Vec<SummaryLink>,
    /// Each direct child's latest summary held here, by site id.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub children: BTreeMap<String, SiteSummary>,
    pub totals: Totals,
}

impl SiteSummary {
    /// `totals` from the site's own figures and its children's totals.
    pub fn roll_up(&mut self) {
        let mut totals = Totals { nodes: self.nodes, drift: self.drift, open_conflicts: self.open_conflicts };
        for child in self.children.values() {
            totals.nodes = totals.nodes.plus(child.totals.nodes);
            totals.drift += child.totals.drift;
            totals.open_conflicts += child.totals.open_conflicts;
        }
        self.totals = totals;
    }
}

/// One site in a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ViewItem {
    pub site: String,
    pub name: String,
    pub level: String,
    pub authority: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// The site's subtree.
    pub nodes: NodeCounts,
    pub status: String,
    pub drift: u64,
    pub open_conflicts: u64,
    /// Set when the figures are stale (their age) or the link towards the site is lagging.
    pub sync_debt_seconds: Option<f64>,
    /// How old the figures are, by the answering site's clock.
    pub age_seconds: f64,
    pub observed_ms: u64,
    pub autonomy: String,
    pub isolated: bool,
    #[schema(no_recursion)]
    pub children: Vec<ViewItem>,
}

/// `GET /v1/views/global` and `GET /v1/views/site/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetView {
    pub title: String,
    pub site: String,
    pub generated_ms: u64,
    pub items: Vec<ViewItem>,
}

/// A link of the answering site, as the views need it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewLink {
    pub peer: String,
    pub direction: Direction,
    pub state: LinkState,
    pub debt_seconds: Option<f64>,
}

/// What the answering site knows: its own live summary, the summaries it holds, its links.
pub struct Knowledge {
    me: String,
    /// The freshest summary of every site known, by site id (the answering site's own is the
    /// live one).
    best: BTreeMap<String, SiteSummary>,
    links: Vec<ViewLink>,
    now_ms: u64,
    stale_after_ms: u64,
}

impl Knowledge {
    /// `own` is the answering site's live summary; `held` the `SiteStatus` specs in its store.
    pub fn new(
        own: SiteSummary,
        held: Vec<SiteSummary>,
        links: Vec<ViewLink>,
        now_ms: u64,
        status_interval_ms: u64,
    ) -> Knowledge {
        let me = own.site.clone();
        let mut best = BTreeMap::new();
        let mut pending: Vec<SiteSummary> = held;
        pending.extend(own.children.values().cloned());
        while let Some(summary) = pending.pop() {
            pending.extend(summary.children.values().cloned());
            if summary.site == me {
                continue;
            }
            let fresher =
                best.get(&summary.site).is_none_or(|b: &SiteSummary| b.observed_ms < summary.observed_ms);
            if fresher {
                best.insert(summary.site.clone(), summary);
            }
        }
        best.insert(me.clone(), own);
        Knowledge {
            me,
            best,
            links,
            now_ms,
            stale_after_ms: status_interval_ms.saturating_mul(STALE_INTERVALS),
        }
    }

    pub fn get(&self, site: &str) -> Option<&SiteSummary> {
        self.best.get(site)
    }

    /// The top of the federation as known here: the global site without a parent, else the
    /// answering site.
    pub fn root(&self) -> &SiteSummary {
        self.best
            .values()
            .find(|s| s.parent.is_none() && s.level == Level::Global)
            .unwrap_or_else(|| &self.best[&self.me])
    }

    /// The global view: one item per child of the root.
    pub fn global_view(&self) -> FleetView {
        let root = self.root().site.clone();
        FleetView {
            title: "Global Fleet View".to_owned(),
            site: self.me.clone(),
            generated_ms: self.now_ms,
            items: self.children_items(&root, 0),
        }
    }

    /// The view of one site's children; `None` for a site not known here.
    pub fn site_view(&self, site: &str) -> Option<FleetView> {
        let summary = self.best.get(site)?;
        Some(FleetView {
            title: format!("{} View", display_name(summary)),
            site: self.me.clone(),
            generated_ms: self.now_ms,
            items: self.children_items(site, 0),
        })
    }

    fn children_items(&self, site: &str, depth: usize) -> Vec<ViewItem> {
        // The tree is bounded by what is known; a cycle in bad data stops at the depth bound.
        if depth > self.best.len() {
            return Vec::new();
        }
        let Some(summary) = self.best.get(site) else { return Vec::new() };
        let mut items: Vec<(u8, ViewItem)> = summary
            .children
            .keys()
            .filter_map(|child| Some((self.best.get(child)?.level.rank(), self.item(child, depth + 1)?)))
            .collect();
        // Higher authority first (regions before zones), then by site id.
        items.sort_by(|(ra, a), (rb, b)| rb.cmp(ra).then_with(|| a.site.cmp(&b.site)));
        items.into_iter().map(|(_, item)| item).collect()
    }

    fn item(&self, site: &str, depth: usize) -> Option<ViewItem> {
        let s = self.best.get(site)?;
        let age_ms = self.now_ms.saturating_sub(s.observed_ms);
        let age_seconds = age_ms as f64 / 1000.0;
        let link = self.link_towards(site);
        let stale = self.is_stale(site);
        let children = self.children_items(site, depth);
        let status = if stale {
            match s.autonomy.mode {
                Autonomy::Full => "Autonomous".to_owned(),
                Autonomy::Conditional | Autonomy::None => "Unreachable".to_owned(),
            }
        } else if s.children.is_empty() {
            zone_status(s.totals.nodes)
        } else {
            let n = s.totals.nodes;
            let mostly_live = n.live.saturating_mul(10) >= n.total.saturating_mul(9);
            let child_stale = s.children.keys().any(|c| self.is_stale(c));
            if mostly_live && !child_stale { "Healthy".to_owned() } else { "Degraded".to_owned() }
        };
        let sync_debt_seconds = if stale {
            Some(age_seconds)
        } else {
            link.filter(|l| l.state == LinkState::Lagging).and_then(|l| l.debt_seconds)
        };
        Some(ViewItem {
            site: s.site.clone(),
            name: display_name(s),
            level: s.level.as_str().to_owned(),
            authority: title_word(s.level.as_str()),
            trust_domain: s.trust_domain.clone(),
            nodes: s.totals.nodes,
            status,
            drift: s.totals.drift,
            open_conflicts: s.totals.open_conflicts,
            sync_debt_seconds,
            age_seconds,
            observed_ms: s.observed_ms,
            autonomy: s.autonomy.mode.as_str().to_owned(),
            isolated: s.autonomy.isolated,
            children,
        })
    }

    /// Whether a site's figures are stale here: older than the threshold, or the answering
    /// site's link towards it is down.
    fn is_stale(&self, site: &str) -> bool {
        let Some(s) = self.best.get(site) else { return true };
        if site == self.me {
            return false;
        }
        let old = self.now_ms.saturating_sub(s.observed_ms) > self.stale_after_ms;
        let cut = self
            .link_towards(site)
            .is_some_and(|l| matches!(l.state, LinkState::Disconnected | LinkState::Isolated));
        old || cut
    }

    /// The answering site's link on the path to `site`: the downstream link to the child whose
    /// subtree holds it, else the upstream link; `None` for the answering site itself.
    fn link_towards(&self, site: &str) -> Option<&ViewLink> {
        let mut current = site.to_owned();
        for _ in 0..=self.best.len() {
            if current == self.me {
                return None;
            }
            let parent = self.best.get(&current).and_then(|s| s.parent.clone());
            match parent {
                Some(p) if p == self.me => {
                    return self
                        .links
                        .iter()
                        .find(|l| l.direction == Direction::Downstream && l.peer == current);
                }
                Some(p) => current = p,
                None => break,
            }
        }
        self.links.iter().find(|l| l.direction == Direction::Upstream)
    }
}

/// `Live` when every node is live, else each non-empty state with `(count/total)`.
pub fn zone_status(n: NodeCounts) -> String {
    if n.live == n.total {
        return "Live".to_owned();
    }
    let parts: Vec<String> = [("Live", n.live), ("Delayed", n.delayed), ("Offline", n.offline)]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(name, count)| format!("{name} ({count}/{})", n.total))
        .collect();
    parts.join(", ")
}

/// A regional site is named after its region scope, the others after their site id.
pub fn display_name(s: &SiteSummary) -> String {
    match s.level {
        Level::Regional => title_case(&s.scope),
        _ => title_case(&s.site),
    }
}

/// `region-a` → `Region A`, `edge-zone-a1` → `Edge Zone A1`: each `-`-separated word
/// capitalized, a letter/digit group (one letter and digits, or digits) upper-cased.
pub fn title_case(id: &str) -> String {
    id.split('-').filter(|w| !w.is_empty()).map(title_word).collect::<Vec<_>>().join(" ")
}

fn title_word(word: &str) -> String {
    let mut chars = word.chars();
    let Some(first) = chars.next() else { return String::new() };
    let rest = chars.as_str();
    if rest.chars().all(|c| c.is_ascii_digit()) {
        return word.to_ascii_uppercase();
    }
    format!("{}{rest}", first.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { delayed_after_ms: 15_000, offline_after_ms: 60_000 };

    #[test]
    fn status_follows_silence_and_late_beats() {
        assert_eq!(node_status(1_000, None, 1_000, T), NodeStatus::Live);
        assert_eq!(node_status(1_000, None, 16_000, T), NodeStatus::Live, "15s exactly is not late");
        assert_eq!(node_status(1_000, None, 16_001, T), NodeStatus::Delayed);
        assert_eq!(node_status(1_000, None, 61_001, T), NodeStatus::Offline);
        // A beat that came 20s after the one before keeps the node delayed until the next.
        assert_eq!(node_status(21_000, Some(1_000), 21_000, T), NodeStatus::Delayed);
        assert_eq!(node_status(26_000, Some(21_000), 26_000, T), NodeStatus::Live);
    }

    #[test]
    fn names_are_title_cased_with_letter_digit_groups_upper_cased() {
        assert_eq!(title_case("region-a"), "Region A");
        assert_eq!(title_case("edge-zone-a1"), "Edge Zone A1");
        assert_eq!(title_case("edge-zone-c"), "Edge Zone C");
        assert_eq!(title_case("global-control"), "Global Control");
        assert_eq!(title_word("regional"), "Regional");
    }

    #[test]
    fn zone_status_lists_each_non_empty_state() {
        assert_eq!(zone_status(NodeCounts { total: 25, live: 25, delayed: 0, offline: 0 }), "Live");
        assert_eq!(zone_status(NodeCounts::default()), "Live");
        assert_eq!(
            zone_status(NodeCounts { total: 25, live: 23, delayed: 2, offline: 0 }),
            "Live (23/25), Delayed (2/25)"
        );
        assert_eq!(
            zone_status(NodeCounts { total: 5, live: 0, delayed: 1, offline: 4 }),
            "Delayed (1/5), Offline (4/5)"
        );
    }
}
