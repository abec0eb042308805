//! The ids of a block's messages that are not the block's own numbering
//! (`seq << SLOT_BITS | slot`): ids given to `Queue::produce_with_id` or
//! kept through a redrive, and ids of messages restored from a journal.
//!
//! It also holds the group key of each slot whose message belongs to an
//! ordered group (`group.rs`).
//!
//! A block has no table until its first such message: a block of plain
//! produces never allocates one, and reading one of its ids costs a load
//! and a null check.

use crate::id::MessageId;
use crate::sync::{AtomicPtr, AtomicU64, Ordering};

/// The ids of some slots of one block (at most 64).
struct Table {
    /// Slot `i`'s id, as two halves, valid when bit `i` of `set` is.
    ids: Box<[[AtomicU64; 2]]>,
    set: AtomicU64,
    /// Slot `i`'s group key, valid when bit `i` of `grouped` is.
    groups: Box<[AtomicU64]>,
    grouped: AtomicU64,
}

impl Table {
    fn new(len: usize) -> Self {
        debug_assert!(len <= 64);
        Table {
            ids: (0..len)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            set: AtomicU64::new(0),
            groups: (0..len).map(|_| AtomicU64::new(0)).collect(),
            grouped: AtomicU64::new(0),
        }
    }
}

/// A message's id of its own, and its group's key if it is in one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Own {
    pub(crate) id: MessageId,
    pub(crate) group: Option<u64>,
}

impl From<MessageId> for Own {
    fn from(id: MessageId) -> Self {
        Own { id, group: None }
    }
}

/// A block's own ids, allocated on first use.
pub(crate) struct IdTable {
    /// Null, or a table from `Box::into_raw`, installed once and freed only
    /// through `&mut self`.
    table: AtomicPtr<Table>,
}

impl IdTable {
    pub(crate) fn new() -> Self {
        IdTable {
            table: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// A table holding `ids`, one per slot (a restored block).
    #[cfg(feature = "journal")]
    pub(crate) fn with(ids: &[Own]) -> Self {
        let table = Table::new(ids.len());
        for (slot, own) in ids.iter().enumerate() {
            let bits = own.id.as_u128();
            // Relaxed: the block is not shared yet; sharing it publishes these.
            table.ids[slot][0].store(bits as u64, Ordering::Relaxed);
            table.ids[slot][1].store((bits >> 64) as u64, Ordering::Relaxed);
            if let Some(key) = own.group {
                // Relaxed: as above.
                table.groups[slot].store(key, Ordering::Relaxed);
                table.grouped.fetch_or(1 << slot, Ordering::Relaxed);
            }
        }
        let all = if ids.len() == 64 {
            u64::MAX
        } else {
            (1 << ids.len()) - 1
        };
        // Relaxed: as above.
        table.set.store(all, Ordering::Relaxed);
        IdTable {
            table: AtomicPtr::new(Box::into_raw(Box::new(table))),
        }
    }

    #[inline(always)]
    fn table(&self) -> Option<&Table> {
        // Acquire: pairs with the Release of the compare-exchange in `set`
        // that installed the table, so its initialised fields are visible.
        let table = self.table.load(Ordering::Acquire);
        // SAFETY: `table` is null or came from `Box::into_raw` in `set` or
        // `with`; it is freed only by `reset` or `drop`, which take `&mut
        // self`, so it lives as long as this borrow of `self`.
        unsafe { table.as_ref() }
    }

    /// Whether any slot may have an id of its own (one load: the check
    /// settles make before they look further, out of line).
    #[inline(always)]
    pub(crate) fn any(&self) -> bool {
        // Relaxed: a hint; `get` loads again with Acquire before it reads.
        !self.table.load(Ordering::Relaxed).is_null()
    }

    /// Slot `slot`'s own id, if it has one.
    ///
    /// Called only by threads ordered after the slot's publish (its
    /// producer, or whoever read its state word as published with Acquire),
    /// which is ordered after `set`'s writes: they see them.
    #[inline]
    pub(crate) fn get(&self, slot: usize) -> Option<MessageId> {
        let table = self.table()?;
        // Relaxed (here and below): ordered by the slot's publish, see above.
        if table.set.load(Ordering::Relaxed) & (1 << slot) == 0 {
            return None;
        }
        let [low, high] = &table.ids[slot];
        let bits = u128::from(high.load(Ordering::Relaxed)) << 64
            | u128::from(low.load(Ordering::Relaxed));
        Some(MessageId::from_bits(bits))
    }

    /// Slot `slot`'s group key, if its message is in a group. Called as
    /// [`Self::get`] is.
    #[inline]
    pub(crate) fn group(&self, slot: usize) -> Option<u64> {
        let table = self.table()?;
        // Relaxed (both): ordered by the slot's publish, as in `get`.
        (table.grouped.load(Ordering::Relaxed) & (1 << slot) != 0)
            .then(|| table.groups[slot].load(Ordering::Relaxed))
    }

    /// Gives slot `slot` (of a block of `len`) the id and group of `own`.
    /// Called by the slot's producer, before it publishes the slot.
    pub(crate) fn set(&self, len: usize, slot: usize, own: Own) {
        let table = loop {
            if let Some(table) = self.table() {
                break table;
            }
            let new = Box::into_raw(Box::new(Table::new(len)));
            // AcqRel: Release publishes the new table's fields to `table()`;
            // Acquire (on failure) pairs with the Release of the producer
            // whose table won. Either way the next look finds a table.
            if self
                .table
                .compare_exchange(
                    std::ptr::null_mut(),
                    new,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                // SAFETY: `new` came from `Box::into_raw` above and was
                // never shared (the exchange failed).
                drop(unsafe { Box::from_raw(new) });
            }
        };
        let bits = own.id.as_u128();
        let [low, high] = &table.ids[slot];
        // Relaxed: published by the slot's publish (see `get`); no other
        // thread writes this slot's entry (the producer reserved the slot).
        low.store(bits as u64, Ordering::Relaxed);
        high.store((bits >> 64) as u64, Ordering::Relaxed);
        // Relaxed: as above; `fetch_or` keeps the other slots' bits.
        table.set.fetch_or(1 << slot, Ordering::Relaxed);
        if let Some(key) = own.group {
            // Relaxed: as above.
            table.groups[slot].store(key, Ordering::Relaxed);
            table.grouped.fetch_or(1 << slot, Ordering::Relaxed);
        }
    }

    /// Forgets every id: the block is being reused (`&mut`: nobody else
    /// can reach it).
    pub(crate) fn reset(&mut self) {
        // Relaxed: `&mut self`, so no other thread can reach the pointer;
        // whatever handed this thread the `&mut` ordered their accesses first.
        let table = self.table.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if !table.is_null() {
            // SAFETY: from `Box::into_raw`, and no other reference exists
            // (`&mut self`); the pointer was just replaced, so it is freed once.
            drop(unsafe { Box::from_raw(table) });
        }
    }
}

impl Drop for IdTable {
    fn drop(&mut self) {
        self.reset();
    }
}
