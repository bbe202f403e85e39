//! A resolved configuration written back out as a site file, every setting spelled out, so that
//! [`SiteConfig::load`] reads it back to the same configuration.

use std::collections::BTreeMap;

use model::{Autonomy, Level, Scope, SiteId};
use serde::Serialize;

use crate::Duration;
use crate::site::{ConflictStrategy, RetryPolicy, SiteConfig, SyncMode};
use crate::webhook::EventKind;

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "Site")]
    site: Site<'a>,
    #[serde(rename = "Authority")]
    authority: Authority<'a>,
    #[serde(rename = "SyncStrategy")]
    sync_strategy: SyncStrategy<'a>,
}

#[derive(Serialize)]
struct Site<'a> {
    id: &'a SiteId,
    scope: &'a Scope,
    trust_domain: &'a str,
    listen: String,
    data_dir: String,
    max_clock_skew: Duration,
    isolation_after: Duration,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    peers: &'a BTreeMap<SiteId, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    webhooks: Vec<Webhook<'a>>,
    status_interval: Duration,
    nodes: Nodes,
}

#[derive(Serialize)]
struct Nodes {
    delayed_after: Duration,
    offline_after: Duration,
}

#[derive(Serialize)]
struct Webhook<'a> {
    name: &'a str,
    url: &'a str,
    events: &'a [EventKind],
}

#[derive(Serialize)]
struct Authority<'a> {
    level: Level,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a Scope>,
    master: &'a SiteId,
    autonomy: AutonomyFlags,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<AuthoritySync<'a>>,
}

#[derive(Serialize)]
struct AutonomyFlags {
    can_operate_isolated: bool,
    can_modify_policies: bool,
    can_deploy_versions: bool,
    mode: Autonomy,
}

#[derive(Serialize)]
struct AuthoritySync<'a> {
    upstream: &'a SiteId,
    frequency: Duration,
    mode: SyncMode,
}

#[derive(Serialize)]
struct SyncStrategy<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a Scope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<Upstream<'a>>,
    downstream: Downstream<'a>,
    conflict_resolution: ConflictResolution,
}

#[derive(Serialize)]
struct Upstream<'a> {
    target: &'a SiteId,
    frequency: Duration,
    mode: SyncMode,
    batch_size: usize,
    retry_policy: RetryPolicy,
}

#[derive(Serialize)]
struct Downstream<'a> {
    targets: &'a [SiteId],
    frequency: Duration,
    mode: SyncMode,
    batch_size: usize,
    retry_policy: RetryPolicy,
}

#[derive(Serialize)]
struct ConflictResolution {
    strategy: ConflictStrategy,
    versioning: bool,
    audit_log: bool,
}

impl SiteConfig {
    /// This configuration as a site file: `Site:`, `Authority:` (in the design's shape) and
    /// `SyncStrategy:`, with every setting written out. [`SiteConfig::load`] reads it back to
    /// an equal configuration apart from `source`, provided `data_dir` is absolute (a relative
    /// one is resolved against the directory of the file it is saved in) and valid UTF-8.
    pub fn to_yaml(&self) -> String {
        let up = self.upstream.as_ref();
        let down = &self.downstream;
        let file = File {
            site: Site {
                id: &self.site_id,
                scope: &self.scope,
                trust_domain: &self.trust_domain,
                listen: self.listen.to_string(),
                data_dir: self.data_dir.to_string_lossy().into_owned(),
                max_clock_skew: self.max_clock_skew,
                isolation_after: self.isolation_after,
                peers: &self.peers,
                webhooks: self
                    .webhooks
                    .iter()
                    .map(|h| Webhook { name: &h.name, url: &h.url, events: &h.events })
                    .collect(),
                status_interval: self.status_interval,
                nodes: Nodes {
                    delayed_after: self.nodes.delayed_after,
                    offline_after: self.nodes.offline_after,
                },
            },
            authority: Authority {
                level: self.level,
                region: self.region.as_ref(),
                master: &self.site_id,
                autonomy: AutonomyFlags {
                    can_operate_isolated: self.autonomy.can_operate_isolated,
                    can_modify_policies: self.autonomy.can_modify_policies,
                    can_deploy_versions: self.autonomy.can_deploy_versions,
                    mode: self.autonomy.mode,
                },
                sync: up.map(|up| AuthoritySync {
                    upstream: &up.target,
                    frequency: up.frequency,
                    mode: up.mode,
                }),
            },
            sync_strategy: SyncStrategy {
                region: self.region.as_ref(),
                upstream: up.map(|up| Upstream {
                    target: &up.target,
                    frequency: up.frequency,
                    mode: up.mode,
                    batch_size: up.batch_size,
                    retry_policy: up.retry_policy,
                }),
                downstream: Downstream {
                    targets: &down.targets,
                    frequency: down.frequency,
                    mode: down.mode,
                    batch_size: down.batch_size,
                    retry_policy: down.retry_policy,
                },
                conflict_resolution: ConflictResolution {
                    strategy: self.conflicts.strategy,
                    versioning: self.conflicts.versioning,
                    audit_log: self.conflicts.audit_log,
                },
            },
        };
        // Strings, numbers, booleans and maps with string keys: nothing here can fail to
        // serialize.
        serde_yaml_ng::to_string(&file).expect("a site configuration serializes to YAML")
    }
}
