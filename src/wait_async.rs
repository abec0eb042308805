//! How tasks find a message (feature `async`): the task form of `wait.rs`'s
//! loop. A poll takes a message if one is ready; otherwise it registers the
//! task (`Waiters::register_task`), polls once more with a precise time,
//! asks the redeliverer to wake it at the next due time it knows of, and
//! returns `Pending`. Before it registers it yields to the executor a few
//! times (the task form of a thread's spin), and it needs no timer.

use crate::clock;
use crate::error::Closed;
use crate::index::NextDue;
use crate::queue::Queue;
use crate::sync::{MODEL, pin};
use crate::wait::{CLOSED_RECHECK, CLOSED_RECHECK_MAX};
use crate::waiters::TaskSleeper;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// How many notifications one poll acts on, finding nothing each time
/// (other consumers took the messages), before it yields to the executor
/// (registered) so that the task does not hold its thread while producers
/// keep notifying.
const ROUNDS_PER_POLL: u32 = 4;

/// How many times a task that finds nothing yields to the executor before
/// it registers, per message.
const YIELDS_BEFORE_REGISTER: u32 = 4;

/// One waiting task's state between polls: its registration, if any, and
/// how long it waits on a closed queue with messages in flight before it
/// looks again.
pub(crate) struct TaskWait<'a> {
    sleeper: Option<TaskSleeper<'a>>,
    closed_recheck: Duration,
    /// How many more times this wait yields to the executor instead of
    /// registering (see [`TaskWait::poll_take`]).
    yields_left: u32,
}

impl<'a> TaskWait<'a> {
    pub(crate) fn new() -> Self {
        Self {
            sleeper: None,
            closed_recheck: CLOSED_RECHECK,
            yields_left: YIELDS_BEFORE_REGISTER,
        }
    }

    /// Polls with `poll` until it takes something (`Ready(Ok)`), the queue
    /// is closed and drained (`Ready(Err)`), or the task must wait
    /// (`Pending`, registered, with `cx`'s waker).
    ///
    /// Cancel safe: a message is claimed only by the `poll` whose result is
    /// returned, so dropping `self` between polls claims nothing; dropping
    /// it while registered passes on a notification it did not act on
    /// (`Drop for TaskSleeper`).
    pub(crate) fn poll_take<T: Send + Sync + 'static, R>(
        &mut self,
        cx: &mut Context<'_>,
        queue: &'a Queue<T>,
        poll: impl Fn(bool) -> Result<R, NextDue>,
    ) -> Poll<Result<R, Closed>> {
        let shared = &queue.shared;
        let mut rounds = 0;
        loop {
            if let Some(sleeper) = self.sleeper.as_mut() {
                // Time to yield: still registered, so a notification that
                // came meanwhile is either taken at the next poll or, if
                // this wait is dropped first, passed on.
                if rounds == ROUNDS_PER_POLL {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                ready!(sleeper.poll_notified(cx));
                // Notified: unregister. The notification is consumed, so the
                // queue is polled below before this poll returns (with a
                // precise reading, and again after registering). (Never the yields
                // below in between: they were used up before this wait
                // first registered.)
                self.sleeper = None;
                rounds += 1;
            }
            // A recent reading first, then a precise one, as `try_consume`
            // does: a block opened since this thread's recent reading is
            // stamped later than it.
            if let Ok(taken) = poll(false).or_else(|_| poll(true)) {
                self.yields_left = YIELDS_BEFORE_REGISTER;
                return Poll::Ready(Ok(taken));
            }
            // Found nothing: while the queue is open, first yield to the
            // executor (wake this task and return `Pending`) a few times,
            // as a thread spins before it parks: a producer is often a few
            // hundred nanoseconds away, and a registered consumer costs it
            // a notification and the executor a wake-up, across threads a
            // futex wake. Counted, not timed: an executor may poll a task
            // that woke itself again at once (tokio's LIFO slot), before
            // the producer beside it runs. (None in the loom world.)
            if self.yields_left > 0 && !MODEL && !shared.is_closed() {
                self.yields_left -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // As a thread does before it parks: hand the frees this thread
            // deferred to the epoch's global queue.
            pin().flush();
            // Register, then poll again with a precise time: see `Waiters`.
            let sleeper = shared.waiters.register_task();
            let next_due = match poll(true) {
                Ok(taken) => {
                    self.yields_left = YIELDS_BEFORE_REGISTER;
                    return Poll::Ready(Ok(taken));
                }
                Err(next_due) => next_due,
            };
            if queue.drained() {
                return Poll::Ready(Err(Closed));
            }
            // No timer: the redeliverer wakes the waiting tasks at the next
            // due time, and, on a closed queue with messages in flight, when
            // it is time to look again (a settle that raced with `close`
            // wakes nobody, see `Shared::count_settle`).
            let mut wake = next_due.get();
            if shared.is_closed() {
                let recheck = clock::add(shared.clock.precise(), self.closed_recheck);
                wake = Some(wake.map_or(recheck, |w| w.min(recheck)));
                self.closed_recheck = (self.closed_recheck * 2).min(CLOSED_RECHECK_MAX);
            }
            if let Some(due) = wake {
                shared.inbox.wake_tasks_at(due);
            }
            self.sleeper = Some(sleeper);
        }
    }
}
