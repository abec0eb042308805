//! Waiting consumers, threads and tasks, without a lost wake-up.
//!
//! A consumer that found nothing registers (a thread as a sleeper under the
//! lock, a task as a listener of the task event, feature `async`), then
//! polls once more before it waits; a producer publishes, then checks for
//! waiters. SeqCst fences on both sides make this the classic
//! store-buffering pattern: either the consumer's second poll sees the
//! message, or the producer sees the waiter and notifies it (a thread under
//! the lock, which it only releases by waiting; a task through the event,
//! whose list holds the listener by then).
//!
//! Threads and tasks are counted in one word, [`Waiters::waiting`], so a
//! producer with nobody waiting pays one load, and one with only tasks (or
//! only threads) waiting wakes only those.

use crate::sync::{AtomicU64, Condvar, Mutex, MutexGuard, Ordering, fence, lock, wait};
use std::time::Duration;

/// One waiting task in [`Waiters::waiting`] (the high half; threads count
/// in the low half). Each half holds far more waiters than fit in memory.
#[cfg(feature = "async")]
const TASK: u64 = 1 << 32;
/// The bits of [`Waiters::waiting`] that count threads.
const THREADS: u64 = (1 << 32) - 1;

pub(crate) struct Waiters {
    /// Registered threads (low half) and tasks (high half, in [`TASK`]s).
    waiting: AtomicU64,
    lock: Mutex<()>,
    cond: Condvar,
    /// Where tasks wait (feature `async`).
    #[cfg(feature = "async")]
    tasks: crate::sync::TaskEvent,
}

/// A registered sleeper; dropping it unregisters.
pub(crate) struct Sleeper<'a> {
    waiters: &'a Waiters,
    guard: Option<MutexGuard<'a, ()>>,
}

impl Waiters {
    pub(crate) fn new() -> Self {
        Self {
            waiting: AtomicU64::new(0),
            lock: Mutex::new(()),
            cond: Condvar::new(),
            #[cfg(feature = "async")]
            tasks: crate::sync::TaskEvent::new(),
        }
    }

    /// Registers the caller as a sleeper. Poll once more before [`Sleeper::wait`].
    pub(crate) fn register(&self) -> Sleeper<'_> {
        let guard = lock(&self.lock);
        // SeqCst, then a SeqCst fence: the fence orders this increment before
        // the caller's second poll; pairs with the fence in `notify` and the
        // SeqCst publish before `notify_after_publish`.
        self.waiting.fetch_add(1, Ordering::SeqCst);
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
    ///
    /// With one thread and one task waiting, `all = false` wakes both: each
    /// kind is woken by its own mechanism, and a spurious wake-up only costs
    /// a poll.
    pub(crate) fn notify_after_publish(&self, all: bool) {
        crate::sync::seq_cst_accesses();
        let waiting = self.waiting.load(Ordering::SeqCst);
        if waiting == 0 {
            return;
        }
        if waiting & THREADS != 0 {
            let _guard = lock(&self.lock);
            if all {
                self.cond.notify_all();
            } else {
                self.cond.notify_one();
            }
        }
        #[cfg(feature = "async")]
        if waiting >= TASK {
            self.tasks
                .notify_additional(if all { usize::MAX } else { 1 });
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
        self.waiters.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A task registered as a waiter (feature `async`): a listener of the task
/// event, counted in [`Waiters::waiting`]. Dropping it unregisters, and
/// passes on a notification it received and did not consume (see
/// `Drop for TaskSleeper`).
#[cfg(feature = "async")]
pub(crate) struct TaskSleeper<'a> {
    waiters: &'a Waiters,
    /// `None` once the notification was consumed.
    listener: Option<crate::sync::TaskListener>,
}

#[cfg(feature = "async")]
impl Waiters {
    /// Registers the calling task. Poll once more before
    /// [`TaskSleeper::poll_notified`].
    pub(crate) fn register_task(&self) -> TaskSleeper<'_> {
        // First in the event's list, then counted: a producer that sees the
        // count (below) is ordered after the insertion (its SeqCst load
        // acquires this SeqCst increment), so its notification finds the
        // listener.
        let listener = self.tasks.listen();
        // SeqCst, then a SeqCst fence: as in `register`.
        self.waiting.fetch_add(TASK, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        TaskSleeper {
            waiters: self,
            listener: Some(listener),
        }
    }

    /// Wakes every waiting task, and no thread: a due time a task waits for
    /// has come (the redeliverer calls this, see `Inbox::take_tasks_due`).
    pub(crate) fn notify_tasks(&self) {
        self.tasks.notify_additional(usize::MAX);
    }
}

#[cfg(feature = "async")]
impl TaskSleeper<'_> {
    /// Ready once notified; the notification is then consumed (the caller
    /// polls the queue next), and the task no longer counts as waiting.
    /// Registers `cx`'s waker otherwise.
    pub(crate) fn poll_notified(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let Some(listener) = self.listener.as_mut() else {
            return std::task::Poll::Ready(());
        };
        std::task::ready!(listener.poll_notified(cx));
        self.listener = None;
        std::task::Poll::Ready(())
    }
}

#[cfg(feature = "async")]
impl Drop for TaskSleeper<'_> {
    /// The wake-up hand-off: a task that was notified but lets go without
    /// polling the queue after it (its future was dropped, it lost a
    /// `select!`, it returned `Closed`, or it took a message before it
    /// looked at the notification) passes the notification on to the next
    /// waiting task. The notification may have been the only one for a
    /// message still in the queue, with other tasks waiting for it.
    fn drop(&mut self) {
        if let Some(listener) = self.listener.take() {
            if listener.discard() {
                self.waiters.tasks.notify_additional(1);
            }
        }
        // Relaxed: a late decrement only costs a producer one needless
        // notification.
        self.waiters.waiting.fetch_sub(TASK, Ordering::Relaxed);
    }
}
