//! The monitor's place on the block's path: told of each block the canonical stage joined, of a
//! fetch that failed, a block overdue, a skip a provider made, it returns the missed-block records
//! to store (a record of a joined block goes into that batch's commit, so it is stored with the
//! cursor; the observers hear of each once it is stored), and keeps the recovery schedule. It never
//! calls back into the follower.

use std::time::{Instant, SystemTime};

use alloy_primitives::B256;

use super::{
    recovery::{AfterFailure, Recovery, RecoveryPolicy},
    ChainMonitor, Emitted,
};
use crate::{
    fetch::{is_hash_scheme, Fetched},
    model::{MissedBlock, Reason},
    pool::PoolError,
};

/// One chain's missed-block watch.
#[derive(Debug)]
pub struct MissWatch {
    monitor: ChainMonitor,
    chain: String,
    /// How open misses are recovered (`None`: by the stream's own fetches, at every poll).
    recovery: Option<Recovery>,
}

impl MissWatch {
    /// Watches `chain` with `monitor`.
    pub fn new(monitor: ChainMonitor, chain: &str, recovery: Option<RecoveryPolicy>) -> Self {
        Self {
            monitor,
            chain: chain.to_owned(),
            recovery: recovery.map(Recovery::new),
        }
    }

    /// This run first knew a chain head at `first`: blocks due from then on are watched.
    pub fn head_known(&mut self, first: SystemTime) {
        self.monitor.watching_since(first);
    }

    /// `f` joined the stream (`replaced`: the hash of the block emitted at its height before a
    /// reorg replaced it; `known`: when the chain head first reached it, if it is known — lateness
    /// up to then is the providers', after it the agent's own backlog): its record, if it was
    /// missed on the way.
    pub fn joined(
        &mut self,
        f: &Fetched,
        replaced: Option<B256>,
        known: Option<SystemTime>,
    ) -> Option<MissedBlock> {
        self.monitor.emitted(&Emitted {
            number: f.block.number,
            timestamp: f.block.timestamp,
            provider: &f.provider,
            received: f.received,
            fetch_took: f.fetch.took,
            attempts: f.fetch.attempts,
            first_failure: f.fetch.first_failure.as_ref(),
            known: known.unwrap_or(f.received),
            served_in: f.fetch.served_in,
            replaced,
        })
    }

    /// A reorg replaced emitted blocks.
    pub fn reorg(&mut self) {
        self.monitor.reorg();
    }

    /// No provider had block `number` yet (one more attempt, if it is an open miss).
    pub fn not_served(&mut self, number: u64) {
        self.monitor.not_served(number);
    }

    /// No provider could serve block `number`: an open miss (a new record to store), recovered
    /// from now on.
    pub fn fetch_failed(&mut self, number: u64, error: &PoolError) -> Option<MissedBlock> {
        if is_hash_scheme(error) {
            // A configuration problem, reported once by the pool: not a provider's miss.
            return None;
        }
        let record = self.monitor.fetch_failed(number, error);
        self.start_recovery(number, false);
        record
    }

    /// No block after the tip has come for `max_block_delay`: block `number` is overdue for
    /// `reason`; `answered`: providers answered, without it.
    pub fn overdue(&mut self, number: u64, reason: Reason, answered: bool) -> Option<MissedBlock> {
        let record = self.monitor.overdue(number, reason);
        self.start_recovery(number, answered);
        record
    }

    /// Provider `by` skipped block `number`: its record, once.
    pub fn skipped(&mut self, number: u64, by: &str) -> Option<MissedBlock> {
        self.monitor.skipped(number, by)
    }

    /// A miss still open when the last run stopped is the same miss now.
    pub fn reopen(&mut self, record: MissedBlock) {
        self.monitor.reopen(record);
    }

    /// The open miss's record, if attempts were made on it since it was stored (to keep on stop).
    pub fn open_attempts_unsaved(&mut self) -> Option<MissedBlock> {
        self.monitor.open_attempts_unsaved()
    }

    /// Whether block `number` is being recovered (only recovery attempts ask for it).
    pub fn recovering(&self, number: u64) -> bool {
        self.recovery.as_ref().is_some_and(|r| r.holds(number))
    }

    /// The recovery attempt due now, if any: its block and attempt number.
    pub fn recovery_due(&mut self, next: Option<u64>, head_reached: bool) -> Option<(u64, u32)> {
        self.recovery
            .as_mut()?
            .due(next, head_reached, Instant::now())
    }

    /// The recovery attempt on `number` brought the block.
    pub fn recovered(&mut self) {
        if let Some(r) = self.recovery.as_mut() {
            r.done();
        }
    }

    /// Recovery attempt `tries` on `number` failed (`unserved`: nobody had the block); returns the
    /// record to store when this declares it unrecovered.
    pub fn recovery_failed(
        &mut self,
        number: u64,
        tries: u32,
        unserved: bool,
        head_reached: bool,
    ) -> Option<MissedBlock> {
        let r = self.recovery.as_mut()?;
        let delay = r.policy().delay;
        match r.failed(unserved, head_reached, Instant::now()) {
            AfterFailure::Again => None,
            AfterFailure::Exhausted { .. } => {
                tracing::error!(chain = %self.chain, block_number = number, attempts = tries,
                    retry_delay_ms = delay.as_millis() as u64,
                    "missed block not recovered: no provider serves it; the stream waits for it and asks again every retry_delay");
                self.monitor.retries_exhausted(number)
            }
        }
    }

    /// How long the follower may wait, at most `poll`, before a recovery attempt is due.
    pub fn wait(&self, poll: std::time::Duration) -> std::time::Duration {
        self.recovery
            .as_ref()
            .map_or(poll, |r| r.wait(poll, Instant::now()))
    }

    fn start_recovery(&mut self, number: u64, unserved: bool) {
        if let Some(r) = self.recovery.as_mut() {
            r.start(number, unserved, Instant::now());
        }
    }
}
