//! Race 18: bounded retries, across attempts. With `max_attempts = 2` a
//! message's holder rolls back each delivery just as its lease runs out
//! and the redeliverer expires it: on the first attempt either way brings
//! it back once, as attempt 2; on the second, the last, either way
//! dead-letters it, once, as `MaxAttempts` with `attempts() == 2`. It is
//! never delivered a third time. (Races 3 and 7 race one attempt each.)
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::advance;
use rebound::{DeadLetterReason, TryConsumeError};
use rebound_loom_tests::{Drops, LEASE, claimed_at_lease_end, model};

#[test]
fn rollback_vs_expiry_on_every_attempt_delivers_at_most_max_attempts() {
    model(|| {
        let drops = Drops::new();
        let (q, mut redeliverer, first) = claimed_at_lease_end(&drops, 2);
        // Attempt 1: rollback vs expiry.
        let holder = thread::spawn(move || first.rollback().is_ok());
        redeliverer.redeliver_due(&q);
        let rolled_back_first = holder.join().unwrap();
        // A second pass takes a rollback handed over after the first.
        redeliverer.redeliver_due(&q);
        let second = q.try_consume().expect("back once, after attempt 1");
        assert_eq!((second.name(), second.attempt()), ("m", 2));

        // Attempt 2, the last: rollback vs expiry again.
        advance(&q, LEASE);
        let holder = thread::spawn(move || second.rollback().is_ok());
        redeliverer.redeliver_due(&q);
        let rolled_back_last = holder.join().unwrap();
        redeliverer.redeliver_due(&q);
        assert_eq!(
            q.try_consume().unwrap_err(),
            TryConsumeError::Empty,
            "never delivered a third time"
        );

        let letters = q.drain_dead_letters();
        assert_eq!(letters.len(), 1, "dead-lettered exactly once");
        let letter = &letters[0];
        assert_eq!(
            (letter.payload().name(), letter.attempts(), letter.reason()),
            ("m", 2, DeadLetterReason::MaxAttempts)
        );
        let stats = q.stats();
        let expired = 2 - u64::from(rolled_back_first) - u64::from(rolled_back_last);
        assert_eq!((stats.delivered, stats.redelivered), (2, 1));
        assert_eq!((stats.rolled_back, stats.expired), (2 - expired, expired));
        assert_eq!((stats.dead_lettered, stats.acked), (1, 0));
        drop((letters, q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}
