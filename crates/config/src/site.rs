//! The resolved configuration of one site, and how a file becomes one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use model::{Autonomy, Level, Scope, SiteId};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::Duration;
use crate::error::{Complaint, ConfigError, reword};
use crate::file::{RawAuthority, RawAuthoritySync, RawFile, RawSite, RawSyncStrategy};
use crate::locate::{FieldPath, Seg, Target, locate};
use crate::webhook::{DEFAULT_WEBHOOK_EVENTS, EventKind, WebhookConfig, webhook_url};

/// `Site.listen` when the file does not say.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7400);
/// `Site.data_dir` when the file does not say (resolved against the file's directory).
pub const DEFAULT_DATA_DIR: &str = "./souverix-data";
/// `Site.max_clock_skew` when the file does not say.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// `Site.isolation_after` when the file does not say.
pub const DEFAULT_ISOLATION_AFTER: Duration = Duration::from_secs(5 * 60);
/// `Site.status_interval` when the file does not say: how often the site publishes its
/// `SiteStatus` summary.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(30);
/// `Site.nodes.delayed_after` when the file does not say.
pub const DEFAULT_NODES_DELAYED_AFTER: Duration = Duration::from_secs(15);
/// `Site.nodes.offline_after` when the file does not say.
pub const DEFAULT_NODES_OFFLINE_AFTER: Duration = Duration::from_secs(5 * 60);
/// `SyncStrategy.upstream.frequency` (or `Authority.sync.frequency`) when neither says.
pub const DEFAULT_UPSTREAM_FREQUENCY: Duration = Duration::from_secs(15 * 60);
/// `SyncStrategy.downstream.frequency` when the file does not say.
pub const DEFAULT_DOWNSTREAM_FREQUENCY: Duration = Duration::from_secs(5 * 60);
/// `batch_size` of either direction when the file does not say.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// The largest `batch_size` accepted: a batch is applied in one transaction.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// The largest configuration file accepted, in bytes.
pub const MAX_FILE_SIZE: usize = 1024 * 1024;

/// The configuration a site runs with when it is given no file: a lone global site.
pub const EMBEDDED_DEFAULT: &str = "\
Site:
  id: global-control
Authority:
  level: global
";

/// How changes travel on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// Stream changes as they happen; `frequency` is the full reconciliation interval.
    Continuous,
    /// Send batches every `frequency`.
    Push,
    /// Try only while the link is believed up; record sync debt otherwise.
    Opportunistic,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Continuous => "continuous",
            SyncMode::Push => "push",
            SyncMode::Opportunistic => "opportunistic",
        }
    }
}

/// How a failed sync round is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryPolicy {
    /// Exponential backoff with jitter and a cap, per link.
    #[default]
    ExponentialBackoff,
}

impl RetryPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryPolicy::ExponentialBackoff => "exponential-backoff",
        }
    }
}

/// Which version wins when two are written concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictStrategy {
    /// The later `(hlc, origin site)` wins.
    #[default]
    LastWriteWins,
    /// The write of the higher authority level wins.
    AuthorityWins,
    /// Both are kept and the conflict stays open until an operator settles it.
    Manual,
}

impl ConflictStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictStrategy::LastWriteWins => "last-write-wins",
            ConflictStrategy::AuthorityWins => "authority-wins",
            ConflictStrategy::Manual => "manual",
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(SyncMode, RetryPolicy, ConflictStrategy);

/// How far the site may act on its own: the design's flags plus the autonomy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutonomyConfig {
    /// `Authority.autonomy.mode`; defaults to [`Level::default_autonomy`].
    pub mode: Autonomy,
    pub can_operate_isolated: bool,
    pub can_modify_policies: bool,
    pub can_deploy_versions: bool,
}

impl AutonomyConfig {
    /// The flags a mode implies when the file does not set them: `full` allows everything;
    /// `conditional` may operate isolated and modify policies (only while isolated) but not
    /// deploy versions; `none` allows nothing.
    pub fn for_mode(mode: Autonomy) -> Self {
        let (isolated, policies, versions) = match mode {
            Autonomy::Full => (true, true, true),
            Autonomy::Conditional => (true, true, false),
            Autonomy::None => (false, false, false),
        };
        Self {
            mode,
            can_operate_isolated: isolated,
            can_modify_policies: policies,
            can_deploy_versions: versions,
        }
    }
}

/// `Site.nodes`: when a managed node of this site counts as `Delayed` or `Offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeThresholds {
    /// No heartbeat for longer than this (or a heartbeat that came this much later than the
    /// one before): `Delayed`. Default [`DEFAULT_NODES_DELAYED_AFTER`].
    pub delayed_after: Duration,
    /// No heartbeat for longer than this: `Offline`. Default [`DEFAULT_NODES_OFFLINE_AFTER`].
    pub offline_after: Duration,
}

impl Default for NodeThresholds {
    fn default() -> Self {
        Self { delayed_after: DEFAULT_NODES_DELAYED_AFTER, offline_after: DEFAULT_NODES_OFFLINE_AFTER }
    }
}

/// The link to the parent site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamLink {
    pub target: SiteId,
    pub frequency: Duration,
    pub mode: SyncMode,
    pub batch_size: usize,
    pub retry_policy: RetryPolicy,
}

/// The links to the child sites; they share one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamLinks {
    /// Empty for a site with no children.
    pub targets: Vec<SiteId>,
    pub frequency: Duration,
    pub mode: SyncMode,
    pub batch_size: usize,
    pub retry_policy: RetryPolicy,
}

/// `SyncStrategy.conflict_resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictPolicy {
    pub strategy: ConflictStrategy,
    pub versioning: bool,
    pub audit_log: bool,
}

impl Default for ConflictPolicy {
    fn default() -> Self {
        Self { strategy: ConflictStrategy::LastWriteWins, versioning: true, audit_log: true }
    }
}

/// A site's configuration, resolved: defaults applied, cross-field rules checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The file it was read from; `None` for [`SiteConfig::embedded_default`].
    pub source: Option<PathBuf>,
    pub site_id: SiteId,
    /// The scope this site is master of record for.
    pub scope: Scope,
    pub level: Level,
    /// `Authority.region` or `SyncStrategy.region`, when given.
    pub region: Option<Scope>,
    pub autonomy: AutonomyConfig,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A remote timestamp further ahead of local time than this is refused.
    pub max_clock_skew: Duration,
    /// An upstream link cut for longer than this makes the site `isolated` (autonomous mode
    /// engaged). `Site.isolation_after`, default [`DEFAULT_ISOLATION_AFTER`].
    pub isolation_after: Duration,
    /// The set of sites that trust one CA, such as `region-a`: label-like (lowercase letters,
    /// digits, `-`). `Site.trust_domain`, default the site's scope.
    pub trust_domain: String,
    /// Base URLs (`http://host:port`, no trailing `/`) of the parent and children, by site id.
    pub peers: BTreeMap<SiteId, String>,
    /// `None` for the top of the federation and for a site that syncs with no parent.
    pub upstream: Option<UpstreamLink>,
    pub downstream: DownstreamLinks,
    pub conflicts: ConflictPolicy,
    /// `Site.webhooks`: where events are POSTed, in file order; empty when none.
    pub webhooks: Vec<WebhookConfig>,
    /// How often the site writes its `SiteStatus` summary. `Site.status_interval`, default
    /// [`DEFAULT_STATUS_INTERVAL`].
    pub status_interval: Duration,
    /// `Site.nodes`: the thresholds of managed nodes' status.
    pub nodes: NodeThresholds,
}

impl SiteConfig {
    /// Reads and resolves the configuration file at `path`; relative paths in it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<SiteConfig, ConfigError> {
        let text = read_bounded(path)?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Self::parse(&text, path, base_dir)
    }

    /// Resolves a configuration `text`. `file` names it in error messages; relative paths in
    /// it are resolved against `base_dir`.
    pub fn parse(text: &str, file: impl AsRef<Path>, base_dir: &Path) -> Result<SiteConfig, ConfigError> {
        if text.len() > MAX_FILE_SIZE {
            return Err(ConfigError::TooLarge { file: file.as_ref().to_owned(), limit: MAX_FILE_SIZE });
        }
        let doc = Doc::new(text, file.as_ref());
        let value: Value = serde_yaml_ng::from_str(text).map_err(|err| doc.syntax_error(&err))?;
        let raw: RawFile = match value {
            Value::Null => RawFile::default(),
            Value::Mapping(_) => {
                serde_path_to_error::deserialize(value).map_err(|err| doc.serde_error(&err))?
            }
            _ => {
                return Err(ConfigError::Syntax {
                    file: doc.file.to_owned(),
                    at: crate::error::Location::START,
                    message: "a site configuration is a YAML mapping with the documents `Site:`, `Authority:` and `SyncStrategy:`, each optional; this file holds something else".to_owned(),
                });
            }
        };
        doc.resolve(raw, base_dir)
    }

    /// The configuration of a lone global site, used when no file is given: site
    /// `global-control`, level global, scope `global`, listening on 127.0.0.1:7400, data in
    /// `./souverix-data`, no peers. It is [`EMBEDDED_DEFAULT`] resolved against `.`.
    pub fn embedded_default() -> SiteConfig {
        let config = Self::parse(EMBEDDED_DEFAULT, "<embedded default>", Path::new(""))
            .expect("the embedded default configuration is valid");
        SiteConfig { source: None, ..config }
    }

    pub fn site_id(&self) -> &SiteId {
        &self.site_id
    }

    pub fn downstream_targets(&self) -> &[SiteId] {
        &self.downstream.targets
    }

    pub fn conflict_strategy(&self) -> ConflictStrategy {
        self.conflicts.strategy
    }

    /// The base URL of a peer, when the file gives one.
    pub fn peer_url(&self, site: &SiteId) -> Option<&str> {
        self.peers.get(site).map(String::as_str)
    }

    /// Human lines summarising the resolved configuration, for `souverix config check`.
    pub fn describe(&self) -> Vec<String> {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let on = |b: bool| if b { "on" } else { "off" };
        let mut lines = Vec::new();
        lines.push(match &self.source {
            Some(file) => format!("config file {}", file.display()),
            None => "embedded default configuration".to_owned(),
        });
        lines.push(format!(
            "site {} ({}, scope {}, autonomy {})",
            self.site_id, self.level, self.scope, self.autonomy.mode
        ));
        lines.push(format!("trust domain {}", self.trust_domain));
        lines.push(format!(
            "may operate isolated: {}, modify policies: {}, deploy versions: {}",
            yes(self.autonomy.can_operate_isolated),
            yes(self.autonomy.can_modify_policies),
            yes(self.autonomy.can_deploy_versions),
        ));
        if let Some(region) = &self.region {
            lines.push(format!("region {region}"));
        }
        lines.push(format!("listen {}", self.listen));
        lines.push(format!("data dir {}", self.data_dir.display()));
        lines.push(format!("max clock skew {}", self.max_clock_skew));
        match &self.upstream {
            Some(up) => {
                lines.push(format!(
                    "upstream {}: {}, every {}, batches of {}, {}",
                    up.target, up.mode, up.frequency, up.batch_size, up.retry_policy
                ));
                lines.push(format!("isolated after the upstream link is cut for {}", self.isolation_after));
            }
            None => lines.push("upstream: none".to_owned()),
        }
        let down = &self.downstream;
        if down.targets.is_empty() {
            lines.push("downstream: none".to_owned());
        } else {
            let targets: Vec<&str> = down.targets.iter().map(SiteId::as_str).collect();
            lines.push(format!(
                "downstream {}: {}, every {}, batches of {}, {}",
                targets.join(", "),
                down.mode,
                down.frequency,
                down.batch_size,
                down.retry_policy
            ));
        }
        for peer in self.upstream.iter().map(|up| &up.target).chain(&down.targets) {
            lines.push(match self.peer_url(peer) {
                Some(url) => format!("peer {peer} at {url}"),
                None => format!("peer {peer}: no address (add it under Site.peers)"),
            });
        }
        lines.push(format!(
            "conflicts: {}, versioning {}, audit log {}",
            self.conflicts.strategy,
            on(self.conflicts.versioning),
            on(self.conflicts.audit_log)
        ));
        if self.webhooks.is_empty() {
            lines.push("webhooks: none".to_owned());
        }
        for hook in &self.webhooks {
            let events: Vec<&str> = hook.events.iter().map(|k| k.as_str()).collect();
            lines.push(format!("webhook {} to {} ({})", hook.name, hook.url, events.join(", ")));
        }
        lines.push(format!("status summary every {}", self.status_interval));
        lines.push(format!(
            "nodes delayed after {} without a heartbeat, offline after {}",
            self.nodes.delayed_after, self.nodes.offline_after
        ));
        lines
    }
}

/// The text of the file at `path`, read up to one byte past [`MAX_FILE_SIZE`]: enough for the
/// parser to refuse a file that is too large without reading all of it.
pub(crate) fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_SIZE as u64 + 1).read_to_string(&mut text))
        .map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
    Ok(text)
}

/// The text being resolved, for placing errors in it: a site file, or one site's entry in a
/// federation file.
pub(crate) struct Doc<'a> {
    text: &'a str,
    file: &'a Path,
    /// Where the site's documents sit in the text: empty in a site file,
    /// `Federation.sites.<id>` in a federation file. Every field path starts with it.
    prefix: FieldPath,
}

impl<'a> Doc<'a> {
    pub(crate) fn new(text: &'a str, file: &'a Path) -> Self {
        Self { text, file, prefix: FieldPath::default() }
    }

    /// The documents at `prefix` in `text`.
    pub(crate) fn nested(text: &'a str, file: &'a Path, prefix: FieldPath) -> Self {
        Self { text, file, prefix }
    }

    /// An error about the field at `path` (below the prefix), placed at its key or its value.
    pub(crate) fn error(&self, path: &FieldPath, target: Target, message: impl Into<String>) -> ConfigError {
        let path = self.prefix.join(path);
        ConfigError::Field {
            file: self.file.to_owned(),
            at: locate(self.text, &path, target),
            field: path.to_string(),
            message: message.into(),
        }
    }

    /// `error` for a path of keys.
    pub(crate) fn at(&self, keys: &[&str], target: Target, message: impl Into<String>) -> ConfigError {
        self.error(&FieldPath::keys(keys), target, message)
    }

    /// The line of a field, for messages that point at a second field. With no keys, the line
    /// of the prefix itself (a federation entry's key).
    pub(crate) fn line(&self, keys: &[&str]) -> usize {
        locate(self.text, &self.prefix.join(&FieldPath::keys(keys)), Target::Key).line
    }

    pub(crate) fn syntax_error(&self, err: &serde_yaml_ng::Error) -> ConfigError {
        let mut message = err.to_string();
        let at = match err.location() {
            Some(location) => {
                // The position leads the message; do not repeat it inside.
                let repeated = format!(" at line {} column {}", location.line(), location.column());
                message = message.replacen(&repeated, "", 1);
                crate::error::Location::from_yaml(location)
            }
            None => crate::error::Location::START,
        };
        let hint = if message.contains("duplicate entry") {
            "each key may appear only once in a mapping"
        } else {
            "check the indentation, quotes and brackets here and on the lines above"
        };
        let message = format!("not valid YAML: {message} ({hint})");
        ConfigError::Syntax { file: self.file.to_owned(), at, message }
    }

    pub(crate) fn serde_error(&self, err: &serde_path_to_error::Error<serde_yaml_ng::Error>) -> ConfigError {
        let mut path = FieldPath::default();
        for segment in err.path().iter() {
            match segment {
                serde_path_to_error::Segment::Map { key } => path = path.key(key),
                serde_path_to_error::Segment::Seq { index } => path = path.index(*index),
                serde_path_to_error::Segment::Enum { .. } => {}
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        let last_key = match path.0.last() {
            Some(Seg::Key(key)) => Some(key.clone()),
            _ => None,
        };
        match reword(&err.inner().to_string(), last_key.as_deref()) {
            Complaint::UnknownField { message } => self.error(&path, Target::Key, message),
            Complaint::BadValue { message } => self.error(&path, Target::Value, message),
            Complaint::MissingField { name, message } => {
                let path = self.prefix.join(&path);
                let at = match path.is_empty() {
                    true => crate::error::Location::START,
                    false => locate(self.text, &path, Target::Key),
                };
                ConfigError::Field {
                    file: self.file.to_owned(),
                    at,
                    field: path.key(&name).to_string(),
                    message,
                }
            }
        }
    }

    pub(crate) fn resolve(&self, raw: RawFile, base_dir: &Path) -> Result<SiteConfig, ConfigError> {
        let site = raw.site.unwrap_or_default();
        let strategy = raw.sync_strategy.unwrap_or_default();
        let site_id = self.site_id(&site, raw.authority.as_ref())?;
        let (authority, auth_sync) = match raw.authority {
            Some(mut authority) => {
                let sync = authority.sync.take().unwrap_or_default();
                (Some(authority), sync)
            }
            None => (None, RawAuthoritySync::default()),
        };

        let upstream = self.upstream(&site_id, authority.as_ref(), &auth_sync, &strategy)?;
        // Without an Authority document: the top of a federation if it has no parent, else
        // the least privileged level that has one.
        let level = match &authority {
            Some(authority) => authority.level,
            None if upstream.is_some() => Level::Local,
            None => Level::Global,
        };
        if let (Level::Global, Some(up)) = (level, &upstream) {
            let path = match auth_sync.upstream {
                Some(_) => ["Authority", "sync", "upstream"],
                None => ["SyncStrategy", "upstream", "target"],
            };
            return Err(self.at(
                &path,
                Target::Value,
                format!(
                    "a global site has no upstream, but `{}` is given; remove it, or change `Authority.level`",
                    up.target
                ),
            ));
        }
        let region = self.region(authority.as_ref(), &strategy)?;
        let scope = self.scope(&site, &site_id, level, region.as_ref())?;
        let autonomy = {
            let raw = authority.and_then(|a| a.autonomy).unwrap_or_default();
            let defaults = AutonomyConfig::for_mode(raw.mode.unwrap_or(level.default_autonomy()));
            AutonomyConfig {
                mode: defaults.mode,
                can_operate_isolated: raw.can_operate_isolated.unwrap_or(defaults.can_operate_isolated),
                can_modify_policies: raw.can_modify_policies.unwrap_or(defaults.can_modify_policies),
                can_deploy_versions: raw.can_deploy_versions.unwrap_or(defaults.can_deploy_versions),
            }
        };
        let downstream = self.downstream(&site_id, upstream.as_ref(), &strategy)?;
        let peers = self.peers(&site, &site_id, upstream.as_ref(), &downstream)?;
        let conflicts = {
            let raw = strategy.conflict_resolution.unwrap_or_default();
            let default = ConflictPolicy::default();
            ConflictPolicy {
                strategy: raw.strategy.unwrap_or(default.strategy),
                versioning: raw.versioning.unwrap_or(default.versioning),
                audit_log: raw.audit_log.unwrap_or(default.audit_log),
            }
        };

        let listen = match &site.listen {
            None => DEFAULT_LISTEN,
            Some(text) => text.parse().map_err(|_| {
                self.at(
                    &["Site", "listen"],
                    Target::Value,
                    format!(
                        "`{text}` is not a listen address; write an IP address and a port, such as `127.0.0.1:7400` or `[::]:7400`"
                    ),
                )
            })?,
        };
        let data_dir = match &site.data_dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                return Err(self.at(
                    &["Site", "data_dir"],
                    Target::Value,
                    format!("must not be empty; write a directory, such as `{DEFAULT_DATA_DIR}`"),
                ));
            }
            Some(dir) => resolve_dir(base_dir, dir),
            None => resolve_dir(base_dir, Path::new(DEFAULT_DATA_DIR)),
        };
        let max_clock_skew = site.max_clock_skew.unwrap_or(DEFAULT_MAX_CLOCK_SKEW);
        if max_clock_skew.is_zero() {
            return Err(self.at(
                &["Site", "max_clock_skew"],
                Target::Value,
                "must be more than zero: clocks are never exactly in step; the default is `5m`",
            ));
        }
        let isolation_after = site.isolation_after.unwrap_or(DEFAULT_ISOLATION_AFTER);
        if isolation_after.is_zero() {
            return Err(self.at(
                &["Site", "isolation_after"],
                Target::Value,
                "must be more than zero: every link drops now and then; the default is `5m`",
            ));
        }
        let trust_domain = match &site.trust_domain {
            None => scope.as_str().to_owned(),
            Some(name) => match label_problem(name) {
                None => name.clone(),
                Some(problem) => {
                    return Err(self.at(
                        &["Site", "trust_domain"],
                        Target::Value,
                        format!(
                            "`{name}` is not a trust domain name: {problem}; use lowercase letters, digits and `-`, starting and ending with a letter or digit, such as `region-a`"
                        ),
                    ));
                }
            },
        };

        let webhooks = self.webhooks(&site)?;
        let status_interval = site.status_interval.unwrap_or(DEFAULT_STATUS_INTERVAL);
        if status_interval.is_zero() {
            return Err(self.at(
                &["Site", "status_interval"],
                Target::Value,
                format!("must be more than zero, such as `{DEFAULT_STATUS_INTERVAL}` (the default)"),
            ));
        }
        let nodes = self.nodes(&site)?;

        Ok(SiteConfig {
            source: Some(self.file.to_owned()),
            site_id,
            scope,
            level,
            region,
            autonomy,
            listen,
            data_dir,
            max_clock_skew,
            isolation_after,
            trust_domain,
            peers,
            upstream,
            downstream,
            conflicts,
            webhooks,
            status_interval,
            nodes,
        })
    }

    /// `Site.nodes`: both thresholds more than zero, `offline_after` beyond `delayed_after`.
    fn nodes(&self, site: &RawSite) -> Result<NodeThresholds, ConfigError> {
        let raw = site.nodes.as_ref();
        let defaults = NodeThresholds::default();
        let delayed_after = raw.and_then(|n| n.delayed_after).unwrap_or(defaults.delayed_after);
        let offline_after = raw.and_then(|n| n.offline_after).unwrap_or(defaults.offline_after);
        if delayed_after.is_zero() {
            return Err(self.at(
                &["Site", "nodes", "delayed_after"],
                Target::Value,
                format!("must be more than zero: a heartbeat takes time to arrive; the default is `{DEFAULT_NODES_DELAYED_AFTER}`"),
            ));
        }
        if offline_after <= delayed_after {
            let given = |field: &str| {
                raw.is_some_and(|n| match field {
                    "offline_after" => n.offline_after.is_some(),
                    _ => n.delayed_after.is_some(),
                })
            };
            let field = if given("offline_after") || !given("delayed_after") {
                "offline_after"
            } else {
                "delayed_after"
            };
            return Err(self.at(
                &["Site", "nodes", field],
                Target::Value,
                format!(
                    "`offline_after` ({offline_after}) must be longer than `delayed_after` ({delayed_after}): a node is delayed before it is offline"
                ),
            ));
        }
        Ok(NodeThresholds { delayed_after, offline_after })
    }

    /// `Site.webhooks`: label-like unique names, http(s) URLs, known event kinds listed once.
    fn webhooks(&self, site: &RawSite) -> Result<Vec<WebhookConfig>, ConfigError> {
        let mut hooks: Vec<WebhookConfig> = Vec::new();
        for (i, raw) in site.webhooks.iter().flatten().enumerate() {
            let path = |field: &str| FieldPath::keys(&["Site", "webhooks"]).index(i).key(field);
            if let Some(problem) = label_problem(&raw.name) {
                return Err(self.error(
                    &path("name"),
                    Target::Value,
                    format!(
                        "`{}` is not a webhook name: {problem}; use lowercase letters, digits and `-`, starting and ending with a letter or digit, such as `ops-pager`",
                        raw.name
                    ),
                ));
            }
            if let Some(first) = hooks.iter().position(|h| h.name == raw.name) {
                let line = locate(
                    self.text,
                    &self.prefix.join(&FieldPath::keys(&["Site", "webhooks"]).index(first).key("name")),
                    Target::Key,
                )
                .line;
                return Err(self.error(
                    &path("name"),
                    Target::Value,
                    format!(
                        "`{}` is also the name of the webhook on line {line}; each webhook needs its own name",
                        raw.name
                    ),
                ));
            }
            let Some(url) = webhook_url(&raw.url) else {
                return Err(self.error(
                    &path("url"),
                    Target::Value,
                    format!(
                        "`{}` is not an http(s) URL; write where to POST events, such as `https://hooks.example.com/souverix`",
                        raw.url
                    ),
                ));
            };
            let events = match &raw.events {
                None => DEFAULT_WEBHOOK_EVENTS.to_vec(),
                Some(list) if list.is_empty() => {
                    let all: Vec<String> = EventKind::ALL.iter().map(|k| format!("`{k}`")).collect();
                    return Err(self.error(
                        &path("events"),
                        Target::Value,
                        format!(
                            "lists no events, so the webhook would never be called; list some of {}, or remove `events` for `conflict` and `refusal`",
                            all.join(", ")
                        ),
                    ));
                }
                Some(list) => {
                    let mut seen = BTreeSet::new();
                    for (j, kind) in list.iter().enumerate() {
                        if !seen.insert(*kind) {
                            return Err(self.error(
                                &path("events").index(j),
                                Target::Value,
                                format!("`{kind}` is listed twice; remove one"),
                            ));
                        }
                    }
                    seen.into_iter().collect()
                }
            };
            hooks.push(WebhookConfig { name: raw.name.clone(), url, events });
        }
        Ok(hooks)
    }

    /// `Site.id`, else `Authority.master`; both must agree.
    fn site_id(&self, site: &RawSite, authority: Option<&RawAuthority>) -> Result<SiteId, ConfigError> {
        let master = authority.and_then(|a| a.master.clone());
        match (&site.id, master) {
            (Some(id), Some(master)) if *id != master => Err(self.at(
                &["Authority", "master"],
                Target::Value,
                format!(
                    "`{master}` differs from `Site.id` `{id}` (line {}); both name this site: make them equal or remove one",
                    self.line(&["Site", "id"])
                ),
            )),
            (Some(id), _) => Ok(id.clone()),
            (None, Some(master)) => Ok(master),
            (None, None) => {
                let path: &[&str] = match authority {
                    Some(_) => &["Authority", "master"],
                    None => &["Site", "id"],
                };
                Err(self.at(
                    path,
                    Target::Key,
                    "the site has no id; set `Site.id` or `Authority.master`, such as `master: \"region-a-control\"`",
                ))
            }
        }
    }

    /// `Authority.region` or `SyncStrategy.region`; both must agree.
    fn region(
        &self,
        authority: Option<&RawAuthority>,
        strategy: &RawSyncStrategy,
    ) -> Result<Option<Scope>, ConfigError> {
        let from_authority = authority.and_then(|a| a.region.clone());
        match (from_authority, strategy.region.clone()) {
            (Some(a), Some(s)) if a != s => Err(self.at(
                &["SyncStrategy", "region"],
                Target::Value,
                format!(
                    "`{s}` differs from `Authority.region` `{a}` (line {}); make them equal or remove one",
                    self.line(&["Authority", "region"])
                ),
            )),
            (a, s) => Ok(a.or(s)),
        }
    }

    /// `Site.scope`, else `global` for the global site, the region for a regional site, and
    /// the site id for the others.
    fn scope(
        &self,
        site: &RawSite,
        site_id: &SiteId,
        level: Level,
        region: Option<&Scope>,
    ) -> Result<Scope, ConfigError> {
        let global = Scope::new("global").expect("`global` is a valid scope");
        if let Some(scope) = &site.scope {
            if *scope == global && level != Level::Global {
                return Err(self.at(
                    &["Site", "scope"],
                    Target::Value,
                    format!("only the global site has scope `global`, and this site is {level}; remove `scope` or name this site's own scope"),
                ));
            }
            return Ok(scope.clone());
        }
        match (level, region) {
            (Level::Global, _) => Ok(global),
            (Level::Regional, Some(region)) => Ok(region.clone()),
            _ => Scope::new(site_id.as_str()).map_err(|err| {
                self.at(
                    &["Site", "scope"],
                    Target::Key,
                    format!("cannot use the site id as the scope ({err}); set `Site.scope`"),
                )
            }),
        }
    }

    /// The parent link: `Authority.sync` and `SyncStrategy.upstream` describe the same link,
    /// so what both give must agree.
    fn upstream(
        &self,
        site_id: &SiteId,
        authority: Option<&RawAuthority>,
        auth_sync: &RawAuthoritySync,
        strategy: &RawSyncStrategy,
    ) -> Result<Option<UpstreamLink>, ConfigError> {
        let up = strategy.upstream.as_ref();
        let target = agree(auth_sync.upstream.clone(), up.and_then(|u| u.target.clone()), |a, s| {
            self.at(
                    &["SyncStrategy", "upstream", "target"],
                    Target::Value,
                    format!(
                        "`{s}` differs from `Authority.sync.upstream` `{a}` (line {}); both name this site's parent: make them equal or remove one",
                        self.line(&["Authority", "sync", "upstream"])
                    ),
                )
        })?;
        let Some(target) = target else {
            if up.is_some() {
                return Err(self.at(
                    &["SyncStrategy", "upstream", "target"],
                    Target::Key,
                    "the upstream section names no target; add `target:` with the parent's site id, or remove the section",
                ));
            }
            if auth_sync.frequency.is_some() || auth_sync.mode.is_some() {
                return Err(self.at(
                    &["Authority", "sync", "upstream"],
                    Target::Key,
                    "`Authority.sync` sets how to sync with an upstream but names none; add `upstream:` with the parent's site id, or remove `frequency` and `mode`",
                ));
            }
            return Ok(None);
        };
        if target == *site_id {
            let path = match auth_sync.upstream {
                Some(_) => ["Authority", "sync", "upstream"],
                None => ["SyncStrategy", "upstream", "target"],
            };
            return Err(self.at(
                &path,
                Target::Value,
                format!("`{target}` is this site itself; a site cannot be its own upstream"),
            ));
        }
        let frequency = agree(auth_sync.frequency, up.and_then(|u| u.frequency), |a, s| {
            self.at(
                &["SyncStrategy", "upstream", "frequency"],
                Target::Value,
                format!(
                    "`{s}` differs from `Authority.sync.frequency` `{a}` (line {}); make them equal or remove one",
                    self.line(&["Authority", "sync", "frequency"])
                ),
            )
        })?;
        let frequency = frequency.unwrap_or(DEFAULT_UPSTREAM_FREQUENCY);
        if frequency.is_zero() {
            let path = match up.and_then(|u| u.frequency) {
                Some(_) => ["SyncStrategy", "upstream", "frequency"],
                None => ["Authority", "sync", "frequency"],
            };
            return Err(self.at(&path, Target::Value, "must be more than zero, such as `15m`"));
        }
        let mode = agree(auth_sync.mode, up.and_then(|u| u.mode), |a, s| {
            self.at(
                &["SyncStrategy", "upstream", "mode"],
                Target::Value,
                format!(
                    "`{s}` differs from `Authority.sync.mode` `{a}` (line {}); make them equal or remove one",
                    self.line(&["Authority", "sync", "mode"])
                ),
            )
        })?;
        // An autonomous site has no upstream dependency: it syncs when it can.
        let mode = mode.unwrap_or(match authority.map(|a| a.level) {
            Some(Level::Autonomous) => SyncMode::Opportunistic,
            _ => SyncMode::Continuous,
        });
        let batch_size = self.batch_size(up.and_then(|u| u.batch_size), "upstream")?;
        Ok(Some(UpstreamLink {
            target,
            frequency,
            mode,
            batch_size,
            retry_policy: up.and_then(|u| u.retry_policy).unwrap_or_default(),
        }))
    }

    fn downstream(
        &self,
        site_id: &SiteId,
        upstream: Option<&UpstreamLink>,
        strategy: &RawSyncStrategy,
    ) -> Result<DownstreamLinks, ConfigError> {
        let raw = strategy.downstream.as_ref();
        let targets = raw.and_then(|d| d.targets.clone()).unwrap_or_default();
        let target_path = |i| FieldPath::keys(&["SyncStrategy", "downstream", "targets"]).index(i);
        let mut seen = BTreeSet::new();
        for (i, target) in targets.iter().enumerate() {
            let problem = if target == site_id {
                Some(format!("`{target}` is this site itself; a site cannot be its own downstream"))
            } else if upstream.is_some_and(|up| up.target == *target) {
                Some(format!(
                    "`{target}` is this site's upstream; a site cannot be both parent and child of another"
                ))
            } else if !seen.insert(target) {
                Some(format!("`{target}` is listed twice; remove one"))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(self.error(&target_path(i), Target::Value, problem));
            }
        }
        let frequency = raw.and_then(|d| d.frequency).unwrap_or(DEFAULT_DOWNSTREAM_FREQUENCY);
        if frequency.is_zero() {
            return Err(self.at(
                &["SyncStrategy", "downstream", "frequency"],
                Target::Value,
                "must be more than zero, such as `5m`",
            ));
        }
        Ok(DownstreamLinks {
            targets,
            frequency,
            mode: raw.and_then(|d| d.mode).unwrap_or(SyncMode::Push),
            batch_size: self.batch_size(raw.and_then(|d| d.batch_size), "downstream")?,
            retry_policy: raw.and_then(|d| d.retry_policy).unwrap_or_default(),
        })
    }

    fn batch_size(&self, raw: Option<u32>, direction: &str) -> Result<usize, ConfigError> {
        let Some(raw) = raw else {
            return Ok(DEFAULT_BATCH_SIZE);
        };
        match usize::try_from(raw) {
            Ok(size) if (1..=MAX_BATCH_SIZE).contains(&size) => Ok(size),
            _ => Err(self.at(
                &["SyncStrategy", direction, "batch_size"],
                Target::Value,
                format!("`{raw}` is out of range; write a number from 1 to {MAX_BATCH_SIZE}, such as {DEFAULT_BATCH_SIZE}"),
            )),
        }
    }

    /// `Site.peers`: the addresses of this site's parent and children, as http(s) base URLs.
    fn peers(
        &self,
        site: &RawSite,
        site_id: &SiteId,
        upstream: Option<&UpstreamLink>,
        downstream: &DownstreamLinks,
    ) -> Result<BTreeMap<SiteId, String>, ConfigError> {
        let mut peers = BTreeMap::new();
        for (peer, url) in site.peers.iter().flatten() {
            let path = FieldPath::keys(&["Site", "peers", peer.as_str()]);
            let linked = upstream.is_some_and(|up| up.target == *peer) || downstream.targets.contains(peer);
            if peer == site_id {
                return Err(self.error(
                    &path,
                    Target::Key,
                    "this is the site itself; a site is not its own peer: remove it",
                ));
            }
            if !linked {
                return Err(self.error(
                    &path,
                    Target::Key,
                    format!(
                        "`{peer}` is neither this site's upstream nor one of its downstream targets; add it to `SyncStrategy.downstream.targets`, or remove it"
                    ),
                ));
            }
            let Some(base) = http_base_url(url) else {
                return Err(self.error(
                    &path,
                    Target::Value,
                    format!(
                        "`{url}` is not an http(s) URL; write the peer's base URL, such as `http://127.0.0.1:7401` or `https://region-a.example.com`"
                    ),
                ));
            };
            peers.insert(peer.clone(), base);
        }
        Ok(peers)
    }
}

/// What keeps `name` from being a label (lowercase letters, digits and `-`, starting and ending
/// with a letter or digit, at most 63 characters), or `None` when it is one.
pub(crate) fn label_problem(name: &str) -> Option<String> {
    const MAX: usize = 63;
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if name.is_empty() {
        return Some("it is empty".to_owned());
    }
    if name.chars().count() > MAX {
        return Some(format!("it is longer than {MAX} characters"));
    }
    if let Some(bad) = name.chars().find(|&c| !alnum(c) && c != '-') {
        return Some(format!("it contains `{bad}`"));
    }
    if !name.starts_with(alnum) || !name.ends_with(alnum) {
        return Some("it must start and end with a letter or digit".to_owned());
    }
    None
}

/// One of two optional values that must agree when both are given.
fn agree<T: PartialEq + Clone, E>(
    a: Option<T>,
    b: Option<T>,
    differ: impl FnOnce(&T, &T) -> E,
) -> Result<Option<T>, E> {
    match (a, b) {
        (Some(a), Some(b)) if a != b => Err(differ(&a, &b)),
        (a, b) => Ok(a.or(b)),
    }
}

/// `dir` resolved against `base` (the config file's directory) when relative.
fn resolve_dir(base: &Path, dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        return dir.to_owned();
    }
    let base = if base.as_os_str().is_empty() { Path::new(".") } else { base };
    let relative: PathBuf = dir.components().filter(|c| !matches!(c, Component::CurDir)).collect();
    base.join(relative)
}

/// `url` without trailing `/` if it is an `http://` or `https://` URL with a host, an optional
/// port and an optional path; no user info, query or fragment.
fn http_base_url(url: &str) -> Option<String> {
    is_http_url(url, false).then(|| url.trim_end_matches('/').to_owned())
}

/// Whether `url` is an `http://` or `https://` URL with a host (a name, an IPv4 address or a
/// bracketed IPv6 address), an optional port from 1 to 65535, an optional path and, with
/// `allow_query`, an optional query. Never user info, a fragment, spaces or control characters.
pub(crate) fn is_http_url(url: &str, allow_query: bool) -> bool {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return false;
    };
    let forbidden = |c: char| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '#' | '\\')
            || (!allow_query && matches!(c, '?' | '@'))
    };
    if url.contains(forbidden) {
        return false;
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let Some((ip, after)) = bracketed.split_once(']') else { return false };
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return false;
            }
            match after {
                "" => (None, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (None, Some(port)),
                    None => return false,
                },
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        },
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_must_be_http_with_a_host() {
        for good in [
            "http://127.0.0.1:7400",
            "https://region-a.example.com",
            "http://[::1]:7400",
            "http://[::1]",
            "http://host/prefix/",
        ] {
            assert!(http_base_url(good).is_some(), "{good}");
        }
        assert_eq!(http_base_url("http://h:1/").as_deref(), Some("http://h:1"));
        for bad in [
            "127.0.0.1:7400",
            "ftp://h",
            "http://",
            "http://:80",
            "http://h:",
            "http://h:99999",
            "http://h:0",
            "http://u@h",
            "http://h?x=1",
            "http://h h",
            "http://[::1",
            "http://[::1]x",
            "http://[zz]:1",
            "HTTP://h",
        ] {
            assert!(http_base_url(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn relative_data_dirs_are_resolved_against_the_config_directory() {
        assert_eq!(resolve_dir(Path::new("/etc/sx"), Path::new("./data/a")), PathBuf::from("/etc/sx/data/a"));
        assert_eq!(resolve_dir(Path::new(""), Path::new("./data")), PathBuf::from("./data"));
        assert_eq!(resolve_dir(Path::new("conf"), Path::new("data")), PathBuf::from("conf/data"));
        assert_eq!(resolve_dir(Path::new("/etc/sx"), Path::new("/var/sx")), PathBuf::from("/var/sx"));
    }

    #[test]
    fn autonomy_flags_follow_the_mode_by_default() {
        let conditional = AutonomyConfig::for_mode(Autonomy::Conditional);
        assert!(conditional.can_operate_isolated && conditional.can_modify_policies);
        assert!(!conditional.can_deploy_versions);
        let none = AutonomyConfig::for_mode(Autonomy::None);
        assert!(!none.can_operate_isolated && !none.can_modify_policies && !none.can_deploy_versions);
    }
}
