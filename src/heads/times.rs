//! When the agent first knew of each chain head: the corroborated head's rises with their times,
//! bounded in memory without ever making a block known later than it was. The follower asks it to
//! tell how late the chain's providers made a block (a miss) from how long the agent's own backlog
//! held it (lag).

use std::{sync::Mutex, time::SystemTime};

/// Most chain-head steps remembered: beyond it, the oldest two are merged (keeping the earlier
/// time, so that no block is ever thought known later than it was).
const MAX_HEAD_STEPS: usize = 4096;

/// When the agent first knew of each chain head: the corroborated head's rises, with their times.
/// The follower asks it when a block became known, to tell how late the chain's providers made it
/// (a miss) from how long the agent's own backlog held it (lag).
#[derive(Debug, Default)]
pub struct HeadTimes {
    steps: Mutex<std::collections::VecDeque<(u64, SystemTime)>>,
}

impl HeadTimes {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, SystemTime)>> {
        self.steps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chain head rose to `number` at `at` (ignored unless it is a rise).
    pub fn record(&self, number: u64, at: SystemTime) {
        let mut steps = self.lock();
        if steps.back().is_some_and(|&(n, _)| n >= number) {
            return;
        }
        steps.push_back((number, at));
        if steps.len() > MAX_HEAD_STEPS {
            // Merge the two oldest: the lower number's time for both.
            if let (Some((_, t)), Some(second)) = (steps.pop_front(), steps.front_mut()) {
                second.1 = t.min(second.1);
            }
        }
    }

    /// When the head first reached `number`, if it has.
    pub fn known_at(&self, number: u64) -> Option<SystemTime> {
        self.lock()
            .iter()
            .find(|&&(n, _)| n >= number)
            .map(|&(_, t)| t)
    }

    /// When the first head of this run was known.
    pub fn first(&self) -> Option<SystemTime> {
        self.lock().front().map(|&(_, t)| t)
    }

    /// Forgets the steps that only blocks below `number` need (they were emitted).
    pub fn forget_below(&self, number: u64) {
        let mut steps = self.lock();
        // Keep the first step at or above `number`: it is when `number` became known.
        while steps.len() > 1
            && steps.get(1).is_some_and(|&(n, _)| n <= number)
            && steps[0].0 < number
        {
            steps.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn head_times_say_when_each_block_was_first_known() {
        let times = HeadTimes::default();
        let at = |s| std::time::UNIX_EPOCH + Duration::from_secs(s);
        times.record(10, at(100));
        times.record(9, at(101));
        times.record(15, at(105));
        assert_eq!(times.known_at(8), Some(at(100)));
        assert_eq!(times.known_at(10), Some(at(100)));
        assert_eq!(
            times.known_at(11),
            Some(at(105)),
            "known when the head reached it"
        );
        assert_eq!(times.known_at(16), None);
        assert_eq!(times.first(), Some(at(100)));
        times.forget_below(12);
        assert_eq!(times.known_at(12), Some(at(105)));
        // Bounded: the oldest steps merge, never making a block known later than it was.
        for n in 0..(MAX_HEAD_STEPS as u64 + 10) {
            times.record(100 + n, at(1000 + n));
        }
        assert!(times.lock().len() <= MAX_HEAD_STEPS);
        assert!(times.known_at(101).is_some_and(|t| t <= at(1001)));
    }
}
