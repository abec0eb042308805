//! The inbox: what consumers and producers hand to the redeliverer
//! (rolled-back messages, kicks to restart the clock upkeep), and where the
//! redeliverer sleeps until the next thing it must do.

use crate::batch::{MessageRef, SPAN_NS, round_up_to_span};
use crate::block_pool::{BlockPool, REGISTER_WAKE};
use crate::clock::Clock;
use crate::sync::{Condvar, MODEL, Mutex, lock, wait};
use std::time::Duration;

/// While rollbacks arrive, a busy redeliverer looks at them at most this
/// often (1 ms, in nanoseconds), and at least this often while any is due.
pub(crate) const INBOX_INTERVAL_NS: u64 = 1_000_000;

struct InboxState<T> {
    rolled_back: Vec<MessageRef<T>>,
    /// The earliest due time in `rolled_back` (`u64::MAX` if empty).
    earliest: u64,
    /// When the busy redeliverer, asleep, looks at the inbox next
    /// (nanoseconds); 0 while it is awake or idle.
    wake_at: u64,
    /// The earliest it may look again: its last look plus
    /// [`INBOX_INTERVAL_NS`], so that a stream of rollbacks wakes it at
    /// most once per interval.
    floor: u64,
    /// The redeliverer is idle (no clock upkeep) and waits on `cond`: new
    /// work must notify it. While busy it looks at the inbox every upkeep
    /// interval anyway.
    idle: bool,
    /// Someone restarted the clock upkeep.
    kicked: bool,
    /// The earliest time (nanoseconds) a waiting task asked to be woken at,
    /// `u64::MAX` if none: tasks have no timer, the redeliverer wakes them
    /// (see [`Inbox::wake_tasks_at`]).
    tasks_due: u64,
    /// Advances of the queue's manual clock asked for, the number the
    /// redeliverer saw when it last woke, and the number it has run a
    /// pass after (see [`Inbox::advanced`]).
    advances: u64,
    seen_advances: u64,
    passed_advances: u64,
    stopped: bool,
}

/// What consumers and producers hand to the redeliverer.
pub(crate) struct Inbox<T> {
    state: Mutex<InboxState<T>>,
    cond: Condvar,
    /// Where `ManualClock::advance` waits for the redeliverer's pass.
    passed: Condvar,
}

impl<T> Inbox<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(InboxState {
                rolled_back: Vec::new(),
                earliest: u64::MAX,
                wake_at: 0,
                floor: 0,
                idle: false,
                kicked: false,
                tasks_due: u64::MAX,
                advances: 0,
                seen_advances: 0,
                passed_advances: 0,
                stopped: false,
            }),
            cond: Condvar::new(),
            passed: Condvar::new(),
        }
    }

    /// Hands over a rolled-back message; gives it back if the redeliverer is
    /// stopped (the queue is being torn down).
    pub(crate) fn push_rolled_back(&self, message: MessageRef<T>) -> Result<(), MessageRef<T>> {
        let mut state = lock(&self.state);
        if state.stopped {
            return Err(message);
        }
        // Look one batch span before it is due, so that it is back in the
        // index by then and a parked consumer's own timed wait (on the
        // index's next due time) ends when it falls due. Looking only once
        // it is due would chain two wake-ups (this thread's, then the
        // consumer's) and bring the message back about twice as late.
        let due = round_up_to_span(message.ts).saturating_sub(SPAN_NS);
        state.earliest = state.earliest.min(due);
        state.rolled_back.push(message);
        if state.idle {
            state.idle = false;
            self.cond.notify_one();
        } else {
            // Asleep until later than this message needs: bring the look
            // forward (never closer than the floor to the last one).
            let look = due.max(state.floor);
            if look < state.wake_at {
                state.wake_at = look;
                self.cond.notify_one();
            }
        }
        Ok(())
    }

    /// Holds the lock the redeliverer takes on every wake-up: a test stalls
    /// it (as if it were off the CPU) for as long as it keeps the guard.
    #[cfg(test)]
    pub(crate) fn stall(&self) -> impl Sized + '_ {
        lock(&self.state)
    }

    /// Wakes an idle redeliverer so that it resumes the clock upkeep.
    pub(crate) fn kick(&self) {
        let mut state = lock(&self.state);
        state.kicked = true;
        if state.idle {
            state.idle = false;
            self.cond.notify_one();
        }
    }

    /// Wakes an idle redeliverer: [`REGISTER_WAKE`] new blocks wait in
    /// the block pool. The lock orders this with an idle redeliverer's last
    /// look at that count (in [`Self::sleep`]): either it saw them or it is
    /// waiting by the time this takes the lock.
    pub(crate) fn wake_idle(&self) {
        let mut state = lock(&self.state);
        if state.idle {
            state.idle = false;
            self.cond.notify_one();
        }
    }

    /// Asks the redeliverer to wake the waiting tasks at `due` (nanoseconds
    /// on the queue's clock): a message falls due then, or a task waiting on
    /// a closed queue looks again (feature `async`). Brings its sleep
    /// forward if it would sleep past `due`, as [`Self::push_rolled_back`]
    /// does. The lock orders this with the redeliverer's look at
    /// `tasks_due` before it sleeps: either it sees `due`, or it sleeps by
    /// the time this takes the lock and is notified.
    #[cfg(feature = "async")]
    pub(crate) fn wake_tasks_at(&self, due: u64) {
        let mut state = lock(&self.state);
        if due >= state.tasks_due {
            return;
        }
        state.tasks_due = due;
        if state.idle {
            state.idle = false;
            self.cond.notify_one();
        } else if due < state.wake_at {
            state.wake_at = due;
            self.cond.notify_one();
        }
    }

    /// Whether a time the waiting tasks asked to be woken at has come by
    /// `now`; forgets it if so (the caller wakes them, and those still
    /// waiting ask again).
    #[cfg(feature = "async")]
    pub(crate) fn take_tasks_due(&self, now: u64) -> bool {
        let mut state = lock(&self.state);
        let due = state.tasks_due <= now;
        if due {
            state.tasks_due = u64::MAX;
        }
        due
    }

    /// The queue's manual clock moved: the redeliverer, asleep (without
    /// a timeout, see [`Self::sleep`]), wakes and runs a pass at the new
    /// time. The lock orders this with its look at the clock before it
    /// sleeps: either it read the new time, or it is waiting by the time
    /// this takes the lock. Returns the ticket to wait for with
    /// [`Self::wait_passed`].
    pub(crate) fn advanced(&self) -> u64 {
        let mut state = lock(&self.state);
        state.advances += 1;
        self.cond.notify_one();
        state.advances
    }

    /// Waits until the redeliverer has run its pass after the advance of
    /// `ticket`, or stopped. Not in the loom world, where the model runs
    /// the passes.
    pub(crate) fn wait_passed(&self, ticket: u64) {
        if MODEL {
            return;
        }
        let mut state = lock(&self.state);
        while state.passed_advances < ticket && !state.stopped {
            state = wait(&self.passed, state, None);
        }
    }

    /// Whether rolled-back messages wait.
    pub(crate) fn has_rolled_back(&self) -> bool {
        !lock(&self.state).rolled_back.is_empty()
    }

    /// Takes the rolled-back messages, at `now`.
    pub(crate) fn take(&self, now: u64, rolled_back: &mut Vec<MessageRef<T>>) {
        let mut state = lock(&self.state);
        std::mem::swap(&mut state.rolled_back, rolled_back);
        state.earliest = u64::MAX;
        state.floor = now.saturating_add(INBOX_INTERVAL_NS);
    }

    /// Stops the redeliverer and returns the rolled-back messages still
    /// waiting for it.
    pub(crate) fn stop(&self) -> Vec<MessageRef<T>> {
        let mut state = lock(&self.state);
        state.stopped = true;
        self.cond.notify_all();
        self.passed.notify_all();
        std::mem::take(&mut state.rolled_back)
    }

    /// Sleeps until `until` (nanoseconds on `clock`; `u64::MAX`: forever).
    /// An idle sleep is cut short by new work or a kick; a busy one ends
    /// early when a rolled-back message falls due, but no earlier than the
    /// floor. Either ends when a time waiting tasks asked for comes. Returns `None` once stopped, else whether the redeliverer was
    /// kicked or has work waiting.
    pub(crate) fn sleep(
        &self,
        clock: &Clock,
        blocks: &BlockPool<T>,
        until: u64,
        idle: bool,
    ) -> Option<bool> {
        let mut state = lock(&self.state);
        // Every advance seen when it last woke has had its pass by now.
        if state.passed_advances != state.seen_advances {
            state.passed_advances = state.seen_advances;
            self.passed.notify_all();
        }
        loop {
            if state.stopped {
                return None;
            }
            // An advance asks for a pass at the new time, due or not.
            if state.advances != state.seen_advances {
                state.seen_advances = state.advances;
                state.wake_at = 0;
                return Some(false);
            }
            let woken = std::mem::take(&mut state.kicked)
                || !state.rolled_back.is_empty()
                || blocks.waiting() >= REGISTER_WAKE;
            // Under a manual clock no floor: the clock may not move for a
            // millisecond, or ever.
            let floor = if clock.is_manual() { 0 } else { state.floor };
            let until = if idle {
                until
            } else {
                until.min(state.earliest.max(floor))
            }
            .min(state.tasks_due);
            let now = clock.precise();
            if (idle && woken) || now >= until {
                state.wake_at = 0;
                return Some(woken);
            }
            state.idle = idle;
            state.wake_at = if idle { 0 } else { until };
            // A manual clock's times come by `advance`, which wakes this
            // sleep (`Self::advanced`): no timeout.
            let timeout = (until != u64::MAX && !clock.is_manual())
                .then(|| Duration::from_nanos(until - now));
            state = wait(&self.cond, state, timeout);
            state.idle = false;
        }
    }
}
