//! The file format, field for field, as operators write it. Every field is optional here
//! (except `Authority.level`) so that resolving can tell "not written" from a default;
//! [`crate::SiteConfig`] is the resolved form.

use std::collections::BTreeMap;
use std::path::PathBuf;

use model::{Autonomy, Level, Scope, SiteId};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::Duration;
use crate::site::{ConflictStrategy, RetryPolicy, SyncMode};
use crate::webhook::EventKind;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    #[serde(rename = "Site")]
    pub site: Option<RawSite>,
    #[serde(rename = "Authority")]
    pub authority: Option<RawAuthority>,
    #[serde(rename = "SyncStrategy")]
    pub sync_strategy: Option<RawSyncStrategy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSite {
    pub id: Option<SiteId>,
    pub scope: Option<Scope>,
    /// Parsed while resolving, so that the message can say how to write one.
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub max_clock_skew: Option<Duration>,
    pub isolation_after: Option<Duration>,
    /// Checked while resolving, so that the message can say how to write one.
    pub trust_domain: Option<String>,
    pub peers: Option<BTreeMap<SiteId, String>>,
    pub webhooks: Option<Vec<RawWebhook>>,
    pub status_interval: Option<Duration>,
    pub nodes: Option<RawNodes>,
}

/// `Site.nodes`: when a managed node counts as delayed or offline.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNodes {
    pub delayed_after: Option<Duration>,
    pub offline_after: Option<Duration>,
}

/// One entry of `Site.webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    /// Checked while resolving, so that the message can say how to write one.
    pub name: String,
    /// Checked while resolving, so that the message can say how to write one.
    pub url: String,
    pub events: Option<Vec<EventKind>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthority {
    pub level: Level,
    pub region: Option<Scope>,
    pub master: Option<SiteId>,
    pub autonomy: Option<RawAutonomy>,
    pub sync: Option<RawAuthoritySync>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAutonomy {
    pub can_operate_isolated: Option<bool>,
    pub can_modify_policies: Option<bool>,
    pub can_deploy_versions: Option<bool>,
    /// An extension to the seed: `full`, `conditional` or `none`.
    pub mode: Option<Autonomy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthoritySync {
    pub upstream: Option<SiteId>,
    pub frequency: Option<Duration>,
    pub mode: Option<SyncMode>,
    /// State, not configuration: the site reports when it last synced. Accepted and ignored.
    #[serde(rename = "last_sync")]
    pub _last_sync: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyncStrategy {
    pub region: Option<Scope>,
    pub upstream: Option<RawUpstream>,
    pub downstream: Option<RawDownstream>,
    pub conflict_resolution: Option<RawConflictResolution>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub target: Option<SiteId>,
    pub frequency: Option<Duration>,
    pub mode: Option<SyncMode>,
    pub batch_size: Option<u32>,
    pub retry_policy: Option<RetryPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDownstream {
    pub targets: Option<Vec<SiteId>>,
    pub frequency: Option<Duration>,
    pub mode: Option<SyncMode>,
    pub batch_size: Option<u32>,
    pub retry_policy: Option<RetryPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConflictResolution {
    pub strategy: Option<ConflictStrategy>,
    pub versioning: Option<bool>,
    pub audit_log: Option<bool>,
}

/// A federation file: one `Federation:` document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFederationFile {
    #[serde(rename = "Federation")]
    pub federation: RawFederation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFederation {
    /// Checked while resolving, so that the message can say how to write one.
    pub name: String,
    /// Site id → that site's documents, in file order; each entry is read as a [`RawFile`]
    /// once its key has been checked.
    pub sites: serde_yaml_ng::Mapping,
}
