//! The PostgreSQL state store: the state of several agents sharing one database (cluster mode),
//! with the same semantics as the SQLite store, plus what sharing needs:
//!
//! - **Leases.** One row per chain in `blockwatch.leases`: holder, epoch (one more at every new
//!   holder) and expiry, all arithmetic on PostgreSQL's clock (`now()`), never an agent's. The
//!   lease manager takes, renews and gives them up with [`PgStore::acquire`], [`PgStore::renew`]
//!   and [`PgStore::release`]; replicas announce themselves with [`PgStore::heartbeat`].
//! - **Fencing.** Every write of a chain's state (`commit`, `save_missed`, `save_alert_state`)
//!   runs in a transaction whose first statement locks the chain's lease row (`FOR SHARE`) if, and
//!   only if, the write's [`Fence`] is the current, unexpired lease. Otherwise nothing is written
//!   and the write fails with [`StoreError::Fenced`]. The share lock keeps a new holder from taking
//!   the lease until the write has committed, and `idle_in_transaction_session_timeout` (half the
//!   lease's time to live) ends the transaction of an agent paused in the middle of one, so that
//!   it cannot block a takeover for longer. A write without a fence is refused the same way
//!   (epoch 0).
//! - **Block output.** A store made [`with_block_output`](PgStore::with_block_output)`(true)` also
//!   writes the stream's lines as rows of `blockwatch.blocks`, `blockwatch.reorgs` and
//!   `blockwatch.stream_errors`, in the cursor's transaction: the table holds each chain's
//!   canonical chain once, whatever fails. A unique index forbids two canonical blocks at one
//!   height.
//!
//! The [`StateStore`] methods block: they run their query on the runtime the store was connected
//! on ([`PgStore::connect`]) and wait for it on the caller's thread: a blocking-pool thread (as the
//! agent calls them), one outside any runtime ([`PgStore::connect_blocking`] makes a store with a
//! runtime of its own, for a caller with none), or even an async worker of a multi-threaded runtime
//! (`block_in_place`; better avoided). Every call is bounded: connecting and waiting for a pooled
//! connection take at most 5 s each, a statement at most 5 s on the server, and a whole call at
//! most 10 s (the lease methods too).
//!
//! Everything lives in the schema `blockwatch`, created and migrated by [`PgStore::connect`] under
//! an advisory lock, so that agents starting together on an empty database all come up.
//!
//! The connection string (`postgres://…` or `key=value …`) is a secret: it never appears in an
//! error, a log line or `Debug` output with its password ([`redact_url`]). TLS is used when it asks
//! for it (`sslmode=require`, `verify-ca` or `verify-full`), always verifying the server's
//! certificate and host name, against the Mozilla roots or the PEM file `sslrootcert` names; with
//! any other `sslmode` (or none) the connection is not encrypted.

use std::{
    collections::BTreeSet,
    future::Future,
    ops::{Deref, DerefMut},
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use alloy_primitives::B256;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::{config::SslMode, types::ToSql, NoTls};

use super::{BoxError, ChainCommit, ChainState, Fence, LogEntry, StateStore, StoreError};
use crate::model::{BlockLine, BlockRef, MissedBlock, StreamEvent};

/// How long connecting to PostgreSQL, or waiting for a pooled connection, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may run on the server (`statement_timeout`).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole call may take, whatever the server does (a stopped server still acknowledges
/// TCP): past it the call fails and its connection is closed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in the pool.
const POOL_SIZE: usize = 8;
/// The advisory lock migrations run under (`"blockwat"` in ASCII).
const MIGRATION_LOCK: i64 = 0x626c_6f63_6b77_6174;

/// The migrations, in order: the schema's version is the number applied.
const MIGRATIONS: &[&str] = &[MIGRATION_1];

/// The schema version this build writes in PostgreSQL.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const MIGRATION_1: &str = r#"
-- Per chain, the last emitted block: a restart (or the next leader) resumes after it.
CREATE TABLE blockwatch.cursors (
    chain        text PRIMARY KEY,      -- the chain's name in the config
    chain_id     bigint NOT NULL,       -- its chain id: a cursor of another id is refused
    number       bigint NOT NULL,       -- the last emitted block's number
    hash         bytea NOT NULL,        -- and its hash (32 bytes)
    first_number bigint,                -- the first block the stream emitted
    epoch        bigint NOT NULL,       -- the lease epoch the cursor was written under
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Per chain, the recent canonical blocks (the reorg window); the cursor is always its tip.
CREATE TABLE blockwatch.canonical (
    chain  text NOT NULL,
    number bigint NOT NULL,
    hash   bytea NOT NULL,              -- 32 bytes
    PRIMARY KEY (chain, number)
);

-- One row per miss: a height can be missed, then replaced by a reorg, or replaced twice; a miss
-- keeps its reason and missed_at while its record is updated (open, retries used up, recovered).
CREATE TABLE blockwatch.missed_blocks (
    chain        text NOT NULL,
    block_number bigint NOT NULL,
    reason       text NOT NULL,         -- why it was missed (the record's reason)
    missed_at    bigint NOT NULL,       -- when (Unix seconds)
    record       text NOT NULL,         -- the record, as JSON (the missed-block log's line)
    logged       boolean NOT NULL DEFAULT false, -- this version is in a missed-block log file
    PRIMARY KEY (chain, block_number, reason, missed_at)
);
CREATE INDEX missed_blocks_at ON blockwatch.missed_blocks (missed_at);
CREATE INDEX missed_blocks_unlogged ON blockwatch.missed_blocks (logged, missed_at);

-- Per chain, the alerts' throttle and resolution state (JSON), so that a failover neither repeats
-- a firing alert nor loses its resolution.
CREATE TABLE blockwatch.alert_state (
    chain      text PRIMARY KEY,
    state      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Per chain, who leads it: one lease, taken and renewed on PostgreSQL's clock.
CREATE TABLE blockwatch.leases (
    chain       text PRIMARY KEY,
    holder      text,                   -- the agent instance holding it; NULL: given up
    epoch       bigint NOT NULL,        -- one more at every new holder; every write carries it
    expires_at  timestamptz NOT NULL,   -- held until then unless renewed
    acquired_at timestamptz             -- when the holder took it
);

-- The agents sharing this database, by heartbeat: the work is spread over the live ones.
CREATE TABLE blockwatch.replicas (
    instance   text PRIMARY KEY,        -- the agent instance's name
    started_at timestamptz NOT NULL,    -- its first heartbeat
    last_seen  timestamptz NOT NULL     -- its latest heartbeat
);

-- The block stream (agent.block_output = "postgres"): every emitted block, written in the same
-- transaction as the chain's cursor. The canonical chain is the rows WHERE canonical, one per
-- height; a reorg marks the blocks it replaced canonical = false, and a replaced block that comes
-- back is canonical again.
CREATE TABLE blockwatch.blocks (
    chain        text NOT NULL,
    number       bigint NOT NULL,
    hash         text NOT NULL,         -- '0x…', lowercase hex, as in the JSON lines
    parent_hash  text NOT NULL,         -- the previous block's hash
    timestamp    bigint NOT NULL,       -- the block's timestamp (Unix seconds)
    transactions bigint NOT NULL,       -- its transaction count
    provider     text NOT NULL,         -- the provider that served it
    received_at  timestamptz,           -- when the agent had it
    lag_ms       bigint NOT NULL,       -- received_at minus the block's timestamp
    canonical    boolean NOT NULL,      -- part of the canonical chain (false: replaced by a reorg)
    epoch        bigint NOT NULL,       -- the lease epoch of the agent that wrote it
    written_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, number, hash)
);
-- The database itself forbids two canonical blocks at one height.
CREATE UNIQUE INDEX blocks_canonical ON blockwatch.blocks (chain, number) WHERE canonical;

-- Every reorg the stream followed.
CREATE TABLE blockwatch.reorgs (
    id              bigserial PRIMARY KEY,
    chain           text NOT NULL,
    depth           bigint NOT NULL,    -- canonical blocks replaced
    common_ancestor bigint NOT NULL,    -- the last block both branches share
    old_head_number bigint NOT NULL,    -- the canonical head before the reorg
    old_head_hash   text NOT NULL,
    new_head_number bigint NOT NULL,    -- the block of the new branch that revealed it
    new_head_hash   text NOT NULL,
    epoch           bigint NOT NULL,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reorgs_chain ON blockwatch.reorgs (chain, at);

-- What the stream could not follow (a reorg deeper than the window).
CREATE TABLE blockwatch.stream_errors (
    id           bigserial PRIMARY KEY,
    chain        text NOT NULL,
    kind         text NOT NULL,         -- e.g. deep_reorg
    message      text NOT NULL,         -- a readable account
    block_number bigint,                -- the block concerned, if any
    epoch        bigint NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stream_errors_chain ON blockwatch.stream_errors (chain, at);
"#;

/// One lease, as [`PgStore::leases`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// The chain.
    pub chain: String,
    /// Who holds it (`None`: given up, or expired).
    pub holder: Option<String>,
    /// Its epoch: one more at every new holder.
    pub epoch: u64,
    /// For how long it is still held, by PostgreSQL's clock (zero when it is not).
    pub left: Duration,
}

/// The PostgreSQL state store. Cheap to share (`Arc`); every call takes a connection of its pool.
pub struct PgStore {
    pool: Pool,
    /// This agent instance (lease holder and `application_name` `blockwatch/<instance>`).
    instance: String,
    /// The database, for messages: the connection string without its password.
    target: String,
    /// Whether `commit` writes the stream's lines as rows.
    holds_lines: bool,
    /// The runtime the blocking calls run their queries on.
    handle: tokio::runtime::Handle,
    /// A runtime of the store's own ([`PgStore::connect_blocking`]).
    own_runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.target)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this one's tasks are the pool's
        // connections, which may simply stop.
        if let Some(rt) = self.own_runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A pooled connection that goes back to the pool only when its call succeeded ([`Conn::done`]):
/// one left by an error or a timeout (perhaps in the middle of a transaction, or to a server that
/// no longer answers) is closed.
struct Conn(Option<Object>);

impl Conn {
    fn done(mut self) {
        drop(self.0.take());
    }
}

impl Deref for Conn {
    type Target = Object;
    fn deref(&self) -> &Object {
        self.0.as_ref().expect("connection present until done")
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        self.0.as_mut().expect("connection present until done")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            drop(Object::take(obj));
        }
    }
}

/// `$client.$method(sql, params)` with `sql` prepared once per connection (the pool's statement
/// cache), errors said to be while `$doing`.
macro_rules! run {
    ($client:expr, $method:ident, $doing:expr, $sql:expr, $params:expr) => {{
        let stmt = $client
            .prepare_cached($sql)
            .await
            .map_err(query_err($doing))?;
        $client
            .$method(&stmt, $params)
            .await
            .map_err(query_err($doing))
    }};
}

fn query_err<E: std::error::Error>(doing: &'static str) -> impl FnOnce(E) -> StoreError {
    move |source| StoreError::Query {
        doing,
        source: explained(&source),
    }
}

/// `e` with its causes, as one message: the driver's and the pool's errors say what failed ("db
/// error", "error connecting to server") and keep why in their sources.
fn explained(e: &dyn std::error::Error) -> BoxError {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text.into()
}

/// A `u64` as PostgreSQL's `bigint` (numbers, epochs and chain ids fit; a chain id that does not
/// wraps and comes back unchanged).
fn big(n: u64) -> i64 {
    n as i64
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects to the PostgreSQL at `url` (`postgres://user:password@host:port/db?…` or
    /// `host=… user=… …`) as agent instance `instance`, checks that it answers and creates or
    /// migrates the schema. `lease_ttl` is the leases' time to live: a transaction left idle for
    /// half of it (an agent paused in the middle of a write) is ended by the server.
    ///
    /// The store runs its blocking calls on the current runtime. An unreachable server is
    /// [`StoreError::Open`] naming the server (without the password) and the reason.
    pub async fn connect(
        url: &str,
        instance: &str,
        lease_ttl: Duration,
    ) -> Result<PgStore, StoreError> {
        let target = redact_url(url);
        let open = |source: BoxError| StoreError::Open {
            path: target.clone(),
            source,
        };
        let (config, tls) =
            pg_config(url, instance, lease_ttl).map_err(|e| open(explained(&*e)))?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(tls) => Manager::from_config(config, tls, manager_config),
            None => Manager::from_config(config, NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| open(explained(&e)))?;
        let mut conn = Conn(Some(pool.get().await.map_err(|e| open(explained(&e)))?));
        migrate(&mut conn, &target).await?;
        conn.done();
        Ok(PgStore {
            pool,
            instance: instance.to_owned(),
            target,
            holds_lines: false,
            handle: tokio::runtime::Handle::current(),
            own_runtime: None,
        })
    }

    /// [`PgStore::connect`] for a caller outside any runtime (a command of the CLI): the store
    /// gets a small runtime of its own, which its calls use.
    pub fn connect_blocking(
        url: &str,
        instance: &str,
        lease_ttl: Duration,
    ) -> Result<PgStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("blockwatch-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Open {
                path: redact_url(url),
                source: explained(&e),
            })?;
        let mut store = rt.block_on(Self::connect(url, instance, lease_ttl))?;
        store.handle = rt.handle().clone();
        store.own_runtime = Some(rt);
        Ok(store)
    }

    /// With `holds_lines`, the store is also the block output: `commit` writes the stream's lines
    /// as rows (`blocks`, `reorgs`, `stream_errors`) in the cursor's transaction, and
    /// [`StateStore::holds_lines`] says so (the publisher then gives it the lines instead of a
    /// sink). Off by default.
    pub fn with_block_output(mut self, holds_lines: bool) -> Self {
        self.holds_lines = holds_lines;
        self
    }

    /// This agent instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The database, without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `fut` on the store's runtime and waits for it. On a blocking-pool thread or outside any
    /// runtime `block_in_place` just runs it; on an async worker of a multi-threaded runtime it
    /// first hands the worker's other tasks to another thread (a current-thread runtime's own
    /// thread cannot block: it panics there, as any blocking call would deadlock).
    fn block<T>(
        &self,
        doing: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::task::block_in_place(|| self.handle.block_on(bounded(doing, fut)))
    }

    /// A pooled connection.
    async fn conn(&self) -> Result<Conn, StoreError> {
        self.pool
            .get()
            .await
            .map(|o| Conn(Some(o)))
            .map_err(query_err("connecting to PostgreSQL"))
    }

    /// Upserts this instance's heartbeat (`last_seen = now()`); forgets replicas unseen for 10 ×
    /// `ttl`; returns the live instances (seen within `ttl`), sorted, this one included.
    pub async fn heartbeat(&self, ttl: Duration) -> Result<Vec<String>, StoreError> {
        const DOING: &str = "sending the heartbeat";
        bounded(DOING, async {
            let mut conn = self.conn().await?;
            let tx = conn.transaction().await.map_err(query_err(DOING))?;
            run!(
                tx,
                execute,
                DOING,
                "INSERT INTO blockwatch.replicas (instance, started_at, last_seen)
                 VALUES ($1, now(), now())
                 ON CONFLICT (instance) DO UPDATE SET last_seen = now()",
                &[&self.instance]
            )?;
            run!(
                tx,
                execute,
                DOING,
                "DELETE FROM blockwatch.replicas
                 WHERE last_seen < now() - $1::bigint * interval '1 millisecond'",
                &[&ms(ttl).saturating_mul(10)]
            )?;
            let rows = run!(
                tx,
                query,
                DOING,
                "SELECT instance FROM blockwatch.replicas
                     WHERE last_seen >= now() - $1::bigint * interval '1 millisecond'
                     ORDER BY instance COLLATE \"C\"",
                &[&ms(ttl)]
            )?;
            tx.commit().await.map_err(query_err(DOING))?;
            conn.done();
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .await
    }

    /// Takes `chain`'s lease when it is free (no row; given up: holder NULL; or expired by
    /// PostgreSQL's clock): holder = this instance, epoch + 1, `expires_at = now() + ttl`. Returns
    /// the new epoch, or `None` when another holder's lease is live (or this instance's own: the
    /// caller knows what it holds). Race-free: of several agents trying at once, one gets it.
    pub async fn acquire(&self, chain: &str, ttl: Duration) -> Result<Option<u64>, StoreError> {
        const DOING: &str = "taking a lease";
        bounded(DOING, async {
            let conn = self.conn().await?;
            let row = run!(
                conn,
                query_opt,
                DOING,
                "INSERT INTO blockwatch.leases AS l (chain, holder, epoch, expires_at, acquired_at)
                     VALUES ($1, $2, 1, now() + $3::bigint * interval '1 millisecond', now())
                     ON CONFLICT (chain) DO UPDATE
                         SET holder = excluded.holder, epoch = l.epoch + 1,
                             expires_at = excluded.expires_at, acquired_at = now()
                         WHERE l.holder IS NULL OR l.expires_at <= now()
                     RETURNING epoch",
                &[&chain, &self.instance, &ms(ttl)]
            )?;
            conn.done();
            Ok(row.map(|r| r.get::<_, i64>(0) as u64))
        })
        .await
    }

    /// Renews the leases this instance holds at these epochs and that have not expired
    /// (`expires_at = now() + ttl`), in one statement; returns the chains renewed.
    pub async fn renew(
        &self,
        held: &[(String, u64)],
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        const DOING: &str = "renewing leases";
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let chains: Vec<&str> = held.iter().map(|(c, _)| c.as_str()).collect();
        let epochs: Vec<i64> = held.iter().map(|(_, e)| big(*e)).collect();
        bounded(DOING, async {
            let conn = self.conn().await?;
            let rows = run!(
                conn,
                query,
                DOING,
                "UPDATE blockwatch.leases AS l
                     SET expires_at = now() + $4::bigint * interval '1 millisecond'
                     FROM UNNEST($2::text[], $3::bigint[]) AS h(chain, epoch)
                     WHERE l.chain = h.chain AND l.epoch = h.epoch AND l.holder = $1
                       AND l.expires_at > now()
                     RETURNING l.chain",
                &[&self.instance, &chains, &epochs, &ms(ttl)]
            )?;
            conn.done();
            let mut renewed: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            renewed.sort();
            Ok(renewed)
        })
        .await
    }

    /// Gives `chain`'s lease up (holder NULL, `expires_at = now()`) if this instance still holds
    /// it at `epoch`, so that another agent can take it at once.
    pub async fn release(&self, chain: &str, epoch: u64) -> Result<(), StoreError> {
        const DOING: &str = "giving a lease up";
        bounded(DOING, async {
            let conn = self.conn().await?;
            run!(
                conn,
                execute,
                DOING,
                "UPDATE blockwatch.leases SET holder = NULL, expires_at = now()
                 WHERE chain = $1 AND holder = $2 AND epoch = $3",
                &[&chain, &self.instance, &big(epoch)]
            )?;
            conn.done();
            Ok(())
        })
        .await
    }

    /// Every lease, by chain: holder (`None` when given up or expired), epoch, and for how long
    /// it is still held.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        const DOING: &str = "reading the leases";
        bounded(DOING, async {
            let conn = self.conn().await?;
            let rows = run!(
                conn,
                query,
                DOING,
                "SELECT chain,
                            CASE WHEN expires_at > now() THEN holder END,
                            epoch,
                            GREATEST(0, CEIL(
                                EXTRACT(EPOCH FROM (expires_at - now())) * 1000))::bigint
                     FROM blockwatch.leases ORDER BY chain COLLATE \"C\"",
                &[]
            )?;
            conn.done();
            Ok(rows
                .iter()
                .map(|r| {
                    let holder: Option<String> = r.get(1);
                    LeaseRow {
                        chain: r.get(0),
                        left: if holder.is_some() {
                            Duration::from_millis(r.get::<_, i64>(3).max(0) as u64)
                        } else {
                            Duration::ZERO
                        },
                        holder,
                        epoch: r.get::<_, i64>(2) as u64,
                    }
                })
                .collect())
        })
        .await
    }

    /// Removes this instance's heartbeat (a clean stop), so that the others rebalance at once.
    pub async fn leave(&self) -> Result<(), StoreError> {
        const DOING: &str = "leaving the cluster";
        bounded(DOING, async {
            let conn = self.conn().await?;
            run!(
                conn,
                execute,
                DOING,
                "DELETE FROM blockwatch.replicas WHERE instance = $1",
                &[&self.instance]
            )?;
            conn.done();
            Ok(())
        })
        .await
    }

    /// The missed-block records `sql` selects (one `record` column) with `params`.
    async fn records(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<MissedBlock>, StoreError> {
        const DOING: &str = "reading missed blocks";
        let conn = self.conn().await?;
        let stmt = conn.prepare_cached(sql).await.map_err(query_err(DOING))?;
        let rows = conn.query(&stmt, params).await.map_err(query_err(DOING))?;
        conn.done();
        rows.iter()
            .map(|r| decode_missed(r.get::<_, &str>(0)))
            .collect()
    }

    async fn commit_async(
        &self,
        chain: &str,
        chain_id: u64,
        commit: &ChainCommit,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn
            .transaction()
            .await
            .map_err(query_err("starting a transaction"))?;
        let epoch = match check_fence(&tx, &[chain], commit.fence.as_ref()).await? {
            Ok(epoch) => epoch,
            Err(fenced) => {
                tx.rollback().await.map_err(query_err("rolling back"))?;
                conn.done();
                return Err(fenced);
            }
        };
        if let Some(n) = commit.rollback_above {
            run!(
                tx,
                execute,
                "rolling back canonical blocks",
                "DELETE FROM blockwatch.canonical WHERE chain = $1 AND number > $2",
                &[&chain, &big(n)]
            )?;
        }
        if !commit.added.is_empty() {
            // One row per height, the last given winning (as a replacing insert would).
            let mut added: Vec<&BlockRef> = Vec::with_capacity(commit.added.len());
            for b in &commit.added {
                added.retain(|a| a.number != b.number);
                added.push(b);
            }
            let numbers: Vec<i64> = added.iter().map(|b| big(b.number)).collect();
            let hashes: Vec<&[u8]> = added.iter().map(|b| b.hash.as_slice()).collect();
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO blockwatch.canonical (chain, number, hash)
                     SELECT $1, n, h FROM UNNEST($2::bigint[], $3::bytea[]) AS t(n, h)
                     ON CONFLICT (chain, number) DO UPDATE SET hash = excluded.hash",
                )
                .await
                .map_err(query_err("storing canonical blocks"))?;
            tx.execute(&stmt, &[&chain, &numbers, &hashes])
                .await
                .map_err(query_err("storing canonical blocks"))?;
        }
        if commit.keep_from > 0 {
            run!(
                tx,
                execute,
                "pruning canonical blocks",
                "DELETE FROM blockwatch.canonical WHERE chain = $1 AND number < $2",
                &[&chain, &big(commit.keep_from)]
            )?;
        }
        if let Some(c) = commit.cursor {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO blockwatch.cursors
                         (chain, chain_id, number, hash, first_number, epoch, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, now())
                     ON CONFLICT (chain) DO UPDATE SET chain_id = excluded.chain_id,
                         number = excluded.number, hash = excluded.hash,
                         first_number = COALESCE(excluded.first_number, cursors.first_number),
                         epoch = excluded.epoch, updated_at = now()",
                )
                .await
                .map_err(query_err("storing the cursor"))?;
            tx.execute(
                &stmt,
                &[
                    &chain,
                    &big(chain_id),
                    &big(c.number),
                    &c.hash.as_slice(),
                    &commit.first_emitted.map(big),
                    &big(epoch),
                ],
            )
            .await
            .map_err(query_err("storing the cursor"))?;
        }
        insert_missed(&tx, &commit.missed).await?;
        if self.holds_lines {
            if let (Some(n), Some(_)) = (commit.rollback_above, commit.first_emitted) {
                // A stream that starts afresh replaces whatever was emitted above its first block
                // (as the window forgets it): those rows are canonical again only if re-emitted.
                run!(
                    tx,
                    execute,
                    "writing block rows",
                    "UPDATE blockwatch.blocks SET canonical = false
                     WHERE chain = $1 AND number > $2 AND canonical",
                    &[&chain, &big(n)]
                )?;
            }
            write_lines(&tx, chain, epoch, &commit.lines).await?;
        }
        tx.commit().await.map_err(query_err("committing"))?;
        conn.done();
        Ok(())
    }

    async fn save_missed_async(
        &self,
        records: &[MissedBlock],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let chains: BTreeSet<&str> = records.iter().map(|r| r.chain.as_str()).collect();
        let chains: Vec<&str> = chains.into_iter().collect();
        let mut conn = self.conn().await?;
        let tx = conn
            .transaction()
            .await
            .map_err(query_err("saving missed blocks"))?;
        if let Err(fenced) = check_fence(&tx, &chains, fence).await? {
            tx.rollback().await.map_err(query_err("rolling back"))?;
            conn.done();
            return Err(fenced);
        }
        insert_missed(&tx, records).await?;
        tx.commit()
            .await
            .map_err(query_err("saving missed blocks"))?;
        conn.done();
        Ok(())
    }

    async fn save_alert_state_async(
        &self,
        chain: &str,
        state: &str,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        const DOING: &str = "saving the alert state";
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(query_err(DOING))?;
        if let Err(fenced) = check_fence(&tx, &[chain], fence).await? {
            tx.rollback().await.map_err(query_err("rolling back"))?;
            conn.done();
            return Err(fenced);
        }
        run!(
            tx,
            execute,
            DOING,
            "INSERT INTO blockwatch.alert_state (chain, state, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (chain) DO UPDATE SET state = excluded.state, updated_at = now()",
            &[&chain, &state]
        )?;
        tx.commit().await.map_err(query_err(DOING))?;
        conn.done();
        Ok(())
    }

    async fn load_chain_async(&self, chain: &str, chain_id: u64) -> Result<ChainState, StoreError> {
        let mut conn = self.conn().await?;
        // One snapshot for the cursor and the window.
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(query_err("reading the cursor"))?;
        let row = run!(
            tx,
            query_opt,
            "reading the cursor",
            "SELECT chain_id, number, hash, first_number FROM blockwatch.cursors
                 WHERE chain = $1",
            &[&chain]
        )?;
        let rows = run!(
            tx,
            query,
            "reading canonical blocks",
            "SELECT number, hash FROM blockwatch.canonical WHERE chain = $1 ORDER BY number",
            &[&chain]
        )?;
        tx.commit()
            .await
            .map_err(query_err("reading canonical blocks"))?;
        conn.done();
        let mut state = ChainState::default();
        if let Some(row) = row {
            let stored = row.get::<_, i64>(0) as u64;
            if stored != chain_id {
                return Err(StoreError::ChainIdMismatch {
                    chain: chain.to_owned(),
                    stored,
                    configured: chain_id,
                });
            }
            state.cursor = Some(BlockRef {
                number: row.get::<_, i64>(1) as u64,
                hash: to_hash(row.get(2)),
            });
            state.first_emitted = row.get::<_, Option<i64>>(3).map(|n| n as u64);
        }
        state.recent = rows
            .iter()
            .map(|r| BlockRef {
                number: r.get::<_, i64>(0) as u64,
                hash: to_hash(r.get(1)),
            })
            .collect();
        Ok(state)
    }
}

/// `fut`, failing with a timeout after [`CALL_TIMEOUT`].
async fn bounded<T>(
    doing: &'static str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Query {
            doing,
            source: format!("PostgreSQL did not answer within {CALL_TIMEOUT:?}").into(),
        }),
    }
}

/// Locks the leases of `chains` for the rest of `tx` if `fence` is the current, unexpired lease
/// of each: the fence's epoch, or (inner `Err`) the refusal. A missing fence is refused (epoch 0).
async fn check_fence(
    tx: &deadpool_postgres::Transaction<'_>,
    chains: &[&str],
    fence: Option<&Fence>,
) -> Result<Result<u64, StoreError>, StoreError> {
    let fenced = |chain: &str, epoch: u64| StoreError::Fenced {
        chain: chain.to_owned(),
        epoch,
    };
    let Some(fence) = fence else {
        return Ok(match chains.first() {
            Some(chain) => Err(fenced(chain, 0)),
            None => Ok(0),
        });
    };
    // `statement_timestamp()`: the server's clock when this statement arrived, not when the
    // transaction began (`now()`), one round trip earlier.
    let stmt = tx
        .prepare_cached(
            "SELECT epoch FROM blockwatch.leases
             WHERE chain = $1 AND holder = $2 AND epoch = $3
               AND expires_at > statement_timestamp()
             FOR SHARE",
        )
        .await
        .map_err(query_err("checking the lease"))?;
    for chain in chains {
        let row = tx
            .query_opt(&stmt, &[chain, &fence.holder, &big(fence.epoch)])
            .await
            .map_err(query_err("checking the lease"))?;
        if row.is_none() {
            return Ok(Err(fenced(chain, fence.epoch)));
        }
    }
    Ok(Ok(fence.epoch))
}

/// Upserts missed-block records in `tx`: a record of a miss already stored replaces it and is to
/// be logged again.
async fn insert_missed(
    tx: &deadpool_postgres::Transaction<'_>,
    records: &[MissedBlock],
) -> Result<(), StoreError> {
    const DOING: &str = "saving missed blocks";
    if records.is_empty() {
        return Ok(());
    }
    // One row per miss, the last version given winning.
    let mut last: Vec<&MissedBlock> = Vec::with_capacity(records.len());
    for r in records {
        last.retain(|o| {
            (
                o.chain.as_str(),
                o.block_number,
                o.reason.as_str(),
                o.timestamp,
            ) != (
                r.chain.as_str(),
                r.block_number,
                r.reason.as_str(),
                r.timestamp,
            )
        });
        last.push(r);
    }
    let chains: Vec<&str> = last.iter().map(|r| r.chain.as_str()).collect();
    let numbers: Vec<i64> = last.iter().map(|r| big(r.block_number)).collect();
    let reasons: Vec<&str> = last.iter().map(|r| r.reason.as_str()).collect();
    let at: Vec<i64> = last.iter().map(|r| big(r.timestamp)).collect();
    let json = last
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<String>, _>>()
        .map_err(query_err("encoding a missed block"))?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO blockwatch.missed_blocks (chain, block_number, reason, missed_at, record)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[])
             ON CONFLICT (chain, block_number, reason, missed_at)
             DO UPDATE SET record = excluded.record, logged = false",
        )
        .await
        .map_err(query_err(DOING))?;
    tx.execute(&stmt, &[&chains, &numbers, &reasons, &at, &json])
        .await
        .map_err(query_err(DOING))?;
    Ok(())
}

/// Writes the stream's `lines` as rows, in order: consecutive blocks in one statement.
async fn write_lines(
    tx: &deadpool_postgres::Transaction<'_>,
    chain: &str,
    epoch: u64,
    lines: &[StreamEvent],
) -> Result<(), StoreError> {
    const DOING: &str = "writing block rows";
    let mut blocks: Vec<&BlockLine> = Vec::new();
    for line in lines {
        match line {
            StreamEvent::Block(b) => blocks.push(b),
            StreamEvent::Reorg(r) => {
                upsert_blocks(tx, chain, epoch, &std::mem::take(&mut blocks)).await?;
                let stmt = tx
                    .prepare_cached(
                        "WITH replaced AS (
                             UPDATE blockwatch.blocks SET canonical = false
                             WHERE chain = $1 AND number > $3 AND canonical
                         )
                         INSERT INTO blockwatch.reorgs (chain, depth, common_ancestor,
                             old_head_number, old_head_hash, new_head_number, new_head_hash, epoch)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .await
                    .map_err(query_err(DOING))?;
                tx.execute(
                    &stmt,
                    &[
                        &chain,
                        &big(r.depth),
                        &big(r.common_ancestor),
                        &big(r.old_head.number),
                        &hex(&r.old_head.hash),
                        &big(r.new_head.number),
                        &hex(&r.new_head.hash),
                        &big(epoch),
                    ],
                )
                .await
                .map_err(query_err(DOING))?;
            }
            StreamEvent::Error(e) => {
                upsert_blocks(tx, chain, epoch, &std::mem::take(&mut blocks)).await?;
                run!(
                    tx,
                    execute,
                    DOING,
                    "INSERT INTO blockwatch.stream_errors
                         (chain, kind, message, block_number, epoch)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &chain,
                        &e.kind,
                        &e.message,
                        &e.block_number.map(big),
                        &big(epoch)
                    ]
                )?;
            }
        }
    }
    upsert_blocks(tx, chain, epoch, &blocks).await
}

/// Upserts `blocks` canonical (a replaced block that comes back is canonical again).
async fn upsert_blocks(
    tx: &deadpool_postgres::Transaction<'_>,
    chain: &str,
    epoch: u64,
    blocks: &[&BlockLine],
) -> Result<(), StoreError> {
    const DOING: &str = "writing block rows";
    if blocks.is_empty() {
        return Ok(());
    }
    let numbers: Vec<i64> = blocks.iter().map(|b| big(b.block_number)).collect();
    let hashes: Vec<String> = blocks.iter().map(|b| hex(&b.hash)).collect();
    let parents: Vec<String> = blocks.iter().map(|b| hex(&b.parent_hash)).collect();
    let timestamps: Vec<i64> = blocks.iter().map(|b| big(b.timestamp)).collect();
    let txs: Vec<i64> = blocks.iter().map(|b| big(b.transactions as u64)).collect();
    let providers: Vec<&str> = blocks.iter().map(|b| b.provider.as_str()).collect();
    let received: Vec<Option<SystemTime>> = blocks
        .iter()
        .map(|b| humantime::parse_rfc3339_weak(&b.received_at).ok())
        .collect();
    let lags: Vec<i64> = blocks.iter().map(|b| b.lag_ms).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO blockwatch.blocks (chain, number, hash, parent_hash, timestamp,
                 transactions, provider, received_at, lag_ms, canonical, epoch)
             SELECT $1, t.number, t.hash, t.parent_hash, t.ts, t.txs, t.provider, t.received_at,
                    t.lag_ms, true, $2
             FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
                         $8::text[], $9::timestamptz[], $10::bigint[])
                  AS t(number, hash, parent_hash, ts, txs, provider, received_at, lag_ms)
             ON CONFLICT (chain, number, hash) DO UPDATE SET canonical = true,
                 parent_hash = excluded.parent_hash, timestamp = excluded.timestamp,
                 transactions = excluded.transactions, provider = excluded.provider,
                 received_at = excluded.received_at, lag_ms = excluded.lag_ms,
                 epoch = excluded.epoch, written_at = now()",
        )
        .await
        .map_err(query_err(DOING))?;
    tx.execute(
        &stmt,
        &[
            &chain,
            &big(epoch),
            &numbers,
            &hashes,
            &parents,
            &timestamps,
            &txs,
            &providers,
            &received,
            &lags,
        ],
    )
    .await
    .map_err(query_err(DOING))?;
    Ok(())
}

impl StateStore for PgStore {
    fn load_chain(&self, chain: &str, chain_id: u64) -> Result<ChainState, StoreError> {
        self.block("reading the cursor", self.load_chain_async(chain, chain_id))
    }

    /// Applies `commit` in one transaction, under its fence (required: refused without one).
    fn commit(&self, chain: &str, chain_id: u64, commit: &ChainCommit) -> Result<(), StoreError> {
        self.block("committing", self.commit_async(chain, chain_id, commit))
    }

    /// Stores missed-block records under `fence` (required: refused without one, unless there
    /// are none), checked for the chain of each.
    fn save_missed(
        &self,
        records: &[MissedBlock],
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.block(
            "saving missed blocks",
            self.save_missed_async(records, fence),
        )
    }

    fn open_miss(&self, chain: &str, number: u64) -> Result<Option<MissedBlock>, StoreError> {
        const DOING: &str = "reading an open missed block";
        self.block(DOING, async {
            let conn = self.conn().await?;
            let row = run!(
                conn,
                query_opt,
                DOING,
                "SELECT record FROM blockwatch.missed_blocks
                     WHERE chain = $1 AND block_number = $2
                       AND (record::jsonb ->> 'recovered')::boolean = false
                     ORDER BY missed_at DESC LIMIT 1",
                &[&chain, &big(number)]
            )?;
            conn.done();
            row.map(|r| decode_missed(r.get::<_, &str>(0))).transpose()
        })
    }

    fn missed(
        &self,
        chain: Option<&str>,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<MissedBlock>, StoreError> {
        let since = i64::try_from(since.unwrap_or(0)).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.block(
            "reading missed blocks",
            self.records(
                "SELECT record FROM blockwatch.missed_blocks
                 WHERE ($1::text IS NULL OR chain = $1) AND missed_at >= $2
                 ORDER BY chain COLLATE \"C\", block_number, missed_at LIMIT $3",
                &[&chain, &since, &limit],
            ),
        )
    }

    fn latest_missed(&self, chain: &str, limit: usize) -> Result<Vec<MissedBlock>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.block(
            "reading missed blocks",
            self.records(
                "SELECT record FROM blockwatch.missed_blocks WHERE chain = $1
                 ORDER BY missed_at DESC, block_number DESC LIMIT $2",
                &[&chain, &limit],
            ),
        )
    }

    /// Records not in a log file yet (or updated since) of the chains whose lease this instance
    /// holds now: each agent's log has the records of the chains it leads, and a record its
    /// leader committed but did not log before it stopped is logged by the next leader.
    fn unlogged(&self, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        const DOING: &str = "reading unlogged missed blocks";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.block(DOING, async {
            let conn = self.conn().await?;
            let rows = run!(
                conn,
                query,
                DOING,
                "SELECT m.chain, m.block_number, m.record
                     FROM blockwatch.missed_blocks m
                     JOIN blockwatch.leases l
                       ON l.chain = m.chain AND l.holder = $1 AND l.expires_at > now()
                     WHERE NOT m.logged
                     ORDER BY m.missed_at, m.chain COLLATE \"C\", m.block_number LIMIT $2",
                &[&self.instance, &limit]
            )?;
            conn.done();
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2)))
                .collect())
        })
    }

    fn mark_logged(&self, written: &[LogEntry]) -> Result<(), StoreError> {
        const DOING: &str = "marking missed blocks logged";
        if written.is_empty() {
            return Ok(());
        }
        let chains: Vec<&str> = written.iter().map(|w| w.0.as_str()).collect();
        let numbers: Vec<i64> = written.iter().map(|w| big(w.1)).collect();
        let records: Vec<&str> = written.iter().map(|w| w.2.as_str()).collect();
        self.block(DOING, async {
            let conn = self.conn().await?;
            run!(
                conn,
                execute,
                DOING,
                "UPDATE blockwatch.missed_blocks AS m SET logged = true
                 FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS w(chain, block_number, record)
                 WHERE m.chain = w.chain AND m.block_number = w.block_number
                   AND m.record = w.record",
                &[&chains, &numbers, &records]
            )?;
            conn.done();
            Ok(())
        })
    }

    fn load_alert_state(&self, chain: &str) -> Result<Option<String>, StoreError> {
        const DOING: &str = "reading the alert state";
        self.block(DOING, async {
            let conn = self.conn().await?;
            let row = run!(
                conn,
                query_opt,
                DOING,
                "SELECT state FROM blockwatch.alert_state WHERE chain = $1",
                &[&chain]
            )?;
            conn.done();
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn save_alert_state(
        &self,
        chain: &str,
        state: &str,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.block(
            "saving the alert state",
            self.save_alert_state_async(chain, state, fence),
        )
    }

    fn holds_lines(&self) -> bool {
        self.holds_lines
    }
}

/// Creates the schema, or brings it to this build's version, in one transaction under an advisory
/// lock (agents starting together wait for the first). A newer schema is refused.
async fn migrate(conn: &mut Conn, target: &str) -> Result<(), StoreError> {
    let open = |e: tokio_postgres::Error| StoreError::Open {
        path: target.to_owned(),
        source: explained(&e),
    };
    let tx = conn.transaction().await.map_err(open)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(open)?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS blockwatch;
         -- The migrations applied, one row each.
         CREATE TABLE IF NOT EXISTS blockwatch.schema_version (
             version    bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(open)?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM blockwatch.schema_version",
            &[],
        )
        .await
        .map_err(open)?
        .get(0);
    if found > PG_SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: target.to_owned(),
            found,
            supported: PG_SCHEMA_VERSION,
            setting: "cluster.url",
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(open)?;
        tx.execute(
            "INSERT INTO blockwatch.schema_version (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )
        .await
        .map_err(open)?;
    }
    tx.commit().await.map_err(open)
}

/// The driver's configuration for `url`, and the TLS connector when it asks for TLS.
fn pg_config(
    url: &str,
    instance: &str,
    lease_ttl: Duration,
) -> Result<
    (
        tokio_postgres::Config,
        Option<tokio_postgres_rustls::MakeRustlsConnect>,
    ),
    BoxError,
> {
    // The driver knows neither verify-ca nor verify-full, nor sslrootcert: they are read here.
    let (rest, sslmode) = take_param(url, "sslmode");
    let (rest, rootcert) = take_param(&rest, "sslrootcert");
    let tls = match sslmode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => None,
        Some("require" | "verify-ca" | "verify-full") => Some(tls_connector(rootcert.as_deref())?),
        Some(other) => {
            return Err(format!(
            "unknown sslmode {other:?} (disable, allow, prefer, require, verify-ca, verify-full)"
        )
            .into())
        }
    };
    let mut config = tokio_postgres::Config::from_str(&rest)?;
    config.ssl_mode(if tls.is_some() {
        SslMode::Require
    } else {
        SslMode::Disable
    });
    config
        .application_name(format!("blockwatch/{instance}"))
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        // Data sent and not acknowledged for this long (a network gone): the connection fails.
        .tcp_user_timeout(CALL_TIMEOUT);
    let idle = ms(lease_ttl / 2).max(1);
    let ours = format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={idle}",
        ms(STATEMENT_TIMEOUT)
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(options);
    Ok((config, tls))
}

/// A rustls connector verifying the server's certificate and name against the PEM file at
/// `rootcert`, or the Mozilla roots.
fn tls_connector(
    rootcert: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, BoxError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match rootcert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("sslrootcert {path}: no certificate in it").into());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn decode_missed(text: &str) -> Result<MissedBlock, StoreError> {
    serde_json::from_str(text).map_err(query_err("decoding a missed block"))
}

fn to_hash(bytes: &[u8]) -> B256 {
    if bytes.len() == 32 {
        B256::from_slice(bytes)
    } else {
        B256::ZERO
    }
}

/// A hash as the JSON lines write it: `0x`, lowercase hex.
fn hex(hash: &B256) -> String {
    format!("{hash:#x}")
}

/// Whether `s` is a URL (`postgres://` or `postgresql://`) rather than `key=value` pairs.
fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// The `key=value` pairs of a connection string: each key, its value (unquoted, unescaped; `None`
/// for a word without `=`, which is no pair) and the byte range of the whole pair. Lenient: an
/// unterminated quote runs to the end.
fn kv_pairs(s: &str) -> Vec<(String, Option<String>, std::ops::Range<usize>)> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_owned();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            out.push((key, None, start..i));
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
        }
        out.push((
            key,
            Some(String::from_utf8_lossy(&value).into_owned()),
            start..i,
        ));
    }
    out
}

/// `url` without its `key` parameter, and that parameter's value (percent-decoded in a URL).
fn take_param(url: &str, key: &str) -> (String, Option<String>) {
    if is_url(url) {
        let Some((head, query)) = url.split_once('?') else {
            return (url.to_owned(), None);
        };
        let mut value = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if k == key {
                    value = Some(
                        percent_encoding::percent_decode_str(v)
                            .decode_utf8_lossy()
                            .into_owned(),
                    );
                    false
                } else {
                    true
                }
            })
            .collect();
        let rest = if kept.is_empty() {
            head.to_owned()
        } else {
            format!("{head}?{}", kept.join("&"))
        };
        (rest, value)
    } else {
        let mut value = None;
        let mut kept = Vec::new();
        for (k, v, range) in kv_pairs(url) {
            if k == key && v.is_some() {
                value = v;
            } else {
                kept.push(&url[range]);
            }
        }
        (kept.join(" "), value)
    }
}

/// `url` (a `postgres://` URL or `key=value` pairs) with its password, in the user-info or in a
/// parameter (any key containing `password`), replaced by `<redacted>`; everything else (user,
/// host, port, database, options) kept, to say which server is meant.
pub fn redact_url(url: &str) -> String {
    use crate::redact::REDACTED;
    let is_password = |key: &str| key.to_ascii_lowercase().contains("password");
    if !is_url(url) {
        // A word that is no `key=value` pair may be part of a value: not shown either.
        return kv_pairs(url)
            .into_iter()
            .map(|(k, v, range)| match v {
                Some(_) if is_password(&k) => format!("{k}={REDACTED}"),
                Some(_) => url[range].to_owned(),
                None => REDACTED.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    // The user-info ends at the first '@' for the driver, and at the last '@' before the query for
    // a password with a raw '@' in it: whichever is later.
    let first = rest.find('@');
    let last = rest[..rest.find('?').unwrap_or(rest.len())].rfind('@');
    let rest = match first.max(last) {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{user}:{REDACTED}{}", &rest[at..]),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    let (head, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest.as_str(), None),
    };
    let mut out = format!("{scheme}://{head}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_password(k) => format!("{k}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_both_forms() {
        for (url, want) in [
            (
                "postgres://bw:s3cret@db.example:5432/chains?sslmode=require",
                "postgres://bw:<redacted>@db.example:5432/chains?sslmode=require",
            ),
            (
                "postgresql://bw@db/chains?password=s3cret&application_name=x",
                "postgresql://bw@db/chains?password=<redacted>&application_name=x",
            ),
            // A raw '@' or '/' in the password: the last '@' before the query ends the user-info.
            (
                "postgres://bw:s3c@r/et@db/chains",
                "postgres://bw:<redacted>@db/chains",
            ),
            ("postgres://db/chains", "postgres://db/chains"),
            (
                "host=db user=bw password=s3cret dbname=chains",
                "host=db user=bw password=<redacted> dbname=chains",
            ),
            (
                "host=db password = 's3 cr\\'et' user=bw",
                "host=db password=<redacted> user=bw",
            ),
            // An unterminated quote runs to the end: all of it is the password.
            (
                "host=db password='s3cret user=bw",
                "host=db password=<redacted>",
            ),
            // A raw '?' in the password: the driver's user-info still ends at the first '@'.
            (
                "postgres://bw:s3c?r=et@db/chains",
                "postgres://bw:<redacted>@db/chains",
            ),
            // An '@' in the query of a URL without user-info: the driver would take what comes
            // before it for user-info, so it is hidden too.
            (
                "postgres://db:5432/chains?application_name=s3@x",
                "postgres://db:<redacted>@x",
            ),
            // Words that are no pairs (a '=' forgotten) are not shown.
            (
                "host=db password s3cret user=bw",
                "host=db <redacted> <redacted> user=bw",
            ),
            ("bw:s3cret@db/chains", "<redacted>"),
        ] {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("s3"), "{got}");
        }
    }

    #[test]
    fn tls_parameters_are_taken_out_for_the_driver() {
        let (rest, mode) = take_param(
            "postgres://bw@db/c?sslmode=verify-full&sslrootcert=%2Fca.pem&connect_timeout=3",
            "sslmode",
        );
        assert_eq!(mode.as_deref(), Some("verify-full"));
        let (rest, root) = take_param(&rest, "sslrootcert");
        assert_eq!(root.as_deref(), Some("/ca.pem"));
        assert_eq!(rest, "postgres://bw@db/c?connect_timeout=3");
        let (rest, mode) = take_param("host=db sslmode=require user=bw", "sslmode");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(rest, "host=db user=bw");
        assert_eq!(take_param("postgres://db/c", "sslmode").1, None);
    }

    #[test]
    fn an_unknown_sslmode_is_refused() {
        let err = pg_config(
            "postgres://db/c?sslmode=maybe",
            "a",
            Duration::from_secs(10),
        )
        .err()
        .expect("refused")
        .to_string();
        assert!(err.contains("unknown sslmode \"maybe\""), "{err}");
        let (config, tls) = pg_config(
            "host=db user=bw options='-c search_path=x'",
            "a",
            Duration::from_secs(4),
        )
        .unwrap();
        assert!(tls.is_none());
        assert_eq!(config.get_application_name(), Some("blockwatch/a"));
        assert_eq!(
            config.get_options(),
            Some("-c search_path=x -c statement_timeout=5000 -c idle_in_transaction_session_timeout=2000")
        );
    }
}
