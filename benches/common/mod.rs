//! What the benches share: the payloads, the contenders behind one trait,
//! and the rig of persistent producer and consumer threads.
//!
//! Each bench target includes this module and uses a different part of it.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The word that tells a consumer to leave the current job.
pub(crate) const STOP: u64 = u64::MAX;
/// Set in the word of a message a channel consumer re-sent (its "rollback").
pub(crate) const RETRIED: u64 = 1 << 62;

/// A message payload whose first 8 bytes are a `u64` word (a sequence
/// number, a timestamp, [`STOP`]).
pub(crate) trait Payload: Clone + Send + Sync + 'static {
    /// "8B", "1KiB".
    const NAME: &'static str;
    fn new(word: u64) -> Self;
    fn word(&self) -> u64;
    fn set_word(&mut self, word: u64);
}

impl Payload for u64 {
    const NAME: &'static str = "8B";
    fn new(word: u64) -> Self {
        word
    }
    fn word(&self) -> u64 {
        *self
    }
    fn set_word(&mut self, word: u64) {
        *self = word;
    }
}

/// A 1 KiB payload, moved by value like the `u64` one.
#[derive(Clone)]
pub(crate) struct Kib(pub(crate) [u64; 128]);

impl Payload for Kib {
    const NAME: &'static str = "1KiB";
    fn new(word: u64) -> Self {
        Kib([word; 128])
    }
    fn word(&self) -> u64 {
        self.0[0]
    }
    fn set_word(&mut self, word: u64) {
        self.0[0] = word;
    }
}

/// One queue a user could pick, seen through the operations the benches
/// need. Channels have no acks: `ack` drops the message and `rollback`
/// re-sends it at once, marked [`RETRIED`].
pub(crate) trait Contender<T: Payload>: Send + Sync + 'static {
    const NAME: &'static str;
    /// Delayed delivery: `produce_after` and `rollback` with a delay.
    const DELAYS: bool;
    type Claim;
    fn new() -> Self;
    fn produce(&self, value: T);
    /// Only called when `DELAYS`.
    fn produce_after(&self, value: T, delay: Duration);
    fn try_consume(&self) -> Option<Self::Claim>;
    /// Blocks until a message is ready.
    fn consume(&self) -> Self::Claim;
    fn payload(claim: &Self::Claim) -> &T;
    fn first_attempt(claim: &Self::Claim) -> bool;
    fn ack(&self, claim: Self::Claim);
    /// Redeliver after `delay` (channels: re-send now; only called with a
    /// zero delay when not `DELAYS`).
    fn rollback(&self, claim: Self::Claim, delay: Duration);
    /// Batch calls; without a batch API, the per-message calls.
    fn produce_batch(&self, values: Vec<T>) {
        for value in values {
            self.produce(value);
        }
    }
    /// Adds up to `max` ready claims to `out`, without waiting.
    fn try_consume_batch(&self, _max: usize, out: &mut Vec<Self::Claim>) {
        out.extend(self.try_consume());
    }
    /// Adds up to `max` claims to `out`, waiting for at least one.
    fn consume_batch(&self, _max: usize, out: &mut Vec<Self::Claim>) {
        out.push(self.consume());
    }
}

/// rebound: produce -> consume -> ack, rollback via `rollback_after`.
pub(crate) struct Rebound<T>(rebound::Queue<T>);

impl<T: Payload> Contender<T> for Rebound<T> {
    const NAME: &'static str = "rebound";
    const DELAYS: bool = true;
    type Claim = rebound::Delivery<T>;
    fn new() -> Self {
        Rebound(rebound::Queue::new())
    }
    fn produce(&self, value: T) {
        self.0.produce(value).expect("queue open");
    }
    fn produce_after(&self, value: T, delay: Duration) {
        self.0.produce_after(value, delay).expect("queue open");
    }
    fn try_consume(&self) -> Option<Self::Claim> {
        self.0.try_consume().ok()
    }
    fn consume(&self) -> Self::Claim {
        self.0.consume().expect("queue open")
    }
    fn payload(claim: &Self::Claim) -> &T {
        claim
    }
    fn first_attempt(claim: &Self::Claim) -> bool {
        claim.attempt() == 1
    }
    fn ack(&self, claim: Self::Claim) {
        claim.ack().expect("30 s lease");
    }
    fn rollback(&self, claim: Self::Claim, delay: Duration) {
        claim.rollback_after(delay).expect("30 s lease");
    }
    fn produce_batch(&self, values: Vec<T>) {
        self.0.produce_batch(values).expect("queue open");
    }
    fn try_consume_batch(&self, max: usize, out: &mut Vec<Self::Claim>) {
        if let Ok(batch) = self.0.try_consume_batch(max) {
            out.extend(batch);
        }
    }
    fn consume_batch(&self, max: usize, out: &mut Vec<Self::Claim>) {
        out.extend(self.0.consume_batch(max).expect("queue open"));
    }
}

fn retried<T: Payload>(mut value: T) -> T {
    value.set_word(value.word() | RETRIED);
    value
}

/// A channel: no acks, no delays. As a [`Contender`] (wrapped in
/// [`Chan`]), `ack` drops the message and `rollback` re-sends it at once,
/// marked [`RETRIED`].
pub(crate) trait Channel<T>: Send + Sync + 'static {
    const NAME: &'static str;
    fn new() -> Self;
    fn send(&self, value: T);
    fn try_recv(&self) -> Option<T>;
    /// Blocks until a message is ready.
    fn recv(&self) -> T;
}

/// A [`Channel`] as a [`Contender`].
pub(crate) struct Chan<C>(C);

impl<T: Payload, C: Channel<T>> Contender<T> for Chan<C> {
    const NAME: &'static str = C::NAME;
    const DELAYS: bool = false;
    type Claim = T;
    fn new() -> Self {
        Chan(C::new())
    }
    fn produce(&self, value: T) {
        self.0.send(value);
    }
    fn produce_after(&self, _: T, _: Duration) {
        unreachable!("channels have no delayed delivery")
    }
    fn try_consume(&self) -> Option<T> {
        self.0.try_recv()
    }
    fn consume(&self) -> T {
        self.0.recv()
    }
    fn payload(claim: &T) -> &T {
        claim
    }
    fn first_attempt(claim: &T) -> bool {
        claim.word() & RETRIED == 0
    }
    fn ack(&self, claim: T) {
        drop(claim);
    }
    fn rollback(&self, claim: T, _: Duration) {
        self.0.send(retried(claim));
    }
}

/// A [`Channel`] over an unbounded channel crate whose `Sender` and
/// `Receiver` have the same shape (crossbeam-channel, flume).
macro_rules! unbounded_channel {
    ($(#[$doc:meta])* $alias:ident, $name:ident, $krate:ident, $label:literal) => {
        $(#[$doc])*
        pub(crate) type $alias<T> = Chan<$name<T>>;
        pub(crate) struct $name<T>($krate::Sender<T>, $krate::Receiver<T>);

        impl<T: Payload> Channel<T> for $name<T> {
            const NAME: &'static str = $label;
            fn new() -> Self {
                let (tx, rx) = $krate::unbounded();
                $name(tx, rx)
            }
            fn send(&self, value: T) {
                self.0.send(value).expect("receiver alive");
            }
            fn try_recv(&self) -> Option<T> {
                self.1.try_recv().ok()
            }
            fn recv(&self) -> T {
                self.1.recv().expect("sender alive")
            }
        }
    };
}

unbounded_channel!(
    /// crossbeam-channel unbounded: send -> recv, the speed ceiling.
    CrossbeamChannel,
    Crossbeam,
    crossbeam_channel,
    "crossbeam-channel"
);
unbounded_channel!(
    /// flume unbounded: send -> recv.
    Flume,
    FlumeChannel,
    flume,
    "flume"
);

/// `std::sync::mpsc` unbounded. Its receiver is single-consumer, so the
/// consumers share it behind a `Mutex` (uncontended at one consumer).
pub(crate) type StdMpsc<T> = Chan<Mpsc<T>>;
pub(crate) struct Mpsc<T>(mpsc::Sender<T>, Mutex<mpsc::Receiver<T>>);

impl<T: Payload> Channel<T> for Mpsc<T> {
    const NAME: &'static str = "std-mpsc";
    fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Mpsc(tx, Mutex::new(rx))
    }
    fn send(&self, value: T) {
        self.0.send(value).expect("receiver alive");
    }
    /// Never waits for the receiver's lock: another consumer may hold it
    /// while blocked in `recv`.
    fn try_recv(&self) -> Option<T> {
        match self.1.try_lock() {
            Ok(rx) => rx.try_recv().ok(),
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().try_recv().ok(),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
    fn recv(&self) -> T {
        lock(&self.1).recv().expect("sender alive")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pending message of the hand-written queues.
pub(crate) struct Entry<T> {
    payload: T,
    attempt: u32,
}

/// The ready/delayed store of a hand-written queue, ordered by due time.
pub(crate) trait Store<T>: Default + Send + 'static {
    fn push(&mut self, due: Instant, id: u64, entry: Entry<T>);
    fn pop_due(&mut self, now: Instant) -> Option<(u64, Entry<T>)>;
    fn next_due(&self) -> Option<Instant>;
}

/// `BinaryHeap<Reverse<(due, id)>>` + `HashMap<id, payload>`.
pub(crate) struct HeapStore<T> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    payloads: HashMap<u64, Entry<T>>,
}

impl<T> Default for HeapStore<T> {
    fn default() -> Self {
        HeapStore {
            heap: BinaryHeap::new(),
            payloads: HashMap::new(),
        }
    }
}

impl<T: Send + 'static> Store<T> for HeapStore<T> {
    fn push(&mut self, due: Instant, id: u64, entry: Entry<T>) {
        self.heap.push(Reverse((due, id)));
        self.payloads.insert(id, entry);
    }
    fn pop_due(&mut self, now: Instant) -> Option<(u64, Entry<T>)> {
        match self.heap.peek() {
            Some(&Reverse((due, id))) if due <= now => {
                self.heap.pop();
                Some((id, self.payloads.remove(&id).expect("heap and map agree")))
            }
            _ => None,
        }
    }
    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }
}

/// `BTreeMap<(due, id), payload>`.
pub(crate) struct BTreeStore<T>(BTreeMap<(Instant, u64), Entry<T>>);

impl<T> Default for BTreeStore<T> {
    fn default() -> Self {
        BTreeStore(BTreeMap::new())
    }
}

impl<T: Send + 'static> Store<T> for BTreeStore<T> {
    fn push(&mut self, due: Instant, id: u64, entry: Entry<T>) {
        self.0.insert((due, id), entry);
    }
    fn pop_due(&mut self, now: Instant) -> Option<(u64, Entry<T>)> {
        let first = self.0.first_entry()?;
        if first.key().0 > now {
            return None;
        }
        let ((_, id), entry) = first.remove_entry();
        Some((id, entry))
    }
    fn next_due(&self) -> Option<Instant> {
        self.0.first_key_value().map(|((due, _), _)| *due)
    }
}

struct LockedState<T, S> {
    store: S,
    /// Claimed messages: the payload kept for redelivery and the lease deadline.
    in_flight: HashMap<u64, (Entry<T>, Instant)>,
    next_id: u64,
    /// Consumers blocked on the condvar: notify only when there are some.
    waiting: usize,
}

/// What users write by hand when they need acks and redelivery: a due-time
/// store and an in-flight map under one lock, a condvar for blocked
/// consumers. A claim hands out a clone of the payload and keeps the
/// original in flight with its lease deadline. (Nothing expires during the
/// benches, so there is no expiry scan.)
pub(crate) struct Locked<T, S> {
    state: Mutex<LockedState<T, S>>,
    ready: Condvar,
    lease: Duration,
}

/// A claim on a hand-written queue.
pub(crate) struct LockedClaim<T> {
    id: u64,
    payload: T,
    attempt: u32,
}

impl<T: Payload, S: Store<T>> Locked<T, S> {
    fn insert(&self, value: T, due: Instant) {
        let mut st = lock(&self.state);
        let id = st.next_id;
        st.next_id += 1;
        st.store.push(
            due,
            id,
            Entry {
                payload: value,
                attempt: 1,
            },
        );
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Claims up to `max` due messages into `out` under the caller's lock.
    fn claim_many(&self, st: &mut LockedState<T, S>, max: usize, out: &mut Vec<LockedClaim<T>>) {
        let now = Instant::now();
        for _ in 0..max {
            match Self::claim(st, now, self.lease) {
                Some(claim) => out.push(claim),
                None => break,
            }
        }
    }

    fn claim(st: &mut LockedState<T, S>, now: Instant, lease: Duration) -> Option<LockedClaim<T>> {
        let (id, entry) = st.store.pop_due(now)?;
        let claim = LockedClaim {
            id,
            payload: entry.payload.clone(),
            attempt: entry.attempt,
        };
        st.in_flight.insert(id, (entry, now + lease));
        Some(claim)
    }
}

/// Names the two hand-written queues.
pub(crate) trait StoreName {
    const NAME: &'static str;
}
impl<T> StoreName for HeapStore<T> {
    const NAME: &'static str = "mutex-heap-map";
}
impl<T> StoreName for BTreeStore<T> {
    const NAME: &'static str = "mutex-btree";
}

impl<T: Payload, S: Store<T> + StoreName> Contender<T> for Locked<T, S> {
    const NAME: &'static str = S::NAME;
    const DELAYS: bool = true;
    type Claim = LockedClaim<T>;
    fn new() -> Self {
        Locked {
            state: Mutex::new(LockedState {
                store: S::default(),
                in_flight: HashMap::new(),
                next_id: 0,
                waiting: 0,
            }),
            ready: Condvar::new(),
            lease: Duration::from_secs(30),
        }
    }
    fn produce(&self, value: T) {
        self.insert(value, Instant::now());
    }
    fn produce_after(&self, value: T, delay: Duration) {
        self.insert(value, Instant::now() + delay);
    }
    fn try_consume(&self) -> Option<Self::Claim> {
        let mut st = lock(&self.state);
        Self::claim(&mut st, Instant::now(), self.lease)
    }
    fn consume(&self) -> Self::Claim {
        let mut st = lock(&self.state);
        loop {
            let now = Instant::now();
            if let Some(claim) = Self::claim(&mut st, now, self.lease) {
                return claim;
            }
            st.waiting += 1;
            st = match st.store.next_due() {
                Some(due) => {
                    let wait = due.saturating_duration_since(now);
                    self.ready
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.ready.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
            st.waiting -= 1;
        }
    }
    fn payload(claim: &Self::Claim) -> &T {
        &claim.payload
    }
    fn first_attempt(claim: &Self::Claim) -> bool {
        claim.attempt == 1
    }
    fn ack(&self, claim: Self::Claim) {
        lock(&self.state).in_flight.remove(&claim.id);
    }
    /// One lock for the whole batch.
    fn produce_batch(&self, values: Vec<T>) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        for value in values {
            let id = st.next_id;
            st.next_id += 1;
            let entry = Entry {
                payload: value,
                attempt: 1,
            };
            st.store.push(now, id, entry);
        }
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.ready.notify_all();
        }
    }
    fn try_consume_batch(&self, max: usize, out: &mut Vec<Self::Claim>) {
        let mut st = lock(&self.state);
        self.claim_many(&mut st, max, out);
    }
    fn consume_batch(&self, max: usize, out: &mut Vec<Self::Claim>) {
        let first = self.consume();
        out.push(first);
        let mut st = lock(&self.state);
        self.claim_many(&mut st, max - 1, out);
    }
    fn rollback(&self, claim: Self::Claim, delay: Duration) {
        let mut st = lock(&self.state);
        let (mut entry, _lease) = st.in_flight.remove(&claim.id).expect("claimed");
        entry.attempt += 1;
        st.store.push(Instant::now() + delay, claim.id, entry);
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
    }
}

/// The hand-written baseline of issue 2.
pub(crate) type HeapMap<T> = Locked<T, HeapStore<T>>;
/// The same with a `BTreeMap` keyed by (due time, id).
pub(crate) type BTree<T> = Locked<T, BTreeStore<T>>;

/// One measured run on a [`Rig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job {
    /// Messages to settle (ack) in this run; producers split them evenly.
    pub(crate) messages: u64,
    /// Every 10th message is rolled back on its first delivery, to come
    /// back after this delay.
    pub(crate) rollback: Option<Duration>,
    /// Every 10th message is produced with this delay.
    pub(crate) delay: Option<Duration>,
    /// Messages per produce and per consume call (1: no batches).
    pub(crate) batch: usize,
}

struct RigShared<T, Q> {
    queue: Q,
    job: Mutex<Job>,
    start: Barrier,
    end: Barrier,
    /// Acks flushed by consumers in the current job.
    settled: AtomicU64,
    /// The run's wall time is taken by the workers themselves (the driver
    /// thread may be scheduled late on 2 cores): nanoseconds since `base`
    /// when the first worker started and the last one finished.
    base: Instant,
    first_start: AtomicU64,
    last_end: AtomicU64,
    quit: AtomicBool,
    producers: usize,
    consumers: usize,
    _payload: std::marker::PhantomData<fn() -> T>,
}

/// Persistent producer and consumer threads around one queue, so that a
/// measured run pays no thread spawn: `run` releases them on a barrier and
/// returns when all have met at the end barrier.
pub(crate) struct Rig<T: Payload, Q: Contender<T>> {
    shared: Arc<RigShared<T, Q>>,
    threads: Vec<JoinHandle<()>>,
}

/// Consumers publish their acks in chunks of this many (and whenever the
/// queue looks empty), so that counting costs no shared write per message.
const FLUSH: u64 = 256;

impl<T: Payload, Q: Contender<T>> Rig<T, Q> {
    pub(crate) fn new(producers: usize, consumers: usize) -> Self {
        let shared = Arc::new(RigShared {
            queue: Q::new(),
            job: Mutex::new(Job {
                messages: 0,
                rollback: None,
                delay: None,
                batch: 1,
            }),
            start: Barrier::new(producers + consumers + 1),
            end: Barrier::new(producers + consumers + 1),
            settled: AtomicU64::new(0),
            base: Instant::now(),
            first_start: AtomicU64::new(u64::MAX),
            last_end: AtomicU64::new(0),
            quit: AtomicBool::new(false),
            producers,
            consumers,
            _payload: std::marker::PhantomData,
        });
        let threads = (0..producers + consumers)
            .map(|i| {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    loop {
                        shared.start.wait();
                        if shared.quit.load(Ordering::Acquire) {
                            return;
                        }
                        let job = *lock(&shared.job);
                        let started = shared.base.elapsed().as_nanos() as u64;
                        // Relaxed: read by the driver after the end barrier.
                        shared.first_start.fetch_min(started, Ordering::Relaxed);
                        if i < shared.producers {
                            produce(&shared, i, job);
                        } else {
                            consume(&shared, job);
                        }
                        let ended = shared.base.elapsed().as_nanos() as u64;
                        shared.last_end.fetch_max(ended, Ordering::Relaxed);
                        shared.end.wait();
                    }
                })
            })
            .collect();
        Rig { shared, threads }
    }

    /// Queues `messages` messages from this thread (a backlog for the next
    /// `run`, which must count them in its `Job::messages`).
    pub(crate) fn prefill(&self, messages: u64) {
        for seq in 0..messages {
            self.shared.queue.produce(T::new(seq));
        }
    }

    /// One measured run: wall time from the first worker's start to the
    /// last worker's end (the last ack or stop).
    pub(crate) fn run(&self, job: Job) -> Duration {
        let shared = &self.shared;
        *lock(&shared.job) = job;
        // Relaxed: the barrier publishes these resets to the workers.
        shared.settled.store(0, Ordering::Relaxed);
        shared.first_start.store(u64::MAX, Ordering::Relaxed);
        shared.last_end.store(0, Ordering::Relaxed);
        shared.start.wait();
        shared.end.wait();
        // Relaxed: the end barrier orders the workers' updates before this.
        let start = shared.first_start.load(Ordering::Relaxed);
        let end = shared.last_end.load(Ordering::Relaxed);
        Duration::from_nanos(end.saturating_sub(start))
    }
}

impl<T: Payload, Q: Contender<T>> Drop for Rig<T, Q> {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        self.shared.start.wait();
        for t in self.threads.drain(..) {
            t.join().expect("rig thread");
        }
    }
}

fn produce<T: Payload, Q: Contender<T>>(shared: &RigShared<T, Q>, index: usize, job: Job) {
    let per = job.messages / shared.producers as u64;
    let q = &shared.queue;
    let seqs = index as u64 * per..(index as u64 + 1) * per;
    if job.batch > 1 {
        let mut seqs = seqs.peekable();
        while seqs.peek().is_some() {
            q.produce_batch(seqs.by_ref().take(job.batch).map(T::new).collect());
        }
        return;
    }
    for seq in seqs {
        match job.delay {
            Some(delay) if seq % 10 == 0 => q.produce_after(T::new(seq), delay),
            _ => q.produce(T::new(seq)),
        }
    }
}

fn consume<T: Payload, Q: Contender<T>>(shared: &RigShared<T, Q>, job: Job) {
    let q = &shared.queue;
    let mut acked = 0;
    // Adds this consumer's acks to the total; true once the job is complete,
    // in which case the other consumers are told to stop.
    let flush = |acked: &mut u64| -> bool {
        if *acked == 0 {
            return false;
        }
        let total = shared.settled.fetch_add(*acked, Ordering::AcqRel) + *acked;
        *acked = 0;
        if total == job.messages {
            for _ in 1..shared.consumers {
                q.produce(T::new(STOP));
            }
            return true;
        }
        false
    };
    if job.batch > 1 {
        let mut claims = Vec::with_capacity(job.batch);
        loop {
            q.try_consume_batch(job.batch, &mut claims);
            if claims.is_empty() {
                if flush(&mut acked) {
                    return;
                }
                q.consume_batch(job.batch, &mut claims);
            }
            let mut stops = 0;
            for claim in claims.drain(..) {
                stops += u64::from(settle(q, job, claim, &mut acked));
            }
            if stops > 0 {
                // Stops go one per consumer: hand back any extra ones.
                for _ in 1..stops {
                    q.produce(T::new(STOP));
                }
                flush(&mut acked);
                return;
            }
            if acked >= FLUSH && flush(&mut acked) {
                return;
            }
        }
    }
    loop {
        let claim = match q.try_consume() {
            Some(claim) => claim,
            None => {
                if flush(&mut acked) {
                    return;
                }
                q.consume()
            }
        };
        if settle(q, job, claim, &mut acked) {
            flush(&mut acked);
            return;
        }
        if acked == FLUSH && flush(&mut acked) {
            return;
        }
    }
}

/// Acks, or rolls back, one claim; true if it was a stop message.
#[inline]
fn settle<T: Payload, Q: Contender<T>>(q: &Q, job: Job, claim: Q::Claim, acked: &mut u64) -> bool {
    let word = Q::payload(&claim).word();
    std::hint::black_box(Q::payload(&claim));
    if word == STOP {
        q.ack(claim);
        return true;
    }
    if let Some(delay) = job.rollback {
        if word % 10 == 0 && Q::first_attempt(&claim) {
            q.rollback(claim, delay);
            return false;
        }
    }
    q.ack(claim);
    *acked += 1;
    false
}

/// Where the benches leave their results for `benches/report.rs`:
/// `$CARGO_TARGET_DIR/bench-data`, by default `target/bench-data`.
pub(crate) fn data_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench-data");
    std::fs::create_dir_all(&dir).expect("create bench-data dir");
    dir
}

/// Resident set size of this process, in bytes (Linux).
pub(crate) fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm resident field");
    pages * 4096
}
