//! The missed-block monitor: what a missed block is ([`record`]), why it happened and how bad it was
//! ([`classify`]), and the running statistics of each chain ([`stats`]).
//!
//! (Work in progress for issue 6: detection in the follower, recovery, the JSON-lines log and export
//! build on these.)

pub mod chain;
pub mod classify;
pub mod export;
pub mod log;
pub mod record;
pub mod stats;

pub use chain::{ChainMonitor, Emitted};
pub use classify::{Reason, Severity, SeverityRules};
pub use record::MissedBlock;
pub use stats::ChainStats;
