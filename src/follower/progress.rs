//! What a chain's stream has done lately, as the HTTP API and the status page show it: the last
//! block processed, when, and how late; the catch-up under way; the lag over the last ten minutes
//! and the latest reorgs. Everything kept is bounded: [`LAG_POINTS`] lag samples, [`RECENT`] reorgs.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use alloy_primitives::B256;

use crate::model::{StreamEvent, StreamObserver};

/// The last block a chain emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastBlock {
    /// Its number.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
    /// Its timestamp (Unix seconds).
    pub timestamp: u64,
    /// How late it was emitted, in milliseconds.
    pub lag_ms: i64,
}

/// A backlog the stream is working through (after a restart, an outage, a burst of blocks, or a
/// start far behind the head).
#[derive(Clone, Copy, Debug)]
struct Backlog {
    from: u64,
    to: u64,
    started: std::time::Instant,
}

/// A catch-up as `/status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CatchUp {
    /// The first block of the backlog.
    pub from: u64,
    /// The head it is catching up to (it grows while the chain does).
    pub to: u64,
    /// Blocks of it emitted so far.
    pub done: u64,
    /// Blocks emitted per second since it started.
    pub blocks_per_second: f64,
    /// Seconds left at that pace (`null` before the first block).
    pub eta_seconds: Option<f64>,
}

/// One point of the lag chart: the largest lag of the blocks emitted in a [`LAG_STEP`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct LagPoint {
    /// The step's start (Unix seconds).
    pub at: u64,
    /// The largest lag emitted in it, in seconds.
    pub lag_seconds: f64,
}

/// A reorg as the status page lists it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RecentReorg {
    /// When it was followed (Unix seconds).
    pub at: u64,
    /// Canonical blocks replaced.
    pub depth: u64,
    /// The last block both branches share.
    pub common_ancestor: u64,
    /// The head before and after.
    pub old_head: u64,
    /// The block of the new branch that revealed it.
    pub new_head: u64,
}

/// How long one lag point covers.
pub const LAG_STEP: Duration = Duration::from_secs(5);
/// Lag points kept: ten minutes of [`LAG_STEP`]s.
pub const LAG_POINTS: usize = 120;
/// Reorgs kept.
pub const RECENT: usize = 10;

/// Records the last block of one chain's stream, and its recent history.
#[derive(Debug)]
pub struct Progress {
    last: Mutex<Option<LastBlock>>,
    /// When the last block was emitted (or the agent started, before the first).
    emitted_at: Mutex<std::time::Instant>,
    backlog: Mutex<Option<Backlog>>,
    lag: Mutex<VecDeque<LagPoint>>,
    reorgs: Mutex<VecDeque<RecentReorg>>,
    /// When the catch-up under way was last logged.
    logged: Mutex<Option<std::time::Instant>>,
}

/// How often a catch-up under way is logged.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

impl Default for Progress {
    fn default() -> Self {
        Self {
            last: Mutex::new(None),
            emitted_at: Mutex::new(std::time::Instant::now()),
            backlog: Mutex::new(None),
            lag: Mutex::new(VecDeque::with_capacity(LAG_POINTS)),
            reorgs: Mutex::new(VecDeque::with_capacity(RECENT)),
            logged: Mutex::new(None),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Adds `lag_seconds`, measured at `at`, to `points`: into the last point when it is of the same
/// step, else as a new one; points older than ten minutes go.
fn add_lag(points: &mut VecDeque<LagPoint>, at: u64, lag_seconds: f64) {
    let step = LAG_STEP.as_secs();
    let start = at - at % step;
    match points.back_mut() {
        Some(p) if p.at == start => p.lag_seconds = p.lag_seconds.max(lag_seconds),
        _ => points.push_back(LagPoint {
            at: start,
            lag_seconds,
        }),
    }
    let oldest = start.saturating_sub(step * (LAG_POINTS as u64 - 1));
    while points.front().is_some_and(|p| p.at < oldest) || points.len() > LAG_POINTS {
        points.pop_front();
    }
}

impl Progress {
    /// The stream (re)starts now: the time since the last block counts from here (an agent that
    /// takes a chain over from another is not late for the blocks it did not lead).
    pub fn restart(&self) {
        *self.emitted_at.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    }

    /// How long ago the last block was emitted (since start, before the first).
    pub fn since_last_block(&self) -> std::time::Duration {
        self.emitted_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// The last block emitted, if any.
    pub fn last(&self) -> Option<LastBlock> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stream has blocks `from..=to` to fetch, more than one poll's worth: it is catching up
    /// (a catch-up under way keeps its start and grows to `to`).
    pub fn behind(&self, from: u64, to: u64) {
        let mut b = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *b {
            Some(b) => b.to = b.to.max(to),
            None => {
                *b = Some(Backlog {
                    from,
                    to,
                    started: std::time::Instant::now(),
                })
            }
        }
    }

    /// The stream has reached the head: no catch-up under way.
    pub fn caught_up(&self) {
        *self.backlog.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.logged.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The catch-up under way when it is due to be logged at `now`: first [`LOG_EVERY`] after it
    /// started, then every [`LOG_EVERY`].
    pub fn log_due(&self, now: std::time::Instant) -> Option<CatchUp> {
        let started = (*self.backlog.lock().unwrap_or_else(|p| p.into_inner()))?.started;
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(logged.unwrap_or(started)) < LOG_EVERY {
            return None;
        }
        *logged = Some(now);
        drop(logged);
        self.catch_up()
    }

    /// The catch-up under way, if there is one.
    pub fn catch_up(&self) -> Option<CatchUp> {
        let b = (*self.backlog.lock().unwrap_or_else(|p| p.into_inner()))?;
        let done = self
            .last()
            .map_or(0, |l| (l.number + 1).saturating_sub(b.from))
            .min(b.to + 1 - b.from.min(b.to + 1));
        let secs = b.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let left = (b.to + 1).saturating_sub(b.from).saturating_sub(done);
        Some(CatchUp {
            from: b.from,
            to: b.to,
            done,
            blocks_per_second: (rate * 10.0).round() / 10.0,
            eta_seconds: (rate > 0.0).then(|| ((left as f64 / rate) * 10.0).round() / 10.0),
        })
    }

    /// The largest lag of each [`LAG_STEP`] of the last ten minutes in which a block was emitted,
    /// oldest first.
    pub fn lag_history(&self) -> Vec<LagPoint> {
        let mut points = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        // Steps older than ten minutes go even when no block came since.
        let now = unix_now();
        let oldest = now.saturating_sub(LAG_STEP.as_secs() * LAG_POINTS as u64);
        while points.front().is_some_and(|p| p.at < oldest) {
            points.pop_front();
        }
        points.iter().copied().collect()
    }

    /// The latest reorgs, newest first.
    pub fn recent_reorgs(&self) -> Vec<RecentReorg> {
        let reorgs = self.reorgs.lock().unwrap_or_else(|p| p.into_inner());
        reorgs.iter().rev().cloned().collect()
    }

    /// Seconds between the last block's timestamp and now (`None` before the first block).
    pub fn seconds_behind(&self) -> Option<f64> {
        let last = self.last()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        Some((now - last.timestamp as f64).max(0.0))
    }
}

impl StreamObserver for Progress {
    fn on_events(&self, events: &[StreamEvent]) {
        for e in events {
            match e {
                StreamEvent::Block(b) => {
                    *self.emitted_at.lock().unwrap_or_else(|p| p.into_inner()) =
                        std::time::Instant::now();
                    *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastBlock {
                        number: b.block_number,
                        hash: b.hash,
                        timestamp: b.timestamp,
                        lag_ms: b.lag_ms,
                    });
                    let lag = b.lag_ms.max(0) as f64 / 1000.0;
                    add_lag(
                        &mut self.lag.lock().unwrap_or_else(|p| p.into_inner()),
                        unix_now(),
                        lag,
                    );
                }
                StreamEvent::Reorg(r) => {
                    let mut reorgs = self.reorgs.lock().unwrap_or_else(|p| p.into_inner());
                    if reorgs.len() == RECENT {
                        reorgs.pop_front();
                    }
                    reorgs.push_back(RecentReorg {
                        at: unix_now(),
                        depth: r.depth,
                        common_ancestor: r.common_ancestor,
                        old_head: r.old_head.number,
                        new_head: r.new_head.number,
                    });
                }
                StreamEvent::Error(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_up_is_due_for_the_log_every_ten_seconds_while_it_lasts() {
        let p = Progress::default();
        let start = std::time::Instant::now();
        assert!(
            p.log_due(start + LOG_EVERY * 2).is_none(),
            "no catch-up yet"
        );
        p.behind(1, 100);
        assert!(p.log_due(start + Duration::from_secs(5)).is_none());
        let c = p.log_due(start + Duration::from_secs(11)).unwrap();
        assert_eq!((c.from, c.to, c.done), (1, 100, 0));
        assert!(p.log_due(start + Duration::from_secs(15)).is_none());
        assert!(p.log_due(start + Duration::from_secs(21)).is_some());
        p.caught_up();
        assert!(p.log_due(start + Duration::from_secs(60)).is_none());
    }

    #[test]
    fn lag_points_keep_each_steps_largest_lag_for_ten_minutes() {
        let mut points = VecDeque::new();
        add_lag(&mut points, 1_000, 1.0);
        add_lag(&mut points, 1_003, 4.0);
        add_lag(&mut points, 1_004, 2.0);
        assert_eq!(
            points.iter().copied().collect::<Vec<_>>(),
            [LagPoint {
                at: 1_000,
                lag_seconds: 4.0
            }]
        );
        add_lag(&mut points, 1_005, 0.5);
        assert_eq!(points.len(), 2);
        // Ten minutes on, the first steps have gone; never more than the bound.
        for t in (1_010..1_700).step_by(5) {
            add_lag(&mut points, t, 0.1);
        }
        assert_eq!(points.len(), LAG_POINTS);
        assert!(points.front().unwrap().at > 1_005);
    }
}
