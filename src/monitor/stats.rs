//! Running statistics of one chain's stream, in constant memory: counts, streaks and sums, never a
//! sample per block.

use std::time::Duration;

use serde::Serialize;

/// The counters of one chain.
#[derive(Clone, Debug, Default)]
pub struct ChainStats {
    processed: u64,
    missed: u64,
    recovered: u64,
    current_streak: u64,
    longest_streak: u64,
    reorgs: u64,
    recovery_seconds: f64,
    /// The longest streak since [`Self::take_peak_streak`] last looked.
    peak_streak: u64,
    /// A missed-blocks alert was sent and is not resolved yet.
    alerting: bool,
}

/// `/stats` of one chain.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatsView {
    /// Blocks emitted (recovered ones included).
    pub blocks_processed: u64,
    /// Blocks found missed.
    pub blocks_missed: u64,
    /// Missed blocks got back and emitted.
    pub blocks_recovered: u64,
    /// Missed blocks in a row, up to now.
    pub current_missed_streak: u64,
    /// The longest such run.
    pub longest_missed_streak: u64,
    /// Missed blocks per block emitted (0 before the first block).
    pub missed_block_rate: f64,
    /// Recovered per missed (`null` while nothing was missed).
    pub recovery_rate: Option<f64>,
    /// Mean time from a miss to its recovery (`null` before the first recovery).
    pub average_recovery_seconds: Option<f64>,
    /// Reorgs followed.
    pub reorgs: u64,
}

impl ChainStats {
    /// Takes back the last [`Self::on_time`] (that block turned out missed).
    pub fn undo_on_time(&mut self) {
        self.processed = self.processed.saturating_sub(1);
    }

    /// A block came in time: a streak of misses, if any, has ended.
    pub fn on_time(&mut self) {
        self.processed += 1;
        self.current_streak = 0;
    }

    /// A block was found missed; returns the streak it belongs to (1 for a single miss).
    pub fn missed(&mut self) -> u64 {
        self.missed += 1;
        self.current_streak += 1;
        self.longest_streak = self.longest_streak.max(self.current_streak);
        self.peak_streak = self.peak_streak.max(self.current_streak);
        self.current_streak
    }

    /// The longest streak since the last call (a streak that ended in between counts): what an
    /// observer sampling now and then must judge.
    pub fn take_peak_streak(&mut self) -> u64 {
        let peak = self.peak_streak.max(self.current_streak);
        self.peak_streak = self.current_streak;
        peak
    }

    /// Missed blocks in a row, now.
    pub fn current_streak(&self) -> u64 {
        self.current_streak
    }

    /// A missed block was got back and emitted, `took` after it was found missed.
    pub fn recovered(&mut self, took: Duration) {
        self.processed += 1;
        self.recovered += 1;
        self.recovery_seconds += took.as_secs_f64();
    }

    /// A block already emitted turned out missed (a provider skipped it and another served it):
    /// missed and recovered at once, without counting it processed again or joining a streak.
    pub fn missed_after_emission(&mut self) {
        self.missed += 1;
        self.recovered += 1;
        self.longest_streak = self.longest_streak.max(1);
    }

    /// A missed-blocks alert for this chain was sent (`true`) or resolved (`false`): records made
    /// meanwhile say `alert_sent`.
    pub fn set_alerting(&mut self, on: bool) {
        self.alerting = on;
    }

    /// Whether a missed-blocks alert is out for this chain.
    pub fn alerting(&self) -> bool {
        self.alerting
    }

    /// A reorg was followed.
    pub fn reorg(&mut self) {
        self.reorgs += 1;
    }

    /// The numbers `/stats` shows.
    pub fn view(&self) -> StatsView {
        let ratio = |a: u64, b: u64| (b > 0).then(|| round(a as f64 / b as f64));
        StatsView {
            blocks_processed: self.processed,
            blocks_missed: self.missed,
            blocks_recovered: self.recovered,
            current_missed_streak: self.current_streak,
            longest_missed_streak: self.longest_streak,
            missed_block_rate: ratio(self.missed, self.processed).unwrap_or(0.0),
            recovery_rate: ratio(self.recovered, self.missed),
            average_recovery_seconds: (self.recovered > 0)
                .then(|| round(self.recovery_seconds / self.recovered as f64)),
            reorgs: self.reorgs,
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaks_rates_and_averages() {
        let mut s = ChainStats::default();
        assert_eq!(s.view().recovery_rate, None);
        assert_eq!(s.view().missed_block_rate, 0.0);
        for _ in 0..6 {
            s.on_time();
        }
        assert_eq!(s.missed(), 1);
        assert_eq!(s.missed(), 2);
        s.recovered(Duration::from_secs(2));
        s.recovered(Duration::from_secs(4));
        s.on_time();
        assert_eq!(s.missed(), 1, "an on-time block ends the streak");
        s.reorg();
        let v = s.view();
        assert_eq!(
            v,
            StatsView {
                blocks_processed: 9,
                blocks_missed: 3,
                blocks_recovered: 2,
                current_missed_streak: 1,
                longest_missed_streak: 2,
                missed_block_rate: 0.3333,
                recovery_rate: Some(0.6667),
                average_recovery_seconds: Some(3.0),
                reorgs: 1,
            }
        );
    }

    #[test]
    fn a_streak_that_ended_between_two_looks_is_seen_once() {
        let mut s = ChainStats::default();
        assert_eq!(s.take_peak_streak(), 0);
        for _ in 0..4 {
            s.missed();
        }
        s.on_time();
        assert_eq!(s.take_peak_streak(), 4, "ended, but not looked at yet");
        assert_eq!(s.take_peak_streak(), 0);
        s.missed();
        assert_eq!(s.take_peak_streak(), 1);
        assert_eq!(s.take_peak_streak(), 1, "still going");
    }
}
