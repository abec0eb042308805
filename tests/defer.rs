//! `Delivery::defer` and `Outcome::Defer`: "not now", without using an attempt.

use rebound::{Backoff, DeadLetterReason, LeaseExpired, Outcome, Pool, Queue, TryConsumeError};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn queue(max_attempts: u32) -> Queue<u32> {
    Queue::builder()
        .backoff(Backoff::fixed(Duration::ZERO))
        .max_attempts(max_attempts)
        .build()
}

#[test]
fn a_deferred_message_comes_back_at_the_same_attempt_and_defers_do_not_count_toward_max_attempts() {
    let q = queue(2);
    let id = q.produce(7).unwrap();
    for _ in 0..10 {
        let d = q.consume().unwrap();
        assert_eq!((d.id(), d.attempt()), (id, 1));
        d.defer(Duration::ZERO).unwrap();
    }
    let d = q.consume().unwrap();
    assert_eq!(d.attempt(), 1);
    d.rollback().unwrap();
    for _ in 0..10 {
        let d = q.consume().unwrap();
        assert_eq!(d.attempt(), 2);
        d.defer(Duration::ZERO).unwrap();
    }
    // The last attempt: a rollback now dead-letters it after two deliveries
    // that counted, however many defers came between.
    q.consume().unwrap().rollback().unwrap();
    let dead = q.drain_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id(), dead[0].attempts(), dead[0].reason()),
        (id, 2, DeadLetterReason::MaxAttempts)
    );
    let s = q.stats();
    // Both rollbacks count, the one that dead-lettered too.
    assert_eq!((s.deferred, s.rolled_back, s.dead_lettered), (20, 2, 1));
    // Every delivery counts: 22 claims in all.
    assert_eq!(s.delivered, 22);
}

#[test]
fn a_defer_on_the_last_attempt_does_not_dead_letter() {
    let q = queue(1);
    q.produce(1).unwrap();
    q.consume().unwrap().defer(Duration::ZERO).unwrap();
    assert_eq!(q.stats().dead_lettered, 0);
    let d = q.consume().unwrap();
    assert_eq!(d.attempt(), 1);
    d.ack().unwrap();
    assert!(q.drain_dead_letters().is_empty());
}

#[test]
fn a_deferred_message_waits_for_its_delay() {
    let q = queue(3);
    q.produce(1).unwrap();
    q.produce(2).unwrap();
    q.consume()
        .unwrap()
        .defer(Duration::from_secs(3600))
        .unwrap();
    // The other message is served; the deferred one is not due for an hour.
    let d = q.consume().unwrap();
    assert_eq!(*d, 2);
    d.ack().unwrap();
    // Let the redeliverer put it back (it is then counted as delayed).
    while q.stats().delayed == 0 {
        std::thread::yield_now();
    }
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    assert_eq!((q.stats().delayed, q.stats().in_flight), (1, 0));
}

#[test]
fn a_defer_after_the_lease_ran_out_is_refused_and_the_expiry_used_the_attempt() {
    let q: Queue<u32> = Queue::builder()
        .lease(Duration::from_millis(20))
        .backoff(Backoff::fixed(Duration::ZERO))
        .build();
    q.produce(1).unwrap();
    let stale = q.consume().unwrap();
    // Redelivered after the lease: the stale holder's defer must not act.
    let again = q.consume().unwrap();
    assert_eq!(again.attempt(), 2);
    assert_eq!(stale.defer(Duration::ZERO), Err(LeaseExpired));
    assert_eq!(q.stats().deferred, 0);
    // The live holder is untouched by the refused defer.
    again.ack().unwrap();
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
}

#[test]
fn a_holder_of_a_deferred_message_cannot_settle_its_next_delivery() {
    let q = queue(3);
    q.produce(1).unwrap();
    let first = q.consume().unwrap();
    let id = first.id();
    first.defer(Duration::ZERO).unwrap();
    let second = q.consume().unwrap();
    assert_eq!((second.id(), second.attempt()), (id, 1));
    // Two claims at the same attempt; only the live one can act, and the
    // first was consumed by its defer. A lease-expired holder of an
    // earlier generation cannot either (covered by the loom model
    // `defer_vs_expiry`).
    second.ack().unwrap();
    assert_eq!(q.stats().acked, 1);
}

#[test]
fn the_runtime_defers_what_the_handler_defers_without_using_attempts() {
    let q: Queue<u32> = Queue::builder().max_attempts(1).build();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let defers = Arc::new(AtomicU32::new(0));
    let handle = {
        let (seen, defers) = (Arc::clone(&seen), Arc::clone(&defers));
        q.process(Pool::global(), move |d: &rebound::Delivery<u32>| {
            seen.lock().unwrap().push((**d, d.attempt()));
            // Each message is deferred three times before it is done.
            if defers.fetch_add(1, Ordering::Relaxed) % 4 < 3 {
                Outcome::Defer(Duration::from_millis(1))
            } else {
                Outcome::Ack
            }
        })
    };
    q.produce(1).unwrap();
    while q.stats().acked < 1 {
        std::thread::yield_now();
    }
    q.close();
    let report = handle.join();
    assert_eq!(
        (
            report.claimed,
            report.deferred,
            report.acked,
            report.dead_lettered
        ),
        (4, 3, 1, 0)
    );
    assert_eq!(*seen.lock().unwrap(), vec![(1, 1); 4]);
    assert_eq!(q.stats().deferred, 3);
}
