//! What a provider announces of heads, as its own measurements: the newest head it announced, and
//! hashes it announced that another provider contradicts. The head book itself is kept a layer up.

use super::*;

impl Provider {
    /// Records the head `number` it announced in its metrics.
    pub fn note_head(&self, number: u64) {
        self.metrics.provider_head.record(number, &self.attrs);
    }

    /// It announced another hash at height `number` than provider `other` (by index) did: logged
    /// and counted.
    pub fn note_disagreement(&self, other: usize, number: u64) {
        tracing::warn!(chain = %self.chain, provider = %self.name, other_index = other, block_number = number,
            "providers disagree on the hash at the same height");
        self.metrics.provider_disagreements.add(1, &self.attrs);
    }
}
