//! Race 28: the head of an ordered group, with nothing linked behind it,
//! is settled while a producer appends the group's next message. The
//! producer writes `b` blocked into the chain, then, under the group's
//! lock, swaps the group's tail to `b` and links `b` behind the message
//! the swap returned. The settle takes no lock: it reads its link, and
//! with nothing there compare-exchanges the tail from its head to zero
//! (the group goes idle). Either the exchange wins (the producer's swap
//! then finds the group idle and `b` is the head, unblocked by its
//! producer), or the swap came first and the settle waits for the link
//! and unblocks `b`, or the link was there already. `b` is never lost,
//! delivered exactly once, as attempt 1, never before `a`'s payload left;
//! afterwards the group is gone from `stats()`. With `hold_groups`, a dead
//! head holds its group (under the lock): `b` comes out only with
//! `release_group`.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::{GroupKey, TryConsumeError};
use rebound_loom_tests::{DropFlag, Drops, GROUP, grouped_queue, model};

/// `a` of [`GROUP`] is claimed and settled (acked, or dead-lettered with
/// `hold`) on one thread while the main thread appends `b` and claims.
fn idle_settle_vs_append(hold: bool) {
    model(move || {
        let drops = Drops::new();
        let q = grouped_queue(4, hold);
        let head_dropped = DropFlag::new();
        q.produce_in_group(GROUP, drops.flagged("a", &head_dropped))
            .unwrap();
        let head = q.try_consume().unwrap();
        assert_eq!((head.name(), head.attempt()), ("a", 1));
        let holder = thread::spawn(move || {
            if hold {
                head.dead_letter().unwrap();
            } else {
                head.ack().unwrap();
            }
        });
        let b = q.produce_in_group(GROUP, drops.msg("b")).unwrap();
        // Races the settle: `b` only once `a`'s payload has left.
        let early = q.try_consume().ok();
        if let Some(next) = &early {
            assert!(!hold, "a held group let the next out");
            assert_eq!(next.name(), "b");
            assert!(head_dropped.is_set(), "the next before the head's drop");
        }
        holder.join().unwrap();
        let stats = q.stats();
        if hold {
            assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
            assert_eq!(
                (stats.groups, stats.groups_held, stats.grouped_waiting),
                (1, 1, 1)
            );
            assert!(q.release_group(GROUP), "held by its dead head");
        } else {
            // `b` is the head now, claimed or not.
            assert_eq!((stats.groups, stats.grouped_waiting), (1, 0));
        }
        let next = match early {
            Some(next) => next,
            None => q
                .try_consume()
                .expect("the appended message once the head is gone"),
        };
        assert_eq!((next.name(), next.attempt(), next.id()), ("b", 1, b));
        assert_eq!(next.group(), Some(GroupKey::from(GROUP)));
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        next.ack().unwrap();
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);

        let letters = q.drain_dead_letters();
        assert_eq!(letters.len(), usize::from(hold));
        let stats = q.stats();
        let dead = u64::from(hold);
        assert_eq!(
            (stats.acked, stats.dead_lettered, stats.in_flight),
            (2 - dead, dead, 0)
        );
        assert_eq!(
            (stats.groups, stats.groups_held, stats.grouped_waiting),
            (0, 0, 0)
        );
        drop((letters, q));
        assert_eq!(drops.count(), 2);
    });
}

#[test]
fn ack_of_a_lone_group_head_vs_an_append_delivers_it_once() {
    idle_settle_vs_append(false);
}

#[test]
fn dead_head_holding_its_group_vs_an_append_waits_for_the_release() {
    idle_settle_vs_append(true);
}
