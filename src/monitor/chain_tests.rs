//! Tests of the chain monitor: what is a miss, what is lag, and how records and statistics follow.

use super::*;

fn monitor() -> ChainMonitor {
    let meter = opentelemetry::global::meter("test");
    ChainMonitor::new(
        "c",
        Duration::from_secs(12),
        Duration::from_secs(30),
        Arc::new(Mutex::new(ChainStats::default())),
        Arc::new(Metrics::new(&meter)),
        5,
    )
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Block `number` made at `timestamp`, known (its head announced) and received at `received`.
fn block(number: u64, timestamp: u64, received: u64) -> Emitted<'static> {
    Emitted {
        number,
        timestamp,
        provider: "p1",
        received: at(received),
        fetch_took: Duration::from_millis(20),
        attempts: 1,
        first_failure: None,
        known: at(received),
        served_in: Duration::from_millis(20),
        replaced: None,
    }
}

#[test]
fn history_is_not_late_but_blocks_due_while_watching_are() {
    let mut m = monitor();
    m.watching_since(at(1020));
    // Made before the agent watched: history, however late it is emitted.
    assert_eq!(m.emitted(&block(1, 1000, 5000)), None);
    assert_eq!(m.emitted(&block(2, 1012, 5000)), None);
    // Block 3, due at 1024 while watching, known at 1025.
    assert_eq!(m.emitted(&block(3, 1024, 1025)), None);
    // Block 4, expected at 1036, known (announced) only at 1070: 34 s late, more than
    // max_block_delay.
    let r = m.emitted(&block(4, 1036, 1070)).expect("late");
    assert_eq!(r.reason, Reason::NetworkLatency);
    assert_eq!(r.expected_timestamp, 1036);
    assert_eq!(r.severity, crate::model::Severity::Medium);
    assert!(r.recovered);
    assert_eq!(r.metadata["recovery_seconds"], 4.02);
    let v = m.stats.lock().unwrap().view();
    assert_eq!((v.blocks_processed, v.blocks_missed), (4, 1));
}

#[test]
fn a_backlog_the_agent_works_through_is_lag_not_misses() {
    let mut m = monitor();
    m.watching_since(at(1000));
    m.emitted(&block(1, 1000, 1001));
    // A burst: 500 blocks made at once, all known at 1013, emitted up to 40 s later because
    // the agent fetches them within its rate limit.
    for n in 2..=500u64 {
        let b = Emitted {
            known: at(1013),
            ..block(n, 1012, 1013 + n / 12)
        };
        assert_eq!(m.emitted(&b), None, "block {n} was lag, not a miss");
    }
    // A provider slow to serve one block is the provider's lateness.
    let slow = Emitted {
        known: at(1060),
        served_in: Duration::from_secs(40),
        ..block(501, 1012, 1100)
    };
    assert_eq!(
        m.emitted(&slow).map(|r| r.reason),
        Some(Reason::NetworkLatency)
    );
    let v = m.stats.lock().unwrap().view();
    assert_eq!((v.blocks_processed, v.blocks_missed), (501, 1));
}

#[test]
fn an_open_miss_is_completed_once_when_its_block_comes() {
    let mut m = monitor();
    m.emitted(&block(9, 1000, 1001));
    let err = PoolError::Exhausted {
        chain: "c".into(),
        method: "eth_getBlockByNumber".into(),
        attempts: 3,
        provider: "p0".into(),
        error: RpcError::Timeout(Duration::from_secs(5)),
    };
    let open = m.fetch_failed(10, &err).expect("opened");
    assert!(!open.recovered);
    assert_eq!(open.reason, Reason::Timeout);
    assert_eq!(open.severity, crate::model::Severity::Critical);
    assert_eq!(m.fetch_failed(10, &err), None, "one record per block");
    assert_eq!(
        m.overdue(10, Reason::NodeUnresponsive),
        None,
        "overdue fetches nothing: no attempt"
    );
    let done = m
        .emitted(&block(10, 1012, unix(SystemTime::now())))
        .expect("completed");
    assert!(done.recovered);
    assert_eq!(done.block_number, 10);
    assert_eq!(done.reason, Reason::Timeout, "the reason it was missed for");
    assert_eq!(
        done.recovery_attempts, 2,
        "one failed retry, one that got it"
    );
    let v = m.stats.lock().unwrap().view();
    assert_eq!((v.blocks_missed, v.blocks_recovered), (1, 1));
}

#[test]
fn records_made_while_the_streak_alert_is_out_say_so() {
    let mut m = monitor();
    let failure = ("p0".to_owned(), RpcError::HttpStatus { status: 500 });
    let failed = |n| Emitted {
        first_failure: Some(&failure),
        attempts: 2,
        ..block(n, 1000 + 12 * n, 1001 + 12 * n)
    };
    assert!(!m.emitted(&failed(1)).unwrap().alert_sent);
    m.stats.lock().unwrap().set_alerting(true);
    assert!(m.emitted(&failed(2)).unwrap().alert_sent);
    m.stats.lock().unwrap().set_alerting(false);
    assert!(!m.emitted(&failed(3)).unwrap().alert_sent);
}

#[test]
fn a_first_attempt_failure_is_a_recovered_miss() {
    let mut m = monitor();
    let failure = ("p0".to_owned(), RpcError::HttpStatus { status: 429 });
    let b = Emitted {
        first_failure: Some(&failure),
        attempts: 2,
        ..block(5, 1000, 1001)
    };
    let r = m.emitted(&b).expect("missed");
    assert_eq!(r.reason, Reason::RateLimitExceeded);
    assert_eq!(r.recovery_attempts, 1);
    assert_eq!(r.recovered_from.as_deref(), Some("p1"));
    assert_eq!(r.metadata["failed_provider"], "p0");
    assert_eq!(r.severity, crate::model::Severity::Low);
}
#[test]
fn exhausted_retries_are_recorded_and_counted_once_recovered() {
    let mut m = monitor();
    m.emitted(&block(9, 1000, 1001));
    let open = m
        .overdue(10, Reason::ConnectionLost)
        .expect("opened when overdue");
    assert_eq!(open.recovery_attempts, 0);
    // Two recovery attempts: one failed, one found nobody with the block.
    let err = PoolError::NoProvider { chain: "c".into() };
    assert_eq!(m.fetch_failed(10, &err), None);
    m.not_served(10);
    let exhausted = m.retries_exhausted(10).expect("open");
    assert_eq!(exhausted.recovery_attempts, 2);
    assert_eq!(exhausted.metadata["retries_exhausted"], true);
    assert!(!exhausted.recovered);
    assert_eq!(m.retries_exhausted(11), None, "only the open block");
    let done = m
        .emitted(&block(10, 1012, unix(SystemTime::now())))
        .expect("completed");
    assert!(done.recovered);
    assert_eq!(
        done.recovery_attempts, 3,
        "two failed and the one that got it"
    );
    assert_eq!(done.metadata["retries_exhausted"], true);
    assert_eq!(done.reason, Reason::ConnectionLost);
    let v = m.stats.lock().unwrap().view();
    assert_eq!((v.blocks_missed, v.blocks_recovered), (1, 1));
}

#[test]
fn blocks_a_reorg_replaced_are_chain_reorg_misses_in_a_streak() {
    let mut m = monitor();
    for n in 1..=5 {
        assert_eq!(m.emitted(&block(n, 1000 + 12 * n, 1001 + 12 * n)), None);
    }
    // A reorg replaces 4 and 5, 20 s after 5 was emitted, and brings 6.
    let orphan = alloy_primitives::B256::repeat_byte(0xaa);
    let now = 1001 + 12 * 5 + 20;
    let r4 = m
        .emitted(&Emitted {
            replaced: Some(orphan),
            ..block(4, 1048, now)
        })
        .expect("replaced");
    assert_eq!(r4.reason, Reason::ChainReorg);
    assert_eq!(r4.metadata["orphaned_hash"], orphan.to_string());
    // Emitted at 1049, replaced at 1081.
    assert_eq!(r4.metadata["recovery_seconds"], 32.0);
    assert_eq!(r4.expected_timestamp, 1048);
    assert_eq!(
        r4.severity,
        crate::model::Severity::Medium,
        "33 s after it was made"
    );
    let r5 = m
        .emitted(&Emitted {
            replaced: Some(orphan),
            ..block(5, 1060, now)
        })
        .expect("replaced");
    assert_eq!(
        r5.severity,
        crate::model::Severity::Medium,
        "second in a row"
    );
    assert_eq!(m.emitted(&block(6, 1072, now)), None, "a new height");
    let v = m.stats.lock().unwrap().view();
    assert_eq!(
        (
            v.blocks_processed,
            v.blocks_missed,
            v.blocks_recovered,
            v.longest_missed_streak
        ),
        (8, 2, 2, 2)
    );
}
