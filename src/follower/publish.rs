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
    store::{ChainCommit, ChainState, StateStore},
};

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
        let (written, spans): (Vec<StreamEvent>, Vec<_>) = lines.into_iter().unzip();
        let (sink, store) = (self.sink.clone(), self.store.clone());
        let (name, id) = (self.chain.clone(), self.chain_id);
        // Written, then committed, on one blocking thread: one hand-off per batch.
        let (written, commit) = tokio::task::spawn_blocking(move || -> Result<_, FollowError> {
            sink.write(&written)?;
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
        let store = self.store.clone();
        let records =
            tokio::task::spawn_blocking(move || store.save_missed(&records).map(|()| records))
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
