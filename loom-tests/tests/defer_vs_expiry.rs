//! Race 20: a holder defers while the redeliverer expires its lease.
//! Exactly one wins and the loser changes nothing: a deferred message comes
//! back once at the same attempt (the defer used none, so even on the last
//! attempt it is not dead-lettered); an expired one comes back once at the
//! next attempt (or is dead-lettered on the last). And a stale holder left
//! by an earlier expiry can never settle a claim made after a defer, though
//! that claim reuses the deferred claim's generation.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::TryConsumeError;
use rebound_loom_tests::{Drops, claimed_at_lease_end, model};
use std::time::Duration;

#[test]
fn defer_vs_lease_expiry_on_the_last_attempt_exactly_one_wins() {
    model(|| {
        let drops = Drops::new();
        // One attempt: an expiry dead-letters, a defer must not.
        let (q, mut redeliverer, d) = claimed_at_lease_end(&drops, 1);
        let holder = thread::spawn(move || d.defer(Duration::ZERO).is_ok());
        redeliverer.redeliver_due(&q);
        let deferred = holder.join().unwrap();
        // A second pass takes a defer handed over after the first.
        redeliverer.redeliver_due(&q);

        let stats = q.stats();
        if deferred {
            assert_eq!(
                (stats.deferred, stats.expired, stats.dead_lettered),
                (1, 0, 0)
            );
            let again = q.try_consume().expect("a deferred message comes back");
            assert_eq!((again.name(), again.attempt()), ("m", 1));
            again.ack().unwrap();
        } else {
            assert_eq!(
                (stats.deferred, stats.expired, stats.dead_lettered),
                (0, 1, 1)
            );
            assert_eq!(q.drain_dead_letters().len(), 1);
        }
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        drop((q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}

#[test]
fn a_stale_holder_cannot_settle_the_claim_after_a_defer() {
    model(|| {
        let drops = Drops::new();
        let (q, mut redeliverer, stale) = claimed_at_lease_end(&drops, 4);
        // The lease ran out: `stale` keeps generation 1; the next claim is 2.
        redeliverer.redeliver_due(&q);
        let d = q.try_consume().expect("redelivered after the expiry");
        assert_eq!(d.attempt(), 2);
        let holder = thread::spawn(move || d.defer(Duration::ZERO).unwrap());
        let late = thread::spawn(move || stale.ack().is_ok());
        let q2 = q.clone();
        let consumer = thread::spawn(move || {
            // Races the defer's hand-over; a miss is fine (claimed below).
            q2.try_consume().ok()
        });
        holder.join().unwrap();
        redeliverer.redeliver_due(&q);
        let again = match consumer.join().unwrap() {
            Some(again) => again,
            None => q.try_consume().expect("the deferred message comes back"),
        };
        assert!(
            !late.join().unwrap(),
            "a stale holder settled a newer claim"
        );
        // Generation 2 again, and it alone can settle.
        assert_eq!(again.attempt(), 2);
        again.ack().unwrap();
        assert_eq!(q.stats().acked, 1);
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        drop((q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}
