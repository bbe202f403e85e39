//! The sync engine: how sites replicate through the federation tree, store-and-forward.
//!
//! - [`codec`]: the versioned, compressed binary encoding of batches, with bounded decoding.
//! - [`backoff`]: exponential backoff with full jitter and a cap, over a seedable [`backoff::Rng`].
//! - [`link`]: link configuration, connectivity signals and link states.
//! - [`digest`]: bucket digests for anti-entropy.
//! - [`transport`]: how a site reaches a neighbour (HTTP), behind a trait.
//! - [`engine`]: [`SyncEngine`], one task per link plus the receiving side.
//!
//! Invariant: only this crate writes link records (cursors, learned scopes, signals).

pub mod backoff;
pub mod codec;
pub mod digest;
pub mod engine;
pub mod link;
mod shared_log;
pub mod transport;
mod writer;

pub use engine::{
    Ack, BATCH_CONTENT_TYPE, DigestReply, DigestRequest, EngineConfig, LinkError, LinkStatus,
    LocalWriteError, ReceiveError, StoreCalls, SyncEngine, SyncStatus,
};
pub use link::{Direction, LinkConfig, LinkState, Signal};
pub use transport::{HttpTransport, Transport, TransportError};
pub use writer::LocalCommits;
