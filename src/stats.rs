//! Exact counters, striped per thread so that hot paths never share a line.

use crate::sync::{AtomicU64, MODEL, Ordering, PlainAtomicBool};
use crossbeam_utils::CachePadded;

/// A snapshot of what a queue has done. Exact once the queue is quiescent
/// (no call in progress and the redeliverer caught up), when
/// `produced == acked + dead_lettered + ready + delayed + in_flight +
/// grouped_waiting`.
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
    /// Deliveries handed out (first deliveries and redeliveries). First
    /// deliveries are counted as messages produced and no longer pending:
    /// exact when the queue is quiescent, off by the produces and claims in
    /// progress under traffic.
    pub delivered: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Rollbacks, explicit or by dropping an unsettled delivery.
    pub rolled_back: u64,
    /// Deferrals ([`Delivery::defer`](crate::Delivery::defer)): put back
    /// without using an attempt. Not counted in `rolled_back`.
    pub deferred: u64,
    /// Dead letters put back by [`Queue::redrive`](crate::Queue::redrive)
    /// (also counted in `produced`).
    pub redriven: u64,
    /// Leases that ran out.
    pub expired: u64,
    /// Messages put back into the index after a rollback or an expiry.
    pub redelivered: u64,
    /// Redeliveries postponed by the retry budget
    /// ([`Builder::retry_budget`](crate::Builder::retry_budget)): each
    /// counts once, when it falls due over budget.
    ///
    /// ```
    /// use rebound::{Backoff, ManualClock, Queue, RetryBudget};
    /// let clock = ManualClock::new();
    /// let q: Queue<u8> = Queue::builder()
    ///     .clock(clock.clone())
    ///     .backoff(Backoff::fixed(std::time::Duration::ZERO))
    ///     .retry_budget(RetryBudget::new(0.0, 1))
    ///     .build();
    /// q.produce(1).unwrap();
    /// q.produce(2).unwrap();
    /// q.consume().unwrap().rollback().unwrap();
    /// q.consume().unwrap().rollback().unwrap();
    /// q.consume().unwrap().ack().unwrap(); // one comes back at once
    /// clock.advance(std::time::Duration::from_secs(1)); // the other a second later
    /// q.consume().unwrap().ack().unwrap();
    /// assert_eq!(q.stats().throttled, 1);
    /// ```
    pub throttled: u64,
    /// Messages dead-lettered (max attempts reached, or rejected).
    pub dead_lettered: u64,
    /// Pending messages that are due now.
    pub ready: u64,
    /// Pending messages not yet due.
    pub delayed: u64,
    /// Messages neither pending nor settled: held by a delivery, rolled
    /// back and waiting for the redeliverer, or held back by the retry
    /// budget.
    pub in_flight: u64,
    /// Grouped messages waiting behind their group's head
    /// ([`Queue::produce_in_group`](crate::Queue::produce_in_group)): not
    /// claimable until the messages before them are settled. Not counted in
    /// `ready`.
    pub grouped_waiting: u64,
    /// Ordered groups with a message: pending, held, waiting for
    /// redelivery, or a dead letter holding its group. A group with nothing
    /// left is forgotten.
    pub groups: u64,
    /// Groups held by their dead-lettered head
    /// ([`Builder::hold_groups`](crate::Builder::hold_groups)).
    pub groups_held: u64,
    /// How long the oldest group head has been its group's head: a group
    /// whose head keeps failing (or is held) shows here. `None` without
    /// groups.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// q.produce_in_group(1u64, "a").unwrap();
    /// q.produce_in_group(1u64, "b").unwrap();
    /// let s = q.stats();
    /// assert_eq!((s.groups, s.grouped_waiting, s.ready), (1, 1, 1));
    /// assert!(s.oldest_group_head.is_some());
    /// ```
    pub oldest_group_head: Option<std::time::Duration>,
}

/// Which counter to bump.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Produced = 0,
    /// Claims of a message delivered before (redeliveries, and a deferred
    /// message's next delivery), counted by the claim through a redelivery
    /// batch. First
    /// deliveries are not counted as they happen: `Queue::stats` derives
    /// them (produced minus pending messages never claimed), which keeps a
    /// counter update off every claim.
    RepeatClaims,
    Acked,
    RolledBack,
    Expired,
    Redelivered,
    DeadLettered,
    Deferred,
    Redriven,
    /// Claims of a message never delivered before, counted only for a
    /// queue with a retry budget (its deposits).
    FirstClaims,
    /// Redeliveries postponed by the retry budget.
    Throttled,
    /// Grouped messages that waited behind their group's head, and those
    /// of them that became heads since: `Stats::grouped_waiting` is the
    /// difference.
    GroupedWaited,
    GroupedStarted,
}
const COUNTERS: usize = 13;
/// Stripes a thread can own; threads beyond this many share one more.
/// In the loom world: none, so every thread shares the one stripe and the
/// models explore the counters' races, not 65 copies of them.
const OWNED_STRIPES: usize = if MODEL { 0 } else { 64 };

type Stripe = [AtomicU64; COUNTERS];

/// Per-queue counters. A thread owns one stripe of every queue (the same
/// index in each) for as long as it lives, so statistics-only counters are
/// bumped with a plain load and store instead of a locked instruction.
/// Threads that find every stripe owned share the last one, with
/// read-modify-writes. Readers sum the stripes.
pub(crate) struct Counters {
    stripes: Box<[CachePadded<Stripe>]>,
}

/// Which stripe this thread writes, and whether it owns it.
#[derive(Clone, Copy)]
struct StripeIndex {
    index: usize,
    owned: bool,
}

const SHARED_STRIPE: StripeIndex = StripeIndex {
    index: OWNED_STRIPES,
    owned: false,
};

fn stripe_index() -> StripeIndex {
    // Stripe ownership is bookkeeping loom does not see (no statics there,
    // and no stripe to own: `OWNED_STRIPES` is 0).
    static OWNERS: [PlainAtomicBool; OWNED_STRIPES] =
        [const { PlainAtomicBool::new(false) }; OWNED_STRIPES];

    /// This thread's stripe; gives it up when the thread exits.
    struct Owner(StripeIndex);
    impl Drop for Owner {
        fn drop(&mut self) {
            if self.0.owned {
                // Release: pairs with the Acquire swap of the next owner,
                // so its plain increments start from this thread's last
                // stores.
                OWNERS[self.0.index].store(false, Ordering::Release);
            }
        }
    }
    thread_local! {
        static OWNER: Owner = Owner(
            OWNERS
                .iter()
                // Acquire: pairs with the Release store of the previous owner.
                .position(|o| !o.swap(true, Ordering::Acquire))
                .map_or(SHARED_STRIPE, |index| StripeIndex { index, owned: true }),
        );
    }
    // After this thread's TLS is destroyed (a delivery dropped by another
    // thread-local's destructor), fall back to the shared stripe.
    OWNER.try_with(|o| o.0).unwrap_or(SHARED_STRIPE)
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..=OWNED_STRIPES)
                .map(|_| CachePadded::new(Default::default()))
                .collect(),
        }
    }

    fn cell(&self, at: StripeIndex, counter: Counter) -> &AtomicU64 {
        &self.stripes[at.index][counter as usize]
    }

    /// Adds `n` to a counter the close protocol reads (`produced`, `acked`,
    /// `dead_lettered`; see `Queue::close`). SeqCst: the increment must be
    /// ordered against the `closed` flag read after it.
    #[inline]
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        self.cell(stripe_index(), counter)
            .fetch_add(n, Ordering::SeqCst);
    }

    pub(crate) fn sub(&self, counter: Counter, n: u64) {
        self.cell(stripe_index(), counter)
            .fetch_sub(n, Ordering::SeqCst);
    }

    /// Adds `n` to a statistics-only counter (`delivered`, `rolled_back`,
    /// `deferred`, `expired`, `redelivered`): nothing but [`Stats`] and the idle
    /// detection read them, and neither needs them ordered with anything.
    #[inline]
    pub(crate) fn bump(&self, counter: Counter, n: u64) {
        // Relaxed: a statistic, ordered with nothing; readers only need the
        // value to be atomic.
        self.add_unlocked(counter, n, Ordering::Relaxed);
    }

    /// Adds `n` to a settle counter (`acked`, `dead_lettered`) outside the
    /// close protocol, that is while the queue is open (see
    /// `Shared::count_settle`): a plain store on a stripe this thread owns.
    #[inline]
    pub(crate) fn add_release(&self, counter: Counter, n: u64) {
        // Release: pairs with the SeqCst loads in `get`, so a reader that
        // sees this settle also sees the `produced` increment made before
        // the message was published, and `outstanding` never counts a
        // settle without its produce.
        self.add_unlocked(counter, n, Ordering::Release);
    }

    /// Adds `n` with a plain load and a store of ordering `order` on a stripe
    /// this thread owns, or with a read-modify-write of that ordering on the
    /// shared stripe.
    #[inline]
    fn add_unlocked(&self, counter: Counter, n: u64, order: Ordering) {
        let at = stripe_index();
        let cell = self.cell(at, counter);
        if at.owned {
            // Relaxed load: this thread is the stripe's only writer
            // (ownership passed with Acquire/Release in `stripe_index`).
            cell.store(cell.load(Ordering::Relaxed).wrapping_add(n), order);
        } else {
            cell.fetch_add(n, order);
        }
    }

    /// The sum over stripes. SeqCst: see [`Self::add`].
    pub(crate) fn get(&self, counter: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s[counter as usize].load(Ordering::SeqCst))
            .fold(0u64, u64::wrapping_add)
    }

    /// A number that changes whenever messages are produced, settled or
    /// redelivered.
    pub(crate) fn traffic(&self) -> u64 {
        [
            Counter::Produced,
            Counter::Acked,
            Counter::RolledBack,
            Counter::Deferred,
            Counter::DeadLettered,
            Counter::RepeatClaims,
        ]
        .into_iter()
        .fold(0u64, |sum, counter| sum.wrapping_add(self.get(counter)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    /// More threads than owned stripes, some running at once and some after
    /// others exited (reusing their stripes): no increment is lost.
    #[test]
    fn counts_are_exact_across_owned_shared_and_reused_stripes() {
        let counters = Counters::new();
        const THREADS: usize = OWNED_STRIPES + 16;
        const EACH: u64 = 1_000;
        for _round in 0..2 {
            thread::scope(|s| {
                for _ in 0..THREADS {
                    s.spawn(|| {
                        for _ in 0..EACH {
                            counters.bump(Counter::RepeatClaims, 1);
                            counters.add(Counter::Acked, 1);
                        }
                    });
                }
            });
        }
        let total = 2 * THREADS as u64 * EACH;
        assert_eq!(counters.get(Counter::RepeatClaims), total);
        assert_eq!(counters.get(Counter::Acked), total);
        assert_eq!(counters.outstanding(), 0u64.wrapping_sub(total));
    }
}
