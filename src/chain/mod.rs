//! The chain head: the tracker that corroborates provider heads (`newHeads` or polling).

pub mod head;

pub use head::{Head, HeadTracker};
