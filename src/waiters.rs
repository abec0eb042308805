//! Parking for blocked consumers, without a lost wake-up.
//!
//! A consumer that found nothing registers as a sleeper under the lock, then
//! polls once more before it waits; a producer publishes, then checks for
//! sleepers. SeqCst fences on both sides make this the classic
//! store-buffering pattern: either the consumer's second poll sees the
//! message, or the producer sees the sleeper and notifies under the lock,
//! which the consumer only releases by waiting.

use crate::sync::{AtomicUsize, Condvar, Mutex, MutexGuard, Ordering, fence, lock, wait};
use std::time::Duration;

pub(crate) struct Waiters {
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cond: Condvar,
}

/// A registered sleeper; dropping it unregisters.
pub(crate) struct Sleeper<'a> {
    waiters: &'a Waiters,
    guard: Option<MutexGuard<'a, ()>>,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Self {
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    /// Registers the caller as a sleeper. Poll once more before [`Sleeper::wait`].
    pub(crate) fn register(&self) -> Sleeper<'_> {
        let guard = lock(&self.lock);
        // SeqCst, then a SeqCst fence: the fence orders this increment before
        // the caller's second poll; pairs with the fence in `notify` and the
        // SeqCst publish before `notify_after_publish`.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Sleeper {
            waiters: self,
            guard: Some(guard),
        }
    }

    /// Wakes one sleeper (`all = false`) or every sleeper, if any. Call after
    /// publishing what the sleepers wait for.
    pub(crate) fn notify(&self, all: bool) {
        // SeqCst fence: orders the caller's publish before the load below;
        // pairs with the fence in `register`.
        fence(Ordering::SeqCst);
        self.notify_after_publish(all);
    }

    /// [`Self::notify`] for a caller whose publish was a SeqCst
    /// read-modify-write (`MessageState::publish`): the SeqCst load below is
    /// ordered after it in the single total order, and the fence in
    /// `register` orders the sleeper's second poll after its increment, so
    /// either the poll sees the message or this load sees the sleeper.
    pub(crate) fn notify_after_publish(&self, all: bool) {
        crate::sync::seq_cst_accesses();
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        let _guard = lock(&self.lock);
        if all {
            self.cond.notify_all();
        } else {
            self.cond.notify_one();
        }
    }
}

#[cfg(rebound_loom)]
impl Waiters {
    /// In the loom world: the mock clock passed every deadline, so
    /// every timed wait ends (see `sync::Condvar`).
    pub(crate) fn fire_timers(&self) {
        let held = lock(&self.lock);
        self.cond.fire_timers(&held);
    }
}

impl Sleeper<'_> {
    /// Waits for a notification, at most `timeout` (forever with `None`).
    /// Spurious wake-ups happen; the caller polls again either way.
    pub(crate) fn wait(mut self, timeout: Option<Duration>) {
        if let Some(guard) = self.guard.take() {
            drop(wait(&self.waiters.cond, guard, timeout));
        }
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        // Relaxed: a late decrement only costs a producer one needless lock.
        self.waiters.sleepers.fetch_sub(1, Ordering::Relaxed);
    }
}
