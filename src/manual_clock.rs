//! `ManualClock`: a clock that moves only when a test says so, and what
//! moving it does to the queues that read it.

use crate::sync::{Arc, AtomicU64, Instant, Mutex, Ordering, lock, now};
use std::fmt;
use std::time::Duration;

/// A clock that stands still until [`advance`](Self::advance)d, for tests:
/// a queue built with [`Builder::clock`](crate::Builder::clock) times its
/// leases, delays, backoff, retry budget and message timestamps by it, so
/// that "expires after 30 s, comes back after an hour of backoff" runs in
/// milliseconds.
///
/// Clones share one clock. After `advance` returns, what became due is
/// claimable at once: `advance` refreshes each attached queue's reading of
/// the time, wakes its waiting consumers, and wakes its redeliverer and
/// waits for it to run a pass at the new time (expiring the leases that
/// ran out, putting back the rollbacks that fell due), as if it had kept
/// up while the time passed. Two advances in a row are two steps: a
/// lease that ran out in the first is redelivered from then.
///
/// Blocking waits keep measuring real time: `consume_timeout(d)` gives up
/// after `d` of real time whatever the manual clock does, and a consumer
/// blocked in `consume` waits for a message, not for the clock. So a test
/// advances the clock, then consumes with a (real) timeout. (One
/// exception: an async task waiting on a closed queue for in-flight
/// messages looks again at intervals of the queue's clock, so under a
/// manual clock at the next advance.)
///
/// A clock holds the queues it drives only while they have a handle: the
/// last `Queue` handle's drop detaches its queue, so a clock never keeps a
/// queue alive. A journaled queue cannot use one (its due times are wall
/// clock times, see [`BuildError::ManualClockJournal`](crate::BuildError::ManualClockJournal)).
///
/// ```
/// use rebound::{Backoff, ManualClock, Queue};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let q: Queue<&str> = Queue::builder()
///     .clock(clock.clone())
///     .lease(Duration::from_secs(30))
///     .backoff(Backoff::fixed(Duration::from_secs(60)))
///     .build();
/// q.produce_after("later", Duration::from_secs(3600)).unwrap();
/// assert!(q.try_consume().is_err()); // not due: the clock stands still
///
/// clock.advance(Duration::from_secs(3600));
/// let d = q.consume_timeout(Duration::from_secs(5)).unwrap();
/// assert_eq!(*d, "later");
/// std::mem::forget(d); // a handler that hangs
///
/// clock.advance(Duration::from_secs(30)); // its lease runs out
/// clock.advance(Duration::from_secs(60)); // and the backoff
/// let again = q.consume_timeout(Duration::from_secs(5)).unwrap();
/// assert_eq!(again.attempt(), 2);
/// again.ack().unwrap();
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<Inner>,
}

struct Inner {
    /// The real instant the clock started at: its reading is `base` plus
    /// `elapsed`.
    base: Instant,
    /// Nanoseconds the clock was advanced by, in all.
    elapsed: AtomicU64,
    /// The queues this clock drives, by the address of their state (see
    /// [`ManualClock::attach`]).
    attached: Mutex<Vec<(usize, Box<dyn Advanced>)>>,
}

/// What an attached queue does when its clock moves.
pub(crate) trait Advanced: Send + Sync {
    /// The clock moved forward: refresh what was read from it, wake who
    /// waits for a time. Returns what waits until the queue caught up.
    fn advanced(&self) -> Box<dyn FnOnce() + Send>;
}

impl ManualClock {
    /// A clock standing at the current real instant.
    ///
    /// ```
    /// let clock = rebound::ManualClock::new();
    /// let start = clock.now();
    /// clock.advance(std::time::Duration::from_secs(1));
    /// assert_eq!(clock.now() - start, std::time::Duration::from_secs(1));
    /// ```
    pub fn new() -> Self {
        ManualClock {
            inner: Arc::new(Inner {
                base: now(),
                elapsed: AtomicU64::new(0),
                attached: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Moves the clock (and every clone of it) forward by `by`, and tells
    /// every queue built with it (see the type's docs). Saturates at about
    /// 584 years of advances.
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = rebound::ManualClock::new();
    /// let other = clock.clone();
    /// let start = clock.now();
    /// other.advance(Duration::from_millis(1500));
    /// assert_eq!(clock.now() - start, Duration::from_millis(1500));
    /// ```
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // SeqCst: the store half of the store-buffering pattern with a
        // consumer going to sleep (`Waiters`): this store, then the SeqCst
        // fence and load of the waiter count in `Waiters::notify`; the
        // consumer's registration, then its poll, which reads this clock.
        // Either the poll sees the new time or the notify sees the sleeper.
        let _ = self
            .inner
            .elapsed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |e| {
                Some(e.saturating_add(by))
            });
        // The waits run outside the lock: a redeliverer's pass may drop
        // the last handle of a queue (a payload holding one), whose
        // teardown detaches it.
        let waits: Vec<_> = lock(&self.inner.attached)
            .iter()
            .map(|(_, queue)| queue.advanced())
            .collect();
        for wait in waits {
            wait();
        }
    }

    /// The clock's reading: the real instant it was created at plus every
    /// advance since. What [`Delivery::timestamp`](crate::Delivery::timestamp)
    /// is measured against, and what to pass to
    /// [`Queue::produce_at`](crate::Queue::produce_at).
    ///
    /// ```
    /// use rebound::{ManualClock, Queue};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let q: Queue<u8> = Queue::builder().clock(clock.clone()).build();
    /// q.produce_at(1, clock.now() + Duration::from_secs(60)).unwrap();
    /// clock.advance(Duration::from_secs(60));
    /// let d = q.consume_timeout(Duration::from_secs(5)).unwrap();
    /// assert_eq!(d.timestamp(), clock.now());
    /// # d.ack().unwrap();
    /// ```
    pub fn now(&self) -> Instant {
        // SeqCst: see `advance`.
        let elapsed = self.inner.elapsed.load(Ordering::SeqCst);
        self.inner.base + Duration::from_nanos(elapsed)
    }

    /// Drives `queue` from now on, until [`Self::detach`] with `address`
    /// (the address of the queue's state, which `queue` keeps alive).
    pub(crate) fn attach(&self, address: usize, queue: Box<dyn Advanced>) {
        lock(&self.inner.attached).push((address, queue));
    }

    /// As [`Self::attach`], for a processor's lease extender, which must
    /// look at a new time before the queues do: it extends the leases of
    /// handlers still running before their queue's redeliverer expires
    /// them.
    pub(crate) fn attach_first(&self, address: usize, extender: Box<dyn Advanced>) {
        lock(&self.inner.attached).insert(0, (address, extender));
    }

    /// Stops driving the queue attached with `address`: its last handle
    /// is gone. The entry is dropped outside the lock (it may hold the
    /// queue's last reference).
    pub(crate) fn detach(&self, address: usize) {
        let mut attached = lock(&self.inner.attached);
        let gone = attached
            .iter()
            .position(|(a, _)| *a == address)
            .map(|at| attached.remove(at));
        drop(attached);
        drop(gone);
    }
}

impl Default for ManualClock {
    /// [`ManualClock::new`].
    ///
    /// ```
    /// let clock = rebound::ManualClock::default();
    /// # drop(clock);
    /// ```
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SeqCst: see `advance`.
        let elapsed = self.inner.elapsed.load(Ordering::SeqCst);
        f.debug_struct("ManualClock")
            .field("advanced", &Duration::from_nanos(elapsed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Queue;

    #[test]
    fn a_queue_is_attached_while_it_has_a_handle_and_no_longer() {
        let clock = ManualClock::new();
        let attached = || lock(&clock.inner.attached).len();
        let q: Queue<u8> = Queue::builder().clock(clock.clone()).build();
        let other = q.clone();
        assert_eq!(attached(), 1);
        drop(q);
        assert_eq!(attached(), 1, "a handle is left");
        drop(other);
        assert_eq!(attached(), 0, "the last handle detached it");
    }
}
