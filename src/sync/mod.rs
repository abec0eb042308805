//! The loom seam: the only module that names the atomics, locks, threads,
//! spin-waits, the epoch and the clock.
//!
//! Everything that decides who owns a message goes through these names.
//! The world is chosen whole, as tokio's `src/loom/` does: `std.rs` holds
//! the std and crossbeam items of a normal build, `loom.rs` their loom
//! counterparts and loom-visible stand-ins, used under `--cfg rebound_loom`
//! by the models in `loom-tests/` (see `docs/verification.md`). The rest of
//! the crate is compiled the same way in both; where a world is sized or
//! started differently it reads [`MODEL`].

#[cfg(all(rebound_loom, not(feature = "loom")))]
compile_error!(
    "`--cfg rebound_loom` needs rebound's `loom` feature (the rebound-loom-tests crate enables it)"
);

#[cfg(not(rebound_loom))]
#[path = "std.rs"]
mod world;

#[cfg(rebound_loom)]
#[path = "loom.rs"]
mod world;

pub(crate) use world::*;

/// Whether this is the loom world (`cfg(rebound_loom)`): code that is the
/// same in both worlds but sized or started differently reads this constant
/// instead of a `cfg`, so that both worlds compile it (the redeliverer
/// thread is not started in a model, which runs its passes itself; blocks
/// hold 2 messages; nothing spins against the mock clock).
pub(crate) const MODEL: bool = cfg!(rebound_loom);

pub(crate) use std::time::Instant;

/// Marks a place where correctness rests on the single total order of
/// SeqCst *accesses* (a SeqCst read-modify-write or store followed by a
/// SeqCst load of another variable: the close protocol and
/// `Waiters::notify_after_publish`). Nothing in a normal build. loom treats
/// SeqCst accesses as AcqRel (loom's README, tokio-rs/loom#180) and would
/// report false lost wake-ups there, so in the loom world this is a SeqCst
/// fence, which loom models and which orders these patterns exactly as the
/// SeqCst accesses do (C++20 [atomics.order] p4; the argument is in
/// docs/verification.md).
#[inline(always)]
pub(crate) fn seq_cst_accesses() {
    if MODEL {
        fence(Ordering::SeqCst);
    }
}

/// One pause of a spin loop (a CPU hint); nothing in the loom world, where
/// spinning is not modelled.
#[inline(always)]
pub(crate) fn pause() {
    if !MODEL {
        std::hint::spin_loop();
    }
}

/// A lock loom does not see, for bookkeeping that is not state the queue
/// synchronises through (the clock's lag log): std's in both worlds. No
/// loom operation may run while it is held.
pub(crate) use std::sync::Mutex as PlainMutex;

/// A flag loom does not see, for bookkeeping in statics (loom's atomics
/// cannot live in one): which thread owns which counter stripe.
pub(crate) use std::sync::atomic::AtomicBool as PlainAtomicBool;

/// Locks a [`PlainMutex`], ignoring poison as [`lock`] does.
pub(crate) fn lock_plain<T>(mutex: &PlainMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks `mutex`, ignoring poison: every critical section in this crate
/// leaves its data consistent before anything that can panic runs, so a
/// poisoned lock holds valid data and must not turn into a lost message.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Locks `mutex` if nobody holds it, ignoring poison as [`lock`] does.
pub(crate) fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poison)) => Some(poison.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Writing an atomic the caller holds exclusively (`&mut`, so no other
/// thread can reach it), as a block being recycled does to its counters and
/// state words.
pub(crate) trait SetMut<T> {
    /// Sets the value. A plain write in a normal build. In the loom world
    /// a Relaxed store: ordered before other threads' accesses by whatever
    /// hands the value over (a recycled block is published by the index
    /// lock or the tail's Release store), as the plain write is. (Not
    /// loom's `with_mut`: that would also check the write against
    /// consumers' earlier loads made through the loom index's nodes, which
    /// are std `Arc`s invisible to loom, where the skiplist's epoch orders
    /// them in the real program.)
    fn set_mut(&mut self, value: T);
}
