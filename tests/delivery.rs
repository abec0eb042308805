//! Claims, settles, attempts, ordering, leases and dead letters.

use rebound::{Backoff, DeadLetterReason, LeaseExpired, Queue, TryConsumeError};
use std::time::{Duration, Instant};

fn fast_retry<T: Send + Sync + 'static>(max_attempts: u32) -> Queue<T> {
    Queue::builder()
        .backoff(Backoff::fixed(Duration::ZERO))
        .max_attempts(max_attempts)
        .build()
}

#[test]
fn one_producer_one_consumer_is_fifo() {
    let q: Queue<u32> = Queue::new();
    let ids: Vec<_> = (0..1000).map(|i| q.produce(i).unwrap()).collect();
    for (i, id) in ids.iter().enumerate() {
        let d = q.try_consume().unwrap();
        assert_eq!((*d, d.id(), d.attempt()), (i as u32, *id, 1));
        d.ack().unwrap();
    }
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
}

#[test]
fn ids_are_unique_and_stable_across_redeliveries() {
    let q: Queue<u32> = fast_retry(5);
    let ids: std::collections::HashSet<_> = (0..300).map(|i| q.produce(i).unwrap()).collect();
    assert_eq!(ids.len(), 300);
    let first = q.consume().unwrap();
    let id = first.id();
    first.rollback().unwrap();
    // Zero backoff: it comes back behind the 299 others (new timestamp).
    let mut seen = 0;
    loop {
        let d = q.consume().unwrap();
        seen += 1;
        if d.id() == id {
            assert_eq!(d.attempt(), 2);
            d.ack().unwrap();
            break;
        }
        d.ack().unwrap();
    }
    assert_eq!(seen, 300);
}

#[test]
fn a_claim_is_exclusive() {
    let q: Queue<u8> = Queue::new();
    q.produce(1).unwrap();
    let d = q.try_consume().unwrap();
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    assert_eq!(q.stats().in_flight, 1);
    d.ack().unwrap();
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
}

#[test]
fn attempts_count_every_kind_of_redelivery() {
    let q: Queue<u8> = Queue::builder()
        .backoff(Backoff::fixed(Duration::ZERO))
        // Long enough that printing the panic below cannot outlast it.
        .lease(Duration::from_millis(300))
        .max_attempts(10)
        .build();
    q.produce(7).unwrap();
    q.consume().unwrap().rollback().unwrap(); // 1: rollback
    drop(q.consume().unwrap()); // 2: drop
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _d = q.consume().unwrap(); // 3: panic while holding it
        panic!("handler failed");
    }));
    assert!(panicked.is_err());
    let held = q.consume().unwrap(); // 4: lease expiry
    assert_eq!(held.attempt(), 4);
    let d = q.consume().unwrap();
    assert_eq!(d.attempt(), 5);
    assert_eq!(held.ack(), Err(LeaseExpired));
    d.ack().unwrap();
    let s = q.stats();
    assert_eq!(
        (
            s.delivered,
            s.rolled_back,
            s.expired,
            s.redelivered,
            s.acked
        ),
        (5, 3, 1, 4, 1)
    );
}

#[test]
fn stats_count_deliveries_held_settled_and_redelivered_but_not_pending_ones() {
    let q: Queue<u32> = fast_retry(16);
    for n in 0..10 {
        q.produce(n).unwrap();
    }
    q.produce_after(10, Duration::from_secs(60)).unwrap();
    q.consume().unwrap().ack().unwrap();
    let held = q.consume().unwrap();
    q.consume().unwrap().rollback().unwrap();
    let s = q.stats();
    assert_eq!((s.produced, s.delivered), (11, 3));
    // The other seven, then the rolled-back one a second time.
    for n in 3..10 {
        let d = q.consume().unwrap();
        assert_eq!((*d, d.attempt()), (n, 1));
        d.ack().unwrap();
    }
    assert_eq!(q.stats().delivered, 10);
    let again = q.consume().unwrap();
    assert_eq!((*again, again.attempt()), (2, 2));
    assert_eq!(q.stats().delivered, 11);
    again.ack().unwrap();
    held.ack().unwrap();
    let s = q.stats();
    assert_eq!(
        (s.delivered, s.acked, s.delayed, s.in_flight),
        (11, 10, 1, 0)
    );
}

#[test]
fn expired_delivery_cannot_act_and_the_redelivery_wins() {
    let q: Queue<String> = Queue::builder()
        .lease(Duration::from_millis(10))
        .backoff(Backoff::fixed(Duration::ZERO))
        .build();
    let id = q.produce("job".to_string()).unwrap();
    let stale = q.consume().unwrap();
    // While the stale holder still holds it, the message is redelivered.
    let fresh = q.consume().unwrap();
    assert_eq!((fresh.id(), fresh.attempt(), stale.attempt()), (id, 2, 1));
    // The stale holder can still read, but not act.
    assert_eq!(stale.as_str(), "job");
    assert_eq!(
        stale.extend_lease(Duration::from_secs(60)),
        Err(LeaseExpired)
    );
    assert_eq!(stale.ack(), Err(LeaseExpired));
    assert_eq!(fresh.as_str(), "job");
    fresh.extend_lease(Duration::from_secs(60)).unwrap();
    fresh.ack().unwrap();
    let s = q.stats();
    assert_eq!((s.acked, s.expired, s.in_flight, s.ready), (1, 1, 0, 0));
}

#[test]
fn every_settle_of_an_expired_delivery_is_refused_without_effect() {
    let q: Queue<u8> = Queue::builder()
        .lease(Duration::from_millis(5))
        .backoff(Backoff::fixed(Duration::ZERO))
        .max_attempts(5)
        .build();
    q.produce(1).unwrap();
    for settle in 0..3 {
        let d = q.consume().unwrap();
        let attempt = d.attempt();
        std::thread::sleep(Duration::from_millis(40));
        let result = match settle {
            0 => d.rollback(),
            1 => d.dead_letter(),
            _ => d.rollback_after(Duration::ZERO),
        };
        assert_eq!(
            result,
            Err(LeaseExpired),
            "settle {settle} at attempt {attempt}"
        );
    }
    assert!(q.drain_dead_letters().is_empty());
    let s = q.stats();
    assert_eq!((s.rolled_back, s.dead_lettered, s.expired), (0, 0, 3));
}

#[test]
fn extending_the_lease_keeps_the_claim() {
    let q: Queue<u8> = Queue::builder().lease(Duration::from_millis(30)).build();
    q.produce(1).unwrap();
    let d = q.consume().unwrap();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(15));
        d.extend_lease(Duration::from_millis(60)).unwrap();
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    }
    d.ack().unwrap();
    assert_eq!(q.stats().expired, 0);
}

#[test]
fn max_attempts_dead_letters_after_exactly_n_deliveries() {
    let q: Queue<&str> = fast_retry(3);
    let id = q.produce("poison").unwrap();
    for attempt in 1..=3 {
        let d = q.consume().unwrap();
        assert_eq!(d.attempt(), attempt);
        d.rollback().unwrap();
    }
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    let dead = q.drain_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id(), dead[0].attempts(), dead[0].reason()),
        (id, 3, DeadLetterReason::MaxAttempts)
    );
    assert_eq!(dead[0].payload(), &"poison");
    let s = q.stats();
    assert_eq!((s.delivered, s.dead_lettered, s.produced), (3, 1, 1));
}

#[test]
fn expiry_on_the_last_attempt_dead_letters_once_the_holder_lets_go() {
    let q: Queue<String> = Queue::builder()
        .lease(Duration::from_millis(5))
        .max_attempts(1)
        .build();
    q.produce("slow".into()).unwrap();
    let d = q.consume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while q.stats().dead_lettered == 0 {
        assert!(Instant::now() < deadline, "lease never expired");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(q.drain_dead_letters().is_empty(), "payload still held");
    assert_eq!(d.as_str(), "slow");
    assert_eq!(d.ack(), Err(LeaseExpired));
    let dead = q.drain_dead_letters();
    assert_eq!(
        (dead.len(), dead[0].attempts(), dead[0].reason()),
        (1, 1, DeadLetterReason::MaxAttempts)
    );
    assert_eq!(dead[0].payload(), "slow");
}

#[test]
fn default_settings_stop_a_poison_message() {
    let q: Queue<u8> = Queue::new();
    q.produce(0).unwrap();
    let mut deliveries = 0;
    while let Ok(d) = q.consume_timeout(Duration::from_secs(60)) {
        deliveries += 1;
        // Skip the backoff wait: give up with an explicit immediate retry.
        d.rollback_after(Duration::ZERO).unwrap();
        if deliveries > 100 {
            break;
        }
        if q.stats().dead_lettered == 1 {
            break;
        }
    }
    assert_eq!(deliveries, 16);
    assert_eq!(q.drain_dead_letters()[0].attempts(), 16);
}

#[test]
fn dead_letter_rejects_at_once() {
    let q: Queue<u8> = Queue::new();
    q.produce(9).unwrap();
    q.consume().unwrap().dead_letter().unwrap();
    let dead = q.drain_dead_letters();
    assert_eq!(
        (dead[0].attempts(), dead[0].reason(), dead[0].payload()),
        (1, DeadLetterReason::Rejected, &9)
    );
    assert!(q.drain_dead_letters().is_empty());
}

#[test]
fn delayed_messages_come_in_due_order_never_early() {
    let q: Queue<u32> = Queue::new();
    let start = Instant::now();
    let delays = [40u64, 10, 30, 0, 20];
    for &ms in &delays {
        q.produce_after(ms as u32, Duration::from_millis(ms))
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..delays.len() {
        let d = q.consume().unwrap();
        let ms = *d;
        assert!(
            start.elapsed() >= Duration::from_millis(ms.into()),
            "{ms} ms message came early"
        );
        // A zero delay makes an immediate message, stamped as `produce`
        // stamps (a recent reading); the others carry their due time.
        if ms > 0 {
            assert!(d.timestamp() >= start + Duration::from_millis(ms.into()));
        }
        got.push(ms);
        d.ack().unwrap();
    }
    assert_eq!(got, [0, 10, 20, 30, 40]);
}

/// A redelivery that fell due and a fresh message produced after it are
/// claimed in the order of their stamps (normally the redelivery first: the
/// fresh message is stamped with a reading from after it fell due, unless
/// the clock upkeep was kept off the CPU, the documented limit).
#[test]
fn a_due_redelivery_and_a_later_fresh_message_are_claimed_in_stamp_order() {
    let q: Queue<&str> = Queue::builder()
        .backoff(Backoff::fixed(Duration::ZERO))
        .build();
    q.produce("first").unwrap();
    q.consume().unwrap().rollback().unwrap();
    // Wait until the redeliverer has put it back.
    while q.stats().redelivered == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let the recent clock move past it (the redeliverer refreshes it when
    // a redelivery falls due).
    std::thread::sleep(Duration::from_millis(5));
    q.produce("second").unwrap();
    let a = q.consume().unwrap();
    let b = q.consume().unwrap();
    assert!(
        a.timestamp() <= b.timestamp(),
        "{} claimed before {}, stamped later",
        *a,
        *b
    );
    let redelivered = if *a == "first" { &a } else { &b };
    assert_eq!(redelivered.attempt(), 2);
}

#[test]
fn produce_at_in_the_past_is_ready_now() {
    let q: Queue<u8> = Queue::new();
    let past = Instant::now();
    std::thread::sleep(Duration::from_millis(2));
    q.produce_at(3, past).unwrap();
    assert_eq!(*q.try_consume().unwrap(), 3);
}

#[test]
fn rollback_after_waits_at_least_the_delay() {
    let q: Queue<u8> = Queue::new();
    q.produce(1).unwrap();
    let d = q.consume().unwrap();
    let rolled = Instant::now();
    d.rollback_after(Duration::from_millis(25)).unwrap();
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    let d = q.consume().unwrap();
    assert!(rolled.elapsed() >= Duration::from_millis(25));
    assert!(d.timestamp() >= rolled + Duration::from_millis(25));
    d.ack().unwrap();
}

#[test]
fn stats_balance_when_quiescent() {
    let q: Queue<u32> = Queue::builder()
        .backoff(Backoff::fixed(Duration::from_secs(60)))
        .build();
    for i in 0..10 {
        q.produce(i).unwrap();
    }
    q.produce_after(99, Duration::from_secs(60)).unwrap();
    q.consume().unwrap().ack().unwrap();
    q.consume().unwrap().dead_letter().unwrap();
    q.consume().unwrap().rollback().unwrap(); // back in 60 s: delayed
    let held = q.consume().unwrap();
    while q.stats().redelivered == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = q.stats();
    assert_eq!(
        (
            s.produced,
            s.acked,
            s.dead_lettered,
            s.ready,
            s.delayed,
            s.in_flight
        ),
        (11, 1, 1, 6, 2, 1)
    );
    assert_eq!(
        s.produced,
        s.acked + s.dead_lettered + s.ready + s.delayed + s.in_flight
    );
    drop(held);
}

/// With several producers racing over the same blocks, one consumer still
/// sees each producer's messages in the order that producer produced them.
#[test]
fn each_producers_messages_arrive_in_its_order() {
    const PRODUCERS: u64 = 3;
    const EACH: u64 = 20_000;
    let q: Queue<(u64, u64)> = Queue::new();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    q.produce((p, i)).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u64; PRODUCERS as usize];
    for _ in 0..PRODUCERS * EACH {
        let d = q.consume().unwrap();
        let (p, i) = *d;
        assert_eq!(i, next[p as usize], "producer {p} out of order");
        next[p as usize] += 1;
        d.ack().unwrap();
    }
    for h in producers {
        h.join().unwrap();
    }
    assert_eq!(next, [EACH; PRODUCERS as usize]);
}

/// A lease never ends before it has run its full length, even when the
/// claim was timed with the queue's recent (slightly lagging) clock: the
/// expired message's redelivery never comes sooner than the lease after the
/// claim.
#[test]
fn a_lease_never_ends_early() {
    let lease = Duration::from_millis(5);
    let q: Queue<u8> = Queue::builder()
        .lease(lease)
        .backoff(Backoff::fixed(Duration::ZERO))
        .max_attempts(1000)
        .build();
    q.produce(1).unwrap();
    let mut claimed_at = Instant::now();
    let mut held = q.consume().unwrap();
    for attempt in 2..=100 {
        // Never settled: the lease runs out and the message comes back.
        let again = q.consume().unwrap();
        let lasted = claimed_at.elapsed();
        assert_eq!(again.attempt(), attempt);
        assert!(lasted >= lease, "the lease ended after {lasted:?}");
        claimed_at = Instant::now();
        held = again;
    }
    drop(held);
}
