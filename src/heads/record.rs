//! Heads into the book: what a provider announced (pushed by `newHeads`, or answered when asked)
//! is recorded with the provider's own measurements, and the lies and disagreements it reveals are
//! told to the provider; a refused provider's heads never count. A head poll asks one provider for
//! its head, after its chain-id check when one is due. The book is also what a provider's health
//! reads its head from.

use std::time::{Instant, SystemTime};

use alloy_primitives::{B256, U64};
use jsonrpsee::rpc_params;

use super::HeadBook;
use crate::rpc::{
    health::{HeadSource, HeadView},
    LieKind, Provider, RpcError,
};

impl HeadBook {
    /// Records the newest block `provider` announced (`pushed`: by a `newHeads` notification);
    /// returns the chain's corroborated head after it.
    pub fn record(
        &self,
        provider: &Provider,
        number: u64,
        hash: Option<B256>,
        pushed: bool,
    ) -> Option<u64> {
        if provider.is_refused() {
            // Another chain's heads must not count towards this chain's.
            return self.best();
        }
        provider.note_head(number);
        let reported = self.report(provider.index, number, hash, pushed, Instant::now());
        for other in reported.disagree {
            provider.note_disagreement(other, number);
        }
        if let Some(lie) = reported.lie {
            provider.caught(lie.kind, &lie.detail, false);
        }
        reported.best
    }
}

impl HeadSource for HeadBook {
    fn view(&self, idx: usize) -> HeadView {
        let h = self.provider(idx);
        HeadView {
            head: h.head,
            lag_blocks: h.lag_blocks,
            arrival_delay: h.arrival_delay,
            syncing: h.syncing,
            inconsistent: h.inconsistent.map(LieKind::state_reason),
        }
    }

    fn lie(&self, idx: usize, kind: LieKind, now: Instant) {
        HeadBook::lie(self, idx, kind, now)
    }

    fn forget(&self, idx: usize) {
        HeadBook::forget(self, idx)
    }
}

/// Asks `provider` alone for its head (`eth_blockNumber`, within its rate limit; its chain id
/// first when a check is due) and records it in `book`: heads are read from every provider, so that
/// one provider's word never decides the chain head. Returns the head it reported and when it was
/// asked, before any wait for the agent's own rate limit: a head learned late because the agent
/// held its own request back is not the provider's lateness.
pub async fn poll_head(
    book: &HeadBook,
    provider: &Provider,
) -> Result<(u64, SystemTime), RpcError> {
    provider.ensure_verified().await?;
    let asked = SystemTime::now();
    let head = provider
        .ask("eth_blockNumber", rpc_params![], |n: U64| Ok(n.to::<u64>()))
        .await?;
    book.record(provider, head, None, false);
    Ok((head, asked))
}
