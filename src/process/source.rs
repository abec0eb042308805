//! `Source` and `Settle`: what the processing runtime needs of a queue and
//! of its deliveries, so that it runs over any backend (the in-memory
//! [`Queue`] here, the JetStream queue of `rebound-nats`).
//!
//! Both traits are implemented with the backend's own inherent methods and
//! used only through generics: the runtime is monomorphised for each
//! backend, with no `dyn` and no boxing per message.

use crate::delivery::Delivery;
use crate::error::LeaseExpired;
use crate::queue::Queue;
use crate::sync::{AtomicBool, Ordering};
// Not `crate::sync::Arc`: a public signature is the same in every world.
use std::sync::Arc;
use std::time::Duration;

/// A queue the processing runtime ([`Processor`](crate::Processor),
/// [`Processing`](crate::Processing)) can run over.
///
/// [`Queue`] implements it, and so does `rebound_nats::Queue`. A backend
/// implements it with its own consume methods; the runtime drives it from a
/// dispatcher thread ([`next_unless`](Self::next_unless)) and from pool
/// threads ([`try_next`](Self::try_next)).
///
/// ```
/// use rebound::{Pool, Queue, Source};
///
/// // Any source: the same handler code runs over every backend.
/// fn run_all<S: Source<Message = u32>>(source: &S) -> u64
/// where
///     S::Delivery: std::ops::Deref<Target = u32>,
/// {
///     source.processor().start(Pool::global(), |n: &S::Delivery| assert!(**n < 10)).unwrap().join().acked
/// }
///
/// let q = Queue::new();
/// q.produce(3).unwrap();
/// q.close();
/// assert_eq!(run_all(&q), 1);
/// ```
pub trait Source: Clone + Send + Sync + 'static {
    /// The message type.
    type Message: Send + Sync + 'static;
    /// One claim on one message, given to the handler.
    type Delivery: Settle + Send + 'static;

    /// Waits for the next delivery. `None` once the source is closed and
    /// drained, or once `stop` is set and [`wake`](Self::wake) was called
    /// after setting it (a backend that cannot be woken may check `stop` at
    /// a short interval instead).
    ///
    /// ```
    /// use rebound::{Queue, Source, Stop};
    /// let q = Queue::new();
    /// q.produce(1).unwrap();
    /// let stop = Stop::new();
    /// let d = q.next_unless(&stop).unwrap();
    /// assert_eq!(*d, 1);
    /// # d.ack().unwrap();
    /// stop.set();
    /// q.wake();
    /// assert!(q.next_unless(&stop).is_none());
    /// ```
    fn next_unless(&self, stop: &Stop) -> Option<Self::Delivery>;

    /// The next delivery if one is ready now, without waiting.
    ///
    /// ```
    /// use rebound::{Queue, Source};
    /// let q = Queue::<u8>::new();
    /// assert!(q.try_next().is_none());
    /// ```
    fn try_next(&self) -> Option<Self::Delivery>;

    /// Wakes every consumer waiting in [`next_unless`](Self::next_unless),
    /// so that it sees its stop flag.
    ///
    /// ```
    /// use rebound::{Queue, Source};
    /// Queue::<u8>::new().wake(); // nobody waits: nothing happens
    /// ```
    fn wake(&self);

    /// How many deliveries a message gets before it is dead-lettered.
    ///
    /// ```
    /// use rebound::{Queue, Source};
    /// let q: Queue<u8> = Queue::builder().max_attempts(4).build();
    /// assert_eq!(Source::max_attempts(&q), 4);
    /// ```
    fn max_attempts(&self) -> u32;

    /// Configures a processor over this source; see
    /// [`Queue::processor`].
    ///
    /// ```
    /// use rebound::{Pool, Queue, Source};
    /// let q = Queue::<u8>::new();
    /// let handle = Source::processor(&q).concurrency(1).start(Pool::global(), |_| ()).unwrap();
    /// q.close();
    /// assert_eq!(handle.join().claimed, 0);
    /// ```
    fn processor(&self) -> crate::Processor<Self::Message, Self>
    where
        Self: Sized,
    {
        crate::Processor::new(self.clone())
    }
}

/// What the runtime does with a delivery of a [`Source`]: the settles and
/// the lease extension of [`Delivery`], with the same meaning on every
/// backend, and, where the backend offers it, a lease kept alive while the
/// handler runs ([`keep_alive`](Self::keep_alive)).
///
/// ```
/// use rebound::{Queue, Settle};
///
/// fn finish<D: Settle>(d: D) -> Result<(), rebound::LeaseExpired> {
///     if d.attempt() < 3 { d.rollback() } else { d.dead_letter() }
/// }
///
/// let q = Queue::new();
/// q.produce(1).unwrap();
/// finish(q.consume().unwrap()).unwrap();
/// assert_eq!(q.stats().rolled_back, 1);
/// ```
pub trait Settle: Sized {
    /// Which delivery of the message this is, from 1. See
    /// [`Delivery::attempt`].
    ///
    /// ```
    /// use rebound::Settle;
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// let d = q.consume().unwrap();
    /// assert_eq!(Settle::attempt(&d), 1);
    /// # d.ack().unwrap();
    /// ```
    fn attempt(&self) -> u32;

    /// Done; see [`Delivery::ack`].
    ///
    /// # Errors
    /// [`LeaseExpired`] if the delivery's rights had ended: the settle had
    /// no effect.
    ///
    /// ```
    /// use rebound::Settle;
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// Settle::ack(q.consume().unwrap()).unwrap();
    /// assert_eq!(q.stats().acked, 1);
    /// ```
    fn ack(self) -> Result<(), LeaseExpired>;

    /// Try again after the backoff; see [`Delivery::rollback`].
    ///
    /// # Errors
    /// [`LeaseExpired`], as [`ack`](Self::ack).
    ///
    /// ```
    /// use rebound::Settle;
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// Settle::rollback(q.consume().unwrap()).unwrap();
    /// assert_eq!(q.stats().rolled_back, 1);
    /// ```
    fn rollback(self) -> Result<(), LeaseExpired>;

    /// Try again after `delay`; see [`Delivery::rollback_after`].
    ///
    /// # Errors
    /// [`LeaseExpired`], as [`ack`](Self::ack).
    ///
    /// ```
    /// use rebound::Settle;
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// Settle::rollback_after(q.consume().unwrap(), std::time::Duration::ZERO).unwrap();
    /// assert_eq!(q.consume().unwrap().attempt(), 2);
    /// ```
    fn rollback_after(self, delay: Duration) -> Result<(), LeaseExpired>;

    /// Not now, without using an attempt; see [`Delivery::defer`].
    ///
    /// # Errors
    /// [`LeaseExpired`], as [`ack`](Self::ack).
    ///
    /// ```
    /// use rebound::Settle;
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().max_attempts(1).build();
    /// q.produce(1).unwrap();
    /// Settle::defer(q.consume().unwrap(), std::time::Duration::ZERO).unwrap();
    /// assert_eq!(q.consume().unwrap().attempt(), 1);
    /// ```
    fn defer(self, delay: Duration) -> Result<(), LeaseExpired>;

    /// Give up now; see [`Delivery::dead_letter`].
    ///
    /// # Errors
    /// [`LeaseExpired`], as [`ack`](Self::ack).
    ///
    /// ```
    /// use rebound::Settle;
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// Settle::dead_letter(q.consume().unwrap()).unwrap();
    /// assert_eq!(q.stats().dead_lettered, 1);
    /// ```
    fn dead_letter(self) -> Result<(), LeaseExpired>;

    /// Still working on it; see [`Delivery::extend_lease`].
    ///
    /// # Errors
    /// [`LeaseExpired`], as [`ack`](Self::ack).
    ///
    /// ```
    /// use rebound::Settle;
    /// let q = rebound::Queue::new();
    /// q.produce(1).unwrap();
    /// let d = q.consume().unwrap();
    /// Settle::extend_lease(&d, std::time::Duration::from_secs(60)).unwrap();
    /// # d.ack().unwrap();
    /// ```
    fn extend_lease(&self, extension: Duration) -> Result<(), LeaseExpired>;

    /// Keeps this delivery's lease alive until the returned guard drops:
    /// extends it about halfway through what is left of it each time, for
    /// at most `max` beyond one lease from now, and calls `extended` after
    /// each extension (before the guard's drop returns, for every
    /// extension made). `None` if this delivery cannot do it by itself.
    ///
    /// [`Processor::auto_extend`](crate::Processor::auto_extend) holds the
    /// guard while the handler runs, and drops it before settling, over any
    /// source but the in-memory [`Queue`]: the in-memory queue's processors
    /// have one extender thread for all their handlers instead, so its
    /// deliveries return `None` (the default). A backend implements it
    /// when its deliveries can extend their own leases without their
    /// handler, as `rebound_nats::Delivery` does (a task on its client's
    /// runtime sends the server's in-progress acknowledgements). Once the
    /// guard has dropped, or the delivery is settled, nothing extends the
    /// lease any more, and a settle sees every extension made before.
    ///
    /// ```
    /// use rebound::{Queue, Settle};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let q = Queue::new();
    /// q.produce(1).unwrap();
    /// let d = q.consume().unwrap();
    /// // The in-memory queue leaves it to its processors' extender thread.
    /// let guard = d.keep_alive(Duration::from_secs(60), Arc::new(|| println!("extended")));
    /// assert!(guard.is_none());
    /// drop(guard);
    /// d.ack().unwrap();
    /// ```
    fn keep_alive(
        &self,
        max: Duration,
        extended: Arc<dyn Fn() + Send + Sync>,
    ) -> Option<Box<dyn Send>> {
        let _ = (max, extended);
        None
    }
}

/// The stop flag a processor hands to [`Source::next_unless`]: set once,
/// when the processor stops claiming.
///
/// ```
/// let stop = rebound::Stop::new();
/// assert!(!stop.is_set());
/// stop.set();
/// assert!(stop.is_set());
/// ```
#[derive(Debug, Default)]
pub struct Stop(AtomicBool);

impl Stop {
    /// A flag not yet set.
    ///
    /// ```
    /// assert!(!rebound::Stop::new().is_set());
    /// ```
    pub fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// assert!(!rebound::Stop::default().is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        // SeqCst: pairs with the store in `set`; read by a consumer after
        // registering as a sleeper (see `Queue::consume_unless`).
        self.0.load(Ordering::SeqCst)
    }

    /// Sets the flag. Call [`Source::wake`] after it, so that a consumer
    /// waiting in [`Source::next_unless`] sees it.
    ///
    /// ```
    /// let stop = rebound::Stop::new();
    /// stop.set();
    /// assert!(stop.is_set());
    /// ```
    pub fn set(&self) {
        // SeqCst: pairs with the loads in `is_set`, on the other side of
        // the store-buffering pattern with `Queue::consume_unless`.
        self.0.store(true, Ordering::SeqCst);
    }

    /// The flag itself, for the in-memory queue's wait.
    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.0
    }
}

impl<T: Send + Sync + 'static> Source for Queue<T> {
    type Message = T;
    type Delivery = Delivery<T>;

    #[inline]
    fn next_unless(&self, stop: &Stop) -> Option<Delivery<T>> {
        // `Timeout` is only returned once stopping; `Closed` once closed
        // and drained.
        self.consume_unless(stop.flag()).ok()
    }

    #[inline]
    fn try_next(&self) -> Option<Delivery<T>> {
        self.try_consume().ok()
    }

    #[inline]
    fn wake(&self) {
        self.wake_consumers();
    }

    #[inline]
    fn max_attempts(&self) -> u32 {
        Queue::max_attempts(self)
    }
}

impl<T> Settle for Delivery<T> {
    #[inline]
    fn attempt(&self) -> u32 {
        Delivery::attempt(self)
    }

    #[inline]
    fn ack(self) -> Result<(), LeaseExpired> {
        Delivery::ack(self)
    }

    #[inline]
    fn rollback(self) -> Result<(), LeaseExpired> {
        Delivery::rollback(self)
    }

    #[inline]
    fn rollback_after(self, delay: Duration) -> Result<(), LeaseExpired> {
        Delivery::rollback_after(self, delay)
    }

    #[inline]
    fn defer(self, delay: Duration) -> Result<(), LeaseExpired> {
        Delivery::defer(self, delay)
    }

    #[inline]
    fn dead_letter(self) -> Result<(), LeaseExpired> {
        Delivery::dead_letter(self)
    }

    #[inline]
    fn extend_lease(&self, extension: Duration) -> Result<(), LeaseExpired> {
        Delivery::extend_lease(self, extension)
    }
}
