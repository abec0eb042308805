//! The only file that names the atomics, locks, threads and clock.
//!
//! Everything that decides who owns a message goes through these names, so
//! the loom half (issue: model-check every race) can swap them for loom's
//! under `cfg(rebound_loom)` without touching the state machine.

pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
};
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
pub(crate) use std::thread;
pub(crate) use std::time::Instant;

/// The clock every timestamp, lease and due time is read from.
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Locks `mutex`, ignoring poison: every critical section in this crate
/// leaves its data consistent before anything that can panic runs, so a
/// poisoned lock holds valid data and must not turn into a lost message.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits on `cond` for at most `timeout` (forever with `None`), ignoring poison
/// for the same reason as [`lock`].
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

/// A cell whose accesses are checked by loom under `cfg(rebound_loom)`; here
/// it is `std::cell::UnsafeCell` with closure-scoped access.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

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
