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
            metadata.insert("error_type".into(), e.error_type().into());
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

    /// Counts a recovery that took `took`; judged inside the block's span, which the recovery
    /// time's exemplar points at.
    fn recovered(&self, took: Duration) {
        let chain = [KeyValue::new(attr::CHAIN, self.chain.clone())];
        self.metrics.blocks_recovered.add(1, &chain);
        self.metrics.recovery_duration.record(
            took.as_secs_f64(),
            &chain,
            &crate::telemetry::exemplars::span_context_of(&tracing::Span::current()),
        );
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
