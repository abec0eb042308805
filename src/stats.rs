//! Exact counters, striped per thread so that hot paths never share a line.

use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// A snapshot of what a queue has done. Exact once the queue is quiescent
/// (no call in progress and the redeliverer caught up), when
/// `produced == acked + dead_lettered + ready + delayed + in_flight`.
///
/// ```
/// let q = rebound::Queue::<u8>::new();
/// q.produce(1).unwrap();
/// q.produce(2).unwrap();
/// q.consume().unwrap().ack().unwrap();
/// let s = q.stats();
/// assert_eq!((s.produced, s.acked, s.ready, s.in_flight), (2, 1, 1, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages accepted by `produce*`.
    pub produced: u64,
    /// Deliveries handed out (first deliveries and redeliveries).
    pub delivered: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Rollbacks, explicit or by dropping an unsettled delivery.
    pub rolled_back: u64,
    /// Leases that ran out.
    pub expired: u64,
    /// Messages put back into the index after a rollback or an expiry.
    pub redelivered: u64,
    /// Messages dead-lettered (max attempts reached, or rejected).
    pub dead_lettered: u64,
    /// Pending messages that are due now.
    pub ready: u64,
    /// Pending messages not yet due.
    pub delayed: u64,
    /// Messages neither pending nor settled: held by a delivery, or rolled
    /// back and waiting for the redeliverer.
    pub in_flight: u64,
}

/// Which counter to bump.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Produced = 0,
    Delivered,
    Acked,
    RolledBack,
    Expired,
    Redelivered,
    DeadLettered,
}
const COUNTERS: usize = 7;
const STRIPES: usize = 16;

type Stripe = [AtomicU64; COUNTERS];

/// Per-queue counters. Each thread writes its own stripe (threads are
/// numbered round-robin), and readers sum the stripes.
pub(crate) struct Counters {
    stripes: Box<[CachePadded<Stripe>]>,
}

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        // Relaxed: only hands out distinct numbers.
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..STRIPES)
                .map(|_| CachePadded::new(Default::default()))
                .collect(),
        }
    }

    /// Adds `n`. SeqCst: `produced`, `acked` and `dead_lettered` take part in
    /// the close protocol (see `Queue::close`): an increment must be ordered
    /// against the `closed` flag read after it. On x86 this costs nothing
    /// over Relaxed (every read-modify-write is a full barrier).
    #[inline]
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        self.stripes[stripe_index()][counter as usize].fetch_add(n, Ordering::SeqCst);
    }

    pub(crate) fn sub(&self, counter: Counter, n: u64) {
        self.stripes[stripe_index()][counter as usize].fetch_sub(n, Ordering::SeqCst);
    }

    /// The sum over stripes. SeqCst: see [`Self::add`].
    pub(crate) fn get(&self, counter: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s[counter as usize].load(Ordering::SeqCst))
            .fold(0u64, u64::wrapping_add)
    }

    /// A number that changes whenever messages are produced or delivered.
    pub(crate) fn traffic(&self) -> u64 {
        self.get(Counter::Produced)
            .wrapping_add(self.get(Counter::Delivered))
    }

    /// Messages produced and not yet acked or dead-lettered.
    pub(crate) fn outstanding(&self) -> u64 {
        // Read the settles first: a settle that lands between the reads can
        // only make the result larger, never hide a live message.
        let settled = self
            .get(Counter::Acked)
            .wrapping_add(self.get(Counter::DeadLettered));
        self.get(Counter::Produced).wrapping_sub(settled)
    }
}
