//! Race 29: a delivery outlives its queue: the holder of an ordered
//! group's head `a` settles it while the last `Queue` handle is dropped
//! (teardown), the group's next message `b` blocked behind it. Teardown
//! marks the groups torn down and clears them (waiting for a head being
//! moved under a group's lock), then discards every message nobody holds,
//! `b` included: in the index, or, once its block's cursor skipped it and
//! the block left the index, in the blocks the groups listed when it was
//! skipped. The settle is pinned (epoch) while it may still reach `b`'s
//! block and the group, which teardown drops only through the epoch.
//! Before teardown, an ack unblocks `b` in place, or moves its payload
//! into a new slot (which teardown then finds in the index, or discards
//! after the move unblocked it), and a dead head of a queue that holds its
//! groups holds its group; after, the settle moves nothing. Whatever the
//! order, the settle succeeds, each payload is dropped exactly once, and
//! nothing leaks (loom reports a leaked `Arc`).
//!
//! The move of a `b` skipped in a block that left the index (the move then
//! opens a new block) is not modelled here: teardown orders its blocks by
//! address before it releases their references, so with two blocks loom
//! would not replay the same operations in the same order (docs/
//! verification.md, "What is not model-checked").
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::Redeliverer;
use rebound::{Queue, TryConsumeError};
use rebound_loom_tests::{
    Drops, GROUP, Msg, grouped_queue, head_claimed_with_next_skipped,
    head_claimed_with_next_waiting, model,
};

/// Where `b` is when the race starts, and how the head is settled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// `b` `Blocked`, ahead of its block's cursor: the ack unblocks it in
    /// place.
    AckNextBlocked,
    /// `b` `Skipped` in the open tail block: the ack moves it into the
    /// next slot of that block.
    AckNextSkippedInTheTail,
    /// `b` `Skipped` in a full block that left the index; `a` dead-lettered
    /// on a queue that holds its groups: `b` stays there.
    HoldNextSkippedOutOfTheIndex,
}

/// A filler message `x` produced, claimed and acked, then `a` and `b` into
/// [`GROUP`] (`a` in the first block's last slot, `b` alone in the
/// second), `a` claimed and `b` skipped by a claim that finds nothing. A
/// redeliverer pass has taken both blocks from the registration queue, so
/// that teardown finds only the second (in the index): with two blocks
/// its order would depend on their addresses. The redeliverer is kept
/// until the end.
fn head_claimed_with_next_skipped_in_the_tail(
    q: &Queue<Msg>,
    drops: &Drops,
) -> (rebound::Delivery<Msg>, Redeliverer<Msg>) {
    q.produce(drops.msg("x")).unwrap();
    q.try_consume().unwrap().ack().unwrap();
    q.produce_in_group(GROUP, drops.msg("a")).unwrap();
    q.produce_in_group(GROUP, drops.msg("b")).unwrap();
    let head = q.try_consume().unwrap();
    assert_eq!((head.name(), head.attempt()), ("a", 1));
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    let mut redeliverer = Redeliverer::new();
    redeliverer.redeliver_due(q);
    (head, redeliverer)
}

fn head_settle_vs_teardown(setup: Setup) {
    model(move || {
        let drops = Drops::new();
        let hold = setup == Setup::HoldNextSkippedOutOfTheIndex;
        let q = grouped_queue(4, hold);
        let (head, redeliverer) = match setup {
            Setup::AckNextBlocked => (head_claimed_with_next_waiting(&q, &drops).0, None),
            Setup::AckNextSkippedInTheTail => {
                let (head, redeliverer) = head_claimed_with_next_skipped_in_the_tail(&q, &drops);
                (head, Some(redeliverer))
            }
            Setup::HoldNextSkippedOutOfTheIndex => {
                (head_claimed_with_next_skipped(&q, &drops).0, None)
            }
        };
        let holder = thread::spawn(move || {
            if hold {
                head.dead_letter().is_ok()
            } else {
                head.ack().is_ok()
            }
        });
        drop(q); // the last handle: teardown
        assert!(holder.join().unwrap(), "the holder still settles");
        drop(redeliverer);
        let payloads = 2 + usize::from(setup == Setup::AckNextSkippedInTheTail);
        assert_eq!(drops.count(), payloads, "each payload dropped exactly once");
    });
}

#[test]
fn ack_of_a_group_head_vs_teardown_with_the_next_blocked() {
    head_settle_vs_teardown(Setup::AckNextBlocked);
}

#[test]
fn ack_of_a_group_head_moving_the_skipped_next_vs_teardown() {
    head_settle_vs_teardown(Setup::AckNextSkippedInTheTail);
}

#[test]
fn dead_head_holding_its_group_vs_teardown_with_the_next_skipped() {
    head_settle_vs_teardown(Setup::HoldNextSkippedOutOfTheIndex);
}
