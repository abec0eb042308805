//! `Queue`, its `Builder`, and the state all handles share.

use crate::backoff::Backoff;
use crate::batch::{Batch, MessageRef};
use crate::block::{BLOCK_CAPACITY, Block, Next, Reserve};
use crate::clock::{self, Clock, Recent};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::delivery::Delivery;
use crate::error::{BuildError, Closed, ConsumeTimeoutError, ProduceError, TryConsumeError};
use crate::id::MessageId;
use crate::index::{Index, Key, NextDue, Poll};
#[cfg(not(rebound_loom))]
use crate::redelivery;
use crate::redelivery::Inbox;
use crate::state::{Discard, MAX_ATTEMPTS, MAX_TICK_SPAN, Release, TICK_MASK, Tag};
use crate::stats::{Counter, Counters, Stats};
#[cfg(not(rebound_loom))]
use crate::sync::thread;
use crate::sync::{
    Arc, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Backoff as Spin, Guard, Instant, Mutex,
    Ordering, lock, pin, try_lock,
};
use crate::waiters::Waiters;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// Leases shorter than this are timed from a precise clock reading (see
/// `Shared::claim_deadline`).
const SHORT_LEASE: Duration = Duration::from_secs(1);

/// The most memory the dead chain blocks kept for reuse may take, in
/// bytes: about 1 000 blocks of `u64`s, four blocks of 4 KiB payloads, none
/// of 64 KiB ones. The spare list is emptied when the queue goes idle.
const SPARE_BYTES: usize = 2 << 20;

/// How long a consumer blocked on a closed queue with messages still in
/// flight parks at most before it looks again (see `Shared::count_settle`),
/// the first time; the interval doubles each time it parks again, up to
/// [`CLOSED_RECHECK_MAX`], so that a consumer waiting out a long handler
/// does not wake a thousand times a second.
const CLOSED_RECHECK: Duration = Duration::from_millis(1);
/// The longest interval between two such looks.
const CLOSED_RECHECK_MAX: Duration = Duration::from_millis(64);

/// How long a consumer that found nothing keeps polling (yielding the CPU
/// in between) before it parks. Parking is expensive for the producer that
/// must then wake it (a futex wake, a slow one when the consumer's idle
/// CPU has to be woken too), and a short gap in the traffic is common: with
/// only a few microseconds of spinning, a consumer at half its peak rate
/// parked about 150 times a second and each wake-up delayed the messages
/// behind it by up to milliseconds. Zero under `cfg(rebound_loom)`, whose
/// mock clock does not move by itself.
const SPIN_BEFORE_PARK: Duration = if cfg!(rebound_loom) {
    Duration::ZERO
} else {
    Duration::from_micros(50)
};

/// The longest lease (and lease extension) the state word can represent.
pub(crate) const MAX_LEASE: Duration = Duration::from_millis(MAX_TICK_SPAN / 2);

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) lease: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease: Duration::from_secs(30),
            backoff: Backoff::default(),
            max_attempts: 16,
        }
    }
}

/// The redeliverer thread, which hands back the blocks it watched.
#[cfg(not(rebound_loom))]
type Worker<T> = thread::JoinHandle<Vec<Arc<Block<T>>>>;

/// Everything the handles, deliveries, blocks and the redeliverer share.
pub(crate) struct Shared<T> {
    pub(crate) config: Config,
    /// Timestamps (nanoseconds since the queue's origin) and lease ticks.
    pub(crate) clock: Clock,
    /// High half of every message id of this queue.
    nonce: u64,
    pub(crate) index: Index<T>,
    /// The open block that immediate messages are appended to: a strong
    /// reference made raw with `Arc::into_raw`, replaced only by the producer
    /// that filled it, and released through the epoch so that a producer
    /// that loaded it while pinned can still use it.
    tail: AtomicPtr<Block<T>>,
    /// Sequence numbers for index keys and message ids.
    next_seq: AtomicU64,
    closed: AtomicBool,
    /// Set by `close_due`: consumers of the closed queue do not wait for
    /// messages that are not due yet. Set before `closed`, never unset.
    skip_delayed: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) waiters: Waiters,
    pub(crate) inbox: Inbox<T>,
    /// `None` once the queue is torn down.
    dead_letters: Mutex<Option<Vec<DeadLetter<T>>>>,
    /// Dead chain blocks the redeliverer handed back for reuse (at most
    /// [`SPARE_BYTES`] of them); emptied when the queue goes idle and at
    /// teardown.
    spare: Mutex<Vec<Arc<Block<T>>>>,
    /// Live `Queue` handles; the last one tears the queue down.
    handles: AtomicUsize,
    /// Not under `cfg(rebound_loom)`: there the model runs the passes.
    #[cfg(not(rebound_loom))]
    redeliverer: Mutex<Option<Worker<T>>>,
    /// Under `cfg(rebound_loom)`: replaced tails, kept until teardown
    /// instead of released through the epoch (see `sync::pin`).
    #[cfg(rebound_loom)]
    retired: Mutex<Vec<Arc<Block<T>>>>,
    /// `teardown::<T>`, captured where its bounds are known, so that the
    /// unbounded `Drop for Queue<T>` can call it.
    teardown: fn(&Shared<T>),
}

impl<T> Shared<T> {
    /// A recent time (see [`Clock`]), restarting the clock upkeep if needed.
    pub(crate) fn recent_ns(&self) -> u64 {
        match self.clock.recent() {
            Recent::Fresh(nanos) => nanos,
            Recent::Restarted(nanos) => {
                self.inbox.kick();
                nanos
            }
        }
    }

    /// The wrapping tick at which a lease of `lease` taken at `now_ns` ends,
    /// rounded up so it never ends early.
    pub(crate) fn deadline_tick(&self, now_ns: u64, lease: Duration) -> u64 {
        clock::tick_ceil(clock::add(now_ns, lease.min(MAX_LEASE))) & TICK_MASK
    }

    /// The lease deadline of a claim made now, given the time `now_ns` the
    /// claim was polled at and whether it was a precise reading. A recent
    /// reading lags the real time by up to about an upkeep interval, which
    /// would shorten the lease by as much: short leases (under
    /// [`SHORT_LEASE`]) are timed from a precise reading instead, long ones
    /// get the interval added.
    fn claim_deadline(&self, now_ns: u64, precise: bool) -> u64 {
        let lease = self.config.lease;
        let from = if precise {
            now_ns
        } else if lease < SHORT_LEASE {
            self.clock.precise()
        } else {
            clock::add(now_ns, clock::RECENT_MAX_AGE)
        };
        self.deadline_tick(from, lease)
    }

    pub(crate) fn message_id(&self, block: &Block<T>, slot: usize) -> MessageId {
        MessageId::new(self.nonce, block.message_number(slot))
    }

    pub(crate) fn next_seq(&self) -> u64 {
        // Relaxed: only hands out distinct numbers.
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// After a settle: a consumer blocked on a closed queue may be waiting
    /// for the last in-flight message to finish.
    pub(crate) fn settled(&self) {
        // The settle's counter increment, then `closed` (both SeqCst).
        crate::sync::seq_cst_accesses();
        if self.is_closed() {
            self.waiters.notify(true);
        }
    }

    /// Counts a holder's settle (`acked` or `dead_lettered`).
    ///
    /// While the queue is open nobody waits for settles, so it is a plain
    /// store on this thread's counter stripe: a locked increment here cost
    /// a tenth of the one-consumer rate. Once the queue is closed, consumers
    /// blocked in `consume` wait for the last settle: it is then a SeqCst
    /// increment followed by a wake-up (the close protocol, see
    /// [`Queue::close`]). A settle that saw the queue open just before it
    /// closed may go unseen by a consumer checking at that moment; such a
    /// consumer parks for at most [`CLOSED_RECHECK`] before it looks again.
    pub(crate) fn count_settle(&self, counter: Counter) {
        if self.is_closed() {
            self.counters.add(counter, 1);
            self.settled();
        } else {
            self.counters.add_release(counter, 1);
        }
    }

    /// Carries out what the last holder of a message must do with its payload.
    pub(crate) fn release(&self, block: &Block<T>, slot: usize, release: Release) {
        let cell = block.slot(slot);
        match release {
            Release::Keep => {}
            // SAFETY: `Release::Drop` is handed to exactly one caller: the one
            // whose transition left the word final with no holders.
            Release::Drop => unsafe { cell.drop_payload() },
            Release::DeadLetter => {
                let word = cell.state.load();
                let reason = match word.tag() {
                    Tag::DeadRejected => DeadLetterReason::Rejected,
                    _ => DeadLetterReason::MaxAttempts,
                };
                // SAFETY: as for `Release::Drop`; the payload is moved out once.
                let payload = unsafe { cell.take() };
                let letter = DeadLetter {
                    id: self.message_id(block, slot),
                    attempts: word.attempt(),
                    reason,
                    payload,
                };
                let mut letters = lock(&self.dead_letters);
                match letters.as_mut() {
                    Some(list) => list.push(letter),
                    None => {
                        drop(letters);
                        drop(letter);
                    }
                }
            }
        }
    }

    /// Keeps dead chain blocks for reuse by producers, up to
    /// [`SPARE_BYTES`] of them; the rest are freed. Called by the
    /// redeliverer with blocks it held the only reference to. Freeing them
    /// one by one there contended with the producers' allocations and
    /// showed in the tail latency.
    pub(crate) fn recycle(&self, dead: &mut Vec<Arc<Block<T>>>) {
        // Chain blocks only: a delayed message's block of one is not reused.
        dead.retain(|block| block.is_chained());
        let limit = SPARE_BYTES / Block::<T>::bytes(BLOCK_CAPACITY);
        let mut spare = lock(&self.spare);
        let keep = dead.len().min(limit.saturating_sub(spare.len()));
        spare.extend(dead.drain(..keep));
        drop(spare);
        // The rest are freed here, outside the lock.
        dead.clear();
    }

    /// Frees the spare blocks: the queue went idle.
    #[cfg_attr(rebound_loom, allow(dead_code))]
    pub(crate) fn shed_spares(&self) {
        let spare = std::mem::take(&mut *lock(&self.spare));
        drop(spare);
    }

    /// A dead chain block made fresh (see [`Block::reuse`]): the oldest
    /// registered one if nothing references it any more, else one from the
    /// spare list. `None` if neither has one or their locks are taken just
    /// now: a producer never waits for them (see `registrations.rs`).
    fn reuse_spare(&self, key: Key, reserved: usize) -> Option<Arc<Block<T>>> {
        let mut block = self
            .inbox
            .reclaim()
            .or_else(|| try_lock(&self.spare)?.pop())?;
        // Either source hands over the only reference (`reclaim` saw it so
        // under its lock; the spare list holds blocks the redeliverer found
        // dead), so this always succeeds, and its Acquire is what orders the
        // reuse after the last holder's drop. If it did not, the block is
        // dropped and the caller allocates.
        Arc::get_mut(&mut block)?.reuse(key, reserved);
        crate::block::prepay(&block);
        Some(block)
    }

    /// Hands a rolled-back message to the redeliverer, or discards it if the
    /// queue is already torn down.
    pub(crate) fn backtrack(&self, message: MessageRef<T>) {
        if let Err(message) = self.inbox.push_backtracked(message) {
            let slot = message.slot as usize;
            if let Discard::Done { release } =
                message.block.slot(slot).state.transition_to_discarded()
            {
                self.release(&message.block, slot, release);
            }
        }
    }
}

impl<T: Send + Sync + 'static> Shared<T> {
    /// Appends immediate messages to the open block, in order, opening new
    /// blocks as they fill; `id` is called with each message's id.
    fn push_fresh(
        this: &Arc<Self>,
        mut values: impl ExactSizeIterator<Item = T>,
        ts: u64,
        mut id: impl FnMut(MessageId),
    ) {
        let guard = pin();
        let spin = Spin::new();
        while values.len() > 0 {
            // Acquire: pairs with the Release store in `open_block`, so the
            // new block's fields are initialised.
            let tail_ptr = this.tail.load(Ordering::Acquire);
            // SAFETY: `tail` always holds a strong reference made by
            // `Arc::into_raw` (it is only nulled at teardown, when no handle,
            // hence no producer, is left). A replaced tail's reference is
            // released through `guard.defer_unchecked`, which runs only after
            // every thread pinned before the replacement, this one included,
            // has unpinned (under `cfg(rebound_loom)`: kept until teardown).
            // So the block outlives this borrow.
            let tail = unsafe { &*tail_ptr };
            // Never earlier than the block's key (see `open_block`).
            let ts = ts.max(tail.key().ts);
            let Reserve { slots, next } = tail.reserve(values.len());
            // `reserve` hands out at most `values.len()` slots, so every
            // reserved slot gets a value.
            for (index, value) in slots.zip(&mut values) {
                // SAFETY: `reserve` handed this index to this thread only,
                // and a fresh slot is `Empty`.
                unsafe { tail.slot(index).write(value, tail.ts_offset_us(ts)) };
                id(this.message_id(tail, index));
            }
            match next {
                Next::None => {}
                Next::Open => Self::open_block(this, &mut values, ts, tail_ptr, &guard, &mut id),
                // Another producer is opening the next block.
                Next::Wait => spin.snooze(),
            }
        }
    }

    /// Opens a new tail block holding the next values (as many as fit) and
    /// retires `old`. `ts` is not earlier than `old`'s key: chain keys
    /// follow the order blocks are opened in, even when producers' clock
    /// reads and reservations interleave differently.
    fn open_block(
        this: &Arc<Self>,
        values: &mut impl ExactSizeIterator<Item = T>,
        ts: u64,
        old: *const Block<T>,
        guard: &Guard,
        id: &mut impl FnMut(MessageId),
    ) {
        let count = values.len().min(BLOCK_CAPACITY);
        // Once per block: a fresh reading for the clock (see `clock`) and
        // for the timestamps of the messages going into this block.
        let ts = ts.max(this.clock.refresh_from_traffic());
        let block = Self::new_block(this, values, count, ts, BLOCK_CAPACITY, true, id);
        // Release: pairs with the Acquire load in `push_fresh`.
        this.tail
            .store(Arc::into_raw(block).cast_mut(), Ordering::Release);
        this.retire_tail(old, guard);
    }

    /// Releases the strong reference the replaced tail `old` held, once no
    /// producer can be using it.
    #[cfg(not(rebound_loom))]
    fn retire_tail(&self, old: *const Block<T>, guard: &Guard) {
        let old = RetiredTail(old);
        // SAFETY: `old` is the strong reference `tail` held until the store
        // in `open_block`; only this thread (whose reservation covered the
        // index one past its last slot) retires it, once. Producers still
        // using it are pinned, and the epoch runs this after they unpin.
        // Dropping an `Arc<Block<T>>` on another thread is fine: `Block<T>`
        // is `Send + Sync` for `T: Send + Sync`.
        unsafe { guard.defer_unchecked(move || old.release()) };
    }

    /// Under `cfg(rebound_loom)`: keeps the replaced tail's reference until
    /// teardown (loom cannot see the epoch), which is also safe for any
    /// producer still using it.
    #[cfg(rebound_loom)]
    fn retire_tail(&self, old: *const Block<T>, _guard: &Guard) {
        // SAFETY: as in the epoch version: `old` came from `Arc::into_raw`
        // and this thread alone retires it, once; the `Arc` made here is
        // kept alive until teardown, so no producer's borrow outlives it.
        let old = unsafe { Arc::from_raw(old) };
        lock(&self.retired).push(old);
    }

    /// A block of `len` slots keyed at `ts`, holding the next `count` values
    /// (`count <= len`, and `values` has that many) stamped `ts`, in the
    /// index and registered with the redeliverer.
    #[allow(clippy::too_many_arguments)]
    fn new_block(
        this: &Arc<Self>,
        values: &mut impl Iterator<Item = T>,
        count: usize,
        ts: u64,
        len: usize,
        chained: bool,
        id: &mut impl FnMut(MessageId),
    ) -> Arc<Block<T>> {
        let key = Key {
            ts,
            seq: this.next_seq(),
        };
        let spare = if chained {
            this.reuse_spare(key, count)
        } else {
            None
        };
        let block = spare.unwrap_or_else(|| Block::new(Arc::clone(this), key, len, count, chained));
        for (index, value) in values.take(count).enumerate() {
            // SAFETY: the block is not shared yet, and its first `count`
            // slots were reserved for its creator by `Block::new`. Their
            // timestamp is the block's key: offset 0.
            unsafe { block.slot(index).write(value, 0) };
            id(this.message_id(&block, index));
        }
        // The one `Fresh` entry of this life of the block: its cursor is
        // what makes the first claim of each slot exclusive
        // (`MessageState::claim_fresh` writes the word with a store), so a
        // block must never be in the index twice.
        this.index.insert(key, Batch::Fresh(Arc::clone(&block)));
        this.inbox.register(Arc::clone(&block));
        block
    }
}

/// A retired tail reference waiting for its epoch.
struct RetiredTail<T>(*const Block<T>);

impl<T> RetiredTail<T> {
    fn release(self) {
        // SAFETY: the pointer came from `Arc::into_raw` and is released once
        // (see `open_block`).
        drop(unsafe { Arc::from_raw(self.0) });
    }
}

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
    shared: Arc<Shared<T>>,
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
    /// [`Builder::try_build`] to get that as an error.
    ///
    /// ```
    /// let q: rebound::Queue<u64> = rebound::Queue::new();
    /// assert!(!q.is_closed());
    /// ```
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts configuring a queue.
    ///
    /// ```
    /// use rebound::{Backoff, Queue};
    /// use std::time::Duration;
    /// let q: Queue<u64> = Queue::builder()
    ///     .lease(Duration::from_secs(30))
    ///     .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_secs(10)))
    ///     .max_attempts(16)
    ///     .build();
    /// # drop(q);
    /// ```
    pub fn builder() -> Builder<T> {
        Builder {
            config: Config::default(),
            _payload: PhantomData,
        }
    }

    fn with_config(config: Config) -> Result<Self, BuildError> {
        let shared = Arc::new(Shared {
            config,
            clock: Clock::new(),
            nonce: uuid::Uuid::new_v4().as_u64_pair().0,
            index: Index::new(),
            tail: AtomicPtr::new(std::ptr::null_mut()),
            next_seq: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            skip_delayed: AtomicBool::new(false),
            counters: Counters::new(),
            waiters: Waiters::new(),
            inbox: Inbox::new(),
            dead_letters: Mutex::new(Some(Vec::new())),
            spare: Mutex::new(Vec::new()),
            handles: AtomicUsize::new(1),
            #[cfg(not(rebound_loom))]
            redeliverer: Mutex::new(None),
            #[cfg(rebound_loom)]
            retired: Mutex::new(Vec::new()),
            teardown: teardown::<T>,
        });
        // The first tail: an empty block, in the index and registered.
        let key = Key {
            ts: 0,
            seq: shared.next_seq(),
        };
        let block = Block::new(Arc::clone(&shared), key, BLOCK_CAPACITY, 0, true);
        shared.index.insert(key, Batch::Fresh(Arc::clone(&block)));
        shared.inbox.register(Arc::clone(&block));
        // Release: pairs with the Acquire load in `push_fresh`.
        shared
            .tail
            .store(Arc::into_raw(block).cast_mut(), Ordering::Release);
        let queue = Queue { shared };
        // Under `cfg(rebound_loom)` no thread: the models run single passes
        // of `Redeliverer::redeliver_due` themselves (`rebound::__loom`).
        #[cfg(not(rebound_loom))]
        queue.spawn_redeliverer()?;
        Ok(queue)
    }

    #[cfg(not(rebound_loom))]
    fn spawn_redeliverer(&self) -> Result<(), BuildError> {
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
        self.produce_inner(value, None)
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
        self.produce_inner(value, Some((clock::add(now, delay), now)))
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
        self.produce_inner(value, Some((self.shared.clock.nanos(at), now)))
    }

    /// `due`: `None` for an immediate message; else its due time and a
    /// precise reading of the clock taken for it.
    fn produce_inner(
        &self,
        value: T,
        due: Option<(u64, u64)>,
    ) -> Result<MessageId, ProduceError<T>> {
        let shared = &self.shared;
        if !self.admit(1) {
            return Err(ProduceError::Closed(value));
        }
        let now_ns = shared.recent_ns();
        // Not an `Option`: see `MessageId::new` on store-to-load forwarding.
        let mut id = MessageId::PLACEHOLDER;
        let mut set = |i| id = i;
        match due {
            Some((due, now)) if due > now => {
                Shared::new_block(
                    shared,
                    &mut std::iter::once(value),
                    1,
                    due,
                    1,
                    false,
                    &mut set,
                );
                // A sleeper may need a shorter timeout.
                shared.waiters.notify(true);
            }
            _ => {
                // A due time already passed makes an immediate message,
                // stamped as `produce` stamps: the stamps of one producer's
                // immediate messages then follow the order they are
                // claimed in.
                Shared::push_fresh(shared, std::iter::once(value), now_ns, set);
                shared.waiters.notify_after_publish(false);
            }
        }
        // Both paths above call `set` exactly once.
        debug_assert_ne!(
            id,
            MessageId::PLACEHOLDER,
            "every produced message gets an id"
        );
        Ok(id)
    }

    /// Counts `n` messages as produced, unless the queue is closed.
    fn admit(&self, n: u64) -> bool {
        let shared = &self.shared;
        // Mutant for the loom models (docs/verification.md): look at
        // `closed` before counting.
        #[cfg(all(rebound_loom, rebound_loom_mutant = "late_count"))]
        let closed = shared.is_closed();
        // Count first, then look at `closed` (both SeqCst): a consumer that
        // saw `closed` and then `outstanding() == 0` cannot miss these.
        shared.counters.add(Counter::Produced, n);
        crate::sync::seq_cst_accesses();
        #[cfg(not(all(rebound_loom, rebound_loom_mutant = "late_count")))]
        let closed = shared.is_closed();
        if closed {
            shared.counters.sub(Counter::Produced, n);
            shared.waiters.notify(true);
            return false;
        }
        true
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
        if !self.admit(values.len() as u64) {
            return Err(ProduceError::Closed(values));
        }
        let shared = &self.shared;
        let mut ids = Vec::with_capacity(values.len());
        let many = values.len() > 1;
        Shared::push_fresh(shared, values.into_iter(), shared.recent_ns(), |id| {
            ids.push(id)
        });
        shared.waiters.notify_after_publish(many);
        Ok(ids)
    }

    /// Claims the earliest ready message as of a recent time, or, with
    /// `precise`, as of a fresh clock reading. `Err` carries the earliest
    /// known future due time. (Two words, returned in registers.)
    fn poll(&self, precise: bool) -> Result<Delivery<T>, NextDue> {
        let shared = &self.shared;
        let now_ns = self.poll_time(precise);
        let deadline = shared.claim_deadline(now_ns, precise);
        match shared.index.claim(now_ns, deadline) {
            Poll::Claimed(claimed) => {
                if claimed.bits.attempt() > 1 {
                    shared.counters.bump(Counter::Reclaimed, 1);
                }
                Ok(Delivery::new(claimed))
            }
            Poll::Empty { next_due } => Err(next_due),
        }
    }

    /// [`Self::poll`] for up to `max` messages; `Err` if it claimed none.
    fn poll_many(&self, precise: bool, max: usize) -> Result<Vec<Delivery<T>>, NextDue> {
        let shared = &self.shared;
        let now_ns = self.poll_time(precise);
        let deadline = shared.claim_deadline(now_ns, precise);
        let mut claimed = Vec::with_capacity(max.min(BLOCK_CAPACITY));
        let next_due = shared.index.claim_many(now_ns, deadline, max, &mut claimed);
        if claimed.is_empty() && max > 0 {
            return Err(next_due);
        }
        let reclaimed = claimed.iter().filter(|c| c.bits.attempt() > 1).count();
        if reclaimed > 0 {
            shared.counters.bump(Counter::Reclaimed, reclaimed as u64);
        }
        Ok(claimed.into_iter().map(Delivery::new).collect())
    }

    fn poll_time(&self, precise: bool) -> u64 {
        if precise {
            self.shared.clock.precise()
        } else {
            self.shared.recent_ns()
        }
    }

    fn drained(&self) -> bool {
        self.shared.is_closed() && {
            // `closed`, then the counters (all SeqCst): see `close`.
            crate::sync::seq_cst_accesses();
            let outstanding = self.shared.counters.outstanding();
            outstanding == 0
                || (self.shared.skip_delayed.load(Ordering::SeqCst)
                    && self.only_delayed_left(outstanding))
        }
    }

    /// After [`Self::close_due`]: whether every message not yet settled
    /// (`outstanding`, read before) is pending and not due. The counters are
    /// read before the index, so a message settled or put back meanwhile
    /// can only make this false (look again later), never true too early.
    fn only_delayed_left(&self, outstanding: u64) -> bool {
        let pending = self.shared.index.count_pending(self.shared.clock.precise());
        pending.ready == 0 && pending.delayed >= outstanding
    }

    /// Claims the ready message with the earliest timestamp, without waiting.
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

    /// Claims up to `max` ready messages, earliest first, without waiting.
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

    fn try_take<R>(&self, poll: impl Fn(bool) -> Result<R, NextDue>) -> Result<R, TryConsumeError> {
        match poll(false).or_else(|_| poll(true)) {
            Ok(taken) => Ok(taken),
            Err(_) if self.drained() => Err(TryConsumeError::Closed),
            Err(_) => Err(TryConsumeError::Empty),
        }
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
        self.take_until(
            self.shared.clock.now().checked_add(timeout),
            None,
            |precise| self.poll(precise),
        )
    }

    /// Like [`Self::consume`], giving up (with `Timeout`) once `stop` is set
    /// and [`Self::wake_consumers`] was called after setting it.
    #[cfg_attr(rebound_loom, allow(dead_code))]
    pub(crate) fn consume_unless(
        &self,
        stop: &AtomicBool,
    ) -> Result<Delivery<T>, ConsumeTimeoutError> {
        self.take_until(None, Some(stop), |precise| self.poll(precise))
    }

    /// Wakes every parked consumer, so that one waiting in
    /// [`Self::consume_unless`] notices its stop flag.
    #[cfg_attr(rebound_loom, allow(dead_code))]
    pub(crate) fn wake_consumers(&self) {
        self.shared.waiters.notify(true);
    }

    /// The queue's `max_attempts`.
    #[cfg_attr(rebound_loom, allow(dead_code))]
    pub(crate) fn max_attempts(&self) -> u32 {
        self.shared.config.max_attempts
    }

    /// Polls with `poll` until it takes something, parking in between, until
    /// `deadline` (forever with `None`) or until `stop` is set.
    fn take_until<R>(
        &self,
        deadline: Option<Instant>,
        stop: Option<&AtomicBool>,
        poll: impl Fn(bool) -> Result<R, NextDue>,
    ) -> Result<R, ConsumeTimeoutError> {
        let spin = Spin::new();
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
                let now = self.shared.clock.now();
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
            let now = self.shared.clock.now();
            let mut wake = next_due.get().map(|due| self.shared.clock.instant(due));
            // Closed, with messages in flight: a settle that raced with
            // `close` does not wake anyone (see `Shared::count_settle`), so
            // look again soon. (The loom mutant `no_closed_recheck` drops
            // this: see docs/verification.md.)
            #[cfg(not(all(rebound_loom, rebound_loom_mutant = "no_closed_recheck")))]
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
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.waiters.notify(true);
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
        self.shared.skip_delayed.store(true, Ordering::SeqCst);
        self.close();
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
        let shared = &self.shared;
        // Settles first, then the index, then `produced`: under traffic a
        // message is then counted at most once among acked, dead-lettered,
        // ready and delayed, so `in_flight` errs high (by messages produced
        // during the walk), never low.
        let c = &shared.counters;
        let (acked, dead_lettered) = (c.get(Counter::Acked), c.get(Counter::DeadLettered));
        let reclaimed = c.get(Counter::Reclaimed);
        let pending = shared.index.count_pending(shared.clock.precise());
        let (ready, delayed) = (pending.ready, pending.delayed);
        let produced = c.get(Counter::Produced);
        Stats {
            produced,
            // First deliveries are every message produced except those never
            // claimed yet (see `Counter::Reclaimed`). Exact when quiescent;
            // under traffic off by the produces and claims in progress.
            delivered: produced.saturating_sub(pending.never_claimed) + reclaimed,
            acked,
            rolled_back: c.get(Counter::RolledBack),
            expired: c.get(Counter::Expired),
            redelivered: c.get(Counter::Redelivered),
            dead_lettered,
            ready,
            delayed,
            in_flight: produced.saturating_sub(acked + dead_lettered + ready + delayed),
        }
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
        lock(&self.shared.dead_letters)
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

#[cfg(rebound_loom)]
impl<T> Queue<T> {
    /// Under `cfg(rebound_loom)`: the shared state, for `rebound::__loom`.
    pub(crate) fn shared(&self) -> &Shared<T> {
        &self.shared
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

/// The last handle is gone: stop the redeliverer, drop every message nobody
/// holds, and break the `Shared -> index -> Block -> Shared` cycle.
fn teardown<T: Send + Sync + 'static>(shared: &Shared<T>) {
    #[cfg_attr(rebound_loom, allow(unused_mut))]
    let (mut blocks, backtracked) = shared.inbox.stop();
    #[cfg(not(rebound_loom))]
    {
        let worker = lock(&shared.redeliverer).take();
        if let Some(worker) = worker {
            if worker.thread().id() != thread::current().id() {
                if let Ok(watched) = worker.join() {
                    blocks.extend(watched);
                }
            }
        }
    }
    blocks.extend(backtracked.into_iter().map(|m| m.block));
    shared.index.for_each(|batch| {
        if let Batch::Fresh(block) = batch {
            blocks.push(Arc::clone(block));
        }
    });
    // A payload whose destructor panics must not keep teardown from
    // dropping the others or from breaking the cycle below: each drop is
    // contained, and the first panic resumes once teardown is done.
    let mut panic = None;
    for block in &blocks {
        for index in 0..block.len() {
            if let Discard::Done { release } = block.slot(index).state.transition_to_discarded() {
                contain(&mut panic, || shared.release(block, index, release));
            }
        }
    }
    // A block may be listed more than once. Every block that still holds a
    // prepaid reference is in the index: a slot at attempt 0 (never claimed)
    // keeps its block from being exhausted, so its `Fresh` entry is still
    // there. (The watch list alone would not do: under loom the model keeps
    // it, and teardown on the redeliverer thread does not get it back.)
    blocks.sort_unstable_by_key(Arc::as_ptr);
    blocks.dedup_by(|a, b| Arc::ptr_eq(a, b));
    for block in &blocks {
        // SAFETY: no handle is left, so nothing claims any more; `blocks`
        // holds each block once, and every block with a slot at attempt 0
        // (see above).
        unsafe { crate::block::release_prepaid(block) };
    }
    drop(blocks);
    shared.index.clear();
    // Relaxed: no other thread can reach `tail` any more (no handle is left).
    let tail = shared.tail.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if !tail.is_null() {
        RetiredTail(tail.cast_const()).release();
    }
    #[cfg(rebound_loom)]
    drop(std::mem::take(&mut *lock(&shared.retired)));
    let letters = lock(&shared.dead_letters).take().unwrap_or_default();
    for letter in letters {
        contain(&mut panic, || drop(letter));
    }
    // Spare blocks reference `shared`: drop them to break the cycle.
    drop(std::mem::take(&mut *lock(&shared.spare)));
    // Let the epoch run the deferred frees of the index nodes now.
    for _ in 0..4 {
        pin().flush();
    }
    if let Some(panic) = panic {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `f`, keeping the first panic of teardown in `first` instead of
/// letting it unwind (a payload's destructor is the only code of the user's
/// that teardown runs).
fn contain(first: &mut Option<Box<dyn std::any::Any + Send>>, f: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        if first.is_none() {
            *first = Some(panic);
        } else {
            // A panic payload's own destructor may panic too.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(panic)));
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

/// Configures a [`Queue`]. `T` is inferred from the binding.
///
/// ```
/// use rebound::{Backoff, Queue};
/// use std::time::Duration;
/// let q: Queue<String> = Queue::builder()
///     .lease(Duration::from_secs(5))
///     .backoff(Backoff::fixed(Duration::from_millis(250)).with_jitter(0.2))
///     .max_attempts(5)
///     .build();
/// # drop(q);
/// ```
pub struct Builder<T> {
    config: Config,
    _payload: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish()
    }
}

impl<T: Send + Sync + 'static> Builder<T> {
    /// How long a delivery stays valid without being settled or extended
    /// (the visibility timeout). Default 30 s. Range: 1 ms to about a year.
    ///
    /// ```
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().lease(std::time::Duration::from_secs(1)).build();
    /// # drop(q);
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// The delay before redelivering a failed message. Default
    /// `Backoff::exponential(100 ms, 30 s)`.
    ///
    /// ```
    /// use rebound::Backoff;
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().backoff(Backoff::fixed(std::time::Duration::ZERO)).build();
    /// # drop(q);
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// How many deliveries a message gets before it is dead-lettered.
    /// Default 16. Range: 1 to 4095.
    ///
    /// ```
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().max_attempts(3).build();
    /// # drop(q);
    /// ```
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.config.max_attempts = max_attempts;
        self
    }

    /// Builds the queue, checking every setting.
    ///
    /// # Errors
    /// [`BuildError`] naming the first setting out of range, or
    /// [`BuildError::Spawn`] if the redeliverer thread could not start.
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = rebound::Queue::<u8>::builder().lease(Duration::ZERO).try_build().unwrap_err();
    /// assert!(err.to_string().contains("lease"));
    /// ```
    pub fn try_build(self) -> Result<Queue<T>, BuildError> {
        let Config {
            lease,
            max_attempts,
            ..
        } = self.config;
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(BuildError::MaxAttempts {
                given: max_attempts,
                limit: MAX_ATTEMPTS,
            });
        }
        if lease < Duration::from_millis(1) || lease > MAX_LEASE {
            return Err(BuildError::Lease {
                given: lease,
                limit: MAX_LEASE,
            });
        }
        Queue::with_config(self.config)
    }

    /// Builds the queue, bringing settings out of range to the nearest valid
    /// value (`max_attempts` 0 becomes 1; a zero lease becomes 1 ms).
    ///
    /// # Panics
    /// If the operating system refuses to start the redeliverer thread; use
    /// [`Self::try_build`] to get that as an error.
    ///
    /// ```
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().max_attempts(0).build();
    /// q.produce(1).unwrap();
    /// q.consume().unwrap().rollback().unwrap();
    /// assert_eq!(q.drain_dead_letters()[0].attempts(), 1);
    /// ```
    pub fn build(mut self) -> Queue<T> {
        self.config.max_attempts = self.config.max_attempts.clamp(1, MAX_ATTEMPTS);
        self.config.lease = self.config.lease.clamp(Duration::from_millis(1), MAX_LEASE);
        match self.try_build() {
            Ok(queue) => queue,
            Err(e) => panic!("rebound: {e}"),
        }
    }
}

#[cfg(all(test, not(rebound_loom)))]
mod tests {
    use super::*;

    /// Every block holds a reference to the shared state, so the shared
    /// state outlives the last handle exactly when a block leaked: a
    /// reference (prepaid or not) never released.
    #[test]
    fn dropping_the_last_handle_frees_every_block() {
        let q: Queue<String> = Queue::builder()
            .backoff(Backoff::fixed(Duration::ZERO))
            .build();
        let shared = Arc::downgrade(&q.shared);
        // Enough traffic for the redeliverer to find dead blocks and keep
        // them as spares, so that the blocks below are reused ones.
        // (The redeliverer prunes as new blocks come in, so keep them coming.)
        let start = std::time::Instant::now();
        while lock(&q.shared.spare).len() < 4 && start.elapsed() < Duration::from_secs(5) {
            q.produce_batch((0..1000).map(|i| i.to_string())).unwrap();
            while let Ok(batch) = q.try_consume_batch(1000) {
                batch.into_iter().for_each(|d| d.ack().unwrap());
            }
        }
        assert!(lock(&q.shared.spare).len() >= 4, "no spare blocks to reuse");
        // A rollback, redelivered and claimed again, then left pending.
        q.produce("again".to_string()).unwrap();
        q.try_consume().unwrap().rollback().unwrap();
        let again = q.consume().unwrap();
        assert_eq!(again.attempt(), 2);
        again.rollback().unwrap();
        // A full block and a partly filled tail, some claimed, some not.
        for i in 0..BLOCK_CAPACITY + 10 {
            q.produce(i.to_string()).unwrap();
        }
        q.try_consume().unwrap().ack().unwrap();
        // A delayed message, and a delivery that outlives the queue.
        q.produce_after("later".to_string(), Duration::from_secs(60))
            .unwrap();
        let held = q.try_consume().unwrap();
        drop(q);
        assert!(held.ack().is_ok(), "the holder still settles");
        // Index nodes are freed through the epoch, which tests running in
        // parallel may hold back for a moment; a leaked block never goes.
        let start = std::time::Instant::now();
        while shared.strong_count() > 0 && start.elapsed() < Duration::from_secs(5) {
            pin().flush();
            thread::yield_now();
        }
        assert_eq!(shared.strong_count(), 0, "a block outlived the queue");
    }

    /// A lease of 1 s or more is timed from the recent clock reading. With
    /// the thread that refreshes it off the CPU, the reading ages: a claim
    /// made 300 ms into such a stall must still hold its lease for the whole
    /// second after the claim (the stall is in the lag log, and the expiry
    /// gives it back).
    #[test]
    fn a_lease_timed_from_a_stale_reading_is_not_cut_short() {
        let lease = Duration::from_secs(1);
        let q: Queue<u32> = Queue::builder().lease(lease).build();
        q.produce(1).unwrap();
        let stall = q.shared.inbox.stall();
        thread::sleep(Duration::from_millis(300));
        let claimed = std::time::Instant::now();
        let d = q.try_consume().unwrap();
        thread::sleep(Duration::from_millis(100));
        drop(stall);
        loop {
            let held = d.extend_lease(Duration::ZERO).is_ok();
            let after = claimed.elapsed();
            if !held {
                assert!(after >= lease, "the lease ended early, before {after:?}");
                break;
            }
            assert!(after < lease * 5, "the lease never ended");
            thread::sleep(Duration::from_millis(5));
        }
        let again = q.consume_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(again.attempt(), 2);
        again.ack().unwrap();
    }

    /// A burst of large messages, drained: the spare blocks kept for reuse
    /// stay within their byte budget, and once the queue goes idle every
    /// dead block is freed (each block holds a reference to the shared
    /// state, so its count tells how many blocks are alive).
    #[test]
    fn an_idle_queue_gives_back_the_blocks_a_burst_left() {
        type Page = [u8; 4096];
        let q: Queue<Page> = Queue::new();
        for _ in 0..16 {
            q.produce_batch((0..1024).map(|_| [7u8; 4096])).unwrap();
        }
        let mut drained = 0;
        while let Ok(batch) = q.try_consume_batch(1024) {
            drained += batch.len();
            batch.into_iter().for_each(|d| d.ack().unwrap());
        }
        assert_eq!(drained, 16 * 1024);
        // A consumer that finds nothing parks, and hands the epoch the
        // frees it deferred (unlinked index nodes, replaced tails).
        assert!(q.consume_timeout(Duration::from_millis(1)).is_err());
        // However many dead blocks the redeliverer hands over at once.
        let mut dead: Vec<_> = (0..64)
            .map(|_| {
                let key = Key {
                    ts: 0,
                    seq: q.shared.next_seq(),
                };
                Block::new(Arc::clone(&q.shared), key, 0, 0, true)
            })
            .collect();
        q.shared.recycle(&mut dead);
        let spare = lock(&q.shared.spare).len();
        assert!(
            (1..=SPARE_BYTES / Block::<Page>::bytes(BLOCK_CAPACITY)).contains(&spare),
            "{spare} spare blocks of 4 KiB messages"
        );
        // The handle and the redeliverer thread hold the other two.
        let blocks = || Arc::strong_count(&q.shared) - 2;
        let start = std::time::Instant::now();
        while blocks() > 2 && start.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(blocks() <= 2, "{} blocks kept by an idle queue", blocks());
    }

    /// A claim walk that started from a clock reading taken before a
    /// producer opened the next chain block (keyed and stamped by a later
    /// reading) still finds the message in it: a chain block's key and
    /// stamps are readings from the past, so that message is due.
    #[test]
    fn a_walk_from_an_earlier_reading_claims_from_a_later_chain_block() {
        let q: Queue<usize> = Queue::new();
        // Fill the first block, then open a second one with one more.
        q.produce_batch(0..=BLOCK_CAPACITY).unwrap();
        for i in 0..BLOCK_CAPACITY {
            let d = q.try_consume().unwrap();
            assert_eq!(*d, i);
            d.ack().unwrap();
        }
        let deadline = q.shared.deadline_tick(q.shared.clock.precise(), MAX_LEASE);
        // A reading from before the second block was opened: the start.
        match q.shared.index.claim(0, deadline) {
            Poll::Claimed(claimed) => {
                let d = Delivery::new(claimed);
                assert_eq!(*d, BLOCK_CAPACITY);
                d.ack().unwrap();
            }
            Poll::Empty { .. } => panic!("the message in the later block looked not due"),
        }
    }

    /// Registrations: a queued chain block goes back to a producer only
    /// once nothing else references it, and only the oldest; a block of one
    /// (a delayed message) is never queued there; the redeliverer takes the
    /// queued blocks only when it asks for all (a lease scan).
    #[test]
    fn only_the_oldest_registered_chain_block_comes_back_and_only_when_dead() {
        use crate::registrations::Registrations;
        let q: Queue<u32> = Queue::new();
        // Blocks without slots: no prepaid references, so the handles
        // below are all there is.
        let block = |chained| {
            let key = Key {
                ts: 0,
                seq: q.shared.next_seq(),
            };
            Block::new(Arc::clone(&q.shared), key, 0, 0, chained)
        };
        let regs = Registrations::new();
        let (a, b, single) = (block(true), block(true), block(false));
        let (a_at, b_at) = (Arc::as_ptr(&a), Arc::as_ptr(&b));
        for block in [&a, &b, &single] {
            regs.push(Arc::clone(block));
        }
        assert_eq!(regs.len(), 3);
        drop(b);
        assert!(
            regs.reclaim().is_none(),
            "b is dead, but a is older and held"
        );
        drop(a);
        assert_eq!(regs.reclaim().map(|a| Arc::as_ptr(&a)), Some(a_at));
        assert_eq!(regs.reclaim().map(|b| Arc::as_ptr(&b)), Some(b_at));
        drop(single);
        assert!(regs.reclaim().is_none(), "a block of one is never reused");
        assert_eq!(regs.len(), 1);
        let c = block(true);
        regs.push(Arc::clone(&c));
        let mut taken = Vec::new();
        regs.take(&mut taken, false);
        assert!(taken.len() == 1 && !taken[0].is_chained(), "only the stack");
        regs.take(&mut taken, true);
        assert_eq!(taken.len(), 2);
        assert_eq!(regs.len(), 0);
    }

    /// A claim is a ticket on the batch's cursor: a consumer whose entry
    /// another claim took loses (changing nothing), one whose entry is
    /// still ahead of the cursor wins it, and no message is skipped.
    #[test]
    fn a_claim_with_a_stale_cursor_loses_and_the_next_message_stays_claimable() {
        use crate::batch::Head;
        let q: Queue<u32> = Queue::new();
        let ids: Vec<_> = (0..3).map(|i| q.produce(i).unwrap()).collect();
        let now = q.shared.clock.precise();
        let deadline = q.shared.claim_deadline(now, true);
        let mut claimed = Vec::new();
        let mut first = true;
        q.shared.index.for_each(|batch| {
            if !std::mem::take(&mut first) {
                return;
            }
            let Head::Ready { from, pos, ts } = batch.head() else {
                panic!("the first message is ready");
            };
            assert_eq!((from, pos), (0, 0));
            claimed.push(batch.claim(from, pos, ts, deadline).expect("wins"));
            // Another consumer read the cursor as 0 too and picked slot 0:
            // it loses, and takes nothing.
            assert!(batch.claim(from, pos, ts, deadline).is_none());
            let Head::Ready { from, pos, ts } = batch.head() else {
                panic!("the second message is still ready");
            };
            assert_eq!((from, pos), (1, 1));
            // One that read the cursor as 0 but picked slot 1 (it saw slot
            // 0 taken) wins it: the cursor was not moved past slot 1.
            claimed.push(batch.claim(0, pos, ts, deadline).expect("wins"));
        });
        for (i, claim) in claimed.into_iter().enumerate() {
            let d = Delivery::new(claim);
            assert_eq!((d.id(), *d, d.attempt()), (ids[i], i as u32, 1));
            d.ack().unwrap();
        }
        for (i, id) in ids.iter().enumerate().skip(2) {
            let d = q.try_consume().unwrap();
            assert_eq!((d.id(), *d, d.attempt()), (*id, i as u32, 1));
            d.ack().unwrap();
        }
        assert!(q.try_consume().is_err());
        assert_eq!(q.stats().acked, 3);
    }
}
