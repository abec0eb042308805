//! The ordered index of pending messages: a crossbeam-skiplist of batches
//! keyed by `(timestamp, sequence)`.
//!
//! Keys are unique by construction (the sequence comes from a per-queue
//! counter), because `SkipList::insert` silently replaces an equal key.
//! Ownership of a message is never decided here: the skiplist only finds
//! candidates, and the batch decides who gets one (a compare-exchange on its
//! claim cursor, then on the message's state word for a redelivery; see
//! `Batch::claim`). Entries are
//! unlinked with `Entry::remove`, whose `bool` says who unlinked it.
//!
//! The skiplist comes from the loom seam (`sync::SkipList`): in the loom
//! world, whose models cannot see crossbeam's atomics, a loom-visible
//! stand-in with the same API (a loom `Mutex<BTreeMap>` walked node by
//! node), so that claims still race on the batches' cursors and the
//! messages' state words.

use crate::batch::{Batch, Claimed, Head, PendingCount};
use crate::block::{Block, Key};
use crate::sync::{SkipGuard, SkipList, SpinWait, skip_collector, skip_pin};

/// Outcome of [`Index::claim`]. Two words, returned in registers.
pub(crate) enum Poll<T> {
    Claimed(Claimed<T>),
    /// Nothing is ready. `next_due` is the earliest known future due time.
    Empty {
        next_due: NextDue,
    },
}

const _: () = assert!(crate::sync::MODEL || std::mem::size_of::<Poll<u64>>() == 16);

/// An optional due time in one word (`Option<u64>` takes two, and a poll
/// result carrying one would be returned through memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NextDue(u64);

impl NextDue {
    /// No known due time. (`u64::MAX` nanoseconds, 584 years, is not a
    /// due time anyone waits for: a saturated one is as good as none.)
    pub(crate) const NONE: NextDue = NextDue(u64::MAX);

    /// Not a due time: a producer is still writing a slot that holds up
    /// the chain, and the walk spun a while for it. The caller walks again
    /// with a new time and lease deadline (unpinned meanwhile). One word
    /// with the due times, so that a poll result stays two words.
    pub(crate) const BUSY: NextDue = NextDue(u64::MAX - 1);

    /// The due time, if there is one (neither [`Self::NONE`] nor
    /// [`Self::BUSY`]).
    pub(crate) fn get(self) -> Option<u64> {
        (self.0 < Self::BUSY.0).then_some(self.0)
    }

    pub(crate) fn is_busy(self) -> bool {
        self == Self::BUSY
    }
}

impl From<Option<u64>> for NextDue {
    /// A due time as late as [`NextDue::BUSY`] (584 years from the queue's
    /// start) counts as none, so that it is never mistaken for it.
    fn from(due: Option<u64>) -> Self {
        due.filter(|&due| due < Self::BUSY.0)
            .map_or(Self::NONE, NextDue)
    }
}

/// The bookkeeping of a claim walk, shared by the skiplist and its loom
/// model: fed the nodes in key order, it picks the message to claim.
///
/// The rule: the ready head with the smallest timestamp, except that the
/// chain of immediate messages is claimed in the order it was appended. Only
/// the first chain block that still has something to claim (ready, not yet
/// due, or still being written) offers a candidate; later chain blocks wait
/// behind it, so a producer's messages are never claimed out of order.
/// A node's key is not later than any message in it, so once a key is not
/// smaller than the best head found, no later node can beat it.
struct Walk<N> {
    now_ns: u64,
    /// The node, its cursor as read, the entry position and the timestamp
    /// of the best head.
    best: Option<(N, usize, usize, u64)>,
    next_due: Option<u64>,
    /// A producer is between reserving and publishing a slot that holds up
    /// the rest of its block, or the rest of the chain.
    busy: bool,
    /// The first chain block with something left to claim, as met.
    chain: Option<ChainHead>,
}

/// What the first chain block with something left to claim offered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ChainHead {
    /// A message, ready or not yet due.
    Message,
    /// Nothing yet: its next slot is being written, or, for a block that
    /// looked not full, may be by the time later chain blocks are seen.
    Writing,
}

/// What the walk does after a node.
enum Step {
    Next,
    Stop,
}

impl<N> Walk<N> {
    fn new(now_ns: u64) -> Self {
        Self {
            now_ns,
            best: None,
            next_due: None,
            busy: false,
            chain: None,
        }
    }

    fn beaten_by_best(&self, ts: u64) -> bool {
        self.best
            .as_ref()
            .is_some_and(|&(_, _, _, best_ts)| ts >= best_ts)
    }

    fn due_later(&mut self, ts: u64) {
        self.next_due = Some(self.next_due.map_or(ts, |d| d.min(ts)));
    }

    /// Looks at one node. `node` makes the reference kept for the claim;
    /// `unlink` removes a node nothing can be claimed from any more.
    fn visit<T>(
        &mut self,
        key: &Key,
        batch: &Batch<T>,
        node: impl FnOnce() -> N,
        unlink: impl FnOnce(),
    ) -> Step {
        let chained = batch.is_chained();
        if chained {
            // A chain block's key, like every stamp in it, is a clock
            // reading taken before the block was published: the time is
            // past it now, whatever reading this walk started from. (Else
            // a message produced before this walk, in a block opened after
            // the walk's reading, would look not yet due.)
            self.now_ns = self.now_ns.max(key.ts);
        }
        if self.beaten_by_best(key.ts) {
            return Step::Stop;
        }
        if key.ts > self.now_ns {
            self.due_later(key.ts);
            return Step::Stop;
        }
        if chained && self.chain.is_some() {
            // Behind an earlier chain block: its messages go first. If that
            // one is being written, its producer will be done shortly.
            if self.chain == Some(ChainHead::Writing) {
                self.busy = true;
            }
            return Step::Next;
        }
        let chain_head = match batch.head() {
            // As for the key: an immediate message's stamp is in the past,
            // so it is due, and so is anything stamped before it.
            Head::Ready { from, pos, ts } if chained || ts <= self.now_ns => {
                self.now_ns = self.now_ns.max(ts);
                if !self.beaten_by_best(ts) {
                    self.best = Some((node(), from, pos, ts));
                }
                Some(ChainHead::Message)
            }
            Head::Ready { ts, .. } => {
                self.due_later(ts);
                Some(ChainHead::Message)
            }
            Head::Busy => {
                self.busy = true;
                Some(ChainHead::Writing)
            }
            // Usually the open tail. A block only looks drained while not
            // full, but by the time a later chain block is seen it may have
            // filled, with a slot still being written: it keeps the chain's
            // place all the same.
            Head::Drained => Some(ChainHead::Writing),
            // Whoever unlinks it is irrelevant: nothing in it can be claimed
            // again.
            Head::Exhausted => {
                unlink();
                None
            }
        };
        if chained {
            self.chain = chain_head;
        }
        // Later keys are not smaller than this one: if the best head is due
        // by this key, none of them can beat it. With the recent clock most
        // heads share their block's key, so this usually saves visiting the
        // next node.
        if self.beaten_by_best(key.ts) {
            Step::Stop
        } else {
            Step::Next
        }
    }

    /// Ends a walk: tries its pick with `claim`, and says whether the claim
    /// is over (`Some`) or the caller must walk again (`None`), after the
    /// right pause on `spin`.
    fn finish<T>(
        self,
        spin: &SpinWait,
        claim: impl FnOnce(N, usize, usize, u64) -> Option<Claimed<T>>,
    ) -> Option<Poll<T>> {
        match self.best {
            Some((node, from, pos, ts)) => match claim(node, from, pos, ts) {
                Some(claimed) => Some(Poll::Claimed(claimed)),
                None => {
                    // Another consumer took the entry first (the claim gave
                    // way to it already, see `Batch::claim`), or a redelivery
                    // entry was stale: look again.
                    spin.spin();
                    None
                }
            },
            // A producer is between reserving and publishing a slot that
            // holds up the chain: wait for it, as crossbeam-channel waits
            // for a slot being written. It runs no user code there, so the
            // wait is short unless it is preempted, and "nothing ready"
            // would be false: that message, and any queued behind it, was
            // produced before the producer's call returned. A short spin
            // here, then the caller's turn (`NextDue::BUSY`): it waits with
            // a fresh time, so that a lease it then claims is timed from
            // the claim.
            None if self.busy && !spin.is_completed() => {
                spin.snooze();
                None
            }
            None if self.busy => Some(Poll::Empty {
                next_due: NextDue::BUSY,
            }),
            None => Some(Poll::Empty {
                next_due: self.next_due.into(),
            }),
        }
    }
}

/// After a walk unlinked a node: for a large block, hands the deferred free
/// to the epoch at once (see `Block::LARGE`), as a replaced tail does.
fn unlinked<T>(guard: &SkipGuard) {
    if Block::<T>::LARGE {
        guard.flush();
    }
}

/// `Index::claim_many` for both indexes: claims with `claim` into `out`
/// until it holds `max` or nothing is ready; then the earliest known future
/// due time.
fn claim_up_to<T>(
    max: usize,
    out: &mut Vec<Claimed<T>>,
    mut claim: impl FnMut() -> Poll<T>,
) -> NextDue {
    for _ in 0..max {
        match claim() {
            Poll::Claimed(claimed) => out.push(claimed),
            Poll::Empty { next_due } => return next_due,
        }
    }
    NextDue::NONE
}

pub(crate) struct Index<T> {
    list: SkipList<Key, Batch<T>>,
}

impl<T: Send + Sync + 'static> Index<T> {
    pub(crate) fn new() -> Self {
        Self {
            list: SkipList::new(skip_collector()),
        }
    }

    pub(crate) fn insert(&self, key: Key, batch: Batch<T>) {
        let guard = skip_pin();
        debug_assert!(
            !self.list.contains_key(&key, &guard),
            "duplicate index key {key:?}"
        );
        self.list.insert(key, batch, &guard).release(&guard);
    }

    /// Claims the ready message with the smallest timestamp.
    ///
    /// Walks batches from the front. A batch's key is the timestamp of its
    /// first message, so once a key is not smaller than the best head found
    /// so far, no later batch can hold an earlier message.
    pub(crate) fn claim(&self, now_ns: u64, deadline_tick: u64) -> Poll<T> {
        self.claim_pinned(&skip_pin(), now_ns, deadline_tick)
    }

    /// Claims up to `max` ready messages, in order, into `out`, each as
    /// [`Self::claim`] would (one pin for all). Returns the earliest known
    /// future due time if it claimed none.
    pub(crate) fn claim_many(
        &self,
        now_ns: u64,
        deadline_tick: u64,
        max: usize,
        out: &mut Vec<Claimed<T>>,
    ) -> NextDue {
        let guard = skip_pin();
        claim_up_to(max, out, || {
            self.claim_pinned(&guard, now_ns, deadline_tick)
        })
    }

    /// One claim: walk, then try the pick, until a claim wins or nothing
    /// is offered.
    fn claim_pinned(&self, guard: &SkipGuard, now_ns: u64, deadline_tick: u64) -> Poll<T> {
        let spin = SpinWait::new();
        loop {
            let mut walk = Walk::new(now_ns);
            let mut cursor = self.list.front(guard);
            // Borrowed, not moved out: moving the `Entry` (returned through
            // memory) would copy it with a load wider than the stores that
            // wrote it, a failed store-to-load forward on every claim.
            while let Some(entry) = cursor.as_ref() {
                let step = walk.visit(
                    entry.key(),
                    entry.value(),
                    || entry.clone(),
                    || {
                        let _ = entry.remove();
                        unlinked::<T>(guard);
                    },
                );
                if let Step::Stop = step {
                    break;
                }
                cursor = entry.next();
            }
            if let Some(poll) = walk.finish(&spin, |entry, from, pos, ts| {
                entry.value().claim(from, pos, ts, deadline_tick)
            }) {
                return poll;
            }
        }
    }

    /// Counts pending messages, ready meaning due by `now_ns`.
    pub(crate) fn count_pending(&self, now_ns: u64) -> PendingCount {
        let guard = skip_pin();
        let mut count = PendingCount::default();
        for entry in self.list.iter(&guard) {
            entry.value().count_pending(now_ns, &mut count);
        }
        count
    }

    /// Calls `f` on every batch (teardown).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Batch<T>)) {
        let guard = skip_pin();
        for entry in self.list.iter(&guard) {
            f(entry.value());
        }
    }

    /// Unlinks every batch; the epoch frees them.
    pub(crate) fn clear(&self) {
        let guard = skip_pin();
        while let Some(entry) = self.list.pop_front(&guard) {
            entry.release(&guard);
        }
        guard.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walk that found nothing to claim but a slot still being written
    /// never reports nothing ready: the message in that slot was produced
    /// before its producer's call returned. It spins and walks again, then
    /// hands the wait to its caller as `BUSY` (never a due time), which
    /// walks again with a fresh time.
    #[test]
    fn a_walk_held_up_by_a_slot_being_written_walks_again() {
        let spin = SpinWait::new();
        let mut walk: Walk<()> = Walk::new(5_000);
        walk.busy = true;
        assert!(walk.finish::<u8>(&spin, |_, _, _, _| None).is_none());
        while !spin.is_completed() {
            spin.snooze();
        }
        let mut walk: Walk<()> = Walk::new(5_000);
        walk.busy = true;
        match walk.finish::<u8>(&spin, |_, _, _, _| None) {
            Some(Poll::Empty { next_due }) => {
                assert!(next_due.is_busy() && next_due.get().is_none());
            }
            _ => panic!("expected the caller's turn to wait"),
        }
        // A real due time is never taken for it.
        assert_eq!(NextDue::from(Some(u64::MAX - 1)), NextDue::NONE);
        // With nothing being written, no timeout is invented.
        let walk: Walk<()> = Walk::new(5_000);
        match walk.finish::<u8>(&spin, |_, _, _, _| None) {
            Some(Poll::Empty { next_due }) => assert_eq!(next_due.get(), None),
            _ => panic!("expected Empty"),
        }
    }

    /// A claim walk that started from a clock reading taken before a
    /// producer opened the next chain block (keyed and stamped by a later
    /// reading) still finds the message in it: a chain block's key and
    /// stamps are readings from the past, so that message is due.
    #[test]
    fn a_walk_from_an_earlier_reading_claims_from_a_later_chain_block() {
        use crate::block::BLOCK_CAPACITY;
        use crate::shared::MAX_LEASE;
        use crate::{Delivery, Queue};
        let q: Queue<usize> = Queue::new();
        // Fill the first block, then open a second one with one more.
        q.produce_batch(0..=BLOCK_CAPACITY).unwrap();
        for i in 0..BLOCK_CAPACITY {
            let d = q.try_consume().unwrap();
            assert_eq!(*d, i);
            d.ack().unwrap();
        }
        let deadline = q.shared.deadline_tick(q.shared.clock.precise(), MAX_LEASE);
        // A reading from before the second block was opened: the start.
        match q.shared.index.claim(0, deadline) {
            Poll::Claimed(claimed) => {
                let d = Delivery::new(claimed);
                assert_eq!(*d, BLOCK_CAPACITY);
                d.ack().unwrap();
            }
            Poll::Empty { .. } => panic!("the message in the later block looked not due"),
        }
    }
}
