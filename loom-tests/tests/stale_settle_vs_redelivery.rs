//! Race 14: an expired holder rolls back, dead-letters or extends its lease
//! while the message's redelivery is claimed and acked by another consumer.
//! Every claim carries its attempt as a generation, and each of these
//! settles names it: the stale one is refused with `LeaseExpired` whether
//! it runs before the new claim (the message is pending), while the new
//! holder has it (claimed again, at attempt 2) or after its ack, and
//! changes nothing: the new holder's ack succeeds, the message is neither
//! redelivered again nor dead-lettered, and its payload is dropped once,
//! after both let go. (The stale ack is raced in races 2 and 7.)
#![cfg(rebound_loom)]

use loom::thread;
use rebound::{Delivery, LeaseExpired, TryConsumeError};
use rebound_loom_tests::{Drops, LEASE, Msg, claimed_at_lease_end, model};

/// The shape of the three models: `m`'s first lease has ended and a
/// redeliverer pass has put it back; its expired holder runs `settle` while
/// the main thread claims the redelivery and acks it.
fn stale_settle_vs_redelivery(settle: fn(Delivery<Msg>) -> Result<(), LeaseExpired>) {
    model(move || {
        let drops = Drops::new();
        let (q, mut redeliverer, stale) = claimed_at_lease_end(&drops, 4);
        redeliverer.redeliver_due(&q); // attempt 1 expires: pending again
        let settler = thread::spawn(move || {
            assert_eq!(stale.name(), "m", "an expired holder can still read");
            settle(stale)
        });
        let fresh = q.try_consume().expect("the redelivery is ready");
        assert_eq!((fresh.name(), fresh.attempt()), ("m", 2));
        fresh.ack().expect("the new holder's claim is untouched");
        assert_eq!(
            settler.join().unwrap(),
            Err(LeaseExpired),
            "a stale settle is refused"
        );
        // A pass would bring back what a stale rollback handed over.
        redeliverer.redeliver_due(&q);
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        assert!(q.drain_dead_letters().is_empty(), "not dead-lettered");
        let stats = q.stats();
        assert_eq!(
            (stats.acked, stats.rolled_back, stats.dead_lettered),
            (1, 0, 0)
        );
        assert_eq!((stats.expired, stats.redelivered), (1, 1));
        drop((q, redeliverer));
        assert_eq!(drops.count(), 1, "dropped once both let go");
    });
}

#[test]
fn stale_rollback_vs_redelivery_is_refused() {
    stale_settle_vs_redelivery(Delivery::rollback);
}

#[test]
fn stale_dead_letter_vs_redelivery_is_refused() {
    stale_settle_vs_redelivery(Delivery::dead_letter);
}

/// An extension never shortens a lease; a stale one must not lengthen the
/// new holder's either. (The delivery is dropped afterwards: an unsettled
/// drop is a rollback, itself stale.)
#[test]
fn stale_extend_lease_vs_redelivery_is_refused() {
    stale_settle_vs_redelivery(|d| d.extend_lease(LEASE));
}
