//! The missed-block monitor of one chain, fed by its follower: decides, for each block the stream
//! emits, whether it was missed on the way (a first attempt that failed, an outright failure that
//! held the stream, or a late arrival), and keeps the chain's statistics.
//!
//! The follower holds the stream's order: a block no provider can serve is never skipped. It stays
//! an *open* miss (recorded unrecovered at once) while the follower keeps asking for it, and its
//! record is completed when it is finally emitted.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::KeyValue;

use super::{ChainStats, SeverityRules};
use crate::model::{MissedBlock, Reason};
use crate::{
    pool::PoolError,
    rpc::RpcError,
    telemetry::{metrics::attr, Metrics},
};

/// What the monitor is told of an emitted block.
#[derive(Debug)]
pub struct Emitted<'a> {
    /// Its number.
    pub number: u64,
    /// Its timestamp (Unix seconds).
    pub timestamp: u64,
    /// The provider that served it.
    pub provider: &'a str,
    /// When the agent had it.
    pub received: SystemTime,
    /// How long its fetch took.
    pub fetch_took: Duration,
    /// Attempts its fetch took.
    pub attempts: u32,
    /// The first attempt that failed, if one did.
    pub first_failure: Option<&'a (String, RpcError)>,
    /// When the agent first knew the block existed: when the chain head reached it (or when it
    /// was received, if that was earlier). Lateness up to then is the providers' and the network's;
    /// after it, the agent's own backlog (lag, never a miss).
    pub known: SystemTime,
    /// How long the provider that served it took to answer (without waits for the agent's own
    /// rate limit): the provider's share of its lateness after it was known.
    pub served_in: Duration,
    /// The hash of the block the stream emitted at this height before a reorg replaced it.
    pub replaced: Option<alloy_primitives::B256>,
}

#[derive(Debug)]
struct OpenMiss {
    record: MissedBlock,
    found: SystemTime,
    /// Fetches of the block since the one that opened the miss, all failed.
    retries: u32,
}

/// The monitor of one chain.
#[derive(Debug)]
pub struct ChainMonitor {
    chain: String,
    rules: SeverityRules,
    expected_block_time: Duration,
    stats: Arc<Mutex<ChainStats>>,
    open: Option<OpenMiss>,
    /// The previous emitted block's timestamp.
    last_timestamp: Option<u64>,
    /// When this run first knew the chain head: blocks due from then on are judged for lateness,
    /// blocks due before (made while the agent was not running) are history, not misses.
    watching_since: Option<SystemTime>,
    /// Why the last miss happened: late blocks of the same outage share it.
    last_reason: Option<Reason>,
    /// The last blocks emitted: number, provider, whether a record was made for it, when.
    recent: std::collections::VecDeque<Recent>,
    /// Blocks the active provider skipped that are not emitted yet.
    skipped_ahead: std::collections::BTreeMap<u64, String>,
    metrics: Arc<Metrics>,
    /// A streak this long is logged at error.
    alert_threshold: u64,
}

/// How a block emitted now was missed on the way.
struct Miss {
    reason: Reason,
    /// When it was expected (Unix seconds).
    expected: u64,
    /// How late it came.
    late: Duration,
    /// From when it was missed to now.
    took: Duration,
    /// Fetches it took after the miss.
    attempts: u32,
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// A block emitted lately.
#[derive(Debug)]
struct Recent {
    number: u64,
    provider: String,
    /// A missed-block record was made for it.
    recorded: bool,
    at: SystemTime,
}

/// Emitted blocks remembered for skips found after them.
const RECENT: usize = 128;
/// Skipped blocks remembered until they are emitted.
const MAX_SKIPPED_AHEAD: usize = 64;

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn unix(t: SystemTime) -> u64 {
    since_epoch(t).as_secs()
}

impl ChainMonitor {
    /// A monitor for `chain`, sharing `stats` with the HTTP API.
    pub fn new(
        chain: &str,
        expected_block_time: Duration,
        max_block_delay: Duration,
        stats: Arc<Mutex<ChainStats>>,
        metrics: Arc<Metrics>,
        alert_threshold: u64,
    ) -> Self {
        Self {
            chain: chain.to_owned(),
            rules: SeverityRules::new(max_block_delay),
            expected_block_time,
            stats,
            open: None,
            last_timestamp: None,
            watching_since: None,
            last_reason: None,
            recent: std::collections::VecDeque::new(),
            skipped_ahead: std::collections::BTreeMap::new(),
            metrics,
            alert_threshold: alert_threshold.max(1),
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, ChainStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the block after the last emitted one was expected (since the Unix epoch; `fallback`
    /// before the first block).
    fn expected_at(&self, fallback: Duration) -> Duration {
        self.last_timestamp
            .map(|t| Duration::from_secs(t) + self.expected_block_time)
            .unwrap_or(fallback)
    }

    /// No provider could serve block `number` this time: opens a miss (returned, unrecovered, to
    /// be stored) or counts one more attempt on the open one (returns `None`).
    pub fn fetch_failed(&mut self, number: u64, error: &PoolError) -> Option<MissedBlock> {
        let (reason, provider) = match error {
            PoolError::Exhausted {
                error, provider, ..
            } => (Reason::from_error(error), Some(provider.clone())),
            PoolError::NoProvider { .. } => (Reason::NodeUnresponsive, None),
        };
        if let Some(open) = self.open_at(number) {
            open.retries += 1;
            return None;
        }
        self.open_miss(number, reason, provider)
    }

    /// No block after the tip has come for `max_block_delay`: block `number` is overdue, for
    /// `reason`. Opens a miss (returned) unless it is open already (nothing was fetched: no
    /// attempt is counted).
    pub fn overdue(&mut self, number: u64, reason: Reason) -> Option<MissedBlock> {
        if self.open_at(number).is_some() {
            return None;
        }
        self.open_miss(number, reason, None)
    }

    fn open_miss(
        &mut self,
        number: u64,
        reason: Reason,
        provider: Option<String>,
    ) -> Option<MissedBlock> {
        let now = SystemTime::now();
        self.last_reason = Some(reason);
        let streak = self.stats().missed();
        let mut metadata = serde_json::Map::new();
        if let Some(p) = provider {
            metadata.insert("failed_provider".into(), p.into());
        }
        let record = MissedBlock {
            timestamp: unix(now),
            chain: self.chain.clone(),
            block_number: number,
            reason,
            severity: self.rules.rate(Duration::ZERO, streak, false),
            expected_timestamp: self.expected_at(since_epoch(now)).as_secs(),
            actual_timestamp: unix(now),
            recovery_attempts: 0,
            recovered: false,
            recovered_from: None,
            metadata,
            alert_sent: self.stats().alerting(),
        };
        self.count(&record, streak);
        self.lengthened(&record, streak);
        self.open = Some(OpenMiss {
            record: record.clone(),
            found: now,
            retries: 0,
        });
        Some(record)
    }

    /// `record`, stored unrecovered by the last run for the block the stream starts at, is open
    /// again: counted in this run's statistics, and completed when the block is emitted.
    pub fn reopen(&mut self, record: MissedBlock) {
        let streak = self.stats().missed();
        self.count(&record, streak);
        self.last_reason = Some(record.reason);
        self.open = Some(OpenMiss {
            found: UNIX_EPOCH + Duration::from_secs(record.timestamp),
            retries: record.recovery_attempts,
            record,
        });
    }

    /// The open miss's record with the attempts made since it was stored, if there were any: to be
    /// stored at shutdown.
    pub fn open_attempts_unsaved(&mut self) -> Option<MissedBlock> {
        let open = self.open.as_mut()?;
        if open.retries == open.record.recovery_attempts {
            return None;
        }
        open.record.recovery_attempts = open.retries;
        Some(open.record.clone())
    }

    fn open_at(&mut self, number: u64) -> Option<&mut OpenMiss> {
        self.open
            .as_mut()
            .filter(|o| o.record.block_number == number)
    }

    /// Another fetch of the open miss at `number` found no provider with the block (an error would
    /// be [`Self::fetch_failed`]).
    pub fn not_served(&mut self, number: u64) {
        if let Some(open) = self.open_at(number) {
            open.retries += 1;
        }
    }

    /// The recovery attempts of the open miss at `number` are used up: returns its record, which
    /// now says so (`recovery_attempts`, `metadata.retries_exhausted`), to be stored again.
    pub fn retries_exhausted(&mut self, number: u64) -> Option<MissedBlock> {
        let open = self.open_at(number)?;
        open.record.recovery_attempts = open.retries;
        open.record
            .metadata
            .insert("retries_exhausted".into(), true.into());
        Some(open.record.clone())
    }

    /// Block `b` is being emitted: returns its missed-block record if it was missed on the way
    /// (found now, or the open miss it completes).
    pub fn emitted(&mut self, b: &Emitted<'_>) -> Option<MissedBlock> {
        let skipped_by = self.skipped_ahead.remove(&b.number);
        self.skipped_ahead.retain(|&n, _| n > b.number);
        let mut record = match b.replaced {
            Some(orphan) => Some(self.replaced_record(b, orphan)),
            None => self.judge(b),
        };
        if record.is_none() {
            if let Some(by) = skipped_by {
                record = Some(self.skipped_record(b, &by));
            }
        }
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            number: b.number,
            provider: b.provider.to_owned(),
            recorded: record.is_some(),
            at: b.received,
        });
        record
    }

    /// The block at `b`'s height that the stream emitted was replaced by a reorg (`orphan`): the
    /// canonical block comes only now, a `ChainReorg` miss, recovered from the provider that served
    /// the new branch. Its recovery took from the orphan's emission to now.
    fn replaced_record(&mut self, b: &Emitted<'_>, orphan: alloy_primitives::B256) -> MissedBlock {
        self.last_timestamp = Some(b.timestamp);
        let orphan_at = self
            .recent
            .iter()
            .rev()
            .find(|r| r.number == b.number)
            .map(|r| r.at);
        let since_made = since_epoch(b.received).saturating_sub(Duration::from_secs(b.timestamp));
        let took = orphan_at
            .map(|t| b.received.duration_since(t).unwrap_or_default())
            .unwrap_or(since_made);
        let mut metadata = serde_json::Map::new();
        metadata.insert("orphaned_hash".into(), orphan.to_string().into());
        self.missed_now(
            b,
            Miss {
                reason: Reason::ChainReorg,
                expected: b.timestamp,
                late: since_made,
                took,
                attempts: b.attempts.max(1),
                metadata,
            },
        )
    }

    /// `b`, emitted now, was missed on the way and is recovered: its record, counted as missed
    /// (in the current streak) and recovered.
    fn missed_now(&mut self, b: &Emitted<'_>, miss: Miss) -> MissedBlock {
        let streak = self.stats().missed();
        self.stats().recovered(miss.took);
        let mut metadata = miss.metadata;
        metadata.insert("recovery_seconds".into(), round_ms(miss.took).into());
        let received = unix(b.received);
        let record = MissedBlock {
            timestamp: received,
            chain: self.chain.clone(),
            block_number: b.number,
            reason: miss.reason,
            severity: self.rules.rate(miss.late, streak, true),
            expected_timestamp: miss.expected,
            actual_timestamp: received,
            recovery_attempts: miss.attempts,
            recovered: true,
            recovered_from: Some(b.provider.to_owned()),
            metadata,
            alert_sent: self.stats().alerting(),
        };
        self.count(&record, streak);
        self.lengthened(&record, streak);
        self.recovered(miss.took);
        record
    }

    /// A block the active provider skipped in its `newHeads` sequence while another served it.
    fn skipped_record(&mut self, b: &Emitted<'_>, by: &str) -> MissedBlock {
        // It was counted on time a moment ago: now it is a miss, recovered as it came.
        let streak = {
            let mut s = self.stats();
            s.undo_on_time();
            s.missed()
        };
        self.stats().recovered(Duration::ZERO);
        let record = self.skip_record(b.number, by, Some(b.provider), unix(b.received), streak);
        self.count(&record, streak);
        self.lengthened(&record, streak);
        self.recovered(Duration::ZERO);
        record
    }

    fn skip_record(
        &self,
        number: u64,
        by: &str,
        served_by: Option<&str>,
        at: u64,
        streak: u64,
    ) -> MissedBlock {
        let mut metadata = serde_json::Map::new();
        metadata.insert("skipped_by".into(), by.into());
        metadata.insert("recovery_seconds".into(), 0.0.into());
        MissedBlock {
            timestamp: at,
            chain: self.chain.clone(),
            block_number: number,
            reason: Reason::NodeUnresponsive,
            severity: self.rules.rate(Duration::ZERO, streak, true),
            expected_timestamp: at,
            actual_timestamp: at,
            recovery_attempts: 1,
            recovered: true,
            recovered_from: served_by.map(str::to_owned),
            metadata,
            alert_sent: self.stats().alerting(),
        }
    }

    /// The active provider `by` skipped block `number` in its `newHeads` sequence. Returns its
    /// record when the block was already emitted (by another provider); a block not emitted yet is
    /// recorded when it is.
    pub fn skipped(&mut self, number: u64, by: &str) -> Option<MissedBlock> {
        let newest = self.recent.back().map(|r| r.number);
        if newest.is_none_or(|n| number > n) {
            if self.skipped_ahead.len() < MAX_SKIPPED_AHEAD {
                self.skipped_ahead.insert(number, by.to_owned());
            }
            return None;
        }
        let entry = self.recent.iter_mut().rev().find(|r| r.number == number)?;
        if entry.recorded {
            // Already recorded as missed for another reason.
            return None;
        }
        entry.recorded = true;
        let served_by = entry.provider.clone();
        self.stats().missed_after_emission();
        let now = unix(SystemTime::now());
        let record = self.skip_record(number, by, Some(&served_by), now, 1);
        self.count(&record, self.stats().current_streak());
        self.recovered(Duration::ZERO);
        Some(record)
    }

    /// The agent knew a chain head for the first time in this run at `at`: blocks due from then on
    /// are judged for lateness.
    pub fn watching_since(&mut self, at: SystemTime) {
        self.watching_since.get_or_insert(at);
    }

    /// Decides whether `b` was missed on the way (before it was emitted). Only lateness that is not
    /// the agent's own counts: how late the block was known (its head announced) past its
    /// expected time, plus how long its provider took to serve it. Time spent in the agent's
    /// backlog (catching up within its rate limits) is lag.
    fn judge(&mut self, b: &Emitted<'_>) -> Option<MissedBlock> {
        let expected = self.expected_at(Duration::from_secs(b.timestamp));
        self.last_timestamp = Some(b.timestamp);
        let received = unix(b.received);
        if let Some(open) = self.open.take() {
            if open.record.block_number == b.number {
                let took = b.received.duration_since(open.found).unwrap_or_default();
                let streak = self.stats().current_streak();
                self.stats().recovered(took);
                let mut record = open.record;
                record.recovered = true;
                record.recovered_from = Some(b.provider.to_owned());
                // The failed retries and the fetch that got it.
                record.recovery_attempts = open.retries + 1;
                record.actual_timestamp = received;
                record
                    .metadata
                    .insert("recovery_seconds".into(), round_ms(took).into());
                record.severity = self.rules.rate(
                    since_epoch(b.received)
                        .saturating_sub(Duration::from_secs(record.expected_timestamp)),
                    streak,
                    true,
                );
                self.recovered(took);
                return Some(record);
            }
            // A reorg moved the stream elsewhere: the open block is no longer the next one.
            self.open = Some(open);
        }
        let known = b.known.min(b.received);
        let late = (since_epoch(known) + b.served_in).saturating_sub(expected);
        let judged = self
            .watching_since
            .is_some_and(|w| expected >= since_epoch(w));
        let reason = match b.first_failure {
            Some((_, error)) => Reason::from_error(error),
            None if judged && late > self.rules.max_block_delay => {
                self.last_reason.unwrap_or(Reason::NetworkLatency)
            }
            None => {
                self.last_reason = None;
                self.stats().on_time();
                self.metrics
                    .missed_streak
                    .record(0, &[KeyValue::new(attr::CHAIN, self.chain.clone())]);
                return None;
            }
        };
        // Recovered this long after it became a miss: a late block when it was `max_block_delay`
        // past its expected time, a failed fetch when its first attempt failed.
        let took = if b.first_failure.is_some() {
            b.fetch_took
        } else {
            late.saturating_sub(self.rules.max_block_delay)
        };
        let mut metadata = serde_json::Map::new();
        if let Some((p, e)) = b.first_failure {
            metadata.insert("failed_provider".into(), p.clone().into());
            metadata.insert("error_type".into(), e.error_type().into_owned().into());
        }
        Some(self.missed_now(
            b,
            Miss {
                reason,
                expected: expected.as_secs(),
                late,
                took,
                attempts: b.attempts.saturating_sub(1),
                metadata,
            },
        ))
    }

    /// A reorg was followed.
    pub fn reorg(&mut self) {
        self.stats().reorg();
    }

    fn count(&self, r: &MissedBlock, streak: u64) {
        let chain = KeyValue::new(attr::CHAIN, self.chain.clone());
        self.metrics.blocks_missed.add(
            1,
            &[
                chain.clone(),
                KeyValue::new(attr::REASON, r.reason.as_str()),
                KeyValue::new(attr::SEVERITY, r.severity.as_str()),
            ],
        );
        self.metrics.missed_streak.record(streak, &[chain]);
    }

    /// `r` made the streak `streak` long: reaching `alert_threshold` is logged at error.
    fn lengthened(&self, r: &MissedBlock, streak: u64) {
        if streak == self.alert_threshold {
            tracing::error!(
                chain = %self.chain, streak, block_number = r.block_number, reason = r.reason.as_str(),
                "missed-block streak reached monitor.alert_threshold"
            );
        }
    }

    fn recovered(&self, took: Duration) {
        let chain = [KeyValue::new(attr::CHAIN, self.chain.clone())];
        self.metrics.blocks_recovered.add(1, &chain);
        self.metrics
            .recovery_duration
            .record(took.as_secs_f64(), &chain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor() -> ChainMonitor {
        let meter = opentelemetry::global::meter("test");
        ChainMonitor::new(
            "c",
            Duration::from_secs(12),
            Duration::from_secs(30),
            Arc::new(Mutex::new(ChainStats::default())),
            Arc::new(Metrics::new(&meter)),
            5,
        )
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Block `number` made at `timestamp`, known (its head announced) and received at `received`.
    fn block(number: u64, timestamp: u64, received: u64) -> Emitted<'static> {
        Emitted {
            number,
            timestamp,
            provider: "p1",
            received: at(received),
            fetch_took: Duration::from_millis(20),
            attempts: 1,
            first_failure: None,
            known: at(received),
            served_in: Duration::from_millis(20),
            replaced: None,
        }
    }

    #[test]
    fn history_is_not_late_but_blocks_due_while_watching_are() {
        let mut m = monitor();
        m.watching_since(at(1020));
        // Made before the agent watched: history, however late it is emitted.
        assert_eq!(m.emitted(&block(1, 1000, 5000)), None);
        assert_eq!(m.emitted(&block(2, 1012, 5000)), None);
        // Block 3, due at 1024 while watching, known at 1025.
        assert_eq!(m.emitted(&block(3, 1024, 1025)), None);
        // Block 4, expected at 1036, known (announced) only at 1070: 34 s late, more than
        // max_block_delay.
        let r = m.emitted(&block(4, 1036, 1070)).expect("late");
        assert_eq!(r.reason, Reason::NetworkLatency);
        assert_eq!(r.expected_timestamp, 1036);
        assert_eq!(r.severity, crate::model::Severity::Medium);
        assert!(r.recovered);
        assert_eq!(r.metadata["recovery_seconds"], 4.02);
        let v = m.stats.lock().unwrap().view();
        assert_eq!((v.blocks_processed, v.blocks_missed), (4, 1));
    }

    #[test]
    fn a_backlog_the_agent_works_through_is_lag_not_misses() {
        let mut m = monitor();
        m.watching_since(at(1000));
        m.emitted(&block(1, 1000, 1001));
        // A burst: 500 blocks made at once, all known at 1013, emitted up to 40 s later because
        // the agent fetches them within its rate limit.
        for n in 2..=500u64 {
            let b = Emitted {
                known: at(1013),
                ..block(n, 1012, 1013 + n / 12)
            };
            assert_eq!(m.emitted(&b), None, "block {n} was lag, not a miss");
        }
        // A provider slow to serve one block is the provider's lateness.
        let slow = Emitted {
            known: at(1060),
            served_in: Duration::from_secs(40),
            ..block(501, 1012, 1100)
        };
        assert_eq!(
            m.emitted(&slow).map(|r| r.reason),
            Some(Reason::NetworkLatency)
        );
        let v = m.stats.lock().unwrap().view();
        assert_eq!((v.blocks_processed, v.blocks_missed), (501, 1));
    }

    #[test]
    fn an_open_miss_is_completed_once_when_its_block_comes() {
        let mut m = monitor();
        m.emitted(&block(9, 1000, 1001));
        let err = PoolError::Exhausted {
            chain: "c".into(),
            method: "eth_getBlockByNumber".into(),
            attempts: 3,
            provider: "p0".into(),
            error: RpcError::Timeout(Duration::from_secs(5)),
        };
        let open = m.fetch_failed(10, &err).expect("opened");
        assert!(!open.recovered);
        assert_eq!(open.reason, Reason::Timeout);
        assert_eq!(open.severity, crate::model::Severity::Critical);
        assert_eq!(m.fetch_failed(10, &err), None, "one record per block");
        assert_eq!(
            m.overdue(10, Reason::NodeUnresponsive),
            None,
            "overdue fetches nothing: no attempt"
        );
        let done = m
            .emitted(&block(10, 1012, unix(SystemTime::now())))
            .expect("completed");
        assert!(done.recovered);
        assert_eq!(done.block_number, 10);
        assert_eq!(done.reason, Reason::Timeout, "the reason it was missed for");
        assert_eq!(
            done.recovery_attempts, 2,
            "one failed retry, one that got it"
        );
        let v = m.stats.lock().unwrap().view();
        assert_eq!((v.blocks_missed, v.blocks_recovered), (1, 1));
    }

    #[test]
    fn records_made_while_the_streak_alert_is_out_say_so() {
        let mut m = monitor();
        let failure = ("p0".to_owned(), RpcError::HttpStatus { status: 500 });
        let failed = |n| Emitted {
            first_failure: Some(&failure),
            attempts: 2,
            ..block(n, 1000 + 12 * n, 1001 + 12 * n)
        };
        assert!(!m.emitted(&failed(1)).unwrap().alert_sent);
        m.stats.lock().unwrap().set_alerting(true);
        assert!(m.emitted(&failed(2)).unwrap().alert_sent);
        m.stats.lock().unwrap().set_alerting(false);
        assert!(!m.emitted(&failed(3)).unwrap().alert_sent);
    }

    #[test]
    fn a_first_attempt_failure_is_a_recovered_miss() {
        let mut m = monitor();
        let failure = ("p0".to_owned(), RpcError::HttpStatus { status: 429 });
        let b = Emitted {
            first_failure: Some(&failure),
            attempts: 2,
            ..block(5, 1000, 1001)
        };
        let r = m.emitted(&b).expect("missed");
        assert_eq!(r.reason, Reason::RateLimitExceeded);
        assert_eq!(r.recovery_attempts, 1);
        assert_eq!(r.recovered_from.as_deref(), Some("p1"));
        assert_eq!(r.metadata["failed_provider"], "p0");
        assert_eq!(r.severity, crate::model::Severity::Low);
    }
    #[test]
    fn exhausted_retries_are_recorded_and_counted_once_recovered() {
        let mut m = monitor();
        m.emitted(&block(9, 1000, 1001));
        let open = m
            .overdue(10, Reason::ConnectionLost)
            .expect("opened when overdue");
        assert_eq!(open.recovery_attempts, 0);
        // Two recovery attempts: one failed, one found nobody with the block.
        let err = PoolError::NoProvider { chain: "c".into() };
        assert_eq!(m.fetch_failed(10, &err), None);
        m.not_served(10);
        let exhausted = m.retries_exhausted(10).expect("open");
        assert_eq!(exhausted.recovery_attempts, 2);
        assert_eq!(exhausted.metadata["retries_exhausted"], true);
        assert!(!exhausted.recovered);
        assert_eq!(m.retries_exhausted(11), None, "only the open block");
        let done = m
            .emitted(&block(10, 1012, unix(SystemTime::now())))
            .expect("completed");
        assert!(done.recovered);
        assert_eq!(
            done.recovery_attempts, 3,
            "two failed and the one that got it"
        );
        assert_eq!(done.metadata["retries_exhausted"], true);
        assert_eq!(done.reason, Reason::ConnectionLost);
        let v = m.stats.lock().unwrap().view();
        assert_eq!((v.blocks_missed, v.blocks_recovered), (1, 1));
    }

    #[test]
    fn blocks_a_reorg_replaced_are_chain_reorg_misses_in_a_streak() {
        let mut m = monitor();
        for n in 1..=5 {
            assert_eq!(m.emitted(&block(n, 1000 + 12 * n, 1001 + 12 * n)), None);
        }
        // A reorg replaces 4 and 5, 20 s after 5 was emitted, and brings 6.
        let orphan = alloy_primitives::B256::repeat_byte(0xaa);
        let now = 1001 + 12 * 5 + 20;
        let r4 = m
            .emitted(&Emitted {
                replaced: Some(orphan),
                ..block(4, 1048, now)
            })
            .expect("replaced");
        assert_eq!(r4.reason, Reason::ChainReorg);
        assert_eq!(r4.metadata["orphaned_hash"], orphan.to_string());
        // Emitted at 1049, replaced at 1081.
        assert_eq!(r4.metadata["recovery_seconds"], 32.0);
        assert_eq!(r4.expected_timestamp, 1048);
        assert_eq!(
            r4.severity,
            crate::model::Severity::Medium,
            "33 s after it was made"
        );
        let r5 = m
            .emitted(&Emitted {
                replaced: Some(orphan),
                ..block(5, 1060, now)
            })
            .expect("replaced");
        assert_eq!(
            r5.severity,
            crate::model::Severity::Medium,
            "second in a row"
        );
        assert_eq!(m.emitted(&block(6, 1072, now)), None, "a new height");
        let v = m.stats.lock().unwrap().view();
        assert_eq!(
            (
                v.blocks_processed,
                v.blocks_missed,
                v.blocks_recovered,
                v.longest_missed_streak
            ),
            (8, 2, 2, 2)
        );
    }
}
