//! The PostgreSQL state store against a real PostgreSQL (Debian's, started by the tests as an
//! unprivileged user in a temporary directory): the same semantics as the SQLite store, writes
//! fenced by a chain's lease, leases taken and renewed on PostgreSQL's clock, concurrent starts on
//! an empty database, the block rows, and the connection string's password shown nowhere.
//!
//! Each test has a database of its own on one server shared by the tests running meanwhile
//! ([`PgServer::shared`]); the one that kills sessions and restarts PostgreSQL has its own server.

mod common;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use alloy_primitives::B256;
use blockwatch::{
    model::{
        BlockLine, BlockRef, ErrorLine, MissedBlock, Reason, ReorgLine, Severity, StreamEvent,
    },
    store::{postgres::redact_url, ChainCommit, Fence, PgStore, StateStore, StoreError},
};
use common::{postgres::PgServer, wait_for};

/// The leases' time to live in most tests: nothing expires during one.
const TTL: Duration = Duration::from_secs(30);

/// A fresh database on the shared server.
struct Db {
    server: Arc<PgServer>,
    name: String,
    url: String,
}

async fn fresh(test: &str) -> Db {
    static N: AtomicUsize = AtomicUsize::new(0);
    let server = PgServer::shared();
    let name = format!("{test}_{}", N.fetch_add(1, Ordering::Relaxed));
    let url = server.create_database(&name).await;
    Db { server, name, url }
}

async fn connect(url: &str, instance: &str) -> Arc<PgStore> {
    Arc::new(
        PgStore::connect(url, instance, TTL)
            .await
            .unwrap_or_else(|e| panic!("connect {instance}: {e}")),
    )
}

/// Runs a blocking store call on the blocking pool, as the agent does.
async fn on<T: Send + 'static>(
    store: &Arc<PgStore>,
    f: impl FnOnce(&PgStore) -> T + Send + 'static,
) -> T {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .unwrap()
}

/// Takes `chain`'s lease for `store`'s instance; its fence.
async fn lead(store: &PgStore, chain: &str, ttl: Duration) -> Fence {
    let epoch = store
        .acquire(chain, ttl)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{} could not take {chain}", store.instance()));
    Fence {
        holder: store.instance().to_owned(),
        epoch,
    }
}

fn r(n: u64, fork: u8) -> BlockRef {
    let mut b = [fork; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    BlockRef {
        number: n,
        hash: B256::from(b),
    }
}

fn missed(chain: &str, n: u64, at: u64, recovered: bool) -> MissedBlock {
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

fn fenced(commit: ChainCommit, fence: &Fence) -> ChainCommit {
    ChainCommit {
        fence: Some(fence.clone()),
        ..commit
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_roll_back_prune_and_survive_reconnect() {
    let db = fresh("commits").await;
    let store = connect(&db.url, "a").await;
    let fence = lead(&store, "c", TTL).await;
    assert!(on(&store, |s| s.load_chain("c", 1))
        .await
        .unwrap()
        .cursor
        .is_none());
    let first = fenced(
        ChainCommit {
            added: (1..=5).map(|n| r(n, 0)).collect(),
            cursor: Some(r(5, 0)),
            keep_from: 2,
            first_emitted: Some(1),
            ..Default::default()
        },
        &fence,
    );
    on(&store, move |s| s.commit("c", 1, &first)).await.unwrap();
    let reorg = fenced(
        ChainCommit {
            rollback_above: Some(3),
            added: vec![r(4, 1)],
            cursor: Some(r(4, 1)),
            keep_from: 2,
            ..Default::default()
        },
        &fence,
    );
    on(&store, move |s| s.commit("c", 1, &reorg)).await.unwrap();
    drop(store);

    let store = connect(&db.url, "a").await;
    let st = on(&store, |s| s.load_chain("c", 1)).await.unwrap();
    assert_eq!(st.cursor, Some(r(4, 1)));
    assert_eq!(st.recent, vec![r(2, 0), r(3, 0), r(4, 1)]);
    assert_eq!(st.first_emitted, Some(1));
    let rows = db
        .server
        .query(&db.name, "SELECT epoch FROM blockwatch.cursors", &[])
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].get::<_, i64>(0),
        fence.epoch as i64,
        "the cursor records the epoch"
    );
    let err = on(&store, |s| s.load_chain("c", 2)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ChainIdMismatch {
                stored: 1,
                configured: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_blocks_are_stored_once_updated_and_filtered() {
    let db = fresh("missed").await;
    let store = connect(&db.url, "a").await;
    let fa = lead(&store, "a", TTL).await;
    let fb = lead(&store, "b", TTL).await;
    assert_eq!(fa.epoch, fb.epoch, "one fence covers both fresh chains");
    let f = fa.clone();
    on(&store, move |s| {
        s.save_missed(
            &[missed("a", 7, 100, false), missed("b", 3, 200, false)],
            Some(&f),
        )
    })
    .await
    .unwrap();
    // Recovered later: the same record, updated, not a second one.
    let f = fa.clone();
    on(&store, move |s| {
        s.save_missed(&[missed("a", 7, 100, true)], Some(&f))
    })
    .await
    .unwrap();
    drop(store);
    let store = connect(&db.url, "a").await;
    let all = on(&store, |s| s.missed(None, None, 100)).await.unwrap();
    assert_eq!(
        all,
        vec![missed("a", 7, 100, true), missed("b", 3, 200, false)]
    );
    assert_eq!(
        on(&store, |s| s.missed(Some("b"), None, 100))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        on(&store, |s| s.missed(None, Some(150), 100))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        on(&store, |s| s.missed(None, None, 1)).await.unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_misses_come_newest_first_and_a_height_keeps_a_record_per_reason() {
    let db = fresh("latest").await;
    let store = connect(&db.url, "a").await;
    let fa = lead(&store, "a", TTL).await;
    let f = fa.clone();
    on(&store, move |s| {
        s.save_missed(
            &[
                missed("a", 5, 300, true),
                missed("a", 9, 100, true),
                missed("a", 7, 200, false),
            ],
            Some(&f),
        )
    })
    .await
    .unwrap();
    let latest: Vec<u64> = on(&store, |s| s.latest_missed("a", 2))
        .await
        .unwrap()
        .iter()
        .map(|r| r.block_number)
        .collect();
    assert_eq!(latest, [5, 7]);
    assert!(on(&store, |s| s.latest_missed("c", 10))
        .await
        .unwrap()
        .is_empty());

    // Block 7 is open; block 8 was missed (a timeout), then a reorg replaced it, twice.
    assert_eq!(
        on(&store, |s| s.open_miss("a", 7)).await.unwrap(),
        Some(missed("a", 7, 200, false))
    );
    let reorg = MissedBlock {
        reason: Reason::ChainReorg,
        ..missed("a", 8, 230, true)
    };
    let again = MissedBlock {
        timestamp: 240,
        ..reorg.clone()
    };
    let records = vec![missed("a", 8, 210, true), reorg.clone(), again.clone()];
    let f = fa.clone();
    on(&store, move |s| s.save_missed(&records, Some(&f)))
        .await
        .unwrap();
    let of_8: Vec<MissedBlock> = on(&store, |s| s.missed(Some("a"), None, 100))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.block_number == 8)
        .collect();
    assert_eq!(of_8, vec![missed("a", 8, 210, true), reorg, again]);
    assert_eq!(on(&store, |s| s.open_miss("a", 8)).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlogged_records_are_those_of_the_chains_held_and_updates_are_logged_again() {
    let db = fresh("unlogged").await;
    let a = connect(&db.url, "a").await;
    let b = connect(&db.url, "b").await;
    let fa = lead(&a, "x", TTL).await;
    let fb = lead(&b, "y", TTL).await;
    let f = fa.clone();
    on(&a, move |s| {
        s.save_missed(
            &[missed("x", 1, 100, false), missed("x", 2, 110, false)],
            Some(&f),
        )
    })
    .await
    .unwrap();
    let f = fb.clone();
    on(&b, move |s| {
        s.save_missed(&[missed("y", 5, 105, false)], Some(&f))
    })
    .await
    .unwrap();

    let numbers = |entries: &[(String, u64, String)]| -> Vec<(String, u64)> {
        entries.iter().map(|(c, n, _)| (c.clone(), *n)).collect()
    };
    let of_a = on(&a, |s| s.unlogged(10)).await.unwrap();
    assert_eq!(numbers(&of_a), [("x".into(), 1), ("x".into(), 2)]);
    let of_b = on(&b, |s| s.unlogged(10)).await.unwrap();
    assert_eq!(numbers(&of_b), [("y".into(), 5)]);
    assert_eq!(on(&a, |s| s.unlogged(1)).await.unwrap().len(), 1);

    // Logged: gone from the list, until the record is updated.
    let first = vec![of_a[0].clone()];
    on(&a, move |s| s.mark_logged(&first)).await.unwrap();
    assert_eq!(
        numbers(&on(&a, |s| s.unlogged(10)).await.unwrap()),
        [("x".into(), 2)]
    );
    let f = fa.clone();
    on(&a, move |s| {
        s.save_missed(&[missed("x", 1, 100, true)], Some(&f))
    })
    .await
    .unwrap();
    let again = on(&a, |s| s.unlogged(10)).await.unwrap();
    assert_eq!(numbers(&again), [("x".into(), 1), ("x".into(), 2)]);
    // Marking the old version changes nothing: the new one stays unlogged.
    let stale = vec![of_a[0].clone()];
    on(&a, move |s| s.mark_logged(&stale)).await.unwrap();
    assert_eq!(on(&a, |s| s.unlogged(10)).await.unwrap(), again);

    // A gives x up before logging: its next leader logs x's records.
    a.release("x", fa.epoch).await.unwrap();
    assert!(on(&a, |s| s.unlogged(10)).await.unwrap().is_empty());
    lead(&b, "x", TTL).await;
    let of_b = on(&b, |s| s.unlogged(10)).await.unwrap();
    assert_eq!(
        numbers(&of_b),
        [("x".into(), 1), ("y".into(), 5), ("x".into(), 2)]
    );
    on(&b, move |s| s.mark_logged(&of_b)).await.unwrap();
    assert!(on(&b, |s| s.unlogged(10)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_state_round_trips_under_the_lease() {
    let db = fresh("alerts").await;
    let store = connect(&db.url, "a").await;
    let fence = lead(&store, "c", TTL).await;
    assert_eq!(on(&store, |s| s.load_alert_state("c")).await.unwrap(), None);
    let f = fence.clone();
    on(&store, move |s| {
        s.save_alert_state("c", r#"{"firing":["lag"]}"#, Some(&f))
    })
    .await
    .unwrap();
    let f = fence.clone();
    on(&store, move |s| {
        s.save_alert_state("c", r#"{"firing":[]}"#, Some(&f))
    })
    .await
    .unwrap();
    let other = connect(&db.url, "b").await;
    assert_eq!(
        on(&other, |s| s.load_alert_state("c"))
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"firing":[]}"#)
    );
    assert_eq!(on(&other, |s| s.load_alert_state("d")).await.unwrap(), None);
    // Called on an async worker (better avoided): it blocks that worker, and works.
    assert_eq!(
        other.load_alert_state("c").unwrap().as_deref(),
        Some(r#"{"firing":[]}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_under_a_lost_lease_is_refused_and_writes_nothing() {
    let db = fresh("fencing").await;
    let a = connect(&db.url, "a").await;
    let b = connect(&db.url, "b").await;
    let short = Duration::from_secs(1);
    let old = lead(&a, "c", short).await;
    let commit = fenced(
        ChainCommit {
            added: vec![r(1, 0)],
            cursor: Some(r(1, 0)),
            first_emitted: Some(1),
            ..Default::default()
        },
        &old,
    );
    on(&a, move |s| s.commit("c", 1, &commit)).await.unwrap();
    let f = old.clone();
    on(&a, move |s| s.save_alert_state("c", "before", Some(&f)))
        .await
        .unwrap();

    // Expired by PostgreSQL's clock; then b takes it.
    wait_for(Duration::from_secs(10), "the lease to expire", || {
        let a = a.clone();
        async move {
            let leases = a.leases().await.unwrap();
            (leases.len() == 1 && leases[0].left.is_zero() && leases[0].holder.is_none())
                .then_some(())
        }
    })
    .await;
    let new = lead(&b, "c", TTL).await;
    assert_eq!(new.epoch, old.epoch + 1);

    let late = fenced(
        ChainCommit {
            added: vec![r(2, 0)],
            cursor: Some(r(2, 0)),
            keep_from: 1,
            ..Default::default()
        },
        &old,
    );
    let err = on(&a, move |s| s.commit("c", 1, &late)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Fenced { chain, epoch } if chain == "c" && *epoch == old.epoch),
        "{err}"
    );
    let f = old.clone();
    let err = on(&a, move |s| {
        s.save_missed(&[missed("c", 2, 100, false)], Some(&f))
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    let f = old.clone();
    let err = on(&a, move |s| s.save_alert_state("c", "after", Some(&f)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
    // Without a fence, even the holder's write is refused.
    let unfenced = ChainCommit {
        added: vec![r(2, 0)],
        cursor: Some(r(2, 0)),
        ..Default::default()
    };
    let err = on(&b, move |s| s.commit("c", 1, &unfenced))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { epoch: 0, .. }), "{err}");
    let err = on(&b, |s| s.save_missed(&[missed("c", 3, 100, false)], None))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { epoch: 0, .. }), "{err}");
    let err = on(&b, |s| s.save_alert_state("c", "unfenced", None))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { epoch: 0, .. }), "{err}");

    // Nothing of those was written.
    let st = on(&b, |s| s.load_chain("c", 1)).await.unwrap();
    assert_eq!(st.cursor, Some(r(1, 0)));
    assert_eq!(st.recent, vec![r(1, 0)]);
    assert!(on(&b, |s| s.missed(None, None, 10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        on(&b, |s| s.load_alert_state("c"))
            .await
            .unwrap()
            .as_deref(),
        Some("before")
    );

    // The new holder writes.
    let commit = fenced(
        ChainCommit {
            added: vec![r(2, 0)],
            cursor: Some(r(2, 0)),
            keep_from: 1,
            ..Default::default()
        },
        &new,
    );
    on(&b, move |s| s.commit("c", 1, &commit)).await.unwrap();
    assert_eq!(
        on(&b, |s| s.load_chain("c", 1)).await.unwrap().cursor,
        Some(r(2, 0))
    );
    let rows = db
        .server
        .query(
            &db.name,
            "SELECT epoch FROM blockwatch.cursors WHERE chain = 'c'",
            &[],
        )
        .await;
    assert_eq!(rows[0].get::<_, i64>(0), new.epoch as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_count_epochs_renew_release_and_heartbeats_list_the_live() {
    let db = fresh("leases").await;
    let a = connect(&db.url, "a").await;
    let b = connect(&db.url, "b").await;
    assert_eq!(a.acquire("c", TTL).await.unwrap(), Some(1));
    assert_eq!(
        a.acquire("c", TTL).await.unwrap(),
        None,
        "already held (by itself)"
    );
    assert_eq!(b.acquire("c", TTL).await.unwrap(), None, "held by a");

    let held = [("c".to_owned(), 1)];
    assert_eq!(a.renew(&held, TTL).await.unwrap(), ["c"]);
    assert!(
        b.renew(&held, TTL).await.unwrap().is_empty(),
        "b holds nothing"
    );
    assert!(
        a.renew(&[("c".into(), 7)], TTL).await.unwrap().is_empty(),
        "wrong epoch"
    );
    let leases = a.leases().await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].chain, "c");
    assert_eq!(leases[0].holder.as_deref(), Some("a"));
    assert_eq!(leases[0].epoch, 1, "renewing keeps the epoch");
    assert!(
        leases[0].left > TTL - Duration::from_secs(5),
        "{:?}",
        leases[0].left
    );

    // Given up: taken at once by another, one epoch more; the old holder renews nothing.
    b.release("c", 1).await.unwrap();
    assert_eq!(
        a.leases().await.unwrap()[0].holder.as_deref(),
        Some("a"),
        "b's release is no-op"
    );
    a.release("c", 1).await.unwrap();
    let released = a.leases().await.unwrap();
    assert_eq!(
        (released[0].holder.as_deref(), released[0].left),
        (None, Duration::ZERO)
    );
    assert_eq!(b.acquire("c", TTL).await.unwrap(), Some(2));
    assert!(a.renew(&held, TTL).await.unwrap().is_empty(), "a lost it");
    assert_eq!(a.acquire("d", TTL).await.unwrap(), Some(1));
    assert_eq!(
        a.renew(&[("c".into(), 1), ("d".into(), 1)], TTL)
            .await
            .unwrap(),
        ["d"]
    );
    assert_eq!(b.acquire("c", TTL).await.map(|_| ()).ok(), Some(()));
    b.release("c", 2).await.unwrap();
    assert_eq!(a.acquire("c", TTL).await.unwrap(), Some(3));

    // Heartbeats: the live instances, sorted; a clean stop leaves at once.
    assert_eq!(b.heartbeat(TTL).await.unwrap(), ["b"]);
    assert_eq!(a.heartbeat(TTL).await.unwrap(), ["a", "b"]);
    a.leave().await.unwrap();
    assert_eq!(b.heartbeat(TTL).await.unwrap(), ["b"]);
    // One unseen for longer than the ttl is not live; for ten times it, forgotten.
    db.server
        .execute(
            &db.name,
            "INSERT INTO blockwatch.replicas VALUES
                 ('old', now() - interval '1 hour', now() - interval '200 seconds'),
                 ('gone', now() - interval '1 hour', now() - interval '400 seconds')",
            &[],
        )
        .await;
    assert_eq!(b.heartbeat(TTL).await.unwrap(), ["b"]);
    let rows = db
        .server
        .query(
            &db.name,
            "SELECT instance FROM blockwatch.replicas ORDER BY instance",
            &[],
        )
        .await;
    let left: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(left, ["b", "old"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_agents_taking_a_lease_at_once_exactly_one_gets_it() {
    let db = fresh("exclusive").await;
    let mut stores = Vec::new();
    for i in 0..4 {
        stores.push(connect(&db.url, &format!("agent-{i}")).await);
    }
    for chain in ["c1", "c2", "c3"] {
        let mut tries = Vec::new();
        for store in stores.iter().chain(stores.iter()) {
            let store = store.clone();
            tries.push(tokio::spawn(async move {
                store
                    .acquire(chain, TTL)
                    .await
                    .unwrap()
                    .map(|e| (store.instance().to_owned(), e))
            }));
        }
        let mut won = Vec::new();
        for t in tries {
            won.extend(t.await.unwrap());
        }
        assert_eq!(won.len(), 1, "{chain}: {won:?}");
        assert_eq!(won[0].1, 1);
        let leases = stores[0].leases().await.unwrap();
        let row = leases.iter().find(|l| l.chain == chain).unwrap();
        assert_eq!(row.holder.as_deref(), Some(won[0].0.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_starting_together_on_an_empty_database_both_come_up() {
    let db = fresh("together").await;
    let (a, b) = tokio::join!(
        PgStore::connect(&db.url, "a", TTL),
        PgStore::connect(&db.url, "b", TTL)
    );
    let (a, b) = (Arc::new(a.unwrap()), Arc::new(b.unwrap()));
    let rows = db
        .server
        .query(
            &db.name,
            "SELECT version FROM blockwatch.schema_version",
            &[],
        )
        .await;
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, [1], "migrated once");
    // Both work.
    assert_eq!(a.acquire("c", TTL).await.unwrap(), Some(1));
    assert!(on(&b, |s| s.missed(None, None, 1))
        .await
        .unwrap()
        .is_empty());
    drop((a, b));

    // A database a newer blockwatch migrated is refused.
    db.server
        .execute(
            &db.name,
            "INSERT INTO blockwatch.schema_version (version) VALUES (99)",
            &[],
        )
        .await;
    let err = PgStore::connect(&db.url, "a", TTL).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{}", db.server.port())),
        "{msg}"
    );
    assert!(msg.contains("cluster.url"), "{msg}");
}

fn block(n: u64, fork: u8, parent_fork: u8) -> BlockLine {
    BlockLine {
        chain: "c".into(),
        block_number: n,
        hash: r(n, fork).hash,
        parent_hash: r(n - 1, parent_fork).hash,
        timestamp: 1_700_000_000 + n * 12,
        transactions: n as usize,
        provider: "p1".into(),
        received_at: "2024-05-01T12:00:00.250Z".into(),
        lag_ms: 250,
    }
}

/// The canonical rows of chain `c`: (number, hash) by number.
async fn canonical_rows(db: &Db, canonical: bool) -> Vec<(i64, String)> {
    db.server
        .query(
            &db.name,
            "SELECT number, hash FROM blockwatch.blocks
             WHERE chain = 'c' AND canonical = $1 ORDER BY number, hash",
            &[&canonical],
        )
        .await
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn hash_text(n: u64, fork: u8) -> String {
    format!("{:#x}", r(n, fork).hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_rows_hold_the_canonical_chain_once() {
    let db = fresh("blocks").await;
    let store = Arc::new(
        PgStore::connect(&db.url, "a", TTL)
            .await
            .unwrap()
            .with_block_output(true),
    );
    assert!(store.holds_lines());
    assert!(!connect(&db.url, "b").await.holds_lines(), "off by default");
    let fence = lead(&store, "c", TTL).await;

    // Blocks 1..=5.
    let lines: Vec<StreamEvent> = (1..=5)
        .map(|n| StreamEvent::Block(block(n, 0, 0)))
        .collect();
    let commit = fenced(
        ChainCommit {
            rollback_above: Some(0),
            added: (1..=5).map(|n| r(n, 0)).collect(),
            cursor: Some(r(5, 0)),
            first_emitted: Some(1),
            lines,
            ..Default::default()
        },
        &fence,
    );
    on(&store, move |s| s.commit("c", 1, &commit))
        .await
        .unwrap();

    // A reorg replacing 4 and 5, then the new blocks.
    let reorg = |old: u8, new: u8| {
        StreamEvent::Reorg(ReorgLine {
            chain: "c".into(),
            depth: 2,
            common_ancestor: 3,
            old_head: r(5, old).into(),
            new_head: r(4, new).into(),
        })
    };
    let commit = fenced(
        ChainCommit {
            rollback_above: Some(3),
            added: vec![r(4, 1), r(5, 1)],
            cursor: Some(r(5, 1)),
            keep_from: 1,
            lines: vec![
                reorg(0, 1),
                StreamEvent::Block(block(4, 1, 0)),
                StreamEvent::Block(block(5, 1, 1)),
            ],
            ..Default::default()
        },
        &fence,
    );
    on(&store, move |s| s.commit("c", 1, &commit))
        .await
        .unwrap();
    let want: Vec<(i64, String)> = vec![
        (1, hash_text(1, 0)),
        (2, hash_text(2, 0)),
        (3, hash_text(3, 0)),
        (4, hash_text(4, 1)),
        (5, hash_text(5, 1)),
    ];
    assert_eq!(canonical_rows(&db, true).await, want);
    assert_eq!(
        canonical_rows(&db, false).await,
        [(4, hash_text(4, 0)), (5, hash_text(5, 0))]
    );
    let reorgs = db
        .server
        .query(
            &db.name,
            "SELECT depth, common_ancestor, old_head_number, old_head_hash, new_head_hash, epoch
             FROM blockwatch.reorgs",
            &[],
        )
        .await;
    assert_eq!(reorgs.len(), 1);
    assert_eq!(reorgs[0].get::<_, i64>(1), 3);
    assert_eq!(reorgs[0].get::<_, String>(3), hash_text(5, 0));
    assert_eq!(reorgs[0].get::<_, String>(4), hash_text(4, 1));
    assert_eq!(reorgs[0].get::<_, i64>(5), fence.epoch as i64);
    let row = &db
        .server
        .query(
            &db.name,
            "SELECT parent_hash, timestamp, transactions, provider, lag_ms, epoch,
                    received_at = '2024-05-01T12:00:00.250Z'::timestamptz
             FROM blockwatch.blocks WHERE number = 5 AND canonical",
            &[],
        )
        .await[0];
    assert_eq!(row.get::<_, String>(0), hash_text(4, 1));
    assert_eq!(row.get::<_, i64>(1), 1_700_000_060);
    assert_eq!(row.get::<_, i64>(2), 5);
    assert_eq!(row.get::<_, String>(3), "p1");
    assert_eq!(row.get::<_, i64>(4), 250);
    assert_eq!(row.get::<_, i64>(5), fence.epoch as i64);
    assert!(row.get::<_, bool>(6));

    // The old branch comes back (and one block more): its rows are canonical again.
    let commit = fenced(
        ChainCommit {
            rollback_above: Some(3),
            added: vec![r(4, 0), r(5, 0), r(6, 0)],
            cursor: Some(r(6, 0)),
            keep_from: 1,
            lines: vec![
                reorg(1, 0),
                StreamEvent::Block(block(4, 0, 0)),
                StreamEvent::Block(block(5, 0, 0)),
                StreamEvent::Block(block(6, 0, 0)),
            ],
            ..Default::default()
        },
        &fence,
    );
    on(&store, move |s| s.commit("c", 1, &commit))
        .await
        .unwrap();
    let want: Vec<(i64, String)> = (1..=6).map(|n| (n as i64, hash_text(n, 0))).collect();
    assert_eq!(canonical_rows(&db, true).await, want);
    assert_eq!(
        canonical_rows(&db, false).await,
        [(4, hash_text(4, 1)), (5, hash_text(5, 1))]
    );

    // An error line alone: one row, the cursor and the window untouched.
    let before = on(&store, |s| s.load_chain("c", 1)).await.unwrap();
    let commit = fenced(
        ChainCommit {
            lines: vec![StreamEvent::Error(ErrorLine {
                chain: "c".into(),
                kind: "deep_reorg".into(),
                message: "block 9 does not connect".into(),
                block_number: Some(9),
            })],
            ..Default::default()
        },
        &fence,
    );
    on(&store, move |s| s.commit("c", 1, &commit))
        .await
        .unwrap();
    let after = on(&store, |s| s.load_chain("c", 1)).await.unwrap();
    assert_eq!(
        (after.cursor, &after.recent),
        (before.cursor, &before.recent)
    );
    assert_eq!(after.cursor, Some(r(6, 0)));
    let errors = db
        .server
        .query(
            &db.name,
            "SELECT kind, block_number, epoch FROM blockwatch.stream_errors",
            &[],
        )
        .await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].get::<_, String>(0), "deep_reorg");
    assert_eq!(errors[0].get::<_, Option<i64>>(1), Some(9));

    // The database itself refuses a second canonical block at a height.
    let client = db.server.client(&db.name).await;
    let err = client
        .execute(
            "UPDATE blockwatch.blocks SET canonical = true WHERE number = 4",
            &[],
        )
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("blocks_canonical"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_open_error_without_the_password() {
    const SECRET: &str = "hunter2-pa55";
    let port = common::free_port();
    let url = format!("postgres://bw:{SECRET}@127.0.0.1:{port}/chains");
    let err = PgStore::connect(&url, "a", TTL).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "says why: {msg}");
    assert!(
        !msg.contains(SECRET) && !format!("{err:?}").contains(SECRET),
        "{err:?}"
    );

    let kv = format!("host=127.0.0.1 port={port} user=bw password='{SECRET}' dbname=chains");
    let err = PgStore::connect(&kv, "a", TTL).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("host=127.0.0.1") && msg.contains(&port.to_string()),
        "{msg}"
    );
    assert!(
        !msg.contains(SECRET) && !format!("{err:?}").contains(SECRET),
        "{err:?}"
    );

    // TLS it cannot have is an error, never a plain connection.
    let err = PgStore::connect(
        &format!("{url}?sslmode=verify-full&sslrootcert=/nonexistent"),
        "a",
        TTL,
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("sslrootcert /nonexistent"), "{msg}");
    assert!(!msg.contains(SECRET), "{msg}");

    // Connected with a password (trust never asks for it): not in its Debug output either.
    let db = fresh("redaction").await;
    let store = connect(&db.server.url_with_password(&db.name, SECRET), "a").await;
    let debug = format!("{store:?}");
    assert!(
        debug.contains("127.0.0.1") && debug.contains("\"a\""),
        "{debug}"
    );
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(!redact_url(&url).contains(SECRET));
}

#[test]
fn a_store_works_outside_any_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(fresh("no_runtime"));
    drop(rt);
    let store = PgStore::connect_blocking(&db.url, "a", TTL).unwrap();
    assert!(store.missed(None, None, 10).unwrap().is_empty());
    assert!(store.load_chain("c", 1).unwrap().cursor.is_none());
    let err = store
        .save_missed(&[missed("c", 1, 100, false)], None)
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { epoch: 0, .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_its_sessions_are_killed_and_after_a_restart() {
    let server = PgServer::start();
    let store = connect(&server.url(), "killed").await;
    let fence = lead(&store, "c", TTL).await;
    let commit_at = |n: u64| {
        fenced(
            ChainCommit {
                added: vec![r(n, 0)],
                cursor: Some(r(n, 0)),
                keep_from: n,
                ..Default::default()
            },
            &fence,
        )
    };
    let c = commit_at(1);
    on(&store, move |s| s.commit("c", 1, &c)).await.unwrap();
    assert!(server.terminate("blockwatch/killed").await >= 1);
    assert_eq!(server.terminate("blockwatch/killed").await, 0);
    // The next call may meet a connection whose end it has not seen yet; the one after cannot.
    let c = commit_at(2);
    let _ = on(&store, move |s| s.commit("c", 1, &c)).await;
    let c = commit_at(2);
    on(&store, move |s| s.commit("c", 1, &c)).await.unwrap();

    server.restart();
    let c = commit_at(3);
    on(&store, move |s| s.commit("c", 1, &c)).await.unwrap();
    let st = on(&store, |s| s.load_chain("c", 1)).await.unwrap();
    assert_eq!((st.cursor, st.recent), (Some(r(3, 0)), vec![r(3, 0)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_used_when_the_url_requires_it_and_never_given_up() {
    let server = PgServer::start_tls();
    let base = format!("{}?sslmode=verify-full", server.url());
    let url = format!("{base}&sslrootcert={}", server.ca_file().display());
    let store = connect(&url, "tls").await;
    assert!(on(&store, |s| s.missed(None, None, 1))
        .await
        .unwrap()
        .is_empty());
    let encrypted = server
        .query(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE ssl AND application_name = 'blockwatch/tls'",
            &[],
        )
        .await[0]
        .get::<_, i64>(0);
    assert!(encrypted >= 1, "the store's sessions use TLS");
    // The same in the key=value form, with `require`.
    let kv = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require sslrootcert='{}'",
        server.port(),
        server.ca_file().display()
    );
    connect(&kv, "tls-kv").await;

    // A certificate it cannot verify (not signed by the Mozilla roots): refused, not used anyway.
    let err = PgStore::connect(&base.replace("verify-full", "require"), "a", TTL)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::Open { .. }) && msg.contains("certificate"),
        "{msg}"
    );
    // A server without TLS: refused, never a plain connection.
    let db = fresh("plain").await;
    let err = PgStore::connect(
        &format!(
            "{}?sslmode=require&sslrootcert={}",
            db.url,
            server.ca_file().display()
        ),
        "a",
        TTL,
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("server does not support TLS"), "{msg}");
}
