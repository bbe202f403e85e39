//! A site's configuration file: the seed's `Authority` and `SyncStrategy` documents, accepted
//! verbatim, plus a `Site` document with what a running site needs (listen address, data
//! directory, peers' addresses).
//!
//! [`SiteConfig::load`] reads a file and resolves it: defaults are applied and the documents
//! are checked against each other. Every refusal is a [`ConfigError`] that names the file,
//! the line (and column), the field's full path, and how to fix it. The crate reads the file
//! it is given and nothing else.

mod duration;
mod error;
mod file;
mod locate;
mod site;

pub use duration::{Duration, DurationError};
pub use error::{ConfigError, Location};
pub use site::{
    AutonomyConfig, ConflictPolicy, ConflictStrategy, DEFAULT_BATCH_SIZE, DEFAULT_DATA_DIR,
    DEFAULT_DOWNSTREAM_FREQUENCY, DEFAULT_LISTEN, DEFAULT_MAX_CLOCK_SKEW, DEFAULT_UPSTREAM_FREQUENCY,
    DownstreamLinks, EMBEDDED_DEFAULT, MAX_BATCH_SIZE, MAX_FILE_SIZE, RetryPolicy, SiteConfig, SyncMode,
    UpstreamLink,
};
