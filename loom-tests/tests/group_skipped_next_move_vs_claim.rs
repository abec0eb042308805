//! Race 27: the head of an ordered group is settled while a consumer
//! scans the chain, with the group's next message `b` already passed by
//! its block's cursor (`Skipped`: a scan marked it by a compare-exchange
//! from `Blocked`, and the block has left the index). The head's last
//! holder cannot unblock `b` in place: its `Skipped -> Moved` takes the
//! payload, and, under the group's lock, writes it blocked into a new slot
//! of the producers' chain (opening the next block), which takes `b`'s
//! place in the group, then unblocks that slot. The consumer's scan meets
//! the new slot being written, blocked (its compare-exchange to `Skipped`
//! wins, and the holder moves `b` once more), or pending, in place. `b` is
//! delivered exactly once, as attempt 1 under the id its produce returned,
//! and never while `a`'s payload is still in the queue (before the ack's
//! drop, or before the dead letter is in the list); its first slot is
//! never claimed.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::{DeadLetterReason, GroupKey, TryConsumeError};
use rebound_loom_tests::{Drops, GROUP, grouped_queue, head_claimed_with_next_skipped, model};

/// How the holder settles the head.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    DeadLetter,
}

/// The head `a` of [`GROUP`] is settled on one thread while the main thread
/// claims, `b` skipped: its scan meets `b`'s new slot, or not yet.
fn next_skip_vs_head_settle(settle: Settle) {
    model(move || {
        let drops = Drops::new();
        let q = grouped_queue(4, false);
        let (head, head_dropped, b) = head_claimed_with_next_skipped(&q, &drops);
        let holder = thread::spawn(move || match settle {
            Settle::Ack => head.ack().unwrap(),
            Settle::DeadLetter => head.dead_letter().unwrap(),
        });
        let mut letters = Vec::new();
        // Races the settle: `b` only once `a`'s payload has left.
        let early = q.try_consume().ok();
        if let Some(next) = &early {
            assert_eq!(next.name(), "b");
            match settle {
                Settle::Ack => assert!(head_dropped.is_set(), "the next before the head's drop"),
                Settle::DeadLetter => {
                    letters.extend(q.drain_dead_letters());
                    assert_eq!(letters.len(), 1, "the next before the head's letter");
                }
            }
        }
        holder.join().unwrap();
        let next = match early {
            Some(next) => next,
            None => q.try_consume().expect("the next once its head is settled"),
        };
        assert_eq!((next.name(), next.attempt(), next.id()), ("b", 1, b));
        assert_eq!(next.group(), Some(GroupKey::from(GROUP)));
        // Delivered once: not claimable again while held, nor after.
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        next.ack().unwrap();
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);

        letters.extend(q.drain_dead_letters());
        let dead = usize::from(settle == Settle::DeadLetter);
        assert_eq!(letters.len(), dead, "one letter for a dead head");
        if let Some(letter) = letters.first() {
            assert_eq!(
                (letter.payload().name(), letter.reason(), letter.group()),
                ("a", DeadLetterReason::Rejected, Some(GroupKey::from(GROUP)))
            );
        }
        let stats = q.stats();
        assert_eq!(
            (stats.acked, stats.dead_lettered, stats.in_flight),
            (2 - dead as u64, dead as u64, 0)
        );
        assert_eq!((stats.groups, stats.grouped_waiting), (0, 0));
        drop((letters, q));
        assert_eq!(drops.count(), 2);
    });
}

#[test]
fn ack_of_a_group_head_moving_the_skipped_next_vs_a_claim() {
    next_skip_vs_head_settle(Settle::Ack);
}

#[test]
fn dead_letter_of_a_group_head_moving_the_skipped_next_vs_a_claim() {
    next_skip_vs_head_settle(Settle::DeadLetter);
}
