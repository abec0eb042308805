//! Race 7: the dead-letter transition on the last attempt races an ack of a
//! stale delivery. The stale ack is refused and changes nothing; the
//! message is dead-lettered exactly once, with its payload, by whichever
//! holder lets go last.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::{DeadLetterReason, TryConsumeError};
use rebound_loom_tests::{Drops, claimed_at_lease_end, model};

#[test]
fn last_attempt_rollback_vs_stale_ack_dead_letters_once() {
    model(|| {
        let drops = Drops::new();
        let (q, mut redeliverer, stale) = claimed_at_lease_end(&drops, 2);
        redeliverer.redeliver_due(&q); // attempt 1 expires
        let last = q.try_consume().unwrap();
        assert_eq!(last.attempt(), 2);

        let acker = thread::spawn(move || {
            assert_eq!(stale.name(), "m", "a stale holder can still read");
            stale.ack().is_ok()
        });
        last.rollback().unwrap(); // the last attempt failed: dead-letter
        assert!(!acker.join().unwrap(), "a stale ack is refused");

        let dead = q.drain_dead_letters();
        assert_eq!(dead.len(), 1, "dead-lettered exactly once");
        assert_eq!(
            (
                dead[0].payload().name(),
                dead[0].attempts(),
                dead[0].reason()
            ),
            ("m", 2, DeadLetterReason::MaxAttempts)
        );
        let stats = q.stats();
        assert_eq!((stats.acked, stats.dead_lettered), (0, 1));
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        assert_eq!(drops.count(), 0, "the dead letter owns the payload");
        drop((dead, q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}

#[test]
fn last_attempt_expiry_vs_ack_dead_letters_or_acks() {
    model(|| {
        let drops = Drops::new();
        let (q, mut redeliverer, d) = claimed_at_lease_end(&drops, 1);
        let acker = thread::spawn(move || {
            assert_eq!(d.name(), "m");
            d.ack().is_ok()
        });
        redeliverer.redeliver_due(&q); // expiry on the last attempt
        let acked = acker.join().unwrap();

        let dead = q.drain_dead_letters();
        let stats = q.stats();
        if acked {
            assert!(dead.is_empty());
            assert_eq!((stats.acked, stats.dead_lettered), (1, 0));
        } else {
            assert_eq!(dead.len(), 1);
            assert_eq!(
                (
                    dead[0].payload().name(),
                    dead[0].attempts(),
                    dead[0].reason()
                ),
                ("m", 1, DeadLetterReason::MaxAttempts)
            );
            assert_eq!((stats.acked, stats.dead_lettered), (0, 1));
        }
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        drop((dead, q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}
