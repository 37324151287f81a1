//! Fetching runs of blocks: one call per block at the head, JSON-RPC batches behind it, calls
//! buffered `concurrency` at once and handed on in order.

use std::{sync::Arc, time::Instant};

use futures::StreamExt;
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};
use tracing::Instrument;

use super::{block_span, FetchError, Fetched};
use crate::{
    model::Block,
    pool::{Answer, PoolError, ProviderPool},
};

/// Blocks fetched in order from the first one asked for.
#[derive(Debug, Default)]
pub struct Fetch {
    /// The blocks, in order.
    pub blocks: Vec<Fetched>,
    /// Why fetching stopped before the end of the range, if it failed.
    pub error: Option<FetchError>,
    /// The providers did not have a block asked for (the first after `blocks`).
    pub unserved: bool,
}

impl Fetch {
    /// Appends a chunk; false when the chunk ends the fetch (an error, or blocks not served yet).
    fn add(&mut self, chunk: Chunk) -> bool {
        let more = !chunk.ends();
        match chunk.result {
            Ok(blocks) => {
                self.unserved = !more;
                self.blocks.extend(blocks);
            }
            Err(e) => self.error = Some(FetchError::Pool(e)),
        }
        more
    }
}

/// The blocks one call returned for `wanted` consecutive numbers (fewer: the providers do not have
/// the rest yet), or its error.
struct Chunk {
    wanted: u64,
    result: Result<Vec<Fetched>, PoolError>,
}

impl Chunk {
    /// Nothing after this chunk can be used.
    fn ends(&self) -> bool {
        self.result
            .as_ref()
            .map_or(true, |b| (b.len() as u64) < self.wanted)
    }
}

/// The calls that fetch `from..=to` (JSON-RPC batches of the smallest batch any provider takes),
/// `concurrency` at once, their chunks in order.
fn calls<'a>(
    pool: &'a ProviderPool,
    chain: &'a str,
    concurrency: usize,
    from: u64,
    to: u64,
) -> impl futures::Stream<Item = Chunk> + 'a {
    let batch = pool.batch_size().max(1);
    let ranges = (from..=to)
        .step_by(batch as usize)
        .map(move |start| (start, to.min(start.saturating_add(batch - 1))));
    futures::stream::iter(ranges)
        .map(move |(start, end)| fetch_chunk(pool, chain, start, end))
        .buffered(concurrency)
}

/// The blocks of an answer, each with its span, as fetched `started` ago.
fn fetched<T>(
    a: &Answer<T>,
    started: Instant,
    blocks: impl IntoIterator<Item = (Block, tracing::Span)>,
) -> Vec<Fetched> {
    blocks
        .into_iter()
        .map(|(block, span)| Fetched::answered(a, started, block, span))
        .collect()
}

/// Fetches `start..=end` with one call: `eth_getBlockByNumber` for one block, a JSON-RPC batch for
/// more (a `fetch_blocks` span, which each block's span follows from).
async fn fetch_chunk(pool: &ProviderPool, chain: &str, start: u64, end: u64) -> Chunk {
    let started = Instant::now();
    let wanted = end - start + 1;
    if start == end {
        let span = block_span(chain, start);
        let a = pool.block_by_number(start).instrument(span.clone()).await;
        let result = a.map(|mut a| {
            let block = a.value.take().map(|b| (b, span));
            fetched(&a, started, block)
        });
        return Chunk { wanted, result };
    }
    let fetch = tracing::info_span!(
        "fetch_blocks",
        otel.name = "fetch_blocks",
        blockwatch.chain = %chain,
        blockwatch.block.from = start,
        blockwatch.block.to = end,
    );
    let a = pool
        .blocks_by_number(start, end)
        .instrument(fetch.clone())
        .await;
    let result = a.map(|mut a| {
        let blocks = std::mem::take(&mut a.value).into_iter().map(|b| {
            let span = block_span(chain, b.number);
            span.follows_from(&fetch);
            (b, span)
        });
        fetched(&a, started, blocks)
    });
    Chunk { wanted, result }
}

/// Fetches `from..=to`, `concurrency` calls at once, in order, stopping at the first block no
/// provider has or the first error: one block per call when following the head, JSON-RPC batches
/// (of the smallest batch any provider takes) otherwise.
pub(super) async fn fetch_range(
    pool: &ProviderPool,
    chain: &str,
    concurrency: usize,
    from: u64,
    to: u64,
    cancel: &CancellationToken,
) -> Fetch {
    let mut calls = std::pin::pin!(calls(pool, chain, concurrency, from, to));
    let mut fetch = Fetch::default();
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => {
                fetch.error = Some(FetchError::Cancelled);
                return fetch;
            }
            n = calls.next() => n,
        };
        let more = next.is_some_and(|chunk| fetch.add(chunk));
        if !more {
            return fetch;
        }
    }
}

/// A backlog being fetched on a task of its own, `concurrency` calls at once, while the follower
/// verifies and writes what came before: requests stay in flight while blocks are emitted. Chunks
/// wait in a channel of `concurrency` places, so at most twice `concurrency` calls' blocks are held.
/// Dropping the feed cancels the fetch.
pub struct Feed {
    /// The first block not taken yet.
    pub next: u64,
    chunks: tokio::sync::mpsc::Receiver<Chunk>,
    _task: AbortOnDropHandle<()>,
}

impl Feed {
    pub(super) fn start(
        pool: Arc<ProviderPool>,
        chain: String,
        concurrency: usize,
        from: u64,
        to: u64,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(concurrency.max(1));
        let task = async move {
            let mut calls = std::pin::pin!(calls(&pool, &chain, concurrency, from, to));
            while let Some(chunk) = calls.next().await {
                let ends = chunk.ends();
                if tx.send(chunk).await.is_err() || ends {
                    return;
                }
            }
        };
        Feed {
            next: from,
            chunks: rx,
            _task: AbortOnDropHandle::new(tokio::spawn(task.in_current_span())),
        }
    }

    /// The chunks fetched so far in order (waiting for one, then taking those ready, up to about
    /// `max` blocks). After a fetch that is unserved or failed, the feed has nothing more.
    pub async fn take(&mut self, max: u64, cancel: &CancellationToken) -> Fetch {
        let mut fetch = Fetch::default();
        let first = tokio::select! {
            _ = cancel.cancelled() => {
                fetch.error = Some(FetchError::Cancelled);
                return fetch;
            }
            c = self.chunks.recv() => c,
        };
        let mut more = match first {
            Some(chunk) => fetch.add(chunk),
            // The feed has ended (after its last chunk was taken).
            None => false,
        };
        while more && (fetch.blocks.len() as u64) < max {
            match self.chunks.try_recv() {
                Ok(chunk) => more = fetch.add(chunk),
                Err(_) => break,
            }
        }
        self.next += fetch.blocks.len() as u64;
        fetch
    }
}
