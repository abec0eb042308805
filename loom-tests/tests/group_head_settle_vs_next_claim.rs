//! Race 24: the head of an ordered group is settled while a consumer
//! claims, with the group's next message `b` written `Blocked` in the slot
//! after the head and linked behind it, ahead of its block's cursor. The
//! claim's scan passes a `Blocked` slot only by a compare-exchange to
//! `Skipped`. Once the head's payload has left the queue (dropped by an
//! ack, or moved to the dead letters), the holder that let go of it reads
//! the link, without a lock, and unblocks `b` by a compare-exchange too:
//! `Blocked -> Pending` in place, where the scan claims it, or, if the
//! scan marked it first, `Skipped -> Moved`: it writes `b`'s payload into
//! a new slot of the chain (opening the next block) and unblocks it there.
//! Whichever wins, `b` is never claimable before the head's payload left,
//! it is claimed at most once, and it is delivered exactly once after the
//! settle. With `hold_groups` a dead head holds its group (under the
//! group's lock) until the group is released, and a release that comes
//! before the dead-letter finds nothing held and changes nothing.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::{DeadLetter, DeadLetterReason, Delivery, GroupKey, Queue, TryConsumeError};
use rebound_loom_tests::{
    DropFlag, Drops, GROUP, Msg, grouped_queue, head_claimed_with_next_waiting, model,
};

/// How the holder settles the head.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settle {
    Ack,
    DeadLetter,
}

/// A claim racing the settle of the head `a`: `b`, only once `a`'s payload
/// has left (dropped by the ack, or in the dead letters, which it drains
/// into `letters`).
fn claim_next(
    q: &Queue<Msg>,
    settle: Settle,
    head_dropped: &DropFlag,
    letters: &mut Vec<DeadLetter<Msg>>,
) -> Option<Delivery<Msg>> {
    let next = q.try_consume().ok()?;
    assert_eq!(next.name(), "b");
    match settle {
        Settle::Ack => assert!(head_dropped.is_set(), "the next before the head's drop"),
        Settle::DeadLetter => {
            letters.extend(q.drain_dead_letters());
            assert_eq!(letters.len(), 1, "the next before the head's letter");
        }
    }
    Some(next)
}

/// The head `a` of [`GROUP`] is settled on one thread while the main thread
/// tries to claim, `b` blocked behind it and not scanned yet. With `hold`
/// (the queue's `hold_groups`) the main thread first releases the group,
/// racing the settle too.
fn head_settle_vs_next_claim(settle: Settle, hold: bool) {
    model(move || {
        let drops = Drops::new();
        let q = grouped_queue(4, hold);
        let (head, head_dropped) = head_claimed_with_next_waiting(&q, &drops);
        let holder = thread::spawn(move || match settle {
            Settle::Ack => head.ack().unwrap(),
            Settle::DeadLetter => head.dead_letter().unwrap(),
        });
        let mut letters = Vec::new();
        // A release lets the next out only once the dead head holds the
        // group (before, the head is live: it does nothing).
        let released = hold && q.release_group(GROUP);
        let early = claim_next(&q, settle, &head_dropped, &mut letters);
        assert!(!released || early.is_some(), "a released group's next");
        assert!(
            !hold || released || early.is_none(),
            "a held group let the next out"
        );
        holder.join().unwrap();
        if hold && !released {
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
            None => q.try_consume().expect("the next once the head is settled"),
        };
        assert_eq!((next.name(), next.attempt()), ("b", 1));
        assert_eq!(next.group(), Some(GroupKey::from(GROUP)));
        // Claimed once: nothing else is claimable while it is held.
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        next.ack().unwrap();
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        assert!(!q.release_group(GROUP));

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
            (stats.acked, stats.dead_lettered),
            (2 - dead as u64, dead as u64)
        );
        assert_eq!((stats.groups, stats.grouped_waiting), (0, 0));
        drop((letters, q));
        assert_eq!(drops.count(), 2);
    });
}

#[test]
fn ack_of_a_group_head_vs_a_claim_of_the_next() {
    head_settle_vs_next_claim(Settle::Ack, false);
}

#[test]
fn dead_letter_of_a_group_head_vs_a_claim_of_the_next() {
    head_settle_vs_next_claim(Settle::DeadLetter, false);
}

#[test]
fn dead_letter_of_a_head_that_holds_its_group_vs_a_release_and_a_claim() {
    head_settle_vs_next_claim(Settle::DeadLetter, true);
}
