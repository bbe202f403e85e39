//! Integration tests of the `store` crate: the conformance suite (every case and the
//! model-based test) against [`store::SqliteStore`], and what only SQLite has (file ownership,
//! WAL and fsync settings, schema versions, corrupt rows, concurrent use).

mod conformance;
mod sqlite;
