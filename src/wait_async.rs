//! How tasks find a message (feature `async`): the task form of `wait.rs`'s
//! loop. A poll takes a message if one is ready; otherwise it registers the
//! task (`Waiters::register_task`), polls once more with a precise time,
//! asks the redeliverer to wake it at the next due time it knows of, and
//! returns `Pending`. It never spins (the executor's thread is not the
//! task's to burn) and needs no timer.

use crate::clock;
use crate::error::Closed;
use crate::index::NextDue;
use crate::queue::Queue;
use crate::sync::pin;
use crate::wait::{CLOSED_RECHECK, CLOSED_RECHECK_MAX};
use crate::waiters::TaskSleeper;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// How many notifications one poll acts on, finding nothing each time
/// (other consumers took the messages), before it yields to the executor
/// so that the task does not hold its thread while producers keep
/// notifying.
const ROUNDS_PER_POLL: u32 = 4;

/// One waiting task's state between polls: its registration, if any, and
/// how long it waits on a closed queue with messages in flight before it
/// looks again.
pub(crate) struct TaskWait<'a> {
    sleeper: Option<TaskSleeper<'a>>,
    closed_recheck: Duration,
    /// Whether this wait already yielded to the executor once instead of
    /// registering (see [`TaskWait::poll_take`]).
    yielded: bool,
}

impl<'a> TaskWait<'a> {
    pub(crate) fn new() -> Self {
        Self {
            sleeper: None,
            closed_recheck: CLOSED_RECHECK,
            yielded: false,
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
                ready!(sleeper.poll_notified(cx));
                // Notified: unregister (the notification is consumed by the
                // poll below), unless it is time to yield.
                self.sleeper = None;
                rounds += 1;
                if rounds > ROUNDS_PER_POLL {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            if let Ok(taken) = poll(false) {
                self.yielded = false;
                return Poll::Ready(Ok(taken));
            }
            // Found nothing: first yield to the executor once, as a thread
            // spins before it parks. A producer is often a few hundred
            // nanoseconds away (on this executor thread, or another), and
            // registering costs it a notification and the executor a
            // wake-up, often across threads.
            if !self.yielded && !shared.is_closed() {
                self.yielded = true;
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
                    self.yielded = false;
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
