//! Race 25: the head of an ordered group is rolled back, put back by the
//! redeliverer, claimed again and acked while a producer appends the
//! group's next message `b`: written `Blocked` into the chain (the slot
//! after the head), then, under the group's lock, the group's tail swapped
//! to it and `b` linked behind the message the swap returned. Whichever
//! comes first, the head comes back first, and `b` is claimable only once
//! the head is acked (a scan meanwhile passes it, marking it `Skipped`).
//! The ack (or, on the head's last attempt, the rollback, which
//! dead-letters the head) meets the append on the group's tail, taking no
//! lock: it finds `b` linked and unblocks it (in place, or by moving a
//! skipped `b` into a new slot); or it finds nothing linked and
//! compare-exchanges the tail from the head to zero, and either the group
//! goes idle (the append then finds it idle and `b`, the new head, is
//! unblocked by its producer) or the exchange fails because the producer
//! swapped the tail, and the settle waits for the link. `b` is delivered
//! once either way.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::Redeliverer;
use rebound::{DeadLetterReason, GroupKey, TryConsumeError};
use rebound_loom_tests::{Drops, GROUP, model, queue};

#[test]
fn rolled_back_head_comes_back_before_a_message_appended_meanwhile() {
    model(|| {
        let drops = Drops::new();
        let q = queue(2);
        q.produce_in_group(GROUP, drops.msg("a")).unwrap();
        let head = q.try_consume().unwrap();
        let mut redeliverer = Redeliverer::new();
        let producer = {
            let (q, b) = (q.clone(), drops.msg("b"));
            thread::spawn(move || q.produce_in_group(GROUP, b).unwrap())
        };
        head.rollback().unwrap();
        redeliverer.redeliver_due(&q);
        // All of it races the append: the head is back, and the appended
        // message is not claimable until the head is acked.
        let again = q.try_consume().expect("the rolled-back head comes back");
        assert_eq!((again.name(), again.attempt()), ("a", 2));
        assert_eq!(
            q.try_consume().unwrap_err(),
            TryConsumeError::Empty,
            "the appended message beside its group's head"
        );
        again.ack().unwrap();
        let early = q.try_consume().ok();
        let b = producer.join().unwrap();
        let next = match early {
            Some(next) => next,
            None => q.try_consume().expect("the appended message after the ack"),
        };
        assert_eq!((next.name(), next.attempt(), next.id()), ("b", 1, b));
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        next.ack().unwrap();
        let stats = q.stats();
        assert_eq!(
            (stats.rolled_back, stats.redelivered, stats.acked),
            (1, 1, 2)
        );
        assert_eq!((stats.groups, stats.grouped_waiting), (0, 0));
        drop((q, redeliverer));
        assert_eq!(drops.count(), 2);
    });
}

#[test]
fn last_attempt_rollback_releases_the_group_vs_an_append_delivers_it_once() {
    model(|| {
        let drops = Drops::new();
        let q = queue(1);
        q.produce_in_group(GROUP, drops.msg("a")).unwrap();
        let head = q.try_consume().unwrap();
        let producer = {
            let (q, b) = (q.clone(), drops.msg("b"));
            thread::spawn(move || q.produce_in_group(GROUP, b).unwrap())
        };
        // All of it races the append: `b` is not claimable while the head
        // is held; the rollback of the last attempt dead-letters the head
        // and hands the group on; then `b` if it is in already.
        assert_eq!(
            q.try_consume().unwrap_err(),
            TryConsumeError::Empty,
            "the appended message beside its group's head"
        );
        head.rollback().unwrap();
        let early = q.try_consume().ok();
        let b = producer.join().unwrap();
        let next = match early {
            Some(next) => next,
            None => q.try_consume().expect("the appended message"),
        };
        assert_eq!((next.name(), next.attempt(), next.id()), ("b", 1, b));
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        next.ack().unwrap();
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        let letters = q.drain_dead_letters();
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
        assert_eq!((stats.groups, stats.grouped_waiting), (0, 0));
        drop((letters, q));
        assert_eq!(drops.count(), 2);
    });
}
