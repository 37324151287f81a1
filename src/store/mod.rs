//! The state store: what a restart needs to resume with no gap — per chain the cursor (the last
//! emitted block), the canonical window's hashes and the first block ever emitted — and the
//! missed-block records, with which of them the missed-block log has written. One seam,
//! [`StateStore`], so that another store (a server database shared by several agents) is one new
//! file and one value of `agent.state_path`; SQLite ([`SqliteStore`]) is a single agent's, PostgreSQL
//! ([`PgStore`]) the one several agents share (cluster mode), with leases that fence every write.
//!
//! Guarantees every store keeps: a [`ChainCommit`] is applied whole or not at all (the cursor never
//! points outside the stored window, and a batch's missed-block records are stored with it); a
//! cursor stored for another chain id is refused. Calls block: callers run them on the blocking
//! pool, never on an async worker.

pub mod postgres;
mod sqlite;

use std::{path::Path, sync::Arc};

pub use postgres::{LeaseRow, PgStore};
pub use sqlite::SqliteStore;

use crate::model::{BlockRef, MissedBlock, StreamEvent};

/// The schema version this build writes in SQLite.
pub const SCHEMA_VERSION: i64 = 3;

/// The right to write a chain's state: the lease's holder and the epoch it was taken with. A store
/// shared by several agents refuses a write whose fence is not the chain's current, unexpired
/// lease, in the same transaction as the write ([`StoreError::Fenced`]); a store of one agent
/// takes writes without one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The agent instance holding the lease.
    pub holder: String,
    /// The lease's epoch: one more at every change of holder.
    pub epoch: u64,
}

/// Any error a store's database gives.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the state database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or its schema created.
    #[error("cannot open state database {path}: {source}")]
    Open {
        /// The database (a file's path; a URL without its credentials).
        path: String,
        /// The database's error.
        source: BoxError,
    },
    /// The database was written by a newer blockwatch.
    #[error("state database {path} has schema version {found}, newer than this build's {supported}; use a newer blockwatch or another {setting}")]
    NewerSchema {
        /// The database.
        path: String,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
        /// The setting that names the database.
        setting: &'static str,
    },
    /// The stored cursor belongs to another chain id.
    #[error("state database holds a cursor for chain {chain:?} with chain id {stored}, but the config says {configured}; use another chain name or agent.state_path")]
    ChainIdMismatch {
        /// The chain name.
        chain: String,
        /// The stored chain id.
        stored: u64,
        /// The configured chain id.
        configured: u64,
    },
    /// A write carried a lease that is no longer the chain's current one (another agent took it,
    /// or it expired): nothing was written, and this agent must stop leading the chain.
    #[error("chain {chain}: write refused: this agent's lease (epoch {epoch}) is no longer held")]
    Fenced {
        /// The chain.
        chain: String,
        /// The epoch the write carried.
        epoch: u64,
    },
    /// A query failed.
    #[error("state database error while {doing}: {source}")]
    Query {
        /// What was being done.
        doing: &'static str,
        /// The database's error.
        source: BoxError,
    },
}

/// What is stored for one chain.
#[derive(Clone, Debug, Default)]
pub struct ChainState {
    /// The last emitted block.
    pub cursor: Option<BlockRef>,
    /// Recent canonical blocks, oldest first.
    pub recent: Vec<BlockRef>,
    /// The first block the chain's stream emitted.
    pub first_emitted: Option<u64>,
}

/// One atomic change to a chain's state.
#[derive(Clone, Debug, Default)]
pub struct ChainCommit {
    /// Forget canonical blocks above this number first (a reorg).
    pub rollback_above: Option<u64>,
    /// Blocks that became canonical, in order.
    pub added: Vec<BlockRef>,
    /// The new cursor.
    pub cursor: Option<BlockRef>,
    /// Forget canonical blocks below this number (outside the reorg window).
    pub keep_from: u64,
    /// Set when the stream (re)started with this block.
    pub first_emitted: Option<u64>,
    /// Missed-block records found or updated with these blocks.
    pub missed: Vec<crate::model::MissedBlock>,
    /// The stream's lines of this change, for a store that is also the block output
    /// ([`StateStore::holds_lines`]): written as rows in the same transaction. Empty otherwise.
    pub lines: Vec<StreamEvent>,
    /// The lease this change is made under (a store shared by several agents requires one).
    pub fence: Option<Fence>,
}

/// One version of a missed-block record the log file does not have yet: its chain, block number
/// and stored JSON (by which it is marked logged).
pub type LogEntry = (String, u64, String);

/// Where the agent keeps its state.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Loads a chain's cursor and window, refusing a cursor stored for another chain id.
    fn load_chain(&self, chain: &str, chain_id: u64) -> Result<ChainState, StoreError>;

    /// Applies `commit` to `chain` in one transaction.
    fn commit(&self, chain: &str, chain_id: u64, commit: &ChainCommit) -> Result<(), StoreError>;

    /// Stores missed-block records, replacing an earlier version of the same miss (one since
    /// recovered), all in one transaction, under `fence` when given.
    fn save_missed(&self, records: &[MissedBlock], fence: Option<&Fence>)
        -> Result<(), StoreError>;

    /// The unrecovered record of `chain`'s block `number`, if one is stored (a miss still open when
    /// the last run stopped).
    fn open_miss(&self, chain: &str, number: u64) -> Result<Option<MissedBlock>, StoreError>;

    /// Missed-block records, oldest block first, of `chain` (or every chain), missed at or after
    /// `since` (Unix seconds), at most `limit`.
    fn missed(
        &self,
        chain: Option<&str>,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<MissedBlock>, StoreError>;

    /// The latest `limit` missed-block records of `chain`, newest (by when they were missed) first.
    fn latest_missed(&self, chain: &str, limit: usize) -> Result<Vec<MissedBlock>, StoreError>;

    /// Missed-block records not in the log file yet (or updated since), oldest first, at most
    /// `limit`.
    fn unlogged(&self, limit: usize) -> Result<Vec<LogEntry>, StoreError>;

    /// Records that these versions are in the log file (a record updated since stays unlogged).
    fn mark_logged(&self, written: &[LogEntry]) -> Result<(), StoreError>;

    /// The alert state (throttle and resolution bookkeeping, as the alerts module serialises it)
    /// last saved for `chain`.
    fn load_alert_state(&self, chain: &str) -> Result<Option<String>, StoreError>;

    /// Replaces `chain`'s alert state, under `fence` when given.
    fn save_alert_state(
        &self,
        chain: &str,
        state: &str,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError>;

    /// Whether this store also keeps the block stream's lines ([`ChainCommit::lines`]): the block
    /// output is then the store, in the cursor's transaction.
    fn holds_lines(&self) -> bool {
        false
    }
}

/// Opens the state store at `path` (a SQLite file, created if needed).
pub fn open(path: &Path) -> Result<Arc<dyn StateStore>, StoreError> {
    Ok(Arc::new(SqliteStore::open(path)?))
}
