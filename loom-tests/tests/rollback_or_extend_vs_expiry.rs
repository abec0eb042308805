//! Race 3: a holder rolls back, or extends its lease, while the redeliverer
//! expires it. Exactly one wins and the loser changes nothing: a message
//! rolled back and expired is redelivered once, not twice; an extended
//! lease either held (the holder can still ack) or was lost (the ack is
//! refused and the message redelivered).
#![cfg(rebound_loom)]

use loom::thread;
use rebound::TryConsumeError;
use rebound_loom_tests::{Drops, LEASE, claimed_at_lease_end, model};

#[test]
fn rollback_vs_lease_expiry_redelivers_exactly_once() {
    model(|| {
        let drops = Drops::new();
        let (q, mut redeliverer, d) = claimed_at_lease_end(&drops, 4);
        let holder = thread::spawn(move || d.rollback().is_ok());
        redeliverer.redeliver_due(&q);
        let rolled_back = holder.join().unwrap();
        // A second pass takes a rollback handed over after the first.
        redeliverer.redeliver_due(&q);

        let stats = q.stats();
        assert_eq!(
            (stats.rolled_back, stats.expired),
            if rolled_back { (1, 0) } else { (0, 1) },
            "exactly one of rollback and expiry won"
        );
        assert_eq!(stats.redelivered, 1);
        let again = q.try_consume().expect("redelivered once");
        assert_eq!((again.name(), again.attempt()), ("m", 2));
        again.ack().unwrap();
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        drop((q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}

#[test]
fn extend_lease_vs_lease_expiry_exactly_one_wins() {
    model(|| {
        let drops = Drops::new();
        let (q, mut redeliverer, d) = claimed_at_lease_end(&drops, 4);
        let holder = thread::spawn(move || {
            let extended = d.extend_lease(LEASE).is_ok();
            (d, extended)
        });
        redeliverer.redeliver_due(&q);
        let (d, extended) = holder.join().unwrap();

        let stats = q.stats();
        if extended {
            assert_eq!((stats.expired, stats.redelivered), (0, 0));
            d.ack().expect("an extended lease is still held");
            assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        } else {
            assert_eq!((stats.expired, stats.redelivered), (1, 1));
            assert!(d.ack().is_err(), "an expired holder cannot settle");
            let again = q.try_consume().expect("redelivered");
            assert_eq!(again.attempt(), 2);
            again.ack().unwrap();
        }
        assert_eq!(q.stats().acked, 1);
        drop((q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}
