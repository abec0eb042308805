//! A block of slots: where fresh messages are stored, and the unit the
//! skiplist orders, so one skiplist node, one allocation and one id base are
//! shared by up to [`BLOCK_CAPACITY`] messages.

use crate::cursor::Cursor;
use crate::id_table::IdTable;
use crate::shared::Shared;
use crate::slot::Slot;
use crate::state::MAX_TS_OFFSET_US;
use crate::sync::{Arc, AtomicPtr, AtomicUsize, MODEL, Ordering, SetMut};
use crossbeam_utils::CachePadded;

/// Slots per block for immediate messages. 64 amortises the skiplist node,
/// the allocation and the id counter; a delayed message gets a block of one.
/// In the loom world: 2, so that a model with a few messages fills a
/// block and races producers over opening the next one.
pub(crate) const BLOCK_CAPACITY: usize = if MODEL { 2 } else { 64 };
/// Bits of a message id that number the slot within its block.
pub(crate) const SLOT_BITS: u32 = 6;
const _: () = assert!(BLOCK_CAPACITY <= 1 << SLOT_BITS);

/// The key of a block (or a batch) in the index: the timestamp of its
/// first message, then a sequence number unique within the queue (also the
/// high bits of its messages' ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) ts: u64,
    pub(crate) seq: u64,
}

/// Outcome of [`Block::reserve`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reserve {
    /// Slots this caller owns, for writing (possibly empty).
    pub(crate) slots: std::ops::Range<usize>,
    /// What the caller must do about the next block.
    pub(crate) next: Next,
}

/// Whether a reservation reached the end of its block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Every slot asked for was in this block.
    None,
    /// The block is full and this caller is the one that must open the next:
    /// its reservation covered the index one past the last slot, which
    /// exactly one reservation does.
    Open,
    /// The block is full and another producer is opening the next.
    Wait,
}

/// A block of message slots, owned through `Arc`s: its index entry, the
/// open-tail pointer, the redeliverer's watch list, redelivery entries and
/// deliveries each hold one.
///
/// The first delivery of each message does not clone an `Arc`: every slot
/// holds one *prepaid* reference from the moment the block is made or reused
/// ([`prepay`]), and the claim that moves the slot from attempt 0 to 1,
/// which happens once per slot, adopts it ([`adopt_prepaid`]). That moves
/// the reference-count increment from each claim to one batch per block on
/// the producer. Teardown releases the prepaid references of slots never
/// claimed ([`release_prepaid`]). A block whose only reference is the watch
/// list's has therefore no message left to claim or settle.
pub(crate) struct Block<T> {
    /// Consumers: the first slot that may still be claimable. A claim moves
    /// it past its slot with a compare-exchange, which decides who claims
    /// the slot (see `Batch::claim`).
    pub(crate) cursor: Cursor,
    /// Producers: the next slot to hand out.
    reserved: CachePadded<AtomicUsize>,
    /// The queue this block belongs to (counters, redelivery inbox, dead letters).
    pub(crate) shared: Arc<Shared<T>>,
    /// Unique per queue; message ids are `seq << SLOT_BITS | slot`.
    seq: u64,
    /// The timestamp in this block's index key; no message in it has an
    /// earlier one.
    key_ts: u64,
    /// A link of the chain of blocks immediate messages are appended to (as
    /// opposed to the block of one of a delayed message). Chain blocks are
    /// keyed in the order they were opened, and their messages are claimed
    /// in that order.
    chained: bool,
    slots: Box<[Slot<T>]>,
    /// The ids of its messages that are not `seq << SLOT_BITS | slot`:
    /// given to `produce_with_id` or kept by a redrive, or restored from a
    /// journal. Empty (no allocation) for a block of plain produces.
    pub(crate) ids: IdTable,
    /// The next block in the redeliverer's [`Registrations`] stack while
    /// this one waits there.
    ///
    /// [`Registrations`]: crate::block_pool::Registrations
    pub(crate) next_registered: AtomicPtr<Block<T>>,
}

impl<T> Block<T> {
    /// A block of `len` empty slots, keyed `key`, whose first `reserved` are
    /// already owned by the creating thread; its slots hold their prepaid
    /// references.
    pub(crate) fn new(
        shared: Arc<Shared<T>>,
        key: Key,
        len: usize,
        reserved: usize,
        chained: bool,
    ) -> Arc<Self> {
        Self::with_ids(shared, key, len, reserved, chained, IdTable::new())
    }

    /// [`Self::new`], for messages whose ids are `ids` (one per slot).
    pub(crate) fn with_ids(
        shared: Arc<Shared<T>>,
        key: Key,
        len: usize,
        reserved: usize,
        chained: bool,
        ids: IdTable,
    ) -> Arc<Self> {
        let block = Arc::new(Self {
            cursor: Cursor::new(),
            reserved: CachePadded::new(AtomicUsize::new(reserved)),
            shared,
            seq: key.seq,
            key_ts: key.ts,
            chained,
            slots: (0..len).map(|_| Slot::new()).collect(),
            ids,
            next_registered: AtomicPtr::new(std::ptr::null_mut()),
        });
        prepay(&block);
        block
    }

    /// Whether a chain block of this payload is large enough (64 KiB or
    /// more) that a thread hands the epoch each deferred free of one at
    /// once, so that dead blocks do not wait in an idle thread's bag.
    pub(crate) const LARGE: bool = Self::bytes(BLOCK_CAPACITY) >= 64 << 10;

    /// The memory a block of `len` slots takes, in bytes.
    pub(crate) const fn bytes(len: usize) -> usize {
        std::mem::size_of::<Self>() + len * std::mem::size_of::<Slot<T>>()
    }

    /// Makes a dead block (every message final, nobody else referencing it)
    /// a fresh one keyed `key`, whose first `reserved` slots are owned by the
    /// caller: recycling skips an allocation on the producer and a free on
    /// the redeliverer. The caller then gives the slots their prepaid
    /// references ([`prepay`]).
    ///
    /// Everything is reset in place (no new atomics, no new payload cells):
    /// in the loom world the next producer's writes are then checked
    /// against the previous life's accesses, which the caller's
    /// `Arc::get_mut` must order before them.
    pub(crate) fn reset(&mut self, key: Key, reserved: usize) {
        self.cursor.reset();
        self.reserved.set_mut(reserved);
        self.seq = key.seq;
        self.key_ts = key.ts;
        self.ids.reset();
        // No payload to drop: a dead block's payloads were all dropped or
        // moved out by their last holders.
        self.slots.iter_mut().for_each(Slot::reset);
    }

    /// The key this block is (or was) indexed under.
    pub(crate) fn key(&self) -> Key {
        Key {
            ts: self.key_ts,
            seq: self.seq,
        }
    }

    /// The timestamp of a message written now with timestamp `ts` (not
    /// earlier than this block's key), as the offset its state word keeps:
    /// whole microseconds after the key, so rounded down (a due check made
    /// with it is at most 1 us early for a message that was due when it was
    /// produced), and capped at [`MAX_TS_OFFSET_US`] (about 19 hours after
    /// the block was opened; a later message of a slowly filling block gets
    /// an earlier timestamp, never a later one).
    pub(crate) fn ts_offset_us(&self, ts: u64) -> u64 {
        self.us_after_key(ts).min(MAX_TS_OFFSET_US)
    }

    /// Whole microseconds from this block's key to `ts` (0 if earlier).
    pub(crate) fn us_after_key(&self, ts: u64) -> u64 {
        ts.saturating_sub(self.key_ts) / 1_000
    }

    /// The timestamp `us` microseconds after this block's key (a fresh
    /// message's offset in its state word, or a claim's in `ClaimBits`).
    pub(crate) fn ts_after_key(&self, us: u64) -> u64 {
        self.key_ts.saturating_add(us.saturating_mul(1_000))
    }

    /// Whether this block is a link of the chain of immediate messages.
    pub(crate) fn is_chained(&self) -> bool {
        self.chained
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

    /// Hands out up to `count` (at least 1) consecutive slots to write.
    pub(crate) fn reserve(&self, count: usize) -> Reserve {
        let len = self.slots.len();
        // Relaxed: the counter only hands out distinct indices; the slot's
        // contents are published by its own state word.
        let start = self.reserved.fetch_add(count, Ordering::Relaxed);
        let end = start.saturating_add(count);
        let next = if end <= len {
            Next::None
        } else if start <= len {
            Next::Open
        } else {
            Next::Wait
        };
        Reserve {
            slots: start.min(len)..end.min(len),
            next,
        }
    }

    /// How many slots producers have reserved so far (written or not).
    pub(crate) fn reserved(&self) -> usize {
        // Relaxed: a stale count only hides slots reserved after it; a
        // consumer learns of those from the producer's wake-up and polls again.
        self.reserved.load(Ordering::Relaxed).min(self.slots.len())
    }
}

/// Gives every slot of `block` its prepaid reference (see [`Block`]).
/// Called once on a new ([`Block::new`]) or reused block, before it is shared.
pub(crate) fn prepay<T>(block: &Arc<Block<T>>) {
    for _ in 0..block.len() {
        // SAFETY: `block` is a live `Arc`, so the pointer is valid and the
        // count is at least one while it is incremented.
        unsafe { Arc::increment_strong_count(Arc::as_ptr(block)) };
    }
}

/// The prepaid reference of one slot of `block`, as an `Arc`.
///
/// # Safety
/// The caller won the claim that moved that slot from attempt 0 to 1: that
/// happens once per slot, so each prepaid reference is adopted at most once,
/// and it has not been released (only teardown releases them, and only for
/// slots still at attempt 0).
pub(crate) unsafe fn adopt_prepaid<T>(block: &Arc<Block<T>>) -> Arc<Block<T>> {
    // SAFETY: by the contract the count includes a reference nobody else
    // owns, which this `Arc` now owns.
    unsafe { Arc::from_raw(Arc::as_ptr(block)) }
}

/// Releases the prepaid references of the slots of `block` never claimed
/// (still at attempt 0).
///
/// # Safety
/// No claim can happen any more (teardown: no handle is left), and this is
/// called once per block.
pub(crate) unsafe fn release_prepaid<T>(block: &Arc<Block<T>>) {
    let unclaimed = (0..block.len())
        .filter(|&index| block.slot(index).state.load().attempt() == 0)
        .count();
    for _ in 0..unclaimed {
        // SAFETY: each of these slots still holds its prepaid reference (it
        // was never claimed, and by the contract never will be, nor released
        // twice); `block` itself keeps the count above zero.
        unsafe { Arc::decrement_strong_count(Arc::as_ptr(block)) };
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
