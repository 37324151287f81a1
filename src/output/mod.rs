//! Block sinks: where the stream's lines go — JSON lines on stdout, in a file, or nowhere — behind
//! one seam, [`BlockSink`], so that another sink (a database table, a webhook, a message broker) is
//! one new file and one value of `agent.block_output`.
//!
//! The commit point: the follower hands a batch to its sink, and only when [`BlockSink::write`] has
//! returned does the state store commit the cursor past it. A line is therefore never lost; a crash
//! between the two can repeat the last batch, unless the sink can tell which of its lines the cursor
//! does not cover ([`BlockSink::uncommitted`]): those are adopted on the next start instead of
//! written again.

mod file;

use std::{
    io::{self, Write},
    sync::Arc,
};

pub use file::{uncommitted_tail, FileSink};

use crate::{
    config::BlockOutputTarget,
    model::{BlockRef, StreamEvent},
};

/// A destination of the block stream. Called on the blocking pool, one batch at a time: the lines
/// of two batches are never interleaved.
pub trait BlockSink: Send + Sync + std::fmt::Debug {
    /// Takes `events` as one batch, in order, as durably as this sink promises (at least handed to
    /// the operating system) before it returns: the cursor follows when it returns `Ok`.
    fn write(&self, events: &[StreamEvent]) -> io::Result<()>;

    /// The lines of `chain` this sink holds after the committed `cursor` (all of the chain's, when
    /// there is none), oldest first: written before the last stop but never committed. `Some(vec![])`
    /// when there are none or the sink cannot keep lines; `None` when the sink holds lines but not the
    /// cursor's (it was replaced or truncated: nothing in it can be trusted to extend the cursor).
    fn uncommitted(
        &self,
        chain: &str,
        cursor: Option<BlockRef>,
    ) -> io::Result<Option<Vec<StreamEvent>>>;

    /// Forces written lines to their final place (on shutdown).
    fn sync(&self) -> io::Result<()>;
}

/// Opens the configured sink.
pub fn open(target: &BlockOutputTarget) -> io::Result<Arc<dyn BlockSink>> {
    Ok(match target {
        BlockOutputTarget::Stdout => Arc::new(StdoutSink),
        BlockOutputTarget::None => Arc::new(NullSink),
        // The state store takes the lines in the cursor's transaction (`StateStore::holds_lines`);
        // nothing reaches a sink.
        BlockOutputTarget::Postgres => Arc::new(NullSink),
        BlockOutputTarget::File(path) => Arc::new(FileSink::open(path)?),
    })
}

/// `events` as JSON lines.
fn lines(events: &[StreamEvent]) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(events.len() * 400);
    for e in events {
        serde_json::to_writer(&mut buf, e).map_err(io::Error::other)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Block lines on standard output, flushed after every batch.
#[derive(Debug)]
pub struct StdoutSink;

impl BlockSink for StdoutSink {
    fn write(&self, events: &[StreamEvent]) -> io::Result<()> {
        let buf = lines(events)?;
        let mut out = io::stdout().lock();
        out.write_all(&buf)?;
        out.flush()
    }

    fn uncommitted(&self, _: &str, _: Option<BlockRef>) -> io::Result<Option<Vec<StreamEvent>>> {
        Ok(Some(Vec::new()))
    }

    fn sync(&self) -> io::Result<()> {
        io::stdout().flush()
    }
}

/// No block lines (`block_output = "none"`): the stream is followed for its telemetry alone.
#[derive(Debug)]
pub struct NullSink;

impl BlockSink for NullSink {
    fn write(&self, _: &[StreamEvent]) -> io::Result<()> {
        Ok(())
    }

    fn uncommitted(&self, _: &str, _: Option<BlockRef>) -> io::Result<Option<Vec<StreamEvent>>> {
        Ok(Some(Vec::new()))
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}
