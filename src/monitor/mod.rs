//! The missed-block monitor: finding missed and late blocks in the stream ([`chain`]), why each was
//! missed and how bad it was ([`classify`]), the running statistics of each chain ([`stats`]), the
//! rotated JSON-lines log ([`log`]) and the CSV/JSON exports ([`export`]). The record itself is a
//! ground-floor type, [`crate::model::MissedBlock`].

pub mod chain;
pub mod classify;
pub mod export;
pub mod log;
pub mod recovery;
pub mod stats;
pub mod watch;

pub use chain::{ChainMonitor, Emitted};
pub use classify::SeverityRules;
pub use recovery::RecoveryPolicy;
pub use stats::ChainStats;
pub use watch::MissWatch;
