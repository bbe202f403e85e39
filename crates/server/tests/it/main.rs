//! The site's HTTP API, served on a real loopback listener over a real SQLite file.

mod api;
mod apply;
mod conflicts;
mod events;
mod fleet;
mod harness;
mod webhooks;
