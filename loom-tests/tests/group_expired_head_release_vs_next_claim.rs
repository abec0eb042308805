//! Race 26: the head of an ordered group is held on its last allowed
//! attempt when its lease runs out; its holder lets go (drops the
//! delivery) while the redeliverer expires the lease and a consumer
//! claims, with the group's next message `b` blocked behind the head,
//! ahead of its block's cursor. Either the expiry dead-letters the head
//! and the stale holder's drop moves the payload to the dead letters, or
//! the drop came first and its rollback on the last attempt dead-lettered
//! it: one letter either way. The expiry alone hands nothing on; the
//! holder that lets go of the payload unblocks `b` (in place, or, if the
//! claim's scan passed it, by moving it into a new slot), so `b` is never
//! claimable before the holder let go (its letter is in the list by then).
//! With `hold_groups` the dead head holds its group until it is released.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::{Redeliverer, advance};
use rebound::{DeadLetterReason, GroupKey, TryConsumeError};
use rebound_loom_tests::{
    Drops, GROUP, LEASE, grouped_queue, head_claimed_with_next_waiting, model,
};

/// The stale holder of `a` drops it while the main thread runs a
/// redeliverer pass and then tries to claim, `b` blocked behind `a`;
/// `hold`: the queue's `hold_groups`.
fn expired_head_release_vs_next_claim(hold: bool) {
    model(move || {
        let drops = Drops::new();
        let q = grouped_queue(1, hold);
        let mut redeliverer = Redeliverer::new();
        let (stale, _) = head_claimed_with_next_waiting(&q, &drops);
        advance(&q, LEASE);
        let holder = thread::spawn(move || drop(stale));
        redeliverer.redeliver_due(&q);
        let mut letters = Vec::new();
        // Races the drop: `b` only once the holder let go of `a`.
        let early = q.try_consume().ok();
        if let Some(next) = &early {
            assert!(!hold, "a held group let the next out");
            assert_eq!(next.name(), "b");
            letters = q.drain_dead_letters();
            assert_eq!(letters.len(), 1, "the next before the head's holder let go");
        }
        holder.join().unwrap();
        if hold {
            assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
            let stats = q.stats();
            assert_eq!(
                (stats.groups, stats.groups_held, stats.grouped_waiting),
                (1, 1, 1)
            );
            assert!(q.release_group(GROUP), "held by its dead head");
        }
        let next = match early {
            Some(next) => next,
            None => q.try_consume().expect("the next once the holder let go"),
        };
        assert_eq!((next.name(), next.attempt()), ("b", 1));
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        next.ack().unwrap();
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);

        letters.extend(q.drain_dead_letters());
        assert_eq!(letters.len(), 1, "the head dead-lettered once");
        assert_eq!(
            (
                letters[0].payload().name(),
                letters[0].reason(),
                letters[0].attempts(),
                letters[0].group()
            ),
            (
                "a",
                DeadLetterReason::MaxAttempts,
                1,
                Some(GroupKey::from(GROUP))
            )
        );
        let stats = q.stats();
        assert_eq!((stats.dead_lettered, stats.acked), (1, 1));
        assert_eq!((stats.redelivered, stats.groups), (0, 0));
        drop((letters, q, redeliverer));
        assert_eq!(drops.count(), 2);
    });
}

#[test]
fn stale_holder_of_an_expired_group_head_letting_go_vs_a_claim_of_the_next() {
    expired_head_release_vs_next_claim(false);
}

#[test]
fn stale_holder_of_an_expired_head_that_holds_its_group_letting_go() {
    expired_head_release_vs_next_claim(true);
}
