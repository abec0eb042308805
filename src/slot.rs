//! One message: its state word, its timestamp and its payload cell.
//!
//! This is the only file with `unsafe`. The payload cell is written once by
//! the producer that reserved the slot, read through shared references by
//! holders, and taken or dropped once by whoever the state word names as the
//! last one out (see [`crate::state::Release`]).

use crate::state::MessageState;
use crate::sync::{AtomicU64, Ordering, UnsafeCell};
use std::mem::MaybeUninit;

pub(crate) struct Slot<T> {
    /// The message's state word for its whole life.
    pub(crate) state: MessageState,
    /// Produce timestamp, in nanoseconds since the queue's origin. Written
    /// before [`MessageState::publish`], read after seeing `Pending`.
    ts: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: a `Slot` hands `&T` to several threads at once (an expired holder
// and its redelivery can both read the payload), which needs `T: Sync`, and
// moves `T` between threads (written by a producer, dropped by an acker),
// which needs `T: Send`. The state word serialises every write and move.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}
// SAFETY: as above; sending a `Slot` sends its `T`.
unsafe impl<T: Send + Sync> Send for Slot<T> {}

impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: MessageState::new(),
            ts: AtomicU64::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Writes the payload and timestamp, then publishes the slot as pending.
    ///
    /// # Safety
    /// The caller reserved this slot exclusively (its index came from the
    /// block's reservation counter, or the block is not shared yet) and the
    /// slot is `Empty`: nobody else reads or writes the cell.
    pub(crate) unsafe fn write(&self, value: T, ts: u64) {
        // SAFETY: by the contract, this thread is the only one touching the
        // cell, and it is uninitialised, so overwriting loses nothing.
        self.value.with_mut(|cell| unsafe { (*cell).write(value) });
        // Relaxed: published by the Release store in `publish` below.
        self.ts.store(ts, Ordering::Relaxed);
        self.state.publish();
    }

    /// Produce timestamp. Only meaningful after the state word read `Pending`
    /// (Acquire), which orders this load after the producer's store.
    pub(crate) fn ts(&self) -> u64 {
        // Relaxed: ordered by the Acquire load of the state word that the
        // caller did first, which pairs with the Release in `publish`.
        self.ts.load(Ordering::Relaxed)
    }

    /// Borrows the payload.
    ///
    /// # Safety
    /// The caller is counted in the state word's `holders` for as long as the
    /// reference lives. While `holders > 0` nobody takes or drops the payload
    /// ([`crate::state::Release`] only says `Drop`/`DeadLetter` at zero), and
    /// it was initialised before the claim that made the caller a holder.
    pub(crate) unsafe fn payload(&self) -> &T {
        // SAFETY: by the contract the cell is initialised and only shared.
        self.value.with(|cell| unsafe { (*cell).assume_init_ref() })
    }

    /// Moves the payload out.
    ///
    /// # Safety
    /// The caller won the transition that made it the last one out
    /// (`Release::DeadLetter`), or owns the slot outright; the payload is
    /// initialised and nobody else will read it again.
    pub(crate) unsafe fn take(&self) -> T {
        // SAFETY: by the contract this is the one and only read-out.
        self.value
            .with_mut(|cell| unsafe { (*cell).assume_init_read() })
    }

    /// Drops the payload in place.
    ///
    /// # Safety
    /// As for [`Self::take`].
    pub(crate) unsafe fn drop_payload(&self) {
        // SAFETY: by the contract this is the one and only drop.
        self.value
            .with_mut(|cell| unsafe { (*cell).assume_init_drop() });
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        if std::mem::needs_drop::<T>() && self.state.holds_payload() {
            // SAFETY: `&mut self` means no holder, producer or consumer can
            // reach this slot any more, and the state word says the payload
            // is initialised and was never taken.
            unsafe { self.drop_payload() }
        }
    }
}
