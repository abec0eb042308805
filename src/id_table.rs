//! The ids of a block's messages that are not the block's own numbering
//! (`seq << SLOT_BITS | slot`): ids given to `Queue::produce_with_id` or
//! kept through a redrive, and ids of messages restored from a journal.
//!
//! It also holds, for each slot whose message belongs to an ordered group
//! (`groups.rs`), the group key, the link to the group's next message and
//! the group itself.
//!
//! A block has no table until its first such message: a block of plain
//! produces never allocates one, and reading one of its ids costs a load
//! and a null check.

use crate::groups::{Group, SlotAt};
use crate::id::MessageId;
use crate::sync::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// What a slot's entry holds (`Entry::kind`).
const NONE: u64 = 0;
const ID: u64 = 1;
const ID_AND_GROUP: u64 = 2;

/// One slot's id (two halves) and group key, valid as `kind` says. Each is
/// written by the slot's producer alone, with plain stores: no
/// read-modify-write of a word other slots share.
struct Entry {
    id: [AtomicU64; 2],
    group: AtomicU64,
    kind: AtomicU64,
    /// A grouped message: the message after it in its group (`SlotAt`
    /// bits), linked by that message's producer under the group's lock.
    next: AtomicUsize,
    /// A grouped message: its group, set under the group's lock before the
    /// message can be claimed.
    cell: AtomicPtr<Group>,
}

/// The ids of some slots of one block (at most 64).
struct Table {
    entries: Box<[Entry]>,
}

impl Table {
    fn new(len: usize) -> Self {
        debug_assert!(len <= 64);
        Table {
            entries: (0..len)
                .map(|_| Entry {
                    id: [AtomicU64::new(0), AtomicU64::new(0)],
                    group: AtomicU64::new(0),
                    kind: AtomicU64::new(NONE),
                    next: AtomicUsize::new(0),
                    cell: AtomicPtr::new(std::ptr::null_mut()),
                })
                .collect(),
        }
    }

    /// Writes `own` into slot `slot`'s entry. Relaxed (all): published by
    /// the slot's publish (see `IdTable::get`), or by sharing the block.
    fn write(&self, slot: usize, own: Own) {
        let entry = &self.entries[slot];
        let bits = own.id.as_u128();
        entry.id[0].store(bits as u64, Ordering::Relaxed);
        entry.id[1].store((bits >> 64) as u64, Ordering::Relaxed);
        let kind = match own.group {
            Some(key) => {
                entry.group.store(key, Ordering::Relaxed);
                ID_AND_GROUP
            }
            None => ID,
        };
        entry.kind.store(kind, Ordering::Relaxed);
    }
}

/// A message's id of its own, and its group's key if it is in one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Own {
    pub(crate) id: MessageId,
    pub(crate) group: Option<u64>,
}

impl Own {
    /// A grouped message is written blocked: its group decides when it
    /// may be claimed.
    #[inline(always)]
    pub(crate) fn blocked(&self) -> bool {
        self.group.is_some()
    }
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
        for (slot, &own) in ids.iter().enumerate() {
            // The block is not shared yet; sharing it publishes these.
            table.write(slot, own);
        }
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
        let entry = &self.table()?.entries[slot];
        // Relaxed (here and below): ordered by the slot's publish, see above.
        if entry.kind.load(Ordering::Relaxed) == NONE {
            return None;
        }
        let [low, high] = &entry.id;
        let bits = u128::from(high.load(Ordering::Relaxed)) << 64
            | u128::from(low.load(Ordering::Relaxed));
        Some(MessageId::from_bits(bits))
    }

    /// Slot `slot`'s group key, if its message is in a group. Called as
    /// [`Self::get`] is.
    #[inline]
    pub(crate) fn group(&self, slot: usize) -> Option<u64> {
        let entry = &self.table()?.entries[slot];
        // Relaxed (both): ordered by the slot's publish, as in `get`.
        (entry.kind.load(Ordering::Relaxed) == ID_AND_GROUP)
            .then(|| entry.group.load(Ordering::Relaxed))
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
        // No other thread writes this slot's entry (the producer reserved
        // the slot); the slot's publish publishes it.
        table.write(slot, own);
    }

    /// Links `next` behind grouped message `slot` (under its group's lock).
    pub(crate) fn link(&self, slot: usize, next: SlotAt) {
        if let Some(table) = self.table() {
            // Release: pairs with the Acquire in `next`, so a settle that
            // finds the link sees the linked message's entry written.
            table.entries[slot]
                .next
                .store(next.bits(), Ordering::Release);
        }
    }

    /// The message linked behind grouped message `slot`, if any yet.
    pub(crate) fn next(&self, slot: usize) -> SlotAt {
        match self.table() {
            // Acquire: pairs with the Release in `link`.
            Some(table) => SlotAt::from_bits(table.entries[slot].next.load(Ordering::Acquire)),
            None => SlotAt::NONE,
        }
    }

    /// Records grouped message `slot`'s group (under its group's lock).
    pub(crate) fn set_cell(&self, slot: usize, group: &Group) {
        if let Some(table) = self.table() {
            // Relaxed: published with the message's unblock or its link
            // (Release), which whoever settles it later is ordered after.
            table.entries[slot]
                .cell
                .store(group as *const Group as *mut Group, Ordering::Relaxed);
        }
    }

    /// Grouped message `slot`'s group, as a pointer (alive while the
    /// message is its head and not yet gone).
    pub(crate) fn cell(&self, slot: usize) -> *const Group {
        match self.table() {
            // Relaxed: see `set_cell`.
            Some(table) => table.entries[slot].cell.load(Ordering::Relaxed),
            None => std::ptr::null(),
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
