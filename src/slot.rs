//! One message: its state word (which also holds a fresh message's
//! timestamp) and its payload cell.
//!
//! Its `unsafe` methods are the only access to the payload. The cell is written once by
//! the producer that reserved the slot, read through shared references by
//! holders, and taken or dropped once by whoever the state word names as the
//! last one out (see [`crate::state::PayloadFate`]).

use crate::state::MessageState;
use crate::sync::UnsafeCell;
use std::mem::MaybeUninit;

pub(crate) struct Slot<T> {
    /// The message's state word for its whole life.
    pub(crate) state: MessageState,
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
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Makes the slot of a dead block fresh again, in place: its word back
    /// to `Empty`, its payload cell kept (it holds no payload: the last
    /// holder dropped or took it). Keeping the cell is what lets loom check
    /// the next producer's write against the last holder's accesses.
    pub(crate) fn reset(&mut self) {
        self.state.reset();
    }

    /// Writes the payload, then publishes the slot as pending with its
    /// timestamp, `ts_offset_us` microseconds after its block's key.
    ///
    /// # Safety
    /// The caller reserved this slot exclusively (its index came from the
    /// block's reservation counter, or the block is not shared yet) and the
    /// slot is `Empty`: nobody else reads or writes the cell.
    pub(crate) unsafe fn write(&self, value: T, ts_offset_us: u64) {
        // SAFETY: by the contract, this thread is the only one touching the
        // cell, and it is uninitialised, so overwriting loses nothing.
        self.value.with_mut(|cell| unsafe { (*cell).write(value) });
        self.state.publish(ts_offset_us);
    }

    /// [`Self::write`], for a message that waits behind its group's head:
    /// published `Blocked`.
    ///
    /// # Safety
    /// As for [`Self::write`].
    pub(crate) unsafe fn write_blocked(&self, value: T, ts_offset_us: u64) {
        // SAFETY: as in `write`.
        self.value.with_mut(|cell| unsafe { (*cell).write(value) });
        self.state.publish_blocked(ts_offset_us);
    }

    /// Borrows the payload.
    ///
    /// # Safety
    /// The caller is counted in the state word's `holders` for as long as the
    /// reference lives. While `holders > 0` nobody takes or drops the payload
    /// ([`crate::state::PayloadFate`] only says `Drop`/`DeadLetter` at zero), and
    /// it was initialised before the claim that made the caller a holder.
    pub(crate) unsafe fn payload(&self) -> &T {
        // SAFETY: by the contract the cell is initialised and only shared.
        self.value.with(|cell| unsafe { (*cell).assume_init_ref() })
    }

    /// Moves the payload out.
    ///
    /// # Safety
    /// The caller won the transition that made it the last one out
    /// (`Fate::DeadLetter`), or owns the slot outright; the payload is
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
