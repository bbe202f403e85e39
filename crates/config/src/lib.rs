//! A site's configuration file: the design's `Authority` and `SyncStrategy` documents, accepted
//! verbatim, plus a `Site` document with what a running site needs (listen address, data
//! directory, peers' addresses, trust domain, when to count as isolated, webhooks, how often to publish
//! the site's status summary and when a managed node counts as delayed or offline). And a
//! federation file: the whole tree of sites, one such set of documents per site.
//!
//! [`SiteConfig::load`] reads a file and resolves it: defaults are applied and the documents
//! are checked against each other. [`FederationConfig::load`] does the same for every site of
//! a federation file and checks that they form a tree under one global site;
//! [`FederationConfig::embedded_demo`] is the design's Federation Model. Every refusal is a
//! [`ConfigError`] that names the file, the line (and column), the field's full path, and how
//! to fix it. The crate reads the file it is given and nothing else.

mod duration;
mod error;
mod federation;
mod file;
mod locate;
mod render;
mod site;
mod webhook;

pub use duration::{Duration, DurationError};
pub use error::{ConfigError, Location};
pub use federation::{EMBEDDED_DEMO, FederatedSite, FederationConfig, FederationRunError};
pub use site::{
    AutonomyConfig, ConflictPolicy, ConflictStrategy, DEFAULT_BATCH_SIZE, DEFAULT_DATA_DIR,
    DEFAULT_DOWNSTREAM_FREQUENCY, DEFAULT_ISOLATION_AFTER, DEFAULT_LISTEN, DEFAULT_MAX_CLOCK_SKEW,
    DEFAULT_NODES_DELAYED_AFTER, DEFAULT_NODES_OFFLINE_AFTER, DEFAULT_STATUS_INTERVAL,
    DEFAULT_UPSTREAM_FREQUENCY, DownstreamLinks, EMBEDDED_DEFAULT, MAX_BATCH_SIZE, MAX_FILE_SIZE,
    NodeThresholds, RetryPolicy, SiteConfig, SyncMode, UpstreamLink,
};
pub use webhook::{DEFAULT_WEBHOOK_EVENTS, EventKind, WebhookConfig};
