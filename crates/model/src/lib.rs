//! The pure domain model of a Souverix federation: site and object identities, authority
//! levels, hybrid logical clocks, per-object version vectors, versions and the
//! last-write-wins order, and the object documents operators read and write.
//!
//! This crate does no IO, spawns nothing and never reads a clock: time comes in as an
//! argument (milliseconds since the Unix epoch), so every function here is deterministic and
//! can be driven by tests and by the simulator alike.

mod authority;
mod document;
mod hlc;
mod ids;
mod level;
mod time;
mod version;
mod vv;

pub use authority::{Directory, Refusal, Relation, Rule, SiteCard, Strategy};
pub use document::{
    API_VERSION, BodyError, DocumentError, DocumentMetadata, ObjectDocument, StoredObject, ValidDocument,
};
pub use hlc::{ClockError, Hlc, HlcClock};
pub use ids::{IdError, Kind, ObjectKey, ObjectName, Scope, SiteId};
pub use level::{Autonomy, Level};
pub use time::format_rfc3339_millis;
pub use version::{ContentHash, SpecText, Version, VersionId, VersionIdError, labels_text, lww_winner};
pub use vv::{Causality, VersionVector};

/// A source of physical time in milliseconds since the Unix epoch. The model never reads a
/// clock; the site passes one of these to whatever needs the time, so tests and the simulator
/// can drive it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}
