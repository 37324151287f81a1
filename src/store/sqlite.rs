//! The SQLite state store: per chain the cursor (the last emitted block) and the recent canonical
//! hashes, always written in the same transaction, so that the cursor never points outside the
//! stored window; and the missed-block records, with which of them the log file has.
//!
//! The connection sits behind a std `Mutex`: every statement is short, and callers run them on the
//! blocking pool (`spawn_blocking`), never on an async worker.

use std::{
    path::Path,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use alloy_primitives::B256;
use rusqlite::{params, Connection, OptionalExtension};

use super::{ChainCommit, ChainState, Fence, LogEntry, StateStore, StoreError, SCHEMA_VERSION};
use crate::model::{BlockRef, MissedBlock};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cursors (
    chain      TEXT PRIMARY KEY,
    chain_id   INTEGER NOT NULL,
    number     INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    -- the first block the stream emitted: a reorg below it replaces everything emitted
    first_number INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS canonical_blocks (
    chain  TEXT NOT NULL,
    number INTEGER NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (chain, number)
) WITHOUT ROWID;
-- one row per miss: a height can be missed, then replaced by a reorg, or replaced twice; a miss
-- keeps its reason and `missed_at` while its record is updated (open, retries used up, recovered).
-- The record is JSON, beside the columns exports filter on
-- `logged`: this version of the record is in the missed-block log file
CREATE TABLE IF NOT EXISTS missed_blocks (
    chain        TEXT NOT NULL,
    block_number INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    missed_at    INTEGER NOT NULL,
    record       TEXT NOT NULL,
    logged       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (chain, block_number, reason, missed_at)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS missed_blocks_at ON missed_blocks (missed_at);
CREATE INDEX IF NOT EXISTS missed_blocks_unlogged ON missed_blocks (logged, missed_at);
-- per chain, the alerts' throttle and resolution state (JSON), so that a restart neither repeats a
-- firing alert nor loses its resolution (schema version 3)
CREATE TABLE IF NOT EXISTS alert_state (
    chain      TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
";

fn query_err(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Query {
        doing,
        source: source.into(),
    }
}

/// The SQLite state store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// The missed-block records `sql` selects (one `record` column) with `params`, in its order.
    fn records(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<MissedBlock>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(query_err("reading missed blocks"))?;
        let rows = stmt
            .query_map(params, |row| row.get::<_, String>(0))
            .map_err(query_err("reading missed blocks"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(decode_missed(
                &row.map_err(query_err("reading missed blocks"))?,
            )?);
        }
        Ok(out)
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source: rusqlite::Error| StoreError::Open {
            path: path.display().to_string(),
            source: source.into(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                source: e.into(),
            })?;
        }
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        // Room for every statement the store runs, so none is parsed twice.
        conn.set_prepared_statement_cache_capacity(64);
        // WAL keeps readers (export, status) from blocking the writer; NORMAL sync is durable across
        // a process kill, which is the boundary blockwatch promises.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.display().to_string(),
                found: version,
                supported: SCHEMA_VERSION,
                setting: "agent.state_path",
            });
        }
        if version == 1 {
            migrate_v1(&conn).map_err(open_err)?;
        }
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open_err)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }
}

impl StateStore for SqliteStore {
    /// Stores missed-block records, replacing an earlier record of the same block (a miss that was
    /// since recovered), all in one transaction.
    fn save_missed(&self, records: &[MissedBlock], _: Option<&Fence>) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction()
            .map_err(query_err("saving missed blocks"))?;
        insert_missed(&tx, records)?;
        tx.commit().map_err(query_err("saving missed blocks"))
    }

    /// Missed-block records not in the log file yet (or updated since), oldest first, at most
    /// `limit`, each with its stored JSON (to mark it logged by).
    fn unlogged(&self, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare_cached(
                "SELECT chain, block_number, record FROM missed_blocks WHERE logged = 0
                 ORDER BY missed_at, chain, block_number LIMIT ?1",
            )
            .map_err(query_err("reading unlogged missed blocks"))?;
        let rows = stmt
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)? as u64,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(query_err("reading unlogged missed blocks"))?;
        rows.collect::<Result<_, _>>()
            .map_err(query_err("reading unlogged missed blocks"))
    }

    /// Records that these versions are in the log file (a record updated since stays unlogged).
    fn mark_logged(&self, written: &[LogEntry]) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction()
            .map_err(query_err("marking missed blocks logged"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE missed_blocks SET logged = 1
                     WHERE chain = ?1 AND block_number = ?2 AND record = ?3",
                )
                .map_err(query_err("marking missed blocks logged"))?;
            for (chain, number, record) in written {
                stmt.execute(params![chain, *number as i64, record])
                    .map_err(query_err("marking missed blocks logged"))?;
            }
        }
        tx.commit()
            .map_err(query_err("marking missed blocks logged"))
    }

    fn load_alert_state(&self, chain: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row(
            "SELECT state FROM alert_state WHERE chain = ?1",
            params![chain],
            |row| row.get(0),
        )
        .optional()
        .map_err(query_err("reading the alert state"))
    }

    fn save_alert_state(
        &self,
        chain: &str,
        state: &str,
        _: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute(
            "INSERT INTO alert_state (chain, state, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(chain) DO UPDATE SET state = ?2, updated_at = ?3",
            params![chain, state, unix_now() as i64],
        )
        .map(drop)
        .map_err(query_err("saving the alert state"))
    }

    /// Missed-block records, oldest block first, of `chain` (or every chain), missed at or after
    /// `since` (Unix seconds), at most `limit`.
    fn missed(
        &self,
        chain: Option<&str>,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<MissedBlock>, StoreError> {
        let since = i64::try_from(since.unwrap_or(0)).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.records(
            "SELECT record FROM missed_blocks
             WHERE (?1 IS NULL OR chain = ?1) AND missed_at >= ?2
             ORDER BY chain, block_number, missed_at LIMIT ?3",
            params![chain, since, limit],
        )
    }

    fn latest_missed(&self, chain: &str, limit: usize) -> Result<Vec<MissedBlock>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.records(
            "SELECT record FROM missed_blocks WHERE chain = ?1
             ORDER BY missed_at DESC, block_number DESC LIMIT ?2",
            params![chain, limit],
        )
    }

    /// The unrecovered record of `chain`'s block `number`, if one is stored (a miss still open
    /// when the last run stopped).
    fn open_miss(&self, chain: &str, number: u64) -> Result<Option<MissedBlock>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let text: Option<String> = conn
            .query_row(
                "SELECT record FROM missed_blocks
                 WHERE chain = ?1 AND block_number = ?2 AND json_extract(record, '$.recovered') = 0
                 ORDER BY missed_at DESC LIMIT 1",
                params![chain, i64::try_from(number).unwrap_or(i64::MAX)],
                |row| row.get(0),
            )
            .optional()
            .map_err(query_err("reading an open missed block"))?;
        text.map(|t| decode_missed(&t)).transpose()
    }

    /// Loads a chain's cursor and window, refusing a cursor stored for another chain id.
    fn load_chain(&self, chain: &str, chain_id: u64) -> Result<ChainState, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let row: Option<(i64, i64, Vec<u8>, Option<i64>)> = conn
            .query_row(
                "SELECT chain_id, number, hash, first_number FROM cursors WHERE chain = ?1",
                params![chain],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(query_err("reading the cursor"))?;
        let first_emitted = row.as_ref().and_then(|r| r.3).map(|n| n as u64);
        let cursor = match row {
            None => None,
            Some((stored, number, hash, _)) => {
                let stored = stored as u64;
                if stored != chain_id {
                    return Err(StoreError::ChainIdMismatch {
                        chain: chain.to_owned(),
                        stored,
                        configured: chain_id,
                    });
                }
                Some(BlockRef {
                    number: number as u64,
                    hash: to_hash(&hash),
                })
            }
        };
        let mut stmt = conn
            .prepare("SELECT number, hash FROM canonical_blocks WHERE chain = ?1 ORDER BY number")
            .map_err(query_err("reading canonical blocks"))?;
        let recent = stmt
            .query_map(params![chain], |r| {
                let n: i64 = r.get(0)?;
                let h: Vec<u8> = r.get(1)?;
                Ok(BlockRef {
                    number: n as u64,
                    hash: to_hash(&h),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(query_err("reading canonical blocks"))?;
        Ok(ChainState {
            cursor,
            recent,
            first_emitted,
        })
    }

    /// Applies `commit` to `chain` in one transaction.
    fn commit(&self, chain: &str, chain_id: u64, commit: &ChainCommit) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn
            .transaction()
            .map_err(query_err("starting a transaction"))?;
        // Every statement is prepared once per connection: a block's commit is on the path of
        // every block, and parsing its SQL each time cost more than running it.
        if let Some(n) = commit.rollback_above {
            tx.prepare_cached("DELETE FROM canonical_blocks WHERE chain = ?1 AND number > ?2")
                .and_then(|mut s| s.execute(params![chain, n as i64]))
                .map_err(query_err("rolling back canonical blocks"))?;
        }
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO canonical_blocks (chain, number, hash) VALUES (?1, ?2, ?3)",
                )
                .map_err(query_err("storing canonical blocks"))?;
            for b in &commit.added {
                insert
                    .execute(params![chain, b.number as i64, b.hash.as_slice()])
                    .map_err(query_err("storing canonical blocks"))?;
            }
        }
        tx.prepare_cached("DELETE FROM canonical_blocks WHERE chain = ?1 AND number < ?2")
            .and_then(|mut s| s.execute(params![chain, commit.keep_from as i64]))
            .map_err(query_err("pruning canonical blocks"))?;
        if let Some(c) = commit.cursor {
            let now = unix_now();
            tx.prepare_cached(
                "INSERT INTO cursors (chain, chain_id, number, hash, first_number, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(chain) DO UPDATE SET chain_id = ?2, number = ?3, hash = ?4,
                     first_number = COALESCE(?5, first_number), updated_at = ?6",
            )
            .and_then(|mut s| {
                s.execute(params![
                    chain,
                    chain_id as i64,
                    c.number as i64,
                    c.hash.as_slice(),
                    commit.first_emitted.map(|n| n as i64),
                    now as i64
                ])
            })
            .map_err(query_err("storing the cursor"))?;
        }
        insert_missed(&tx, &commit.missed)?;
        tx.commit().map_err(query_err("committing"))
    }
}

/// Version 1 kept one missed-block row per block; version 2 one per miss. The rows are
/// moved into the new table (created by [`SCHEMA`] right after).
fn migrate_v1(conn: &Connection) -> rusqlite::Result<()> {
    let has_reason: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('missed_blocks') WHERE name = 'reason'",
        [],
        |r| r.get(0),
    )?;
    let exists: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'missed_blocks'",
        [],
        |r| r.get(0),
    )?;
    if !exists || has_reason {
        return Ok(());
    }
    conn.execute_batch(&format!(
        "BEGIN;
         DROP INDEX IF EXISTS missed_blocks_at;
         DROP INDEX IF EXISTS missed_blocks_unlogged;
         ALTER TABLE missed_blocks RENAME TO missed_blocks_v1;
         {SCHEMA}
         INSERT INTO missed_blocks (chain, block_number, reason, missed_at, record, logged)
             SELECT chain, block_number, COALESCE(json_extract(record, '$.reason'), 'Unknown'),
                    missed_at, record, logged
             FROM missed_blocks_v1;
         DROP TABLE missed_blocks_v1;
         COMMIT;"
    ))
}

fn decode_missed(text: &str) -> Result<MissedBlock, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Query {
        doing: "decoding a missed block",
        source: e.into(),
    })
}

/// Upserts missed-block records in `tx`.
fn insert_missed(
    tx: &rusqlite::Transaction<'_>,
    records: &[MissedBlock],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO missed_blocks (chain, block_number, reason, missed_at, record)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (chain, block_number, reason, missed_at)
             DO UPDATE SET record = excluded.record, logged = 0",
        )
        .map_err(query_err("saving missed blocks"))?;
    for r in records {
        let json = serde_json::to_string(r).map_err(|e| StoreError::Query {
            doing: "encoding a missed block",
            source: e.into(),
        })?;
        stmt.execute(params![
            r.chain,
            i64::try_from(r.block_number).unwrap_or(i64::MAX),
            r.reason.as_str(),
            i64::try_from(r.timestamp).unwrap_or(i64::MAX),
            json
        ])
        .map_err(query_err("saving missed blocks"))?;
    }
    Ok(())
}

/// Seconds since the Unix epoch (0 before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn to_hash(bytes: &[u8]) -> B256 {
    if bytes.len() == 32 {
        B256::from_slice(bytes)
    } else {
        B256::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u64, fork: u8) -> BlockRef {
        let mut b = [fork; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        BlockRef {
            number: n,
            hash: B256::from(b),
        }
    }

    fn missed(chain: &str, n: u64, at: u64, recovered: bool) -> MissedBlock {
        use crate::model::{MissedBlock, Reason, Severity};
        MissedBlock {
            timestamp: at,
            chain: chain.into(),
            block_number: n,
            reason: Reason::Timeout,
            severity: Severity::Medium,
            expected_timestamp: at - 1,
            actual_timestamp: at,
            recovery_attempts: 1,
            recovered,
            recovered_from: recovered.then(|| "p1".into()),
            metadata: Default::default(),
            alert_sent: false,
        }
    }

    #[test]
    fn missed_blocks_are_stored_once_updated_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .save_missed(
                &[missed("a", 7, 100, false), missed("b", 3, 200, false)],
                None,
            )
            .unwrap();
        // Recovered later: the same record, updated, not a second one.
        store
            .save_missed(&[missed("a", 7, 100, true)], None)
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let all = store.missed(None, None, 100).unwrap();
        assert_eq!(
            all,
            vec![missed("a", 7, 100, true), missed("b", 3, 200, false)]
        );
        assert_eq!(store.missed(Some("b"), None, 100).unwrap().len(), 1);
        assert_eq!(store.missed(None, Some(150), 100).unwrap().len(), 1);
        assert_eq!(store.missed(None, None, 1).unwrap().len(), 1);
    }

    #[test]
    fn the_latest_misses_of_a_chain_come_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        store
            .save_missed(
                &[
                    missed("a", 5, 300, true),
                    missed("a", 9, 100, true),
                    missed("a", 7, 200, false),
                    missed("b", 1, 400, false),
                ],
                None,
            )
            .unwrap();
        let latest: Vec<u64> = store
            .latest_missed("a", 2)
            .unwrap()
            .iter()
            .map(|r| r.block_number)
            .collect();
        assert_eq!(latest, [5, 7]);
        assert!(store.latest_missed("c", 10).unwrap().is_empty());
    }

    #[test]
    fn a_height_keeps_a_record_per_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        // Block 7 was missed (a timeout), then a reorg replaced it.
        let reorg = MissedBlock {
            reason: crate::model::Reason::ChainReorg,
            ..missed("a", 7, 130, true)
        };
        store
            .save_missed(&[missed("a", 7, 100, true)], None)
            .unwrap();
        store
            .save_missed(std::slice::from_ref(&reorg), None)
            .unwrap();
        // And replaced again later.
        let again = MissedBlock {
            timestamp: 140,
            ..reorg.clone()
        };
        store
            .save_missed(std::slice::from_ref(&again), None)
            .unwrap();
        assert_eq!(
            store.missed(None, None, 100).unwrap(),
            vec![missed("a", 7, 100, true), reorg, again]
        );
        assert_eq!(store.open_miss("a", 7).unwrap(), None);
        store
            .save_missed(&[missed("a", 8, 150, false)], None)
            .unwrap();
        assert_eq!(
            store.open_miss("a", 8).unwrap(),
            Some(missed("a", 8, 150, false))
        );
    }

    #[test]
    fn a_version_1_database_is_migrated_with_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE missed_blocks (
                    chain TEXT NOT NULL, block_number INTEGER NOT NULL, missed_at INTEGER NOT NULL,
                    record TEXT NOT NULL, logged INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (chain, block_number)) WITHOUT ROWID;
                 CREATE INDEX missed_blocks_at ON missed_blocks (missed_at);
                 CREATE INDEX missed_blocks_unlogged ON missed_blocks (logged, missed_at);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
            let old = missed("a", 7, 100, true);
            conn.execute(
                "INSERT INTO missed_blocks VALUES ('a', 7, 100, ?1, 1)",
                params![serde_json::to_string(&old).unwrap()],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.missed(None, None, 10).unwrap(),
            vec![missed("a", 7, 100, true)]
        );
        assert!(
            store.unlogged(10).unwrap().is_empty(),
            "logged stays logged"
        );
        let reorg = MissedBlock {
            reason: crate::model::Reason::ChainReorg,
            ..missed("a", 7, 130, true)
        };
        store
            .save_missed(std::slice::from_ref(&reorg), None)
            .unwrap();
        assert_eq!(store.missed(None, Some(120), 10).unwrap(), vec![reorg]);
        drop(store);
        // Opening again changes nothing.
        assert_eq!(
            SqliteStore::open(&path)
                .unwrap()
                .missed(None, None, 10)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn commits_roll_back_prune_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.load_chain("c", 1).unwrap().cursor.is_none());
        let added: Vec<_> = (1..=5).map(|n| r(n, 0)).collect();
        store
            .commit(
                "c",
                1,
                &ChainCommit {
                    added,
                    cursor: Some(r(5, 0)),
                    keep_from: 2,
                    first_emitted: Some(1),
                    ..Default::default()
                },
            )
            .unwrap();
        store
            .commit(
                "c",
                1,
                &ChainCommit {
                    rollback_above: Some(3),
                    added: vec![r(4, 1)],
                    cursor: Some(r(4, 1)),
                    keep_from: 2,
                    first_emitted: None,
                    ..Default::default()
                },
            )
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let st = store.load_chain("c", 1).unwrap();
        assert_eq!(st.cursor, Some(r(4, 1)));
        assert_eq!(st.recent, vec![r(2, 0), r(3, 0), r(4, 1)]);
        assert_eq!(st.first_emitted, Some(1));
        let err = store.load_chain("c", 2).unwrap_err();
        assert!(matches!(
            err,
            StoreError::ChainIdMismatch {
                stored: 1,
                configured: 2,
                ..
            }
        ));
    }
}
