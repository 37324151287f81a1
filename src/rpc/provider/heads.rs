//! What a provider announces of heads, written to the chain's head book: its newest block (not
//! counted while it is refused), whether it is syncing, and the restart of its `newHeads` sequence.

use super::*;

impl Provider {
    /// Records the newest block this provider announced (`pushed`: by a `newHeads` notification);
    /// returns the chain's corroborated head after it.
    pub fn record_head(
        &self,
        number: u64,
        hash: Option<alloy_primitives::B256>,
        pushed: bool,
    ) -> Option<u64> {
        if self.is_refused() {
            // Another chain's heads must not count towards this chain's.
            return self.heads.best();
        }
        self.metrics.provider_head.record(number, &self.attrs);
        let reported = self
            .heads
            .report(self.index, number, hash, pushed, Instant::now());
        for other in reported.disagree {
            tracing::warn!(chain = %self.chain, provider = %self.name, other_index = other, block_number = number,
                "providers disagree on the hash at the same height");
            self.metrics.provider_disagreements.add(1, &self.attrs);
        }
        if let Some(lie) = reported.lie {
            self.caught(lie.kind, &lie.detail, false);
        }
        reported.best
    }

    /// The head it reported last.
    pub fn reported_head(&self) -> Option<u64> {
        self.heads.reported_head(self.index)
    }

    /// The chain's corroborated head.
    pub fn chain_head(&self) -> Option<u64> {
        self.heads.best()
    }

    /// Its subscription (re)opened: its `newHeads` sequence starts again.
    pub fn restart_head_sequence(&self) {
        self.heads.restart_sequence(self.index);
    }

    /// Records what `eth_syncing` answered.
    pub fn record_syncing(&self, syncing: bool) {
        self.heads.set_syncing(self.index, syncing);
    }
}
