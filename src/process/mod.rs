//! The processing runtime: a dispatcher thread per processor claims messages
//! (never more than its concurrency allows) and runs the handler for each
//! on a rayon pool, catching panics and applying the handler's [`Outcome`].
//!
//! Why a dispatcher thread and not N long-lived pool jobs that each loop
//! `consume -> handle`: a job blocked in `consume` holds its pool thread
//! while the queue is idle. On rayon's global pool, shared with parallel
//! iterators and other processors, that would starve everyone else (two
//! idle processors on a two-thread pool would stop every `par_iter` in the
//! program). Here the only thread that ever blocks on the queue is the
//! dispatcher, which is not a pool thread; pool threads only run handlers,
//! and a job hands its thread back as soon as no message is ready (or after
//! [`BUDGET`] messages in a row, so that other pool work gets its turn).

use crate::delivery::Delivery;
use crate::error::{LeaseExpired, StartError};
use crate::queue::Queue;
use crate::sync::{Arc, Condvar, Instant, Mutex, lock, now, thread, wait};
use crate::unwind::catch;
use report::{Tallies, Tally};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

mod extend;
mod outcome;
mod pool;
mod report;
mod source;

pub use outcome::Outcome;
pub use pool::Pool;
pub use report::Report;
pub use source::{Settle, Source, Stop};

/// How many messages one pool job handles in a row (claiming the next with
/// `try_consume` while messages are ready) before it returns its thread to
/// the pool. Saves a dispatcher wake-up and a pool spawn per message under
/// load, without keeping a shared pool's thread for long.
const BUDGET: usize = 32;

/// The permits: how many handlers (or the dispatcher's pending claim) are
/// running, and who waits for one to end.
#[derive(Debug)]
struct Permits {
    taken: usize,
    /// Threads waiting on `Core::cond` (the dispatcher for a free permit, a
    /// `join` or `shutdown` for none taken).
    waiting: usize,
}

/// What the handle, the dispatcher and the pool jobs share.
#[derive(Debug)]
struct Core {
    limit: usize,
    /// Set once by `shutdown` or drop: no new claims.
    stop: Stop,
    permits: Mutex<Permits>,
    cond: Condvar,
    tallies: Tallies,
}

impl Core {
    fn stopping(&self) -> bool {
        self.stop.is_set()
    }

    /// Takes a permit, waiting while all are taken. `false` once stopping.
    fn acquire(&self) -> bool {
        let mut permits = lock(&self.permits);
        loop {
            if self.stopping() {
                return false;
            }
            if permits.taken < self.limit {
                permits.taken += 1;
                return true;
            }
            permits.waiting += 1;
            permits = wait(&self.cond, permits, None);
            permits.waiting -= 1;
        }
    }

    /// Returns a permit. Whatever the handler's thread wrote before (its
    /// tallies) happens before a waiter that sees the count drop.
    fn release(&self) {
        let mut permits = lock(&self.permits);
        permits.taken -= 1;
        let wake = permits.waiting > 0;
        drop(permits);
        // A waiter counted itself under the lock and released it only by
        // waiting, so this notification cannot be missed.
        if wake {
            self.cond.notify_all();
        }
    }

    /// Waits until no permit is taken, or until `deadline`.
    fn wait_idle(&self, deadline: Option<Instant>) {
        let mut permits = lock(&self.permits);
        while permits.taken > 0 {
            let timeout = match deadline {
                Some(deadline) => match deadline.checked_duration_since(now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return,
                },
                None => None,
            };
            permits.waiting += 1;
            permits = wait(&self.cond, permits, timeout);
            permits.waiting -= 1;
        }
    }

    /// Stops claiming and wakes the dispatcher wherever it waits.
    fn stop<S: Source>(&self, queue: &S) {
        self.stop.set();
        queue.wake();
        // Taking the lock orders this after a dispatcher's check in
        // `acquire`: it either saw the flag or is waiting, and is woken.
        drop(lock(&self.permits));
        self.cond.notify_all();
    }
}

/// Returns a permit when a pool job ends, however it ends.
struct Permit<'a>(&'a Core);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// What the dispatcher and every pool job of one processor use.
struct Runner<S: Source, F> {
    core: Arc<Core>,
    queue: S,
    handler: F,
    max_attempts: u32,
    /// Extends the leases of running handlers (`Processor::auto_extend`)
    /// of the in-memory queue.
    extender: Option<Box<dyn extend::Extend<S::Delivery>>>,
    /// `Processor::auto_extend` over any other source: each running
    /// handler's delivery keeps its own lease alive.
    keep_alive: Option<KeepAlive>,
}

/// What `Runner::handle` asks of a delivery's [`Settle::keep_alive`].
struct KeepAlive {
    max: Duration,
    /// Counts an extension in the processor's report.
    extended: std::sync::Arc<dyn Fn() + Send + Sync>,
}

impl<S, F, R> Runner<S, F>
where
    S: Source,
    F: Fn(&S::Delivery) -> R + Send + Sync + 'static,
    R: Into<Outcome>,
{
    /// The dispatcher: take a permit, claim a message, hand it to the pool.
    fn dispatch(this: Arc<Self>, pool: Pool) {
        let core = &this.core;
        while core.acquire() {
            match this.queue.next_unless(&core.stop) {
                Some(delivery) => {
                    core.tallies.add(Tally::Claimed);
                    let runner = Arc::clone(&this);
                    pool.spawn(move || {
                        runner.run(delivery);
                        // The last handle of the queue may go with this job,
                        // and with it, teardown: a payload destructor that
                        // panics there must not unwind into rayon.
                        if let Err(panic) = catch(move || drop(runner)) {
                            panic.discard();
                        }
                    });
                }
                // Stopping, or the queue is closed and drained.
                None => {
                    core.release();
                    break;
                }
            }
        }
    }

    /// A pool job: handle `delivery`, then keep handling ready messages up
    /// to the budget, then return the permit.
    fn run(&self, delivery: S::Delivery) {
        let _permit = Permit(&self.core);
        let mut next = Some(delivery);
        let mut handled = 0;
        while let Some(delivery) = next.take() {
            self.handle(delivery);
            handled += 1;
            if handled < BUDGET && !self.core.stopping() {
                if let Some(delivery) = self.queue.try_next() {
                    self.core.tallies.add(Tally::Claimed);
                    next = Some(delivery);
                }
            }
        }
    }

    /// Runs the handler, catching a panic, and settles the delivery.
    fn handle(&self, delivery: S::Delivery) {
        // AssertUnwindSafe: after a panic the runtime touches only the
        // delivery, whose settle does not depend on what the handler did.
        let watch = self
            .extender
            .as_deref()
            .map(|e| extend::Watch::new(e, &delivery));
        let kept = self
            .keep_alive
            .as_ref()
            .and_then(|k| delivery.keep_alive(k.max, std::sync::Arc::clone(&k.extended)));
        let result = catch(|| (self.handler)(&delivery).into());
        if let Some(kept) = kept {
            // The backend's guard: its drop must not unwind into rayon.
            if let Err(panic) = catch(move || drop(kept)) {
                panic.discard();
            }
        }
        drop(watch);
        let last = delivery.attempt() >= self.max_attempts;
        let retried = if last {
            Tally::DeadLettered
        } else {
            Tally::Retried
        };
        let tally = match result {
            Ok(Outcome::Ack) => settle(|| delivery.ack(), Tally::Acked),
            Ok(Outcome::Retry) => settle(|| delivery.rollback(), retried),
            Ok(Outcome::RetryAfter(delay)) => settle(|| delivery.rollback_after(delay), retried),
            Ok(Outcome::Defer(delay)) => settle(|| delivery.defer(delay), Tally::Deferred),
            Ok(Outcome::DeadLetter) => settle(|| delivery.dead_letter(), Tally::DeadLettered),
            Err(panic) => {
                // Refused only if the lease had run out: then the queue has
                // already taken the message back.
                let _ = settle(|| delivery.rollback(), Tally::Panicked);
                // A panic payload whose own drop panics must not unwind into
                // rayon (which would abort the process).
                panic.discard();
                Tally::Panicked
            }
        };
        self.core.tallies.add(tally);
    }
}

/// Runs a settle of a delivery, on the pool thread, and tallies it as
/// `tally` if it was accepted. The only user code a settle runs is the
/// payload's destructor (the last holder of an acked message drops it),
/// after the settle's transition: a panic there means the settle took
/// effect, and it must not unwind into rayon, which would abort the process.
fn settle(settle: impl FnOnce() -> Result<(), LeaseExpired>, tally: Tally) -> Tally {
    match catch(settle) {
        Ok(Ok(())) => tally,
        Ok(Err(LeaseExpired)) => Tally::Expired,
        Err(panic) => {
            panic.discard();
            tally
        }
    }
}

/// Configures a processor before starting it; see [`Queue::processor`].
///
/// ```
/// use rebound::Queue;
/// let q: Queue<u64> = Queue::new();
/// let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
/// let handle = q
///     .processor()
///     .concurrency(2) // at most 2 messages claimed at once
///     .start(pool, |n| assert!(**n < 100))
///     .unwrap();
/// q.produce(7).unwrap();
/// q.close();
/// assert_eq!(handle.join().acked, 1);
/// ```
///
/// The same over any [`Source`]: `S` is the queue it runs over, the
/// in-memory [`Queue`] unless said otherwise.
pub struct Processor<T, S = Queue<T>> {
    queue: S,
    concurrency: Option<usize>,
    message: PhantomData<fn() -> T>,
    /// Set by `auto_extend`.
    auto_extend: Option<Duration>,
}

impl<T, S> fmt::Debug for Processor<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Processor")
            .field("concurrency", &self.concurrency)
            .field("auto_extend", &self.auto_extend)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static, S: Source<Message = T>> Processor<T, S> {
    /// A processor over `queue`; see [`Source::processor`].
    pub(crate) fn new(queue: S) -> Self {
        Self {
            queue,
            concurrency: None,
            message: PhantomData,
            auto_extend: None,
        }
    }

    /// At most `limit` messages claimed by this processor at once: handlers
    /// running, plus the one message the dispatcher may be about to hand
    /// over. Default: the pool's thread count.
    ///
    /// More than the pool's threads lets claimed messages wait in the pool's
    /// queue with their lease running; fewer leaves threads for other work.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// let handle = q.processor().concurrency(1).start(rebound::Pool::global(), |_| ()).unwrap();
    /// assert_eq!(handle.concurrency(), 1);
    /// # q.close();
    /// # handle.join();
    /// ```
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// While a handler still runs, extends its lease before it runs out,
    /// until the handler has held it `max` longer than one lease; then it
    /// runs out as any lease does, and the message is redelivered. A live
    /// handler is not redelivered under another's feet; a hung one still
    /// is, after one lease and `max`. [`Report::extended`] counts the
    /// extensions.
    ///
    /// Over the in-memory [`Queue`], the lease restarts when the handler
    /// starts (a message that waited for a pool thread gets a whole
    /// lease), and each extension comes halfway through what is left of
    /// it. One extender thread per processor does it, asleep while no
    /// handler runs long. Under a [`ManualClock`](crate::ManualClock) it
    /// extends when the clock is advanced, before the queue looks at the
    /// new time: advance in steps shorter than the lease to see it keep a
    /// handler's lease.
    ///
    /// Over any other [`Source`], each handler's delivery keeps its own
    /// lease alive while the handler runs ([`Settle::keep_alive`], with
    /// the same halfway rule and the same `max`, from when the handler
    /// starts); a source whose deliveries do not offer it gets no
    /// extension. `rebound_nats::Queue` offers it; as its server extends
    /// only by whole leases, a hung handler's rights end one lease and
    /// `max` after it started, and the server redelivers the message when
    /// the last lease it granted runs out, up to about half a lease later.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().lease(Duration::from_millis(300)).build();
    /// let handle = q
    ///     .processor()
    ///     .auto_extend(Duration::from_secs(60))
    ///     .start(rebound::Pool::global(), |_| std::thread::sleep(Duration::from_millis(900)))
    ///     .unwrap();
    /// q.produce(1).unwrap();
    /// q.close();
    /// let report = handle.join();
    /// assert_eq!((report.acked, report.expired), (1, 0)); // not redelivered while it slept
    /// ```
    pub fn auto_extend(mut self, max: Duration) -> Self {
        self.auto_extend = Some(max);
        self
    }

    /// Starts the dispatcher thread: from now on every ready message is
    /// claimed and `handler` runs on `pool` for it (see [`Queue::process`]).
    ///
    /// # Errors
    /// [`StartError::ZeroConcurrency`] for `concurrency(0)`;
    /// [`StartError::Spawn`] if the dispatcher thread (or the lease
    /// extender's, see [`Self::auto_extend`]) could not start.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let q = rebound::Queue::new();
    /// let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap());
    /// let handle = q.processor().start(&pool, |s: &rebound::Delivery<&str>| println!("{}", **s)).unwrap();
    /// q.produce("hello").unwrap();
    /// q.close();
    /// assert_eq!(handle.join().acked, 1);
    /// ```
    pub fn start<F, R>(
        self,
        pool: impl Into<Pool>,
        handler: F,
    ) -> Result<Processing<T, S>, StartError>
    where
        F: Fn(&S::Delivery) -> R + Send + Sync + 'static,
        R: Into<Outcome>,
    {
        let pool = pool.into();
        let limit = self.concurrency.unwrap_or_else(|| pool.threads());
        if limit == 0 {
            return Err(StartError::ZeroConcurrency);
        }
        let core = Arc::new(Core {
            limit,
            stop: Stop::new(),
            permits: Mutex::new(Permits {
                taken: 0,
                waiting: 0,
            }),
            cond: Condvar::new(),
            tallies: Tallies::default(),
        });
        let extender = match self.auto_extend {
            Some(max) => extend::start(&self.queue, Arc::clone(&core), max)
                .map_err(|e| StartError::Spawn(e.kind()))?,
            None => None,
        };
        // Not the in-memory queue: its deliveries keep their own leases.
        let keep_alive = match self.auto_extend {
            Some(max) if extender.is_none() => {
                let core = Arc::clone(&core);
                Some(KeepAlive {
                    max,
                    extended: std::sync::Arc::new(move || core.tallies.add(Tally::Extended)),
                })
            }
            _ => None,
        };
        let runner = Arc::new(Runner {
            core: Arc::clone(&core),
            extender,
            keep_alive,
            max_attempts: self.queue.max_attempts(),
            queue: self.queue.clone(),
            handler,
        });
        let dispatcher = thread::Builder::new()
            .name("rebound-dispatcher".into())
            .spawn(move || Runner::dispatch(runner, pool))
            .map_err(|e| StartError::Spawn(e.kind()))?;
        Ok(Processing {
            core,
            queue: self.queue,
            dispatcher: Some(dispatcher),
            message: PhantomData,
        })
    }
}

impl<T: Send + Sync + 'static> Queue<T> {
    /// Handles every message of this queue with `handler` on a rayon pool,
    /// until the returned handle is [shut down](Processing::shutdown) (or the
    /// queue is closed and drained: see [`Processing::join`]).
    ///
    /// The handler gets the [`Delivery`]: the message (through `Deref`), its
    /// [`attempt`](Delivery::attempt), and
    /// [`extend_lease`](Delivery::extend_lease) for long work. What it
    /// returns is turned into an [`Outcome`]: `()` or `Ok` acks, `Err` or
    /// [`Outcome::Retry`] rolls back with the queue's backoff,
    /// [`Outcome::RetryAfter`] with its own delay, [`Outcome::DeadLetter`]
    /// parks the message. A panic is caught on the pool thread (which lives
    /// on), counted, and rolled back.
    ///
    /// At most `pool.threads()` messages are claimed at once (see
    /// [`Queue::processor`] to choose): no message waits locally while its
    /// lease runs. Pool threads are never blocked waiting for messages; a
    /// dedicated dispatcher thread does the waiting, so sharing rayon's global
    /// pool with other work is fine.
    ///
    /// # Panics
    /// If the operating system refuses to start the dispatcher thread; use
    /// [`Processor::start`] to get that as an error.
    ///
    /// ```
    /// use rebound::{Pool, Queue};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    ///
    /// let q: Queue<u64> = Queue::new();
    /// let total = Arc::new(AtomicU64::new(0));
    /// let handle = {
    ///     let total = Arc::clone(&total);
    ///     q.process(Pool::global(), move |n| {
    ///         total.fetch_add(**n, Ordering::Relaxed); // Deref: &Delivery<u64> -> u64
    ///     })
    /// };
    /// for n in 1..=100 {
    ///     q.produce(n).unwrap();
    /// }
    /// q.close();
    /// let report = handle.join(); // returns once the queue is closed and drained
    /// assert_eq!((report.acked, total.load(Ordering::Relaxed)), (100, 5050));
    /// ```
    pub fn process<F, R>(&self, pool: impl Into<Pool>, handler: F) -> Processing<T>
    where
        F: Fn(&Delivery<T>) -> R + Send + Sync + 'static,
        R: Into<Outcome>,
    {
        match self.processor().start(pool, handler) {
            Ok(processing) => processing,
            Err(e) => panic!("rebound: {e}"),
        }
    }

    /// Configures a processor (its concurrency) before starting it.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// let handle = q.processor().concurrency(8).start(rebound::Pool::global(), |_| ()).unwrap();
    /// let report = handle.shutdown(std::time::Duration::from_secs(1));
    /// assert_eq!(report.claimed, 0);
    /// ```
    pub fn processor(&self) -> Processor<T> {
        Processor::new(self.clone())
    }
}

/// A running processor: handles a queue's messages on a rayon pool until it
/// is shut down. Made by [`Queue::process`] or [`Processor::start`].
///
/// Dropping it stops claiming, like [`shutdown`](Self::shutdown), but
/// without waiting for handlers in flight: they finish on the pool and
/// settle their deliveries as usual.
///
/// ```
/// use rebound::{Pool, Queue};
/// use std::time::Duration;
///
/// let q = Queue::new();
/// let handle = q.process(Pool::global(), |job: &rebound::Delivery<u32>| {
///     if **job % 2 == 0 { Ok(()) } else { Err("odd") }
/// });
/// for n in 0..10 {
///     q.produce(n).unwrap();
/// }
/// while q.stats().acked < 5 {
///     std::thread::yield_now();
/// }
/// let report = handle.shutdown(Duration::from_secs(5));
/// assert_eq!(report.acked, 5);
/// assert_eq!(report.in_flight, 0); // every handler finished in time
/// ```
///
/// The same over any [`Source`]: `S` is the queue it runs over, the
/// in-memory [`Queue`] unless said otherwise.
#[must_use = "dropping a Processing stops the processor"]
pub struct Processing<T: Send + Sync + 'static, S: Source<Message = T> = Queue<T>> {
    core: Arc<Core>,
    queue: S,
    /// `None` once joined.
    dispatcher: Option<thread::JoinHandle<()>>,
    message: PhantomData<fn() -> T>,
}

impl<T: Send + Sync + 'static, S: Source<Message = T>> Processing<T, S> {
    /// What this processor did so far; a snapshot while handlers run.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// let handle = q.process(rebound::Pool::global(), |_| ());
    /// assert_eq!(handle.report().claimed, 0);
    /// # drop(handle);
    /// ```
    pub fn report(&self) -> Report {
        self.core.tallies.report()
    }

    /// The most messages this processor claims at once.
    ///
    /// ```
    /// let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    /// let q = rebound::Queue::<u8>::new();
    /// assert_eq!(q.process(pool, |_| ()).concurrency(), 3);
    /// ```
    pub fn concurrency(&self) -> usize {
        self.core.limit
    }

    /// Stops claiming, waits up to `timeout` for the handlers in flight, and
    /// reports what this processor did.
    ///
    /// Nothing is lost. Messages not yet claimed stay in the queue. A handler
    /// still running at the timeout (counted in
    /// [`Report::in_flight`]) keeps its delivery and is not interrupted: if it
    /// returns while its lease lasts, its outcome is applied as usual (it
    /// shows in the queue's [`Stats`](crate::Stats), not in this report); if
    /// its lease runs out first, the queue takes the message back and
    /// redelivers it (or dead-letters it on its last attempt) like any
    /// expired delivery, and the handler's late outcome is refused.
    ///
    /// ```
    /// use rebound::{Pool, Queue};
    /// use std::time::Duration;
    ///
    /// let q: Queue<u64> = Queue::builder().lease(Duration::from_millis(50)).build();
    /// q.produce(1).unwrap();
    /// let handle = q.process(Pool::global(), |_| std::thread::sleep(Duration::from_millis(200)));
    /// while handle.report().claimed == 0 {
    ///     std::thread::yield_now();
    /// }
    /// let report = handle.shutdown(Duration::from_millis(1));
    /// assert_eq!(report.in_flight, 1); // still sleeping
    /// // Its lease runs out: the queue redelivers the message.
    /// let again = q.consume().unwrap();
    /// assert_eq!(again.attempt(), 2);
    /// again.ack().unwrap();
    /// ```
    pub fn shutdown(mut self, timeout: Duration) -> Report {
        let deadline = now().checked_add(timeout);
        self.core.stop(&self.queue);
        self.join_dispatcher();
        self.core.wait_idle(deadline);
        self.core.tallies.report()
    }

    /// Waits until the queue is [closed](Queue::close) and drained (every
    /// message acked or dead-lettered) and every handler of this processor
    /// has returned, then reports what it did. Blocks for as long as the
    /// queue stays open.
    ///
    /// ```
    /// let q = rebound::Queue::new();
    /// let handle = q.process(rebound::Pool::global(), |d: &rebound::Delivery<i32>| {
    ///     if **d < 0 { rebound::Outcome::DeadLetter } else { rebound::Outcome::Ack }
    /// });
    /// q.produce(1).unwrap();
    /// q.produce(-1).unwrap();
    /// q.close();
    /// let report = handle.join();
    /// assert_eq!((report.acked, report.dead_lettered), (1, 1));
    /// ```
    pub fn join(mut self) -> Report {
        self.join_dispatcher();
        self.core.wait_idle(None);
        self.core.tallies.report()
    }

    fn join_dispatcher(&mut self) {
        if let Some(dispatcher) = self.dispatcher.take() {
            // The dispatcher runs no user code; it cannot have panicked.
            let _ = dispatcher.join();
        }
    }
}

impl<T: Send + Sync + 'static, S: Source<Message = T>> Drop for Processing<T, S> {
    fn drop(&mut self) {
        if self.dispatcher.is_some() {
            self.core.stop(&self.queue);
            self.join_dispatcher();
        }
    }
}

impl<T: Send + Sync + 'static, S: Source<Message = T>> fmt::Debug for Processing<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Processing")
            .field("concurrency", &self.core.limit)
            .field("report", &self.core.tallies.report())
            .finish_non_exhaustive()
    }
}
