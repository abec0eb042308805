//! A block of slots: where fresh messages are stored, and the unit the
//! skiplist orders, so one skiplist node, one allocation and one id base are
//! shared by up to [`BLOCK_CAPACITY`] messages.

use crate::queue::Shared;
use crate::slot::Slot;
use crate::sync::{Arc, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// Slots per block for immediate messages. 64 amortises the skiplist node,
/// the allocation and the id counter; a delayed message gets a block of one.
pub(crate) const BLOCK_CAPACITY: usize = 64;
/// Bits of a message id that number the slot within its block.
pub(crate) const SLOT_BITS: u32 = 6;
const _: () = assert!(BLOCK_CAPACITY <= 1 << SLOT_BITS);

/// Outcome of [`Block::reserve`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reserve {
    /// This caller owns the slot with this index, for writing.
    Slot(usize),
    /// The block is full and this caller is the one that must open the next.
    FullOpenNext,
    /// The block is full and another producer is opening the next.
    FullWait,
}

pub(crate) struct Block<T> {
    /// Consumers: the first slot that may still be claimable. Only a hint:
    /// the state words decide ownership.
    cursor: CachePadded<AtomicUsize>,
    /// Producers: the next slot to hand out.
    reserved: CachePadded<AtomicUsize>,
    /// The queue this block belongs to (counters, redelivery inbox, dead letters).
    pub(crate) shared: Arc<Shared<T>>,
    /// Unique per queue; message ids are `seq << SLOT_BITS | slot`.
    seq: u64,
    slots: Box<[Slot<T>]>,
}

impl<T> Block<T> {
    /// A block of `len` empty slots whose first `reserved` are already owned
    /// by the creating thread.
    pub(crate) fn new(shared: Arc<Shared<T>>, seq: u64, len: usize, reserved: usize) -> Self {
        Self {
            cursor: CachePadded::new(AtomicUsize::new(0)),
            reserved: CachePadded::new(AtomicUsize::new(reserved)),
            shared,
            seq,
            slots: (0..len).map(|_| Slot::new()).collect(),
        }
    }

    pub(crate) fn slot(&self, index: usize) -> &Slot<T> {
        &self.slots[index]
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The 64-bit message number of slot `index` (unique per queue).
    pub(crate) fn message_number(&self, index: usize) -> u64 {
        self.seq << SLOT_BITS | index as u64
    }

    /// Hands out a slot to write.
    pub(crate) fn reserve(&self) -> Reserve {
        // Relaxed: the counter only hands out distinct indices; the slot's
        // contents are published by its own state word.
        let index = self.reserved.fetch_add(1, Ordering::Relaxed);
        match index.cmp(&self.slots.len()) {
            std::cmp::Ordering::Less => Reserve::Slot(index),
            std::cmp::Ordering::Equal => Reserve::FullOpenNext,
            std::cmp::Ordering::Greater => Reserve::FullWait,
        }
    }

    /// How many slots producers have reserved so far (written or not).
    pub(crate) fn reserved(&self) -> usize {
        // Relaxed: a stale count only hides slots reserved after it; a
        // consumer learns of those from the producer's wake-up and polls again.
        self.reserved.load(Ordering::Relaxed).min(self.slots.len())
    }

    pub(crate) fn cursor(&self) -> usize {
        // Relaxed: a hint; every slot it skips is re-checked by its state word.
        self.cursor.load(Ordering::Relaxed)
    }

    pub(crate) fn advance_cursor(&self, to: usize) {
        crate::batch::advance(&self.cursor, to);
    }
}

impl<T> std::fmt::Debug for Block<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("seq", &self.seq)
            .field("len", &self.slots.len())
            .finish_non_exhaustive()
    }
}
