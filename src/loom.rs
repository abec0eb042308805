//! Hooks for the loom models in `loom-tests/` (package `rebound-loom-tests`).
//!
//! Compiled only in the loom world (`--cfg rebound_loom`), hidden from the docs, outside
//! semver. Under that cfg a queue built by the ordinary [`crate::Builder`]
//! spawns no redeliverer thread and reads a mock clock that only
//! [`advance`] moves; a model plays the redeliverer by calling
//! [`Redeliverer::redeliver_due`] where it wants a pass to race. See
//! `docs/verification.md`.

use crate::queue::Queue;
use crate::redelivery;
use std::fmt;
use std::time::Duration;

/// The redeliverer's state, driven one pass at a time by a model.
pub struct Redeliverer<T>(redelivery::Redeliverer<T>);

impl<T: Send + Sync + 'static> Redeliverer<T> {
    /// A redeliverer that has not run yet (it learns the queue's blocks
    /// from the inbox on its first pass, like the thread does).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(redelivery::Redeliverer::new())
    }

    /// One pass, `redeliver_due(shared, now)`, at the queue's mock time:
    /// takes the rolled-back messages, expires the leases that ended, and
    /// puts what is ready back into the index. Returns when the next pass is
    /// needed at the latest (nanoseconds since the queue's origin).
    pub fn redeliver_due(&mut self, queue: &Queue<T>) -> u64 {
        let shared = &queue.shared;
        self.0.redeliver_due(shared, shared.clock.precise())
    }
}

impl<T> fmt::Debug for Redeliverer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redeliverer")
    }
}

/// Moves the queue's mock clock forward by `by`: stores the new reading as
/// the redeliverer's clock upkeep would, ends every timed wait (the
/// caller advances past every deadline it waits for) and, as the
/// redeliverer thread would, wakes the waiting tasks if a time they asked
/// for has come.
pub fn advance<T>(queue: &Queue<T>, by: Duration) {
    let shared = &queue.shared;
    crate::sync::advance(by);
    let _ = shared.clock.refresh(shared.clock.now());
    shared.waiters.fire_timers();
    // Tasks have no timer: the redeliverer thread wakes them (not started
    // in the loom world).
    #[cfg(feature = "async")]
    if shared.inbox.take_tasks_due(shared.clock.precise()) {
        shared.waiters.notify_tasks();
    }
}

/// The queue's mock time, in nanoseconds since its origin.
pub fn now<T>(queue: &Queue<T>) -> u64 {
    queue.shared.clock.precise()
}
