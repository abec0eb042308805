//! `Delivery`: one claim on one message, and the ways to settle it.

use crate::batch::{ClaimBits, Claimed, MessageRef};
use crate::block::Block;
use crate::clock;
use crate::error::LeaseExpired;
use crate::id::MessageId;
use crate::shared::Shared;
use crate::state::{Settle, Tag};
use crate::stats::Counter;
use crate::sync::{Arc, Instant, MODEL};
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

/// An exclusive claim on one message, valid until its lease runs out.
///
/// Dereferences to the message. Settle it with [`ack`](Self::ack) (done),
/// [`rollback`](Self::rollback) (try again later) or
/// [`dead_letter`](Self::dead_letter) (give up). Dropping it unsettled,
/// a panic unwinding through the handler included, is a rollback.
///
/// While a delivery is live no other delivery of the same message is. Once
/// its lease has expired it can no longer act (every settle returns
/// [`LeaseExpired`] and changes nothing), but it can still be read: the
/// payload lives until the last delivery that points at it is dropped.
///
/// ```
/// use rebound::Queue;
/// let q = Queue::new();
/// q.produce(String::from("resize image 42")).unwrap();
/// let d = q.consume().unwrap();
/// assert!(d.starts_with("resize"));
/// assert_eq!(d.attempt(), 1);
/// d.rollback_after(std::time::Duration::ZERO).unwrap();
/// let d = q.consume().unwrap();
/// assert_eq!(d.attempt(), 2);
/// d.ack().unwrap();
/// ```
#[must_use = "dropping a Delivery unsettled rolls the message back"]
pub struct Delivery<T> {
    block: Arc<Block<T>>,
    /// The slot, this claim's generation (the attempt it was delivered as),
    /// its timestamp, and whether it is not settled yet (then `Drop` must
    /// roll back).
    bits: ClaimBits,
}

// Two words: returned in registers by `consume` and friends. (Not in the
// loom world, whose `Arc` is larger.)
const _: () = assert!(MODEL || std::mem::size_of::<Delivery<u64>>() == 16);
const _: () = assert!(MODEL || std::mem::size_of::<Result<Delivery<u64>, crate::Closed>>() == 16);

impl<T> Delivery<T> {
    pub(crate) fn new(claimed: Claimed<T>) -> Self {
        let delivery = Self {
            block: claimed.block,
            bits: claimed.bits,
        };
        #[cfg(feature = "journal")]
        if delivery.shared().journal.is_some() {
            delivery.journal_claim();
        }
        delivery
    }

    /// Journals this claim. Out of line, so that the in-memory path keeps
    /// only the branch.
    #[cfg(feature = "journal")]
    #[cold]
    #[inline(never)]
    fn journal_claim(&self) {
        if let Some(attached) = &self.shared().journal {
            attached.journal.claimed(self.id(), self.attempt());
        }
    }

    /// Journals this holder's settle into `to` (`due`: a rollback's due
    /// time), before the settle returns, if the queue is journaled.
    #[cfg(feature = "journal")]
    #[inline(always)]
    fn journal(&self, to: Tag, due: u64) {
        if self.shared().journal.is_some() {
            self.journal_settle(to, due);
        }
    }

    /// Out of line, as `journal_claim`.
    #[cfg(feature = "journal")]
    #[cold]
    #[inline(never)]
    fn journal_settle(&self, to: Tag, due: u64) {
        if let Some(attached) = &self.shared().journal {
            attached.settled(self.id(), self.attempt(), to, due);
        }
    }

    fn shared(&self) -> &Shared<T> {
        &self.block.shared
    }

    fn index(&self) -> usize {
        self.bits.slot()
    }

    /// Marks this delivery settled (or being settled): `Drop` does nothing.
    fn mark_settled(&mut self) {
        self.bits = self.bits.settled();
    }

    /// The message's id, the same on every delivery of it.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// let id = q.produce(1).unwrap();
    /// assert_eq!(q.consume().unwrap().id(), id);
    /// ```
    pub fn id(&self) -> MessageId {
        self.shared().message_id(&self.block, self.index())
    }

    /// The ordered group the message was produced in
    /// ([`Queue::produce_in_group`](crate::Queue::produce_in_group)), if any.
    ///
    /// ```
    /// use rebound::{GroupKey, Queue};
    /// let q = Queue::new();
    /// q.produce_in_group(42u64, "x").unwrap();
    /// q.produce("y").unwrap();
    /// assert_eq!(q.consume().unwrap().group(), Some(GroupKey::from(42u64)));
    /// assert_eq!(q.consume().unwrap().group(), None);
    /// ```
    pub fn group(&self) -> Option<crate::GroupKey> {
        self.block
            .ids
            .group(self.index())
            .map(crate::GroupKey::from)
    }

    /// Which delivery of the message this is: 1 the first time, then one
    /// more for each redelivery, whatever caused it.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// drop(q.consume().unwrap()); // dropping unsettled is a rollback
    /// let d = q.consume().unwrap(); // after the default 100 ms backoff
    /// assert_eq!(d.attempt(), 2);
    /// # d.ack().unwrap();
    /// ```
    pub fn attempt(&self) -> u32 {
        self.bits.attempt()
    }

    /// When the message became due for this delivery: when it was produced
    /// (a recent reading of the clock, also for a `produce_after` of zero or
    /// a `produce_at` time already passed), the future time asked of
    /// `produce_after`/`produce_at`, or the redelivery time (to the
    /// microsecond, rounded down).
    ///
    /// ```
    /// use std::time::Instant;
    /// let q = rebound::Queue::new();
    /// let before = Instant::now();
    /// q.produce(1).unwrap();
    /// let d = q.consume().unwrap();
    /// // A recent reading of the clock: never later than the real time, at
    /// // most about 10 ms earlier while the queue is busy.
    /// assert!(d.timestamp() <= Instant::now());
    /// assert!(before.saturating_duration_since(d.timestamp()) < std::time::Duration::from_millis(50));
    /// # d.ack().unwrap();
    /// ```
    pub fn timestamp(&self) -> Instant {
        let ts = self.block.ts_after_key(self.bits.ts_us());
        self.shared().clock.instant(ts)
    }

    /// The message is done: it will not be delivered again.
    ///
    /// # Errors
    /// [`LeaseExpired`] if the lease ran out first; the message was then
    /// redelivered (or dead-lettered) and this ack had no effect.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// q.consume().unwrap().ack().unwrap();
    /// assert_eq!(q.stats().acked, 1);
    /// ```
    #[inline]
    pub fn ack(mut self) -> Result<(), LeaseExpired> {
        self.mark_settled();
        let outcome = self.slot_state().transition_to_acked(self.attempt());
        self.finish(outcome, Counter::Acked)
    }

    /// Try again later: the message is redelivered after the queue's backoff
    /// for this attempt, or dead-lettered if this was its last attempt.
    ///
    /// # Errors
    /// [`LeaseExpired`] if the lease ran out first (no effect).
    ///
    /// ```
    /// let q: rebound::Queue<u8> = rebound::Queue::builder()
    ///     .backoff(rebound::Backoff::fixed(std::time::Duration::from_millis(1)))
    ///     .build();
    /// q.produce(1).unwrap();
    /// q.consume().unwrap().rollback().unwrap();
    /// assert_eq!(q.consume().unwrap().attempt(), 2);
    /// ```
    pub fn rollback(mut self) -> Result<(), LeaseExpired> {
        self.rollback_with(None)
    }

    /// Try again after `delay` (instead of the queue's backoff), or
    /// dead-letter if this was the last attempt.
    ///
    /// # Errors
    /// [`LeaseExpired`] if the lease ran out first (no effect).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// let start = Instant::now();
    /// q.consume().unwrap().rollback_after(Duration::from_millis(30)).unwrap();
    /// let d = q.consume().unwrap();
    /// assert!(start.elapsed() >= Duration::from_millis(30));
    /// # d.ack().unwrap();
    /// ```
    pub fn rollback_after(mut self, delay: Duration) -> Result<(), LeaseExpired> {
        self.rollback_with(Some(delay))
    }

    /// Not now: the message comes back after `delay`, and that delivery
    /// has the same [`attempt`](Self::attempt) as this one. A defer does not
    /// use an attempt and never dead-letters: `max_attempts` counts only
    /// deliveries that ended in a rollback, an expiry or a drop (Oban's
    /// snooze; RabbitMQ's nack with requeue, as opposed to reject). A
    /// handler that defers a message every time defers it for ever; put a
    /// bound in the handler if that can happen. Counted in
    /// [`Stats::deferred`](crate::Stats::deferred).
    ///
    /// # Errors
    /// [`LeaseExpired`] if the lease ran out first (no effect: the expiry
    /// already took the message back, using the attempt).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q: rebound::Queue<&str> = rebound::Queue::builder().max_attempts(1).build();
    /// q.produce("send the report once the data is in").unwrap();
    /// let d = q.consume().unwrap();
    /// d.defer(Duration::from_millis(5)).unwrap(); // not yet
    /// let d = q.consume().unwrap();               // 5 ms later
    /// assert_eq!(d.attempt(), 1);                 // still the first attempt
    /// d.ack().unwrap();
    /// assert_eq!((q.stats().deferred, q.stats().dead_lettered), (1, 0));
    /// ```
    pub fn defer(mut self, delay: Duration) -> Result<(), LeaseExpired> {
        self.mark_settled();
        let shared = self.shared();
        let attempt = self.attempt();
        // The due time first, as in `rollback_with`.
        let due = clock::add(shared.clock.precise(), delay);
        let outcome = self.slot_state().transition_to_deferred(attempt);
        match outcome {
            Settle::Done { .. } => {
                #[cfg(feature = "journal")]
                if let Some(attached) = &shared.journal {
                    attached.journal.deferred(self.id(), attempt, due);
                }
                shared.counters.bump(Counter::Deferred, 1);
                shared.hand_over_rollback(MessageRef {
                    block: Arc::clone(&self.block),
                    slot: self.index() as u32,
                    attempt,
                    ts: due,
                });
                Ok(())
            }
            Settle::Stale => self.finish(Settle::Stale, Counter::Acked),
        }
    }

    /// Still working on it: the lease now ends `extension` from now, unless
    /// it already ended later (a lease is never shortened).
    ///
    /// # Errors
    /// [`LeaseExpired`] if the lease ran out first (no effect).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().lease(Duration::from_millis(20)).build();
    /// q.produce(1).unwrap();
    /// let d = q.consume().unwrap();
    /// for _ in 0..4 {
    ///     std::thread::sleep(Duration::from_millis(10));
    ///     d.extend_lease(Duration::from_millis(20)).unwrap();
    /// }
    /// d.ack().unwrap();
    /// ```
    pub fn extend_lease(&self, extension: Duration) -> Result<(), LeaseExpired> {
        let shared = self.shared();
        let now = shared.clock.precise();
        let deadline = shared.deadline_tick(now, extension);
        let grace = |tick| shared.grace_ticks(tick, now);
        if self
            .slot_state()
            .extend_lease(self.attempt(), deadline, grace)
        {
            Ok(())
        } else {
            Err(LeaseExpired)
        }
    }

    /// Give up now: the message goes to the dead letters with reason
    /// [`Rejected`](crate::DeadLetterReason::Rejected).
    ///
    /// # Errors
    /// [`LeaseExpired`] if the lease ran out first (no effect).
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// q.produce("malformed").unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.stats().dead_lettered, 1);
    /// ```
    pub fn dead_letter(mut self) -> Result<(), LeaseExpired> {
        self.mark_settled();
        let outcome = self.slot_state().transition_to_rejected(self.attempt());
        self.finish(outcome, Counter::DeadLettered)
    }

    fn slot_state(&self) -> &crate::state::MessageState {
        &self.block.slot(self.index()).state
    }

    fn rollback_with(&mut self, delay: Option<Duration>) -> Result<(), LeaseExpired> {
        self.mark_settled();
        let shared = self.shared();
        let attempt = self.attempt();
        // The due time first: nothing may run between the transition and
        // the hand-over that could leave the message `RolledBack` with
        // nobody to bring it back.
        let delay = delay.unwrap_or_else(|| shared.config.backoff.delay(attempt));
        let due = clock::add(shared.clock.precise(), delay);
        let outcome = self
            .slot_state()
            .transition_to_rolled_back(attempt, shared.config.max_attempts);
        if let Settle::Done {
            to: Tag::RolledBack,
            ..
        } = outcome
        {
            #[cfg(feature = "journal")]
            self.journal(Tag::RolledBack, due);
            shared.counters.bump(Counter::RolledBack, 1);
            shared.hand_over_rollback(MessageRef {
                block: Arc::clone(&self.block),
                slot: self.index() as u32,
                attempt,
                ts: due,
            });
            return Ok(());
        }
        if let Settle::Done { .. } = outcome {
            shared.counters.bump(Counter::RolledBack, 1);
        }
        self.finish(outcome, Counter::DeadLettered)
    }

    /// Common tail of every settle: count it, release the payload if this
    /// holder was the last, or, if the claim was stale, just let go.
    #[inline(always)]
    fn finish(&self, outcome: Settle, counter: Counter) -> Result<(), LeaseExpired> {
        let shared = self.shared();
        match outcome {
            Settle::Done { fate, to } => {
                #[cfg(feature = "journal")]
                self.journal(to, 0);
                let own = self.block.ids.any();
                if own {
                    shared.own_id_settled(&self.block, self.index(), to);
                }
                // Counted when this guard drops: after the release, since a
                // consumer woken by the count on a closed queue may return
                // `Closed` and drain the dead letters, and also if the
                // payload's destructor panics in the release, so that the
                // settle is never lost to `close()` and `stats()`.
                let _count = CountOnDrop { shared, counter };
                shared.release_payload_of(&self.block, self.index(), fate, || own);
                Ok(())
            }
            Settle::Stale => {
                let fate = self.slot_state().release_holder();
                shared.release_payload(&self.block, self.index(), fate);
                Err(LeaseExpired)
            }
        }
    }
}

/// Counts a settle when dropped, on the normal path and on unwinding alike.
struct CountOnDrop<'a, T> {
    shared: &'a Shared<T>,
    counter: Counter,
}

impl<T> Drop for CountOnDrop<'_, T> {
    fn drop(&mut self) {
        self.shared.count_settle(self.counter);
    }
}

impl<T> Deref for Delivery<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this delivery was counted in the message's `holders` by the
        // claim that made it, and is uncounted only by its settle or its
        // drop, both of which end its life (`ack`, `rollback*` and
        // `dead_letter` take `self`). `&self` borrows from that life.
        unsafe { self.block.slot(self.index()).payload() }
    }
}

impl<T> Delivery<T> {
    /// A copy of this claim for the runtime's lease extender
    /// (`process::extend`), which only ever extends its lease: marked
    /// settled, so dropping it does nothing, and not counted as a holder
    /// (it never reads the payload; its block reference keeps the state
    /// word alive).
    pub(crate) fn lease_copy(&self) -> Delivery<T> {
        Delivery {
            block: Arc::clone(&self.block),
            bits: self.bits.settled(),
        }
    }
}

impl<T> Drop for Delivery<T> {
    fn drop(&mut self) {
        if self.bits.is_live() {
            // An unsettled drop (handler returned early, or panicked) is a
            // rollback; if the lease had expired, it just lets go.
            let _ = self.rollback_with(None);
        }
    }
}

impl<T> fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id())
            .field("attempt", &self.attempt())
            .field("timestamp", &self.timestamp())
            .finish_non_exhaustive()
    }
}
