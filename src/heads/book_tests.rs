//! The head book's rules, tested with time values passed in.

use super::*;
use crate::heads::{Check, CheckKind, Skip};

fn book(n: usize) -> HeadBook {
    HeadBook::new(
        HeadRules::for_tests(),
        (0..n).map(|i| format!("p{i}")).collect(),
    )
}

fn h(n: u8) -> Option<B256> {
    Some(B256::repeat_byte(n))
}

#[test]
fn a_head_far_beyond_the_others_is_not_believed_until_its_provider_serves_it() {
    let t = Instant::now();
    let b = book(3);
    b.report(0, 1000, None, false, t);
    b.report(1, 998, None, false, t);
    let r = b.report(2, 1_000_000_000, None, false, t);
    assert_eq!(r.best, Some(1000));
    assert_eq!(r.lie, None, "an outlier is checked, not judged");
    assert_eq!(b.provider(1).lag_blocks, Some(2));
    assert_eq!(b.provider(2).lag_blocks, Some(0));
    let checks = b.take_due_checks(t);
    assert_eq!(
        checks,
        vec![Check {
            idx: 2,
            number: 1_000_000_000,
            kind: CheckKind::Claim,
            due: t
        }]
    );
    // Reported again while the check runs: not asked twice.
    b.report(2, 1_000_000_001, None, false, t);
    assert!(b.take_due_checks(t).is_empty());
    // It could not serve it: a liar, whose heads no longer count.
    b.claim_checked(2, 1_000_000_000, false, t);
    b.lie(2, LieKind::HeadAhead, t);
    assert_eq!(b.provider(2).inconsistent, Some(LieKind::HeadAhead));
    // Honest providers are not lagging because of it; the chain moves on as it grows.
    let r = b.report(0, 1001, None, false, t + Duration::from_secs(12));
    assert_eq!(r.best, Some(1001));
}

#[test]
fn an_outlier_that_serves_its_head_is_believed() {
    let t = Instant::now();
    let b = book(2);
    b.report(0, 100, None, false, t);
    assert_eq!(b.report(1, 400, None, false, t).best, Some(100));
    assert_eq!(b.take_due_checks(t).len(), 1);
    b.claim_checked(1, 400, true, t);
    assert_eq!(b.best(), Some(400));
    // Within the margin of its proof it needs no other.
    assert_eq!(b.report(1, 405, None, false, t).best, Some(405));
    assert!(b.take_due_checks(t).is_empty());
    assert_eq!(b.provider(0).lag_blocks, Some(305));
}

#[test]
fn a_bogus_head_heard_first_is_dropped_when_others_speak() {
    let t = Instant::now();
    let b = book(3);
    assert_eq!(
        b.report(2, 1_000_000_000, None, false, t).best,
        Some(1_000_000_000)
    );
    b.report(0, 1000, None, false, t);
    assert_eq!(b.report(1, 1001, None, false, t).best, Some(1001));
    assert_eq!(b.take_due_checks(t).len(), 1, "the bogus head is checked");
}

#[test]
fn with_no_agreement_at_start_the_lower_wins() {
    let t = Instant::now();
    let b = book(2);
    b.report(0, 500, None, false, t);
    assert_eq!(b.report(1, 900_000, None, false, t).best, Some(500));
}

#[test]
fn a_head_that_goes_back_beyond_the_reorg_window_is_a_lie() {
    let t = Instant::now();
    let b = book(2);
    b.report(0, 100, None, false, t);
    b.report(1, 100, None, false, t);
    // Back by the window: a reorg it could follow.
    assert_eq!(b.report(0, 84, None, false, t).lie, None);
    // A late newHeads notification is no answer to a question.
    assert_eq!(b.report(0, 30, None, true, t).lie, None);
    let r = b.report(0, 49, None, false, t);
    assert_eq!(r.lie.map(|l| l.kind), Some(LieKind::HeadBackwards));
    assert_eq!(b.provider(0).inconsistent, Some(LieKind::HeadBackwards));
    assert_eq!(b.provider(0).head, Some(49));
    assert_eq!(r.best, Some(100), "its head does not count");
}

#[test]
fn a_null_below_the_own_head_is_asked_again_later() {
    let t = Instant::now();
    let b = book(2);
    b.suspect_null(1, 7, t);
    assert!(
        b.next_check_due().is_none(),
        "no head yet: block 7 may not exist"
    );
    b.report(0, 8, None, false, t);
    b.suspect_null(1, 7, t);
    b.suspect_null(1, 7, t);
    assert!(b.take_due_checks(t).is_empty(), "not yet due");
    assert_eq!(b.next_check_due(), Some(t + Duration::from_secs(1)));
    let due = b.take_due_checks(t + Duration::from_secs(1));
    assert_eq!(due.len(), 1, "queued once");
    assert_eq!(
        (due[0].idx, due[0].number, due[0].kind),
        (1, 7, CheckKind::Null)
    );
    b.skipped(1, 7, 7);
    assert_eq!(
        b.skips().take(),
        vec![Skip {
            provider: "p1".into(),
            first: 7,
            last: 7
        }]
    );
}

#[test]
fn stale_heads_do_not_hold_the_chain_head_back_or_up() {
    let t = Instant::now();
    let b = book(2);
    b.report(0, 100, None, false, t);
    b.report(1, 100, None, false, t);
    let later = t + Duration::from_secs(61);
    assert_eq!(b.report(0, 104, None, false, later).best, Some(104));
    assert_eq!(b.provider(1).lag_blocks, Some(4));
}

#[test]
fn different_hashes_at_one_height_are_counted_per_pair_once() {
    let t = Instant::now();
    let b = book(3);
    b.report(0, 10, h(1), true, t);
    assert_eq!(b.report(1, 10, h(1), true, t).disagree, Vec::<usize>::new());
    assert_eq!(b.report(2, 10, h(2), true, t).disagree, vec![0, 1]);
    // Announcing the same again is not a new disagreement.
    assert_eq!(
        b.report(2, 10, h(2), false, t).disagree,
        Vec::<usize>::new()
    );
    let forks = b.forks(&["a", "b", "c"]);
    assert_eq!(
        forks,
        vec![
            Fork {
                providers: ["a".into(), "c".into()],
                count: 1
            },
            Fork {
                providers: ["b".into(), "c".into()],
                count: 1
            }
        ]
    );
}

#[test]
fn gaps_in_a_pushed_sequence_are_checked() {
    let t = Instant::now();
    let b = book(2);
    b.report(0, 10, None, true, t);
    b.report(0, 11, None, true, t);
    b.report(0, 13, None, true, t);
    // Polled heads and a reorg back are not gaps; a huge jump is a catch-up.
    b.report(1, 20, None, false, t);
    b.report(0, 12, None, true, t);
    b.report(0, 13, None, true, t);
    b.report(0, 500, None, true, t);
    let due = b.take_due_checks(t + Duration::from_secs(1));
    let nulls: Vec<_> = due
        .iter()
        .filter(|c| c.kind == CheckKind::Null)
        .map(|c| (c.idx, c.number))
        .collect();
    assert_eq!(nulls, vec![(0, 12)], "{due:?}");
    b.restart_sequence(0);
    b.report(0, 503, None, true, t);
    let due = b.take_due_checks(t + Duration::from_secs(1));
    assert!(
        due.iter().all(|c| c.kind != CheckKind::Null),
        "a reconnection is not a skip: {due:?}"
    );
    assert!(b.skips().take().is_empty(), "a gap alone is no skip");
}

#[test]
fn arrival_delay_is_measured_against_the_first_announcement() {
    let t = Instant::now();
    let b = book(2);
    for i in 0..30u64 {
        let at = t + Duration::from_secs(i * 12);
        b.report(0, i, None, true, at);
        b.report(1, i, None, true, at + Duration::from_millis(400));
    }
    assert_eq!(b.provider(0).arrival_delay, Some(Duration::ZERO));
    let d = b.provider(1).arrival_delay.unwrap();
    assert!(
        d > Duration::from_millis(390) && d <= Duration::from_millis(400),
        "{d:?}"
    );
}
