//! The follower's commit point: a batch's lines go to the block sink, then its state change (window,
//! cursor, missed-block records) to the state store in one transaction, then to the observers.
//! A crash between the two can repeat (never lose) the last batch, and with a file sink not even
//! that: its uncommitted tail is adopted on start.

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use tokio::sync::Notify;

use super::FollowError;
use crate::{
    fetch::{block_span, Fetched},
    model::{BlockLine, BlockRef, MissedBlock, StreamEvent, StreamObserver},
    output::BlockSink,
    store::{ChainCommit, ChainState, Fence, StateStore},
};

/// The lease a follower leads its chain under (cluster mode): the fence every write carries, and
/// until when, by this process's clock, the lease is surely still held.
#[derive(Clone, Debug)]
pub struct Term {
    /// Carried by every write, checked by the store in the write's transaction.
    pub fence: Fence,
    /// Until when the lease is surely held.
    pub valid: Arc<crate::cluster::LeaseClock>,
}

/// A line to publish, with the span its observers run in (a block's `process_block` span).
pub type Line = (StreamEvent, Option<tracing::Span>);

/// Where one chain's stream goes.
pub struct Publisher {
    chain: String,
    chain_id: u64,
    sink: Arc<dyn BlockSink>,
    store: Arc<dyn StateStore>,
    observers: Vec<Arc<dyn StreamObserver>>,
    /// Told when missed-block records were stored (the log writer).
    missed_stored: Option<Arc<Notify>>,
    /// The lease this chain is led under (cluster mode).
    term: Option<Term>,
}

impl Publisher {
    /// Publishes `chain`'s stream to `sink`, `store` and `observers`.
    pub fn new(
        chain: &str,
        chain_id: u64,
        sink: Arc<dyn BlockSink>,
        store: Arc<dyn StateStore>,
        observers: Vec<Arc<dyn StreamObserver>>,
    ) -> Self {
        Self {
            chain: chain.to_owned(),
            chain_id,
            sink,
            store,
            observers,
            missed_stored: None,
            term: None,
        }
    }

    /// Leads the chain under `term`: every write carries its fence, and nothing is emitted once it
    /// may have run out.
    pub fn lead(&mut self, term: Option<Term>) {
        self.term = term;
    }

    /// The fence of the lease this chain is led under.
    fn fence(&self) -> Option<Fence> {
        self.term.as_ref().map(|t| t.fence.clone())
    }

    /// Refuses to emit once the lease may have run out (its renewal failed for too long): another
    /// agent may lead the chain by now.
    fn check_term(&self) -> Result<(), FollowError> {
        match &self.term {
            Some(t) if !t.valid.holds() => Err(FollowError::LeaseExpired),
            _ => Ok(()),
        }
    }

    /// Tells `stored` whenever missed-block records were stored.
    pub fn notify_missed(&mut self, stored: Option<Arc<Notify>>) {
        self.missed_stored = stored;
    }

    /// The chain's stored state.
    pub async fn load(&self) -> Result<ChainState, FollowError> {
        let store = self.store.clone();
        let (name, id) = (self.chain.clone(), self.chain_id);
        Ok(tokio::task::spawn_blocking(move || store.load_chain(&name, id)).await??)
    }

    /// Lines the sink holds after `cursor` that were never committed (`Some(empty)`: none; `None`:
    /// the sink cannot tell, or does not hold the cursor's block).
    pub async fn uncommitted(
        &self,
        cursor: Option<BlockRef>,
    ) -> Result<Option<Vec<StreamEvent>>, FollowError> {
        let sink = self.sink.clone();
        let name = self.chain.clone();
        Ok(tokio::task::spawn_blocking(move || sink.uncommitted(&name, cursor)).await??)
    }

    /// The unrecovered record of block `number`, if one is stored.
    pub async fn open_miss(&self, number: u64) -> Result<Option<MissedBlock>, FollowError> {
        let store = self.store.clone();
        let name = self.chain.clone();
        Ok(tokio::task::spawn_blocking(move || store.open_miss(&name, number)).await??)
    }

    /// Writes `lines`, then commits `commit` (when given: lines that change no state, like error
    /// reports, have none), then tells the observers.
    pub async fn publish(
        &self,
        lines: Vec<Line>,
        commit: Option<ChainCommit>,
    ) -> Result<(), FollowError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.check_term()?;
        let (written, spans): (Vec<StreamEvent>, Vec<_>) = lines.into_iter().unzip();
        let (sink, store) = (self.sink.clone(), self.store.clone());
        let (name, id) = (self.chain.clone(), self.chain_id);
        let fence = self.fence();
        // Written, then committed, on one blocking thread: one hand-off per batch. A store that
        // holds the lines takes them in the cursor's transaction (a line that changes no state, as
        // an error report, in one of its own).
        let (written, commit) = tokio::task::spawn_blocking(move || -> Result<_, FollowError> {
            if store.holds_lines() {
                let mut commit = commit.unwrap_or_default();
                commit.lines = written;
                commit.fence = fence;
                store.commit(&name, id, &commit)?;
                let written = std::mem::take(&mut commit.lines);
                return Ok((written, Some(commit)));
            }
            sink.write(&written)?;
            let commit = commit.map(|c| ChainCommit { fence, ..c });
            if let Some(commit) = &commit {
                store.commit(&name, id, commit)?;
            }
            Ok((written, commit))
        })
        .await??;
        // The batch's missed-block records, told to the observers now that they are stored.
        let records = commit.map(|c| c.missed).unwrap_or_default();
        if !records.is_empty() {
            self.tell_missed();
        }
        // Observers see each line inside its block's span, so their logs and events join its trace;
        // a missed-block record, inside the span of its block's line.
        for (event, span) in written.iter().zip(&spans) {
            let tell = || {
                for o in &self.observers {
                    o.on_events(std::slice::from_ref(event));
                }
                if let StreamEvent::Block(b) = event {
                    for r in records.iter().filter(|r| r.block_number == b.block_number) {
                        for o in &self.observers {
                            o.on_missed(r);
                        }
                    }
                }
            };
            match span {
                Some(span) => span.in_scope(tell),
                None => tell(),
            }
        }
        Ok(())
    }

    /// Commits a state change that writes no line (adopted lines).
    pub async fn commit(&self, commit: ChainCommit) -> Result<(), FollowError> {
        self.check_term()?;
        let commit = ChainCommit {
            fence: self.fence(),
            ..commit
        };
        let store = self.store.clone();
        let (name, id) = (self.chain.clone(), self.chain_id);
        tokio::task::spawn_blocking(move || store.commit(&name, id, &commit)).await??;
        Ok(())
    }

    /// Stores misses found outside a batch (an open miss, a skip found late), then tells the
    /// observers of each in a `process_block` span of its own.
    pub async fn store_missed(&self, records: Vec<MissedBlock>) -> Result<(), FollowError> {
        let records = self.save_missed(records).await?;
        for r in &records {
            block_span(&self.chain, r.block_number).in_scope(|| {
                for o in &self.observers {
                    o.on_missed(r);
                }
            });
        }
        Ok(())
    }

    /// Stores new states of misses already told (attempts made, retries used up) for the log
    /// writer, without telling the observers again; returns the records.
    pub async fn save_missed(
        &self,
        records: Vec<MissedBlock>,
    ) -> Result<Vec<MissedBlock>, FollowError> {
        if records.is_empty() {
            return Ok(records);
        }
        self.check_term()?;
        let (store, fence) = (self.store.clone(), self.fence());
        let records = tokio::task::spawn_blocking(move || {
            store
                .save_missed(&records, fence.as_ref())
                .map(|()| records)
        })
        .await??;
        self.tell_missed();
        Ok(records)
    }

    fn tell_missed(&self) {
        if let Some(n) = &self.missed_stored {
            n.notify_one();
        }
    }

    /// `f`'s block line.
    pub fn line(&self, f: &Fetched) -> Line {
        let received_ms = f
            .received
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64;
        let line = StreamEvent::Block(BlockLine {
            chain: self.chain.clone(),
            block_number: f.block.number,
            hash: f.block.hash,
            parent_hash: f.block.parent_hash,
            timestamp: f.block.timestamp,
            transactions: f.block.transactions,
            provider: f.provider.clone(),
            received_at: humantime::format_rfc3339_millis(f.received).to_string(),
            lag_ms: received_ms.saturating_sub(
                i64::try_from(f.block.timestamp)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
            ),
        });
        (line, Some(f.span.clone()))
    }
}
