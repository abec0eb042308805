//! How consumers find a message: one poll of the index, and the loop that
//! spins, parks and polls again until one is ready, the queue is closed and
//! drained, a deadline passes or a stop flag is set.

use crate::block::BLOCK_CAPACITY;
use crate::delivery::Delivery;
use crate::error::{ConsumeTimeoutError, TryConsumeError};
use crate::index::{NextDue, Poll};
use crate::queue::Queue;
use crate::stats::Counter;
use crate::sync::{AtomicBool, Instant, MODEL, Ordering, SpinWait, now, pin};
use std::time::Duration;

/// How long a consumer blocked on a closed queue with messages still in
/// flight parks at most before it looks again (see `Shared::count_settle`),
/// the first time; the interval doubles each time it parks again, up to
/// [`CLOSED_RECHECK_MAX`], so that a consumer waiting out a long handler
/// does not wake a thousand times a second.
pub(crate) const CLOSED_RECHECK: Duration = Duration::from_millis(1);
/// The longest interval between two such looks.
pub(crate) const CLOSED_RECHECK_MAX: Duration = Duration::from_millis(64);

/// How long a consumer that found nothing keeps polling (yielding the CPU
/// in between) before it parks. Parking is expensive for the producer that
/// must then wake it (a futex wake, a slow one when the consumer's idle
/// CPU has to be woken too), and a short gap in the traffic is common: a
/// consumer that parks at every short gap costs its producer a wake-up each
/// time, and a wake-up can delay the messages behind it by milliseconds.
/// Zero in the loom world, whose
/// mock clock does not move by itself.
const SPIN_BEFORE_PARK: Duration = if MODEL {
    Duration::ZERO
} else {
    Duration::from_micros(50)
};

impl<T: Send + Sync + 'static> Queue<T> {
    /// Claims the earliest ready message as of a recent time, or, with
    /// `precise`, as of a fresh clock reading. `Err` carries the earliest
    /// known future due time. (Two words, returned in registers.)
    #[inline]
    pub(crate) fn poll(&self, precise: bool) -> Result<Delivery<T>, NextDue> {
        let shared = &self.shared;
        let spin = SpinWait::new();
        loop {
            let now_ns = self.poll_time(precise);
            let deadline = shared.claim_deadline(now_ns, precise);
            match shared.index.claim(now_ns, deadline) {
                Poll::Claimed(claimed) => return Ok(Delivery::new(claimed)),
                // A slot still being written holds up the chain: wait for
                // it (see `index::Walk::finish`), then walk again with a
                // fresh time and deadline.
                Poll::Empty { next_due } if next_due.is_busy() => spin.snooze(),
                Poll::Empty { next_due } => return Err(next_due),
            }
        }
    }

    /// [`Self::poll`] for up to `max` messages; `Err` if it claimed none.
    #[inline]
    pub(crate) fn poll_many(&self, precise: bool, max: usize) -> Result<Vec<Delivery<T>>, NextDue> {
        let shared = &self.shared;
        let spin = SpinWait::new();
        let mut claimed = Vec::with_capacity(max.min(BLOCK_CAPACITY));
        loop {
            let now_ns = self.poll_time(precise);
            let deadline = shared.claim_deadline(now_ns, precise);
            let next_due = shared.index.claim_many(now_ns, deadline, max, &mut claimed);
            if !claimed.is_empty() || max == 0 {
                break;
            }
            // As in `poll`.
            if !next_due.is_busy() {
                return Err(next_due);
            }
            spin.snooze();
        }
        Ok(claimed.into_iter().map(Delivery::new).collect())
    }

    #[inline]
    pub(crate) fn poll_time(&self, precise: bool) -> u64 {
        if precise {
            self.shared.clock.precise()
        } else {
            self.shared.recent_ns()
        }
    }

    pub(crate) fn drained(&self) -> bool {
        self.shared.is_closed() && {
            // `closed`, then the counters (all SeqCst): see `close`.
            crate::sync::seq_cst_accesses();
            let outstanding = self.shared.counters.outstanding();
            outstanding == 0 || (self.shared.skips_delayed() && self.only_delayed_left(outstanding))
        }
    }

    /// After [`Self::close_due`]: whether every message not yet settled
    /// (`outstanding`, read before) is pending and not due. A walk of the
    /// index, so this is asked only once the queue is closed that way. A
    /// message settled during the walk can only make this false (look
    /// again later); one put back into the index during the walk could be
    /// counted twice (its old entry, then its new one), so a walk during
    /// which the redelivery counter moved says false too (the counter is
    /// statistics: a put-back it does not show yet can still be counted
    /// twice, a narrow race that at worst lets consumers stop while a
    /// message comes back ready; it stays in the queue, never lost).
    fn only_delayed_left(&self, outstanding: u64) -> bool {
        let counters = &self.shared.counters;
        let put_back = counters.get(Counter::Redelivered);
        let pending = self.shared.index.count_pending(self.shared.clock.precise());
        pending.ready == 0
            && pending.delayed >= outstanding
            && counters.get(Counter::Redelivered) == put_back
    }

    #[inline]
    pub(crate) fn try_take<R>(
        &self,
        poll: impl Fn(bool) -> Result<R, NextDue>,
    ) -> Result<R, TryConsumeError> {
        match poll(false).or_else(|_| poll(true)) {
            Ok(taken) => Ok(taken),
            Err(_) if self.drained() => Err(TryConsumeError::Closed),
            Err(_) => Err(TryConsumeError::Empty),
        }
    }

    /// Polls with `poll` until it takes something, parking in between, until
    /// `deadline` (forever with `None`; a real time, also under a manual
    /// clock) or until `stop` is set.
    pub(crate) fn take_until<R>(
        &self,
        deadline: Option<Instant>,
        stop: Option<&AtomicBool>,
        poll: impl Fn(bool) -> Result<R, NextDue>,
    ) -> Result<R, ConsumeTimeoutError> {
        let spin = SpinWait::new();
        let mut spin_until = None;
        let mut closed_recheck = CLOSED_RECHECK;
        loop {
            if let Ok(taken) = poll(false) {
                return Ok(taken);
            }
            // A short spin first: a producer is often a few hundred
            // nanoseconds away, and parking costs it a futex wake.
            if !spin.is_completed() {
                spin.snooze();
                continue;
            }
            // Then, while the queue is open, keep yielding for up to
            // `SPIN_BEFORE_PARK` (see there), once per call and never past
            // `deadline`. (A stop flag set meanwhile is seen after it.)
            if !SPIN_BEFORE_PARK.is_zero() && !self.shared.is_closed() {
                let now = now();
                let until = *spin_until.get_or_insert_with(|| {
                    let until = now + SPIN_BEFORE_PARK;
                    deadline.map_or(until, |deadline| deadline.min(until))
                });
                if now < until {
                    spin.snooze();
                    continue;
                }
            }
            // About to park: hand the frees this thread deferred (index
            // nodes it unlinked, tails it replaced) to the epoch's global
            // queue, so that they do not wait for this thread's next pin.
            pin().flush();
            // Register, then poll again with a precise time: see `Waiters`.
            let sleeper = self.shared.waiters.register();
            let next_due = match poll(true) {
                Ok(taken) => return Ok(taken),
                Err(next_due) => next_due,
            };
            if self.drained() {
                return Err(ConsumeTimeoutError::Closed);
            }
            // SeqCst, after registering: pairs with the SeqCst store of the
            // flag before `wake_consumers` (store-buffering, as in `Waiters`),
            // so either this load sees the flag or the wake finds this sleeper.
            if stop.is_some_and(|stop| stop.load(Ordering::SeqCst)) {
                return Err(ConsumeTimeoutError::Timeout);
            }
            // Real time: `deadline` and the closed recheck are real times
            // under a manual clock too. Its due times are not: they come by
            // `advance`, which wakes this sleep (`Shared::advanced`).
            let now = now();
            let clock = &self.shared.clock;
            let mut wake = next_due
                .get()
                .filter(|_| !clock.is_manual())
                .map(|due| clock.instant(due));
            // Closed, with messages in flight: a settle that raced with
            // `close` does not wake anyone (see `Shared::count_settle`), so
            // look again soon.
            if self.shared.is_closed() {
                let recheck = now + closed_recheck;
                wake = Some(wake.map_or(recheck, |w| w.min(recheck)));
                closed_recheck = (closed_recheck * 2).min(CLOSED_RECHECK_MAX);
            }
            if let Some(deadline) = deadline {
                if now >= deadline {
                    return Err(ConsumeTimeoutError::Timeout);
                }
                wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
            }
            sleeper.wait(wake.map(|w| w.saturating_duration_since(now)));
        }
    }
}
