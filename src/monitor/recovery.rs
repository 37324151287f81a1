//! When the open miss the stream waits on is asked for again: `delay` apart, up to `attempts`
//! times (then declared unrecovered, and still asked for every `delay`); a block nobody had, while
//! the chain head is below it, may not exist yet and is asked for as soon as the head reaches it.
//! Pure timing logic: the follower makes the attempts this schedule says are due.

use std::time::{Duration, Instant};

/// How a block the stream waits on, that no provider could serve, is recovered (`[monitor]`).
#[derive(Clone, Copy, Debug)]
pub struct RecoveryPolicy {
    /// Attempts before the block is declared unrecovered (it is still asked for afterwards).
    pub attempts: u32,
    /// The wait between two attempts.
    pub delay: Duration,
}

/// The recovery of the block the stream waits on.
#[derive(Debug)]
struct Recovering {
    number: u64,
    /// When the next attempt is due.
    next_at: Instant,
    /// Attempts made.
    tries: u32,
    /// The last attempt (or the miss itself) found no provider with the block: it may not exist
    /// yet, and is asked for as soon as the head reaches it.
    unserved: bool,
    /// Attempts are used up: declared unrecovered, still asked for every `delay`.
    exhausted: bool,
}

/// What an attempt that failed leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Asked again later.
    Again,
    /// This was the last counted attempt: the block is declared unrecovered now (once).
    Exhausted {
        /// Attempts made.
        tries: u32,
    },
}

/// The recovery schedule of one chain.
#[derive(Debug)]
pub struct Recovery {
    policy: RecoveryPolicy,
    current: Option<Recovering>,
}

impl Recovery {
    /// A schedule following `policy`.
    pub fn new(policy: RecoveryPolicy) -> Self {
        Self {
            policy,
            current: None,
        }
    }

    /// The policy.
    pub fn policy(&self) -> RecoveryPolicy {
        self.policy
    }

    /// Starts recovering the open miss at `number`, unless it is under way: `unserved`: it opened
    /// because no provider had the block, not because they failed.
    pub fn start(&mut self, number: u64, unserved: bool, now: Instant) {
        if self.current.as_ref().is_some_and(|r| r.number == number) {
            return;
        }
        self.current = Some(Recovering {
            number,
            next_at: now + self.policy.delay,
            tries: 0,
            unserved,
            exhausted: false,
        });
    }

    /// Whether block `number` is being recovered (only recovery attempts ask for it).
    pub fn holds(&self, number: u64) -> bool {
        self.current.as_ref().is_some_and(|r| r.number == number)
    }

    /// Forgets the recovery (its block came).
    pub fn done(&mut self) {
        self.current = None;
    }

    /// The attempt due now, if one is: its block and attempt number (counted). `next`: the block
    /// the stream waits for (another one ends the recovery: the stream moved on or back);
    /// `head_reached`: the chain head is at or past the block.
    pub fn due(
        &mut self,
        next: Option<u64>,
        head_reached: bool,
        now: Instant,
    ) -> Option<(u64, u32)> {
        let r = self.current.as_mut()?;
        if Some(r.number) != next {
            self.current = None;
            return None;
        }
        if r.unserved && !head_reached {
            return None;
        }
        if now < r.next_at && !r.unserved {
            return None;
        }
        r.tries += 1;
        Some((r.number, r.tries))
    }

    /// The attempt failed: `unserved` (no provider had the block) or an error; `head_reached` as
    /// when it was made.
    pub fn failed(&mut self, unserved: bool, head_reached: bool, now: Instant) -> AfterFailure {
        let Some(r) = self.current.as_mut() else {
            return AfterFailure::Again;
        };
        r.next_at = now + self.policy.delay;
        // Not served although the head had reached it: asked again `delay` apart.
        r.unserved = unserved && !head_reached;
        if r.tries < self.policy.attempts || r.exhausted {
            return AfterFailure::Again;
        }
        r.exhausted = true;
        AfterFailure::Exhausted { tries: r.tries }
    }

    /// How long the follower may wait, at most `poll`, before the next attempt is due.
    pub fn wait(&self, poll: Duration, now: Instant) -> Duration {
        self.current
            .as_ref()
            .map_or(poll, |r| poll.min(r.next_at.saturating_duration_since(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RecoveryPolicy {
        RecoveryPolicy {
            attempts: 2,
            delay: Duration::from_secs(3),
        }
    }

    #[test]
    fn attempts_are_delay_apart_then_declared_unrecovered_once() {
        let t0 = Instant::now();
        let mut r = Recovery::new(policy());
        r.start(10, false, t0);
        assert!(r.holds(10));
        assert_eq!(r.due(Some(10), true, t0), None, "not before delay");
        assert_eq!(r.wait(Duration::from_secs(10), t0), Duration::from_secs(3));
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(r.due(Some(10), true, t1), Some((10, 1)));
        assert_eq!(r.failed(false, true, t1), AfterFailure::Again);
        let t2 = t1 + Duration::from_secs(3);
        assert_eq!(r.due(Some(10), true, t2), Some((10, 2)));
        assert_eq!(
            r.failed(false, true, t2),
            AfterFailure::Exhausted { tries: 2 }
        );
        let t3 = t2 + Duration::from_secs(3);
        assert_eq!(r.due(Some(10), true, t3), Some((10, 3)), "still asked for");
        assert_eq!(
            r.failed(false, true, t3),
            AfterFailure::Again,
            "declared once"
        );
    }

    #[test]
    fn a_block_nobody_had_is_asked_for_when_the_head_reaches_it() {
        let t0 = Instant::now();
        let mut r = Recovery::new(policy());
        r.start(10, true, t0);
        let late = t0 + Duration::from_secs(60);
        assert_eq!(r.due(Some(10), false, late), None, "head below: not yet");
        assert_eq!(
            r.due(Some(10), true, t0),
            Some((10, 1)),
            "at once, before delay"
        );
        // Unserved although the head had reached it: now `delay` apart.
        assert_eq!(r.failed(true, true, t0), AfterFailure::Again);
        assert_eq!(r.due(Some(10), true, t0), None);
    }

    #[test]
    fn the_stream_moving_elsewhere_ends_the_recovery() {
        let t0 = Instant::now();
        let mut r = Recovery::new(policy());
        r.start(10, false, t0);
        r.start(10, true, t0 + Duration::from_secs(1));
        assert_eq!(
            r.wait(Duration::from_secs(10), t0),
            Duration::from_secs(3),
            "not restarted"
        );
        assert_eq!(r.due(Some(11), true, t0 + Duration::from_secs(9)), None);
        assert!(!r.holds(10));
        assert_eq!(
            r.due(Some(10), true, t0 + Duration::from_secs(9)),
            None,
            "ended"
        );
    }
}
