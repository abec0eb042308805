//! `Report`: what one processor did, and the counters behind it.

use crate::sync::{AtomicU64, Ordering};
use crossbeam_utils::CachePadded;

/// What a processor ([`Processing`](crate::Processing)) did with the
/// deliveries it claimed.
///
/// Every claimed delivery ends in exactly one of the outcome fields, so
/// `claimed == acked + retried + deferred + dead_lettered + panicked + expired + in_flight`.
/// The report [`shutdown`](crate::Processing::shutdown) and
/// [`join`](crate::Processing::join) return is exact; one from
/// [`Processing::report`](crate::Processing::report) taken while handlers run
/// is a snapshot (its `in_flight` is computed from the others).
///
/// ```
/// use rebound::{Backoff, Queue};
/// use std::time::Duration;
/// let q: Queue<u32> = Queue::builder()
///     .backoff(Backoff::fixed(Duration::from_millis(1)))
///     .max_attempts(3)
///     .build();
/// for i in 0..10 {
///     q.produce(i).unwrap();
/// }
/// q.close();
/// let report = q
///     .process(&rebound::Pool::global(), |n| if **n < 7 { Ok(()) } else { Err("odd job") })
///     .join();
/// assert_eq!(report.claimed, report.acked + report.retried + report.dead_lettered);
/// assert_eq!(report.acked, 7);
/// // Three failing messages, each tried 3 times: 2 retries, then dead-lettered.
/// assert_eq!((report.retried, report.dead_lettered), (6, 3));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Deliveries this processor claimed (first deliveries and redeliveries).
    pub claimed: u64,
    /// Handlers that asked to ack, and whose ack was accepted.
    pub acked: u64,
    /// Handlers that asked to retry (an error, `Retry` or `RetryAfter`), and
    /// whose rollback was accepted with attempts left: the message comes back.
    pub retried: u64,
    /// Handlers that returned [`Outcome::Defer`](crate::Outcome::Defer), and
    /// whose defer was accepted: the message comes back at the same attempt.
    pub deferred: u64,
    /// Messages this processor parked in the dead letters: the handler
    /// returned `DeadLetter`, or asked to retry on the message's last attempt.
    pub dead_lettered: u64,
    /// Handlers that panicked. The panic was caught on the pool thread and the
    /// delivery rolled back (redelivered after the backoff, or dead-lettered
    /// on its last attempt).
    pub panicked: u64,
    /// Handlers that returned after their lease had run out: their outcome
    /// was refused (`LeaseExpired`) because the queue had already taken the
    /// message back and redelivered (or dead-lettered) it.
    pub expired: u64,
    /// Lease extensions the runtime made for handlers still running
    /// ([`Processor::auto_extend`](crate::Processor::auto_extend)). Not an
    /// outcome: a delivery extended any number of times still ends in one
    /// of the fields above.
    ///
    /// ```
    /// use rebound::{ManualClock, Queue};
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let q: Queue<u8> = Queue::builder().clock(clock.clone()).lease(Duration::from_secs(10)).build();
    /// let (started, wait_started) = mpsc::channel();
    /// let (finish, finished) = mpsc::channel::<()>();
    /// let finished = std::sync::Mutex::new(finished);
    /// let handle = q
    ///     .processor()
    ///     .auto_extend(Duration::from_secs(60))
    ///     .start(rebound::Pool::global(), move |_| {
    ///         started.send(()).unwrap();
    ///         finished.lock().unwrap().recv().unwrap(); // a slow handler
    ///     })
    ///     .unwrap();
    /// q.produce(1).unwrap();
    /// wait_started.recv().unwrap();
    /// for _ in 0..4 {
    ///     clock.advance(Duration::from_secs(6)); // past the 10 s lease, in steps
    /// }
    /// finish.send(()).unwrap();
    /// q.close();
    /// let report = handle.join();
    /// assert_eq!((report.acked, report.expired, report.extended), (1, 0, 4));
    /// ```
    pub extended: u64,
    /// Handlers still running. In the report of
    /// [`shutdown`](crate::Processing::shutdown): the ones that had not
    /// finished when its timeout ran out.
    pub in_flight: u64,
}

/// One counter per [`Report`] field (but `in_flight`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Tally {
    Claimed = 0,
    Acked,
    Retried,
    Deferred,
    DeadLettered,
    Panicked,
    Expired,
    /// Not an outcome: a lease extension (`extended`).
    Extended,
}

const TALLIES: usize = 8;

/// The counters of one processor. Claims are counted by the dispatcher and
/// the pool threads, outcomes by the pool threads.
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    counts: [CachePadded<AtomicU64>; TALLIES],
}

impl Tallies {
    pub(crate) fn add(&self, tally: Tally) {
        // Relaxed: a plain count. A final report reads it after the
        // handler's permit was returned under the slots lock, which orders
        // this increment before the read.
        self.counts[tally as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn report(&self) -> Report {
        // Relaxed: see `add`. A snapshot taken while handlers finish may see
        // an outcome before its claim, hence the saturating `in_flight`.
        let get = |t: Tally| self.counts[t as usize].load(Ordering::Relaxed);
        let (acked, retried, deferred, dead_lettered, panicked, expired) = (
            get(Tally::Acked),
            get(Tally::Retried),
            get(Tally::Deferred),
            get(Tally::DeadLettered),
            get(Tally::Panicked),
            get(Tally::Expired),
        );
        let claimed = get(Tally::Claimed);
        Report {
            claimed,
            acked,
            retried,
            deferred,
            dead_lettered,
            panicked,
            expired,
            extended: get(Tally::Extended),
            in_flight: claimed
                .saturating_sub(acked + retried + deferred + dead_lettered + panicked + expired),
        }
    }
}
