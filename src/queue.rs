//! `Queue`: the public API of a queue handle.

use crate::chain::Minted;
use crate::clock;
use crate::dead_letter::DeadLetter;
use crate::delivery::Delivery;
use crate::error::{BuildError, Closed, ConsumeTimeoutError, ProduceError, TryConsumeError};
use crate::groups::GroupKey;
use crate::id::MessageId;
use crate::manual_clock::ManualClock;
use crate::redelivery;
use crate::shared::{Config, Shared};
use crate::stats::{Counter, Stats};
use crate::sync::{Arc, AtomicBool, Instant, MODEL, Ordering, lock, now, thread};
use crate::teardown::teardown;
use std::fmt;
use std::time::Duration;

/// A multi-producer, multi-consumer queue with exclusive claims, leases,
/// rollback, delayed redelivery and dead letters.
///
/// Cloning a `Queue` gives another handle to the same queue. When the last
/// handle is dropped, the redeliverer thread is stopped and joined and every
/// message that is not held by a live [`Delivery`] is dropped.
///
/// ```
/// use rebound::Queue;
/// use std::thread;
///
/// let q: Queue<u64> = Queue::new();
/// let consumer = {
///     let q = q.clone();
///     thread::spawn(move || {
///         let mut sum = 0;
///         while let Ok(d) = q.consume() {
///             sum += *d;
///             d.ack().unwrap();
///         }
///         sum
///     })
/// };
/// for i in 1..=100 {
///     q.produce(i).unwrap();
/// }
/// q.close();
/// assert_eq!(consumer.join().unwrap(), 5050);
/// ```
pub struct Queue<T> {
    pub(crate) shared: Arc<Shared<T>>,
}

impl<T: Send + Sync + 'static> Default for Queue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + Sync + 'static> Queue<T> {
    /// A queue with the default settings: 30 s lease,
    /// `Backoff::exponential(100 ms, 30 s)`, 16 attempts.
    ///
    /// # Panics
    /// If the operating system refuses to start the redeliverer thread; use
    /// [`Builder::try_build`](crate::Builder::try_build) to get that as an error.
    ///
    /// ```
    /// let q: rebound::Queue<u64> = rebound::Queue::new();
    /// assert!(!q.is_closed());
    /// ```
    pub fn new() -> Self {
        Self::builder().build()
    }

    pub(crate) fn with_config(
        config: Config,
        clock: Option<ManualClock>,
    ) -> Result<Self, BuildError> {
        let shared = Shared::new(config, clock, teardown::<T>);
        Shared::open_first_block(&shared);
        let queue = Queue { shared };
        // From here on the last handle's teardown detaches it again.
        Shared::attach_clock(&queue.shared);
        // In the loom world no thread: the models run single passes of
        // `Redeliverer::redeliver_due` themselves (`rebound::__loom`).
        if !MODEL {
            queue.spawn_redeliverer()?;
        }
        Ok(queue)
    }

    pub(crate) fn spawn_redeliverer(&self) -> Result<(), BuildError> {
        let worker = Arc::clone(&self.shared);
        let handle = thread::Builder::new()
            .name("rebound-redeliverer".into())
            .spawn(move || redelivery::run(worker))
            .map_err(|e| BuildError::Spawn(e.kind()))?;
        *lock(&self.shared.redeliverer) = Some(handle);
        Ok(())
    }

    /// Puts `value` in the queue, ready now.
    ///
    /// # Errors
    /// [`ProduceError::Closed`] with the value, if the queue is closed.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// let id = q.produce("job").unwrap();
    /// let d = q.consume().unwrap();
    /// assert_eq!((d.id(), *d), (id, "job"));
    /// ```
    pub fn produce(&self, value: T) -> Result<MessageId, ProduceError<T>> {
        Shared::produce_one(&self.shared, value, None)
    }

    /// Puts `value` in the queue, ready now, with the id `id` of your own,
    /// unless a message with that id is already here: idempotent produce
    /// (JetStream's `Nats-Msg-Id`). The id is taken while its message is
    /// pending, delayed, held or waiting for redelivery, while it is a dead
    /// letter not drained yet, and for the queue's
    /// [`dedup_window`](crate::Builder::dedup_window) after it was acked or
    /// dead-lettered (default: no window). Make ids with
    /// [`MessageId::from_uuid`] or [`MessageId::from_key`]. Ids this queue's
    /// [`produce`](Self::produce) minted are always taken (they name a
    /// message this queue has or had). The message is claimed in order with
    /// this producer's other immediate messages. A journaled queue keeps the
    /// id taken across a restart while the message lives and for the rest of
    /// its window.
    ///
    /// [`produce`](Self::produce) does not pay for this: its ids are unique
    /// by construction and never enter the map of taken ids.
    ///
    /// # Errors
    /// [`ProduceError::Duplicate`] with the value if the id is taken;
    /// otherwise as [`produce`](Self::produce).
    ///
    /// ```
    /// use rebound::{MessageId, Queue};
    /// let q = Queue::new();
    /// let id = MessageId::from_key("charge order 1042");
    /// assert_eq!(q.produce_with_id(id, "charge 1042").unwrap(), id);
    /// // A retry of the same request is refused while the first is live:
    /// assert!(q.produce_with_id(id, "charge 1042").unwrap_err().is_duplicate());
    /// let d = q.consume().unwrap();
    /// assert_eq!(d.id(), id);
    /// d.ack().unwrap();
    /// // No dedup window: the id is free again once acked.
    /// q.produce_with_id(id, "charge 1042 again").unwrap();
    /// ```
    pub fn produce_with_id(&self, id: MessageId, value: T) -> Result<MessageId, ProduceError<T>> {
        let shared = &self.shared;
        if shared
            .dedup
            .take(id, || shared.clock.precise(), false)
            .is_err()
        {
            return Err(ProduceError::Duplicate(value));
        }
        Shared::produce_with(shared, value, None, Some(id)).inspect_err(|_| {
            shared.dedup.give_back(id);
        })
    }

    /// Puts a drained dead letter back as a pending message, ready now, with
    /// the same id and a fresh attempt budget: its next delivery has
    /// `attempt() == 1` (SQS's dead-letter redrive). Counted in
    /// [`Stats::redriven`](crate::Stats::redriven) and, as a message put in
    /// the queue, in `produced`.
    ///
    /// # Errors
    /// The letter back, untouched: [`ProduceError::Closed`] if the queue is
    /// closed, [`ProduceError::Duplicate`] if a message with its id is live
    /// (one given to [`produce_with_id`](Self::produce_with_id) since, or the
    /// same letter redriven twice), [`ProduceError::Journal`] if its record
    /// could not be written.
    ///
    /// ```
    /// use rebound::Queue;
    /// let q: Queue<&str> = Queue::builder().max_attempts(1).build();
    /// let id = q.produce("flaky").unwrap();
    /// q.consume().unwrap().rollback().unwrap(); // its last attempt: dead
    /// let letter = q.drain_dead_letters().pop().unwrap();
    /// // ... the downstream service is fixed; try it again:
    /// assert_eq!(q.redrive(letter).unwrap(), id);
    /// let d = q.consume().unwrap();
    /// assert_eq!((d.id(), d.attempt(), *d), (id, 1, "flaky"));
    /// d.ack().unwrap();
    /// assert_eq!(q.stats().redriven, 1);
    /// ```
    pub fn redrive(&self, letter: DeadLetter<T>) -> Result<MessageId, ProduceError<DeadLetter<T>>> {
        let shared = &self.shared;
        let DeadLetter {
            id,
            attempts,
            reason,
            group,
            payload,
        } = letter;
        let back = |payload| DeadLetter {
            id,
            attempts,
            reason,
            group,
            payload,
        };
        if let Some(key) = group {
            // A grouped message's id was minted for it (never in the dedup
            // map); its group decides where it goes.
            return Shared::produce_in_group(shared, key.as_u64(), payload, Some(id))
                .map_err(|e| e.map(back));
        }
        if shared
            .dedup
            .take(id, || shared.clock.precise(), true)
            .is_err()
        {
            return Err(ProduceError::Duplicate(back(payload)));
        }
        match Shared::produce_with(shared, payload, None, Some(id)) {
            Ok(id) => {
                shared.counters.bump(Counter::Redriven, 1);
                Ok(id)
            }
            Err(e) => {
                shared.dedup.give_back(id);
                Err(e.map(back))
            }
        }
    }

    /// Puts `value` into the ordered group `group`, ready now. The messages
    /// of one group are delivered one at a time, in the order their
    /// `produce_in_group` calls returned: the next becomes claimable only
    /// when the one before is acked or dead-lettered (and no handler holds
    /// it any more). A rolled-back, deferred or expired message comes back,
    /// after its backoff, before every later message of its group. Different
    /// groups are processed in parallel by all consumers; ungrouped messages
    /// are not affected.
    ///
    /// A dead letter releases its group (the next message is delivered),
    /// unless the queue was built with
    /// [`hold_groups`](crate::Builder::hold_groups): then the group waits
    /// until the letter is [`redrive`](Self::redrive)n or the group
    /// [released](Self::release_group).
    ///
    /// # Errors
    /// As [`produce`](Self::produce).
    ///
    /// ```
    /// use rebound::Queue;
    /// let q = Queue::new();
    /// q.produce_in_group("account-7", "debit 30").unwrap();
    /// q.produce_in_group("account-7", "credit 50").unwrap();
    /// q.produce_in_group("account-9", "debit 5").unwrap();
    ///
    /// let first = q.consume().unwrap();
    /// assert_eq!(*first, "debit 30");
    /// // account-7's credit waits for its debit; account-9 does not:
    /// let other = q.try_consume().unwrap();
    /// assert_eq!(*other, "debit 5");
    /// assert!(q.try_consume().is_err());
    /// first.rollback().unwrap(); // comes back before the credit
    /// # other.ack().unwrap();
    /// let again = q.consume().unwrap();
    /// assert_eq!((*again, again.attempt()), ("debit 30", 2));
    /// again.ack().unwrap();
    /// assert_eq!(*q.consume().unwrap(), "credit 50");
    /// ```
    pub fn produce_in_group(
        &self,
        group: impl Into<GroupKey>,
        value: T,
    ) -> Result<MessageId, ProduceError<T>> {
        Shared::produce_in_group(&self.shared, group.into().as_u64(), value, None)
    }

    /// Puts every value into the ordered group `group`, in order, ready now:
    /// [`produce_in_group`](Self::produce_in_group) for a batch, with one
    /// admission and one lock of the group for all of them.
    ///
    /// # Errors
    /// [`ProduceError::Closed`] with every value, if the queue is closed (a
    /// batch is accepted whole or not at all).
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// let ids = q.produce_batch_in_group("order-9", vec!["paid", "packed", "shipped"]).unwrap();
    /// for (id, step) in ids.into_iter().zip(["paid", "packed", "shipped"]) {
    ///     let d = q.consume().unwrap();
    ///     assert_eq!((d.id(), *d), (id, step));
    ///     assert!(q.try_consume().is_err()); // one at a time
    ///     d.ack().unwrap();
    /// }
    /// ```
    pub fn produce_batch_in_group(
        &self,
        group: impl Into<GroupKey>,
        values: impl IntoIterator<Item = T>,
    ) -> Result<Vec<MessageId>, ProduceError<Vec<T>>> {
        let values = values.into_iter().collect();
        Shared::produce_batch_in_group(&self.shared, group.into().as_u64(), values)
    }

    /// Releases `group` if its dead-lettered head holds it (queues built
    /// with [`hold_groups`](crate::Builder::hold_groups)): the group's next
    /// message is delivered. Whether the group was held. A redrive of the
    /// letter afterwards puts it at the group's end.
    ///
    /// ```
    /// use rebound::Queue;
    /// let q: Queue<&str> = Queue::builder().hold_groups(true).build();
    /// q.produce_in_group(7, "bad").unwrap();
    /// q.produce_in_group(7, "next").unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert!(q.try_consume().is_err()); // held by its dead letter
    /// assert_eq!(q.stats().groups_held, 1);
    /// assert!(q.release_group(7));
    /// assert_eq!(*q.consume().unwrap(), "next");
    /// ```
    pub fn release_group(&self, group: impl Into<GroupKey>) -> bool {
        Shared::release_group(&self.shared, group.into().as_u64())
    }

    /// Puts `value` in the queue, ready `delay` from now.
    ///
    /// A zero `delay` makes it an immediate message, exactly as
    /// [`Self::produce`]: claimed in order with this producer's other
    /// immediate messages.
    ///
    /// # Errors
    /// [`ProduceError::Closed`] with the value, if the queue is closed.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let q = rebound::Queue::new();
    /// let start = Instant::now();
    /// q.produce_after(1u8, Duration::from_millis(20)).unwrap();
    /// let d = q.consume().unwrap();
    /// assert!(start.elapsed() >= Duration::from_millis(20));
    /// d.ack().unwrap();
    /// ```
    pub fn produce_after(&self, value: T, delay: Duration) -> Result<MessageId, ProduceError<T>> {
        let now = self.shared.clock.precise();
        Shared::produce_one(&self.shared, value, Some((clock::add(now, delay), now)))
    }

    /// Puts `value` in the queue, ready at `at`.
    ///
    /// An `at` that has already passed makes it an immediate message, as
    /// [`Self::produce`]: claimed in order with this producer's other
    /// immediate messages, and stamped as they are (a recent reading of the
    /// clock at the call, see [`Delivery::timestamp`]), so that the stamps
    /// agree with the order they are claimed in.
    ///
    /// # Errors
    /// [`ProduceError::Closed`] with the value, if the queue is closed.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let q = rebound::Queue::new();
    /// let at = Instant::now() + Duration::from_millis(10);
    /// q.produce_at('x', at).unwrap();
    /// assert!(q.try_consume().is_err());
    /// let d = q.consume().unwrap();
    /// assert!(Instant::now() >= at && d.timestamp() == at);
    /// # d.ack().unwrap();
    /// ```
    pub fn produce_at(&self, value: T, at: Instant) -> Result<MessageId, ProduceError<T>> {
        let now = self.shared.clock.precise();
        Shared::produce_one(
            &self.shared,
            value,
            Some((self.shared.clock.nanos(at), now)),
        )
    }

    /// Puts every value in the queue, ready now, in order, and returns
    /// their ids. Cheaper per message than calling [`Self::produce`] for
    /// each: one clock read, one epoch pin, one counter update and one
    /// reservation per block for the whole batch.
    ///
    /// # Errors
    /// [`ProduceError::Closed`] with every value, if the queue is closed
    /// (a batch is accepted whole or not at all).
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// let ids = q.produce_batch(1..=100).unwrap();
    /// assert_eq!(ids.len(), 100);
    /// let d = q.consume().unwrap();
    /// assert_eq!((*d, d.id()), (1, ids[0]));
    /// # d.ack().unwrap();
    /// q.close();
    /// let err = q.produce_batch(vec![7, 8]).unwrap_err();
    /// assert_eq!(err.into_inner(), vec![7, 8]);
    /// ```
    pub fn produce_batch(
        &self,
        values: impl IntoIterator<Item = T>,
    ) -> Result<Vec<MessageId>, ProduceError<Vec<T>>> {
        let values: Vec<T> = values.into_iter().collect();
        if values.is_empty() {
            // As `produce` does: a closed queue refuses even nothing.
            return if self.shared.is_closed() {
                Err(ProduceError::Closed(values))
            } else {
                Ok(Vec::new())
            };
        }
        #[cfg(feature = "journal")]
        if let Some(attached) = &self.shared.journal {
            return Shared::produce_journaled_batch(&self.shared, attached, values);
        }
        if !self.shared.admit(values.len() as u64) {
            return Err(ProduceError::Closed(values));
        }
        let shared = &self.shared;
        let mut ids = Vec::with_capacity(values.len());
        let many = values.len() > 1;
        Shared::push_fresh(
            shared,
            values.into_iter(),
            shared.recent_ns(),
            Minted,
            |id| ids.push(id),
        );
        shared.waiters.notify_after_publish(many);
        Ok(ids)
    }

    /// Claims the ready message with the earliest timestamp, without
    /// parking. (It may wait for a producer that reserved a slot holding up
    /// the chain to finish writing it: that message was produced before
    /// this call, so "nothing ready" would be false.)
    ///
    /// # Errors
    /// [`TryConsumeError::Empty`] if nothing is ready;
    /// [`TryConsumeError::Closed`] if the queue is closed and nothing is
    /// pending or in flight.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// q.produce(5).unwrap();
    /// let d = q.try_consume().unwrap();
    /// assert_eq!((*d, d.attempt()), (5, 1));
    /// d.ack().unwrap();
    /// assert!(q.try_consume().is_err());
    /// ```
    pub fn try_consume(&self) -> Result<Delivery<T>, TryConsumeError> {
        self.try_take(|precise| self.poll(precise))
    }

    /// Claims up to `max` ready messages, earliest first, without parking
    /// (see [`Self::try_consume`]).
    /// Each is its own [`Delivery`], with its own lease, settled on its own;
    /// the batch only shares the cost of finding them. `max == 0` returns
    /// an empty batch.
    ///
    /// # Errors
    /// As [`Self::try_consume`], when not even one message is ready.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// q.produce_batch(0..10).unwrap();
    /// let batch = q.try_consume_batch(4).unwrap();
    /// assert_eq!(batch.iter().map(|d| **d).collect::<Vec<_>>(), [0, 1, 2, 3]);
    /// for d in batch {
    ///     d.ack().unwrap();
    /// }
    /// assert_eq!(q.try_consume_batch(64).unwrap().len(), 6);
    /// ```
    pub fn try_consume_batch(&self, max: usize) -> Result<Vec<Delivery<T>>, TryConsumeError> {
        self.try_take(|precise| self.poll_many(precise, max))
    }

    /// Claims the ready message with the earliest timestamp, parking until
    /// one is ready.
    ///
    /// # Errors
    /// [`Closed`] once the queue is closed and nothing is pending or in
    /// flight.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// q.close();
    /// q.consume().unwrap().ack().unwrap();
    /// assert!(q.consume().is_err());
    /// ```
    pub fn consume(&self) -> Result<Delivery<T>, Closed> {
        self.take_until(None, None, |precise| self.poll(precise))
            .map_err(|_| Closed)
    }

    /// Claims up to `max` ready messages, earliest first, parking until at
    /// least one is ready (see [`Self::try_consume_batch`]). `max == 0`
    /// returns an empty batch at once.
    ///
    /// # Errors
    /// [`Closed`] once the queue is closed and nothing is pending or in
    /// flight.
    ///
    /// ```
    /// use std::thread;
    /// let q: rebound::Queue<u64> = rebound::Queue::new();
    /// let consumer = {
    ///     let q = q.clone();
    ///     thread::spawn(move || {
    ///         let mut sum = 0;
    ///         while let Ok(batch) = q.consume_batch(64) {
    ///             for d in batch {
    ///                 sum += *d;
    ///                 d.ack().unwrap();
    ///             }
    ///         }
    ///         sum
    ///     })
    /// };
    /// q.produce_batch(1..=1000).unwrap();
    /// q.close();
    /// assert_eq!(consumer.join().unwrap(), 500_500);
    /// ```
    pub fn consume_batch(&self, max: usize) -> Result<Vec<Delivery<T>>, Closed> {
        self.take_until(None, None, |precise| self.poll_many(precise, max))
            .map_err(|_| Closed)
    }

    /// Like [`Self::consume`], giving up after `timeout`.
    ///
    /// # Errors
    /// [`ConsumeTimeoutError::Timeout`] if nothing was ready in time;
    /// [`ConsumeTimeoutError::Closed`] as for [`Self::consume`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// assert!(q.consume_timeout(Duration::from_secs(1)).is_ok());
    /// assert!(q.consume_timeout(Duration::from_millis(5)).is_err());
    /// ```
    pub fn consume_timeout(&self, timeout: Duration) -> Result<Delivery<T>, ConsumeTimeoutError> {
        self.take_until(now().checked_add(timeout), None, |precise| {
            self.poll(precise)
        })
    }

    /// Like [`Self::consume`], giving up (with `Timeout`) once `stop` is set
    /// and [`Self::wake_consumers`] was called after setting it.
    pub(crate) fn consume_unless(
        &self,
        stop: &AtomicBool,
    ) -> Result<Delivery<T>, ConsumeTimeoutError> {
        self.take_until(None, Some(stop), |precise| self.poll(precise))
    }

    /// Wakes every parked consumer, so that one waiting in
    /// [`Self::consume_unless`] notices its stop flag.
    pub(crate) fn wake_consumers(&self) {
        self.shared.waiters.notify(true);
    }

    /// The queue's `max_attempts`.
    pub(crate) fn max_attempts(&self) -> u32 {
        self.shared.config.max_attempts
    }

    /// Closes the queue: `produce` fails from now on, consumers still get
    /// every pending message and every message that comes back from rollback
    /// or expiry, and once nothing is pending or in flight, `consume` returns
    /// [`Closed`]. Closing twice is harmless.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// q.close();
    /// assert!(q.is_closed() && q.produce(2).is_err());
    /// let d = q.consume().unwrap();
    /// d.rollback_after(std::time::Duration::ZERO).unwrap();
    /// let d = q.consume().unwrap(); // comes back after closing
    /// assert_eq!(d.attempt(), 2);
    /// d.ack().unwrap();
    /// assert_eq!(q.consume().unwrap_err(), rebound::Closed);
    /// ```
    ///
    /// Consumers wait for delayed messages too, until they are due: one
    /// produced with a delay of a year keeps `consume` waiting for a year.
    /// [`Self::close_due`] closes without waiting for them.
    pub fn close(&self) {
        self.shared.close(false);
    }

    /// Closes the queue like [`Self::close`], except that consumers do not
    /// wait for messages that are not due yet: once nothing is due and
    /// nothing is in flight, `consume` returns [`Closed`]. Messages still
    /// delayed then (a `produce_after` far in the future, a rollback waiting
    /// out a long backoff, one rolled back by a handler still running)
    /// stay in the queue, counted in [`Stats::delayed`], claimable when
    /// they fall due, and are dropped with the last handle.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = rebound::Queue::new();
    /// q.produce_after("next year", Duration::from_secs(365 * 86_400)).unwrap();
    /// q.produce("now").unwrap();
    /// q.close_due();
    /// q.consume().unwrap().ack().unwrap();
    /// assert_eq!(q.consume().unwrap_err(), rebound::Closed);
    /// assert_eq!(q.stats().delayed, 1);
    /// ```
    pub fn close_due(&self) {
        self.shared.close(true);
    }

    /// Whether [`Self::close`] was called.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// q.close();
    /// assert!(q.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Counters and gauges; see [`Stats`]. Walks the index, so it costs
    /// O(pending batches): meant for monitoring, not for every message.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// q.produce_after(2, Duration::from_secs(60)).unwrap();
    /// let d = q.consume().unwrap();
    /// let s = q.stats();
    /// assert_eq!((s.produced, s.delivered, s.ready, s.delayed, s.in_flight), (2, 1, 0, 1, 1));
    /// # d.ack().unwrap();
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Acks every delivery of `deliveries` and returns how many were acked
    /// (the others' leases had expired: [`LeaseExpired`](crate::LeaseExpired)).
    /// Each is its own ack, as [`Delivery::ack`]; on a journaled queue with
    /// [`Durability::Fsync`](crate::Durability::Fsync) they wait for one
    /// sync together instead of one each, so that a consumer of a batch
    /// pays one sync, as a producer of a batch does.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// q.produce_batch(1..=10).unwrap();
    /// let batch = q.try_consume_batch(10).unwrap();
    /// assert_eq!(q.ack_batch(batch), 10);
    /// assert_eq!(q.stats().acked, 10);
    /// ```
    pub fn ack_batch(&self, deliveries: impl IntoIterator<Item = Delivery<T>>) -> usize {
        let ack_all = || {
            deliveries
                .into_iter()
                .map(Delivery::ack)
                .filter(Result::is_ok)
                .count()
        };
        #[cfg(feature = "journal")]
        if let Some(attached) = &self.shared.journal {
            return attached.journal.deferring(ack_all);
        }
        ack_all()
    }

    /// Takes every dead letter collected so far.
    ///
    /// A message whose last delivery expired while its handler still holds
    /// it is counted as dead-lettered at once, and listed here once that
    /// handler drops its [`Delivery`].
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// q.produce("bad").unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.drain_dead_letters().len(), 1);
    /// assert!(q.drain_dead_letters().is_empty());
    /// ```
    pub fn drain_dead_letters(&self) -> Vec<DeadLetter<T>> {
        let letters = lock(&self.shared.dead_letters)
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let shared = &self.shared;
        #[cfg(feature = "journal")]
        if let Some(attached) = &shared.journal {
            // A letter that holds its group keeps holding it across a
            // restart: a Hold record instead of its Drained record.
            let holds = |letter: &DeadLetter<T>| match letter.group {
                Some(key) if shared.config.hold_groups => {
                    let (id, key) = (letter.id, key.as_u64());
                    let journal = &attached.journal;
                    shared.groups.holds(key, id, || journal.hold(id, key))
                }
                _ => false,
            };
            let drained: Vec<MessageId> = letters
                .iter()
                .filter(|letter| !holds(letter))
                .map(DeadLetter::id)
                .collect();
            attached.journal.drained(drained.into_iter());
        }
        let windows = shared
            .dedup
            .drained_all(letters.iter().map(DeadLetter::id), shared.clock.precise());
        #[cfg(feature = "journal")]
        if let Some(attached) = &shared.journal {
            for (id, until) in windows {
                attached
                    .journal
                    .windowed(id, attached.journal.wall_of(until));
            }
        }
        #[cfg(not(feature = "journal"))]
        let _ = windows;
        letters
    }
}

#[cfg(feature = "journal")]
impl<T: Send + Sync + 'static> Queue<T> {
    /// What opening the journal found and did; `None` for a queue that is
    /// not journaled.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// assert!(q.recovery().is_none());
    /// ```
    pub fn recovery(&self) -> Option<crate::Recovery> {
        let attached = self.shared.journal.as_ref()?;
        *crate::sync::lock_plain(&attached.journal.recovery)
    }

    /// What the journal has written, synced and compacted; `None` for a
    /// queue that is not journaled.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// assert!(q.journal_stats().is_none());
    /// ```
    pub fn journal_stats(&self) -> Option<crate::JournalStats> {
        Some(self.shared.journal.as_ref()?.journal.stats())
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        // Relaxed: a new handle can only be made from a live one, so the
        // count cannot reach zero meanwhile (as in `Arc::clone`).
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Queue {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        // AcqRel: the last handle's teardown must see every other handle's
        // work (as in `Arc::drop`).
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            (self.shared.teardown)(&self.shared);
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("config", &self.shared.config)
            .field("closed", &self.shared.is_closed())
            .finish_non_exhaustive()
    }
}
