//! `Cursor`: the claim cursor of a batch (a block of fresh messages, or a
//! batch of redelivered ones), whose compare-exchange decides who claims an
//! entry.

use crate::sync::{AtomicUsize, Ordering, SetMut};
use crossbeam_utils::CachePadded;

/// The first entry of a batch that may still be claimable. It only ever
/// moves forward, and only by [`Cursor::advance`], so a consumer that moves
/// it from the value it read past an entry is the only one that may claim
/// that entry through this batch. On its own cache line: consumers write
/// it, producers write the entries next to it.
#[derive(Debug)]
pub(crate) struct Cursor(CachePadded<AtomicUsize>);

impl Cursor {
    pub(crate) fn new() -> Self {
        Cursor(CachePadded::new(AtomicUsize::new(0)))
    }

    /// Back to the first entry, in place: a block being recycled, which
    /// nobody else can reach (see `Block::recycle`).
    pub(crate) fn reset(&mut self) {
        self.0.set_mut(0);
    }

    /// The cursor as it is now (a hint: it may move at once).
    pub(crate) fn load(&self) -> usize {
        // Relaxed: a stale value only fails the claim's compare-exchange;
        // the entries are published by their state words.
        self.0.load(Ordering::Relaxed)
    }

    /// Moves the cursor from `from`, as read, to `to`. Fails with the
    /// current value if anyone moved it since, so a success means nobody
    /// claimed anything in `from..to` through this batch in between.
    pub(crate) fn advance(&self, from: usize, to: usize) -> Result<(), usize> {
        // Relaxed: the compare-exchange only decides who moves the cursor
        // (a read-modify-write is atomic whatever its ordering); what the
        // entries hold is published by their state words.
        self.0
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .map(|_| ())
    }
}
