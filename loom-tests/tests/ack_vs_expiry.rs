//! Race 2: a holder acks while the redeliverer expires its lease. Exactly
//! one wins and the loser changes nothing: the message is then either acked
//! (and never delivered again) or redelivered (and the ack refused), never
//! both, never neither.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::TryConsumeError;
use rebound_loom_tests::{Drops, claimed_at_lease_end, model};

#[test]
fn ack_vs_lease_expiry_exactly_one_wins() {
    model(|| {
        let drops = Drops::new();
        // `m` claimed, and its lease has just ended.
        let (q, mut redeliverer, d) = claimed_at_lease_end(&drops, 4);
        let acker = thread::spawn(move || {
            assert_eq!(d.name(), "m");
            d.ack().is_ok()
        });
        redeliverer.redeliver_due(&q);
        let acked = acker.join().unwrap();

        let stats = q.stats();
        if acked {
            assert_eq!((stats.acked, stats.expired, stats.redelivered), (1, 0, 0));
        } else {
            assert_eq!((stats.acked, stats.expired, stats.redelivered), (0, 1, 1));
            let again = q.try_consume().expect("an expired message is redelivered");
            assert_eq!((again.name(), again.attempt()), ("m", 2));
            again.ack().unwrap();
        }
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        assert_eq!(q.stats().acked, 1);
        drop((q, redeliverer));
        assert_eq!(drops.count(), 1, "the payload is dropped exactly once");
    });
}

/// The loser of the race above keeps reading: an expired holder reads the
/// payload while the redelivery's holder acks it. The payload lives until
/// the last holder lets go (loom checks every access to it).
#[test]
fn expired_holder_reads_while_the_redelivery_is_acked() {
    model(|| {
        let drops = Drops::new();
        let (q, mut redeliverer, stale) = claimed_at_lease_end(&drops, 4);
        redeliverer.redeliver_due(&q);
        let fresh = q.try_consume().unwrap();
        assert_eq!(fresh.attempt(), 2);
        let reader = thread::spawn(move || {
            assert_eq!(stale.name(), "m");
            assert!(stale.ack().is_err(), "an expired holder cannot settle");
        });
        fresh.ack().unwrap();
        reader.join().unwrap();
        assert_eq!(drops.count(), 1, "dropped by the last holder, once");
        drop((q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}
