//! The retry budget under a redelivery storm, timed by a `ManualClock`:
//! within a second of the clock nothing moves, so how many redeliveries a
//! second lets through is exact, and the test is deterministic.

use rebound::{Backoff, BuildError, ManualClock, Queue, RetryBudget};
use std::collections::HashMap;
use std::time::Duration;

/// How long a test waits (real time) for what must arrive at once.
const PATIENCE: Duration = Duration::from_secs(30);
const SECOND: Duration = Duration::from_secs(1);

const MESSAGES: u32 = 100;
const RATIO: f64 = 0.2;
const MIN_PER_SEC: u32 = 10;

/// Every handler fails for `failing` seconds of the clock, then every one
/// succeeds: each second exactly the budget's worth comes back (the first
/// second's budget raised by the first deliveries in it), nothing is lost
/// or dead-lettered, and postponements cost no attempt.
#[test]
fn a_storm_is_held_to_the_budget_and_drains_when_handlers_recover() {
    let clock = ManualClock::new();
    let q: Queue<u32> = Queue::builder()
        .clock(clock.clone())
        .backoff(Backoff::fixed(Duration::ZERO))
        .max_attempts(16)
        .retry_budget(RetryBudget::new(RATIO, MIN_PER_SEC))
        .build();
    for i in 0..MESSAGES {
        q.produce(i).unwrap();
    }
    // Second 0: every first delivery fails.
    let first = q.try_consume_batch(MESSAGES as usize).unwrap();
    assert_eq!(first.len(), MESSAGES as usize);
    let mut deliveries: HashMap<u32, u32> = HashMap::new();
    for d in first {
        *deliveries.entry(*d).or_default() += 1;
        d.rollback().unwrap();
    }
    let failing = 4;
    let mut acked = 0;
    let mut second = 0;
    while acked < MESSAGES {
        // 100 first deliveries in second 0 raise its budget to 20.
        let budget = if second == 0 {
            (RATIO * f64::from(MESSAGES)) as u32
        } else {
            MIN_PER_SEC
        };
        let outstanding = MESSAGES - acked;
        let expected = budget.min(outstanding);
        for _ in 0..expected {
            let d = q
                .consume_timeout(PATIENCE)
                .expect("within budget, it comes back");
            let seen = deliveries.entry(*d).or_default();
            *seen += 1;
            // However long it was postponed, each delivery is one attempt.
            assert_eq!(d.attempt(), *seen);
            if second < failing {
                d.rollback().unwrap();
            } else {
                d.ack().unwrap();
                acked += 1;
            }
        }
        // Over budget: nothing more this second, however long we wait.
        assert!(
            q.try_consume().is_err(),
            "second {second}: more than {expected} redeliveries"
        );
        clock.advance(SECOND);
        second += 1;
    }
    let stats = q.stats();
    assert_eq!((stats.acked, stats.dead_lettered), (u64::from(MESSAGES), 0));
    assert!(stats.throttled >= u64::from(MESSAGES - 20), "{stats:?}");
    // Once handlers recover, 100 at 10 a second: 10 seconds to drain.
    assert_eq!(second, failing + MESSAGES / MIN_PER_SEC);
}

/// Without a budget the same storm comes back all at once.
#[test]
fn without_a_budget_every_redelivery_comes_back_at_once() {
    let clock = ManualClock::new();
    let q: Queue<u32> = Queue::builder()
        .clock(clock.clone())
        .backoff(Backoff::fixed(Duration::ZERO))
        .build();
    for i in 0..MESSAGES {
        q.produce(i).unwrap();
    }
    for d in q.try_consume_batch(MESSAGES as usize).unwrap() {
        d.rollback().unwrap();
    }
    for _ in 0..MESSAGES {
        q.consume_timeout(PATIENCE).unwrap().ack().unwrap();
    }
    assert_eq!(q.stats().throttled, 0);
}

/// A postponed message on its last attempt is not dead-lettered for it: the
/// budget spends no attempt.
#[test]
fn a_postponed_last_attempt_is_delivered_not_dead_lettered() {
    let clock = ManualClock::new();
    let q: Queue<u32> = Queue::builder()
        .clock(clock.clone())
        .backoff(Backoff::fixed(Duration::ZERO))
        .max_attempts(2)
        .retry_budget(RetryBudget::new(0.0, 1))
        .build();
    q.produce(1).unwrap();
    q.produce(2).unwrap();
    q.consume().unwrap().rollback().unwrap();
    q.consume().unwrap().rollback().unwrap();
    for _ in 0..2 {
        let d = q.consume_timeout(PATIENCE).unwrap();
        assert_eq!(d.attempt(), 2);
        d.ack().unwrap();
        assert!(q.try_consume().is_err());
        clock.advance(Duration::from_secs(5));
    }
    let stats = q.stats();
    assert_eq!(
        (stats.acked, stats.dead_lettered, stats.throttled),
        (2, 0, 1)
    );
}

/// Expired leases coming back are redeliveries too.
#[test]
fn expiries_are_budgeted_like_rollbacks() {
    let clock = ManualClock::new();
    let q: Queue<u32> = Queue::builder()
        .clock(clock.clone())
        .lease(Duration::from_secs(10))
        .backoff(Backoff::fixed(Duration::ZERO))
        .retry_budget(RetryBudget::new(0.0, 2))
        .build();
    for i in 0..6 {
        q.produce(i).unwrap();
    }
    let held = q.try_consume_batch(6).unwrap();
    clock.advance(Duration::from_secs(10));
    for _ in 0..2 {
        q.consume_timeout(PATIENCE).unwrap().ack().unwrap();
    }
    assert!(q.try_consume().is_err());
    for _ in 0..2 {
        clock.advance(SECOND);
        for _ in 0..2 {
            q.consume_timeout(PATIENCE).unwrap().ack().unwrap();
        }
        assert!(q.try_consume().is_err());
    }
    assert_eq!(q.stats().expired, 6);
    assert_eq!(q.stats().throttled, 4);
    drop(held);
}

#[test]
fn a_ratio_that_is_not_a_finite_non_negative_number_is_refused() {
    for ratio in [f64::NAN, -0.5, f64::INFINITY] {
        let err = Queue::<u8>::builder()
            .retry_budget(RetryBudget::new(ratio, 1))
            .try_build()
            .unwrap_err();
        assert_eq!(err, BuildError::RetryBudgetRatio, "{ratio}");
    }
    // `build` brings it to 0: min_per_sec alone then.
    let q: Queue<u8> = Queue::builder()
        .retry_budget(RetryBudget::new(f64::NAN, 1))
        .build();
    q.produce(1).unwrap();
    q.consume().unwrap().ack().unwrap();
}

/// A defer is not a redelivery: the budget lets every one through.
#[test]
fn defers_are_not_budgeted() {
    let clock = ManualClock::new();
    let q: Queue<u32> = Queue::builder()
        .clock(clock.clone())
        .retry_budget(RetryBudget::new(0.0, 1))
        .build();
    for i in 0..3 {
        q.produce(i).unwrap();
    }
    for d in q.try_consume_batch(3).unwrap() {
        d.defer(Duration::ZERO).unwrap();
    }
    for _ in 0..3 {
        let d = q.consume_timeout(PATIENCE).unwrap();
        assert_eq!(d.attempt(), 1);
        d.ack().unwrap();
    }
    assert_eq!(q.stats().throttled, 0);
}
