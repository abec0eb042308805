//! The producers' chain: the open tail block immediate messages are
//! appended to, in order, and the blocks opened as it fills.

use crate::batch::Batch;
use crate::block::{BLOCK_CAPACITY, Block, Key, Next, Reserve};
use crate::error::ProduceError;
use crate::groups::SlotAt;
use crate::id::MessageId;
use crate::id_table::Own;
use crate::shared::Shared;
use crate::sync::{Arc, Guard, Ordering, SpinWait, pin};

impl<T: Send + Sync + 'static> Shared<T> {
    /// `due`: `None` for an immediate message; else its due time and a
    /// precise reading of the clock taken for it.
    /// Gives the value back if the queue is closed (or, journaled, if its
    /// record cannot be written).
    pub(crate) fn produce_one(
        this: &Arc<Self>,
        value: T,
        due: Option<(u64, u64)>,
    ) -> Result<MessageId, ProduceError<T>> {
        Self::produce_with(this, value, due, Minted)
    }

    /// [`Self::produce_one`], for a message whose id is `own` if given
    /// (taken in the dedup map by the caller) rather than a minted one.
    #[inline(always)]
    pub(crate) fn produce_with(
        this: &Arc<Self>,
        value: T,
        due: Option<(u64, u64)>,
        own: impl OwnId,
    ) -> Result<MessageId, ProduceError<T>> {
        let shared = this;
        #[cfg(feature = "journal")]
        if shared.journal.is_some() {
            let mut own = own;
            return Shared::produce_journaled_cold(this, value, due, own.take().map(|o| o.id));
        }
        if !shared.admit(1) {
            return Err(ProduceError::Closed(value));
        }
        let now_ns = shared.recent_ns();
        // Not an `Option`: see `MessageId::new` on store-to-load forwarding.
        let mut id = MessageId::PLACEHOLDER;
        let mut set = |i| id = i;
        match due {
            Some((due, now)) if due > now => {
                Shared::new_block(
                    shared,
                    &mut std::iter::once(value),
                    1,
                    due,
                    1,
                    false,
                    own,
                    &mut set,
                );
                // A sleeper may need a shorter timeout.
                shared.waiters.notify(true);
            }
            _ => {
                // A due time already passed makes an immediate message,
                // stamped as `produce` stamps: the stamps of one producer's
                // immediate messages then follow the order they are
                // claimed in.
                Shared::push_fresh(shared, std::iter::once(value), now_ns, own, set);
                shared.waiters.notify_after_publish(false);
            }
        }
        // Both paths above call `set` exactly once.
        debug_assert_ne!(
            id,
            MessageId::PLACEHOLDER,
            "every produced message gets an id"
        );
        Ok(id)
    }

    /// Opens the first tail: an empty block keyed at the queue's origin,
    /// in the index and registered. Called once, before the queue is shared.
    pub(crate) fn open_first_block(this: &Arc<Self>) {
        let key = Key {
            ts: 0,
            seq: this.next_seq(),
        };
        let block = Block::new(Arc::clone(this), key, BLOCK_CAPACITY, 0, true);
        this.index.insert(key, Batch::Fresh(Arc::clone(&block)));
        this.register(Arc::clone(&block));
        // Release: pairs with the Acquire load in `push_fresh`.
        this.tail
            .store(Arc::into_raw(block).cast_mut(), Ordering::Release);
    }

    /// Appends immediate messages to the open block, in order, opening new
    /// blocks as they fill; `id` is called with each message's id. The
    /// first message's id is `own` if given (a produce with an id).
    pub(crate) fn push_fresh(
        this: &Arc<Self>,
        mut values: impl ExactSizeIterator<Item = T>,
        ts: u64,
        mut own: impl OwnId,
        mut id: impl FnMut(MessageId),
    ) {
        let guard = pin();
        let spin = SpinWait::new();
        while values.len() > 0 {
            // Acquire: pairs with the Release store in `open_block`, so the
            // new block's fields are initialised.
            let tail_ptr = this.tail.load(Ordering::Acquire);
            // SAFETY: `tail` always holds a strong reference made by
            // `Arc::into_raw` (it is only nulled at teardown, when no handle,
            // hence no producer, is left). A replaced tail's reference is
            // released through `guard.defer_unchecked`, which runs only after
            // every thread pinned before the replacement, this one included,
            // has unpinned (in the loom world, the stand-in in
            // `sync::loom_epoch` guarantees the same).
            // So the block outlives this borrow.
            let tail = unsafe { &*tail_ptr };
            // Never earlier than the block's key (see `open_block`).
            let ts = ts.max(tail.key().ts);
            let Reserve { slots, next } = tail.reserve(values.len());
            // `reserve` hands out at most `values.len()` slots, so every
            // reserved slot gets a value.
            let mut blocked = usize::MAX;
            if !slots.is_empty() {
                if let Some(own) = own.take() {
                    // Before the publish, which publishes it too.
                    tail.ids.set(tail.len(), slots.start, own);
                    if own.blocked() {
                        blocked = slots.start;
                    }
                }
            }
            for (index, value) in slots.zip(&mut values) {
                let offset = tail.ts_offset_us(ts);
                if index == blocked {
                    // SAFETY: as below.
                    unsafe { tail.slot(index).write_blocked(value, offset) };
                    own.placed(SlotAt::new(tail, index));
                } else {
                    // SAFETY: `reserve` handed this index to this thread
                    // only, and a fresh slot is `Empty`.
                    unsafe { tail.slot(index).write(value, offset) };
                }
                id(this.message_id(tail, index));
            }
            match next {
                Next::None => {}
                Next::Open => {
                    Self::open_block(this, &mut values, ts, tail_ptr, &guard, &mut own, &mut id);
                }
                // Another producer is opening the next block.
                Next::Wait => spin.snooze(),
            }
        }
    }

    /// Opens a new tail block holding the next values (as many as fit) and
    /// retires `old`. `ts` is not earlier than `old`'s key: chain keys
    /// follow the order blocks are opened in, even when producers' clock
    /// reads and reservations interleave differently.
    fn open_block(
        this: &Arc<Self>,
        values: &mut impl ExactSizeIterator<Item = T>,
        ts: u64,
        old: *const Block<T>,
        guard: &Guard,
        own: impl OwnId,
        id: &mut impl FnMut(MessageId),
    ) {
        let count = values.len().min(BLOCK_CAPACITY);
        // Once per block: a fresh reading for the clock (see `clock`) and
        // for the timestamps of the messages going into this block.
        let ts = ts.max(this.clock.refresh_from_traffic());
        let block = Self::new_block(this, values, count, ts, BLOCK_CAPACITY, true, own, id);
        // Release: pairs with the Acquire load in `push_fresh`.
        this.tail
            .store(Arc::into_raw(block).cast_mut(), Ordering::Release);
        this.retire_tail(old, guard);
    }

    /// Releases the strong reference the replaced tail `old` held, once no
    /// producer can be using it.
    fn retire_tail(&self, old: *const Block<T>, guard: &Guard) {
        let old = RetiredTail(old);
        // SAFETY: `old` is the strong reference `tail` held until the store
        // in `open_block`; only this thread (whose reservation covered the
        // index one past its last slot) retires it, once. Producers still
        // using it are pinned, and the epoch runs this after they unpin.
        // Dropping an `Arc<Block<T>>` on another thread is fine: `Block<T>`
        // is `Send + Sync` for `T: Send + Sync`.
        unsafe { guard.defer_unchecked(move || old.release()) };
        // Large blocks: hand the deferred release to the epoch's global
        // queue now, rather than let it wait in this thread's bag (up to 64
        // deferred calls) for as long as this thread does not pin again.
        if Block::<T>::LARGE {
            guard.flush();
        }
    }

    /// A block of `len` slots keyed at `ts`, holding the next `count` values
    /// (`count <= len`, and `values` has that many) stamped `ts`, in the
    /// index and registered with the redeliverer; the first one's id is
    /// `own` if given.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_block(
        this: &Arc<Self>,
        values: &mut impl Iterator<Item = T>,
        count: usize,
        ts: u64,
        len: usize,
        chained: bool,
        mut own: impl OwnId,
        id: &mut impl FnMut(MessageId),
    ) -> Arc<Block<T>> {
        let key = Key {
            ts,
            seq: this.next_seq(),
        };
        let spare = if chained {
            this.blocks.recycled(key, count)
        } else {
            None
        };
        let block = spare.unwrap_or_else(|| Block::new(Arc::clone(this), key, len, count, chained));
        let mut blocked = false;
        if count > 0 {
            if let Some(own) = own.take() {
                block.ids.set(block.len(), 0, own);
                blocked = own.blocked();
            }
        }
        for (index, value) in values.take(count).enumerate() {
            // The block is not shared yet, and its first `count` slots were
            // reserved for its creator by `Block::new`. Their timestamp is
            // the block's key: offset 0.
            if index == 0 && blocked {
                // SAFETY: as said above.
                unsafe { block.slot(index).write_blocked(value, 0) };
                own.placed(SlotAt::new(&block, index));
            } else {
                // SAFETY: as said above.
                unsafe { block.slot(index).write(value, 0) };
            }
            id(this.message_id(&block, index));
        }
        // The one `Fresh` entry of this life of the block: its cursor is
        // what makes the first claim of each slot exclusive
        // (`MessageState::claim_fresh` writes the word with a store), so a
        // block must never be in the index twice.
        this.index.insert(key, Batch::Fresh(Arc::clone(&block)));
        this.register(Arc::clone(&block));
        block
    }
}

/// Where the id of the first message being produced comes from: minted
/// by the queue ([`Minted`], which compiles to nothing), or one of its own
/// (`Some(id)`, from `produce_with_id` or a redrive; `Some(Own)`, a
/// grouped message's, with its group).
pub(crate) trait OwnId {
    /// The own id, the first time; `None` after, or if there is none.
    fn take(&mut self) -> Option<Own>;

    /// Where the first message was written, if it was written blocked
    /// (see [`Own::blocked`]).
    #[inline(always)]
    fn placed(&mut self, _at: SlotAt) {}
}

/// Every id minted: `produce` and its kin.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Minted;

impl OwnId for Minted {
    #[inline(always)]
    fn take(&mut self) -> Option<Own> {
        None
    }
}

impl OwnId for Option<MessageId> {
    #[inline(always)]
    fn take(&mut self) -> Option<Own> {
        Option::take(self).map(Own::from)
    }
}

impl OwnId for Option<Own> {
    #[inline(always)]
    fn take(&mut self) -> Option<Own> {
        Option::take(self)
    }
}

/// A retired tail reference waiting for its epoch.
struct RetiredTail<T>(*const Block<T>);

impl<T> RetiredTail<T> {
    fn release(self) {
        // SAFETY: the pointer came from `Arc::into_raw` and is released once
        // (see `open_block`).
        drop(unsafe { Arc::from_raw(self.0) });
    }
}

impl<T> Shared<T> {
    /// Teardown: releases the tail's reference.
    pub(crate) fn release_tail(&self) {
        // Relaxed: no other thread can reach `tail` any more (no handle is
        // left).
        let tail = self.tail.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if !tail.is_null() {
            RetiredTail(tail.cast_const()).release();
        }
    }
}

/// A grouped message's id, group and place: written blocked (it is linked
/// into its group before it may be claimed), its place kept for the link.
pub(crate) struct Grouped {
    pub(crate) own: Option<Own>,
    pub(crate) at: SlotAt,
}

impl<O: OwnId> OwnId for &mut O {
    #[inline(always)]
    fn take(&mut self) -> Option<Own> {
        (**self).take()
    }

    #[inline(always)]
    fn placed(&mut self, at: SlotAt) {
        (**self).placed(at);
    }
}

impl OwnId for Grouped {
    #[inline(always)]
    fn take(&mut self) -> Option<Own> {
        self.own.take()
    }

    #[inline(always)]
    fn placed(&mut self, at: SlotAt) {
        self.at = at;
    }
}
