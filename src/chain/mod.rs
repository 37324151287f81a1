//! Following a chain: block types, the head tracker, the canonical window and the follower.

pub mod canonical;
pub mod follower;
pub mod progress;

pub use canonical::{CanonicalChain, Link};
pub use follower::{
    ChainFollower, FollowError, LogObserver, MetricsObserver, RecoveryPolicy, StreamObserver,
};
pub use progress::Progress;
