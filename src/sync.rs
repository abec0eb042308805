//! The only file that names the atomics, locks, threads, spin-waits, the
//! epoch and the clock.
//!
//! Everything that decides who owns a message goes through these names, so
//! that under `cfg(rebound_loom)` they become loom's (see
//! `docs/verification.md`) without touching the state machine. The loom half
//! changes nothing in a normal build: there these names are plain std and
//! crossbeam items, and [`seq_cst_accesses`] is empty.

#[cfg(all(rebound_loom, not(feature = "loom")))]
compile_error!(
    "`--cfg rebound_loom` needs rebound's `loom` feature (the rebound-loom-tests crate enables it)"
);

#[cfg(not(rebound_loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(not(rebound_loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(rebound_loom))]
pub(crate) use std::thread;

#[cfg(rebound_loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(rebound_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(rebound_loom)]
pub(crate) use loom::thread;

/// Whether this is the loom world (`cfg(rebound_loom)`): code that is the
/// same in both worlds but sized or started differently reads this constant
/// instead of a `cfg`, so that both worlds compile it (the redeliverer
/// thread is not started in a model, which runs its passes itself; blocks
/// hold 2 messages; nothing spins against the mock clock).
pub(crate) const MODEL: bool = cfg!(rebound_loom);

pub(crate) use std::time::Instant;

/// The clock every timestamp, lease and due time is read from. Under
/// `cfg(rebound_loom)` only the queue's origin is read from it: the queue's
/// [`crate::clock::Clock`] keeps a manually advanced time instead.
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Marks a place where correctness rests on the single total order of
/// SeqCst *accesses* (a SeqCst read-modify-write or store followed by a
/// SeqCst load of another variable: the close protocol and
/// `Waiters::notify_after_publish`). Nothing in a normal build. loom treats
/// SeqCst accesses as AcqRel (loom's README, tokio-rs/loom#180) and would
/// report false lost wake-ups there, so under `cfg(rebound_loom)` this is a
/// SeqCst fence, which loom models and which orders these patterns exactly
/// as the SeqCst accesses do (C++20 [atomics.order] p4; the argument is in
/// docs/verification.md).
#[inline(always)]
pub(crate) fn seq_cst_accesses() {
    #[cfg(rebound_loom)]
    fence(Ordering::SeqCst);
}

/// One pause of a spin loop (a CPU hint); nothing in the loom world, where
/// spinning is not modelled.
#[inline(always)]
pub(crate) fn pause() {
    if !MODEL {
        std::hint::spin_loop();
    }
}

/// Spinning while another thread finishes: crossbeam's `Backoff`, or, under
/// `cfg(rebound_loom)`, a step counter that completes after a few steps and
/// from then on yields to loom on every `snooze` (loom must see a wait that
/// outlasts the bound, such as a producer waiting for the next block). The
/// first steps do not yield on purpose: after a yield loom stops showing a
/// thread the stale values it saw before, which would hide lost wake-ups in
/// `Queue::consume`'s spin-then-park.
#[cfg(not(rebound_loom))]
pub(crate) use crossbeam_utils::Backoff as SpinWait;

#[cfg(rebound_loom)]
#[derive(Debug, Default)]
pub(crate) struct SpinWait {
    step: std::cell::Cell<u32>,
}

#[cfg(rebound_loom)]
impl SpinWait {
    /// Steps before [`Self::is_completed`]: enough to take both branches
    /// (spin again, give up) of every caller.
    const STEPS: u32 = 2;

    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn spin(&self) {
        self.step.set(self.step.get() + 1);
    }

    pub(crate) fn snooze(&self) {
        if self.is_completed() {
            loom::thread::yield_now();
        } else {
            self.step.set(self.step.get() + 1);
        }
    }

    pub(crate) fn is_completed(&self) -> bool {
        self.step.get() >= Self::STEPS
    }
}

/// A lock loom does not see, for bookkeeping that is not state the queue
/// synchronises through (the clock's lag log): std's in both worlds. No
/// loom operation may run while it is held.
pub(crate) use std::sync::Mutex as PlainMutex;

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

/// Waits on `cond` for at most `timeout` (forever with `None`), ignoring poison
/// for the same reason as [`lock`].
#[cfg(not(rebound_loom))]
pub(crate) fn wait<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Option<std::time::Duration>,
) -> MutexGuard<'a, T> {
    match timeout {
        Some(t) => match cond.wait_timeout(guard, t) {
            Ok((g, _)) => g,
            Err(poison) => poison.into_inner().0,
        },
        None => cond
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    }
}

/// A loom condition variable whose timed waits end only when the model fires
/// the timers ([`Condvar::fire_timers`], after advancing the mock clock past
/// every deadline): loom's own `wait_timeout` never times out, and a timed
/// wait that nobody ends is exactly the lost wake-up the models look for.
#[cfg(rebound_loom)]
#[derive(Debug, Default)]
pub(crate) struct Condvar {
    cond: loom::sync::Condvar,
    /// Threads in a timed wait. A std atomic, invisible to loom on purpose
    /// (it is bookkeeping of the model, not of the queue): only touched
    /// under the mutex the waits use, which orders every access.
    timed: std::sync::atomic::AtomicUsize,
}

#[cfg(rebound_loom)]
impl Condvar {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn notify_one(&self) {
        self.cond.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.cond.notify_all();
    }

    /// Ends every timed wait: the mock clock has passed their deadlines.
    /// The caller holds the mutex the waits use.
    pub(crate) fn fire_timers<T>(&self, _held: &MutexGuard<'_, T>) {
        // Relaxed: ordered by the mutex the caller holds.
        if self.timed.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            self.cond.notify_all();
        }
    }
}

#[cfg(rebound_loom)]
pub(crate) fn wait<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Option<std::time::Duration>,
) -> MutexGuard<'a, T> {
    use std::sync::atomic::Ordering::Relaxed;
    let timed = timeout.is_some();
    // Relaxed (both): ordered by the mutex `guard` holds; `wait` gives it
    // back before returning.
    if timed {
        cond.timed.fetch_add(1, Relaxed);
    }
    let guard = cond
        .cond
        .wait(guard)
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if timed {
        cond.timed.fetch_sub(1, Relaxed);
    }
    guard
}

/// The epoch that frees replaced tail blocks and index nodes. Under
/// `cfg(rebound_loom)` there is none: crossbeam-epoch's atomics are invisible
/// to loom, so retired tails are kept until teardown instead (see
/// `Shared::retire_tail`) and the index is a loom-visible model.
#[cfg(not(rebound_loom))]
pub(crate) use crossbeam_epoch::{Guard, pin};

#[cfg(rebound_loom)]
#[derive(Debug)]
pub(crate) struct Guard(());

#[cfg(rebound_loom)]
pub(crate) fn pin() -> Guard {
    Guard(())
}

#[cfg(rebound_loom)]
impl Guard {
    pub(crate) fn flush(&self) {}
}

/// A cell whose accesses are checked by loom under `cfg(rebound_loom)`; here
/// it is `std::cell::UnsafeCell` with closure-scoped access.
#[cfg(not(rebound_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(rebound_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared pointer to the contents.
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a unique pointer to the contents.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(rebound_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// Under `cfg(rebound_loom)`: the time of one queue, in nanoseconds since its
/// origin, moved only by the model. A std atomic, invisible to loom on
/// purpose: time is not shared memory the queue synchronises through, and
/// every reader sees the latest value, like a real monotonic clock.
#[cfg(rebound_loom)]
#[derive(Debug, Default)]
pub(crate) struct MockTime(std::sync::atomic::AtomicU64);

#[cfg(rebound_loom)]
impl MockTime {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn advance(&self, by: u64) -> u64 {
        self.0.fetch_add(by, std::sync::atomic::Ordering::SeqCst) + by
    }
}
