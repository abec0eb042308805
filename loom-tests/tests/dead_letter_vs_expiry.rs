//! Race 17: a holder dead-letters its message (`Claimed -> DeadRejected`)
//! just as the redeliverer expires its lease. Exactly one wins, and the
//! loser changes nothing: either the message is dead-lettered once, as
//! `Rejected` at attempt 1, and never redelivered; or the dead-letter is
//! refused with `LeaseExpired` and the message comes back (attempt 2), or,
//! on its last allowed attempt, is dead-lettered once as `MaxAttempts`.
//! The dead letter holds the payload; it is dropped once.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::{DeadLetterReason, LeaseExpired, TryConsumeError};
use rebound_loom_tests::{Drops, claimed_at_lease_end, model};

#[test]
fn dead_letter_vs_lease_expiry_exactly_one_wins() {
    model(|| {
        let drops = Drops::new();
        let (q, mut redeliverer, d) = claimed_at_lease_end(&drops, 4);
        let holder = thread::spawn(move || d.dead_letter());
        redeliverer.redeliver_due(&q);
        let rejected = holder.join().unwrap();

        let letters = q.drain_dead_letters();
        let stats = q.stats();
        match rejected {
            Ok(()) => {
                assert_eq!(letters.len(), 1, "dead-lettered once");
                let letter = &letters[0];
                assert_eq!(
                    (letter.payload().name(), letter.attempts(), letter.reason()),
                    ("m", 1, DeadLetterReason::Rejected)
                );
                assert_eq!((stats.expired, stats.redelivered), (0, 0));
                assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
            }
            Err(LeaseExpired) => {
                assert!(letters.is_empty(), "a refused dead-letter changes nothing");
                assert_eq!((stats.expired, stats.redelivered), (1, 1));
                let again = q.try_consume().expect("redelivered");
                assert_eq!((again.name(), again.attempt()), ("m", 2));
                again.ack().unwrap();
            }
        }
        let dead_lettered = u64::from(rejected.is_ok());
        assert_eq!(q.stats().dead_lettered, dead_lettered);
        assert_eq!(q.stats().acked, 1 - dead_lettered);
        assert_eq!(drops.count(), 1 - dead_lettered as usize);
        drop((letters, q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}

/// On the last allowed attempt both ways end in the dead letters, with the
/// winner's reason: the holder's `Rejected` or the expiry's `MaxAttempts`.
#[test]
fn dead_letter_vs_last_attempt_expiry_dead_letters_once() {
    model(|| {
        let drops = Drops::new();
        let (q, mut redeliverer, d) = claimed_at_lease_end(&drops, 1);
        let holder = thread::spawn(move || d.dead_letter());
        redeliverer.redeliver_due(&q);
        let rejected = holder.join().unwrap();

        let letters = q.drain_dead_letters();
        assert_eq!(letters.len(), 1, "dead-lettered exactly once");
        let reason = if rejected.is_ok() {
            DeadLetterReason::Rejected
        } else {
            DeadLetterReason::MaxAttempts
        };
        let letter = &letters[0];
        assert_eq!(
            (letter.payload().name(), letter.attempts(), letter.reason()),
            ("m", 1, reason)
        );
        let stats = q.stats();
        assert_eq!((stats.dead_lettered, stats.acked), (1, 0));
        assert_eq!(stats.expired, u64::from(rejected.is_err()));
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        assert_eq!(drops.count(), 0, "the dead letter owns the payload");
        drop((letters, q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}
