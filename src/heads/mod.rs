//! The heads stage: what the newest block of each chain is, learned from every provider and never
//! from one provider's word alone. Heads arrive by WebSocket `newHeads` subscriptions or by polling
//! (`tracker`, `subscribe`), are recorded in the chain's head book (`book`, `record`), which
//! corroborates the chain head, finds lies and queues the checks that settle them (`checks`); the
//! chain head is published to the follower with the time it became known (`times`), and the blocks
//! providers skipped leave the stage as data the follower takes (`skips`).
//!
//! This stage sits above single providers (`rpc`) and below the pool, which reads the book to rank
//! providers: nothing here uses the pool.

mod book;
mod checks;
mod record;
mod skips;
mod subscribe;
mod times;
mod tracker;

pub use book::{Check, CheckKind};
pub use book::{Fork, HeadBook, HeadRules, Lie, ProviderHead, Reported};
pub use checks::run_checks;
pub use record::poll_head;
pub use skips::{Skip, Skips};
pub use times::HeadTimes;
pub use tracker::{Head, HeadTracker};

pub use crate::rpc::LieKind;
