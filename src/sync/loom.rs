//! The loom world of the loom seam: loom's atomics, locks and threads, and
//! loom-visible stand-ins for what loom does not model itself (a condition
//! variable whose timed waits the model ends, a spin-wait that yields, an
//! `Arc` whose count does not synchronise, the epoch, the clock).

use super::SetMut;

use super::{Instant, lock};
pub(crate) use loom::cell::UnsafeCell;
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
};
pub(crate) use loom::sync::{Mutex, MutexGuard};
pub(crate) use loom::thread;
pub(crate) use loom_arc::Arc;
pub(crate) use loom_epoch::{Guard, pin};
pub(crate) use loom_skiplist::{SkipGuard, SkipList, skip_collector, skip_pin};

/// Spinning while another thread finishes: a step counter that completes
/// after a few steps and from then on yields to loom on every `snooze`
/// (loom must see a wait that outlasts the bound, such as a producer
/// waiting for the next block). The first steps do not yield on purpose:
/// after a yield loom stops showing a thread the stale values it saw
/// before, which would hide lost wake-ups in `Queue::consume`'s
/// spin-then-park.
#[derive(Debug, Default)]
pub(crate) struct SpinWait {
    step: std::cell::Cell<u32>,
}

impl SpinWait {
    /// Steps before [`Self::is_completed`]: enough to take both branches
    /// (spin again, give up) of every caller.
    const STEPS: u32 = 2;

    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn spin(&self) {
        self.step.set(self.step.get() + 1);
    }

    pub(crate) fn snooze(&self) {
        if self.is_completed() {
            loom::thread::yield_now();
        } else {
            self.step.set(self.step.get() + 1);
        }
    }

    pub(crate) fn is_completed(&self) -> bool {
        self.step.get() >= Self::STEPS
    }
}

/// A loom condition variable whose timed waits end only when the model fires
/// the timers ([`Condvar::fire_timers`], after advancing the mock clock past
/// every deadline): loom's own `wait_timeout` never times out, and a timed
/// wait that nobody ends is exactly the lost wake-up the models look for.
#[derive(Debug, Default)]
pub(crate) struct Condvar {
    cond: loom::sync::Condvar,
    /// Threads in a timed wait. A std atomic, invisible to loom on purpose
    /// (it is bookkeeping of the model, not of the queue): only touched
    /// under the mutex the waits use, which orders every access.
    timed: std::sync::atomic::AtomicUsize,
}

impl Condvar {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn notify_one(&self) {
        self.cond.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.cond.notify_all();
    }

    /// Ends every timed wait: the mock clock has passed their deadlines.
    /// The caller holds the mutex the waits use.
    pub(crate) fn fire_timers<T>(&self, _held: &MutexGuard<'_, T>) {
        // Relaxed: ordered by the mutex the caller holds.
        if self.timed.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            self.cond.notify_all();
        }
    }
}

pub(crate) fn wait<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Option<std::time::Duration>,
) -> MutexGuard<'a, T> {
    use std::sync::atomic::Ordering::Relaxed;
    let timed = timeout.is_some();
    // Relaxed (both): ordered by the mutex `guard` holds; `wait` gives it
    // back before returning.
    if timed {
        cond.timed.fetch_add(1, Relaxed);
    }
    let guard = cond
        .cond
        .wait(guard)
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if timed {
        cond.timed.fetch_sub(1, Relaxed);
    }
    guard
}

macro_rules! set_mut {
    ($($atomic:ident: $int:ty),*) => {$(
        impl SetMut<$int> for $atomic {
            fn set_mut(&mut self, value: $int) {
                // Relaxed: see the trait.
                self.store(value, Ordering::Relaxed);
            }
        }
    )*};
}
set_mut!(AtomicUsize: usize, AtomicU64: u64);

/// The model's clock: one instant per execution, plus a time moved only by
/// the model ([`advance`]). The offset is a std atomic, invisible to loom on
/// purpose: time is not shared memory the queue synchronises through, and
/// every reader sees the latest value, like a real monotonic clock.
struct MockClock {
    start: Instant,
    nanos: std::sync::atomic::AtomicU64,
}

loom::lazy_static! {
    /// One per loom execution (loom resets its lazy statics).
    static ref CLOCK: MockClock = MockClock {
        start: Instant::now(),
        nanos: std::sync::atomic::AtomicU64::new(0),
    };
}

/// The model's current time.
pub(crate) fn now() -> Instant {
    // SeqCst: bookkeeping outside loom (see `MockClock`).
    CLOCK.start
        + std::time::Duration::from_nanos(CLOCK.nanos.load(std::sync::atomic::Ordering::SeqCst))
}

/// Moves the model's clock forward by `by`.
pub(crate) fn advance(by: std::time::Duration) {
    let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
    // SeqCst: as in `now`.
    CLOCK
        .nanos
        .fetch_add(by, std::sync::atomic::Ordering::SeqCst);
}

/// Under `cfg(rebound_loom)`: loom's `Arc` with a `strong_count` that does
/// not synchronise.
///
/// loom's own `Arc::strong_count` acquires every earlier drop (as a SeqCst
/// load of the count would), where std's is a Relaxed load that orders
/// nothing. rebound decides on the count alone whether a block is dead
/// (`Registrations::recycled`, the redeliverer's scan) and leaves the
/// Acquire that orders a recycle after the last holder's drop to
/// `Arc::get_mut`; with loom's count the models could not see a recycle that
/// skips it. Here the count is also kept in a std atomic beside the value,
/// changed right after loom's own count (no loom operation runs in between,
/// so no other thread of the model does) and read without synchronising.
/// So that loom still explores the orders of a count check and the drops
/// that can change its answer, every drop that leaves exactly one reference
/// (the checks ask "is it one?") also bumps a loom atomic, and the check
/// reads that atomic, both Relaxed: dependent operations for loom's
/// exploration that synchronise nothing. Everything else is loom's: clones,
/// drops and `get_mut` synchronise as loom models them, and a leaked `Arc`
/// is reported.
mod loom_arc {
    use super::Ordering::Relaxed;
    use std::mem::ManuallyDrop;
    use std::ops::Deref;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// The value, then its count. `repr(C)`: the value is at offset 0, so a
    /// pointer to the value is a pointer to the whole.
    #[repr(C)]
    struct Counted<T> {
        value: T,
        /// In a (std) `Arc` of its own, so that a drop can update it after
        /// loom's drop may have freed `Counted`.
        count: std::sync::Arc<Count>,
    }

    struct Count {
        /// The strong count, bookkeeping outside loom.
        strong: AtomicUsize,
        /// Bumped by every drop that leaves one reference (see above).
        left_one: super::AtomicUsize,
    }

    pub(crate) struct Arc<T>(ManuallyDrop<loom::sync::Arc<Counted<T>>>);

    impl<T> Arc<T> {
        pub(crate) fn new(value: T) -> Self {
            let count = std::sync::Arc::new(Count {
                strong: AtomicUsize::new(1),
                left_one: super::AtomicUsize::new(0),
            });
            Self(ManuallyDrop::new(loom::sync::Arc::new(Counted {
                value,
                count,
            })))
        }

        /// The number of strong references, read without synchronising (a
        /// std `Arc`'s is a Relaxed load).
        pub(crate) fn strong_count(this: &Self) -> usize {
            // Relaxed: orders nothing (see the module); a read-modify-write
            // rather than a load, so that loom does not also explore which
            // earlier value a load could return, which nothing reads.
            this.0.count.left_one.fetch_add(0, Relaxed);
            // SeqCst: bookkeeping outside loom; the model runs one thread
            // at a time, so any ordering reads the latest count.
            this.0.count.strong.load(SeqCst)
        }

        pub(crate) fn get_mut(this: &mut Self) -> Option<&mut T> {
            loom::sync::Arc::get_mut(&mut this.0).map(|counted| &mut counted.value)
        }

        pub(crate) fn as_ptr(this: &Self) -> *const T {
            loom::sync::Arc::as_ptr(&this.0).cast()
        }

        pub(crate) fn ptr_eq(this: &Self, other: &Self) -> bool {
            loom::sync::Arc::ptr_eq(&this.0, &other.0)
        }

        pub(crate) fn into_raw(this: Self) -> *const T {
            let this = ManuallyDrop::new(this);
            Self::as_ptr(&this)
        }

        /// # Safety
        /// As `std::sync::Arc::from_raw`: `ptr` came from [`Self::into_raw`]
        /// (or [`Self::as_ptr`] of a live `Arc` whose reference the caller
        /// owns), and the reference it stands for is turned back once.
        pub(crate) unsafe fn from_raw(ptr: *const T) -> Self {
            // SAFETY: `ptr` points at the value of a `Counted<T>`, which
            // is at offset 0 (`repr(C)`): it is the pointer loom's
            // `into_raw` gave for that `Counted<T>`, and the caller hands
            // over the reference it owns.
            Self(ManuallyDrop::new(unsafe {
                loom::sync::Arc::from_raw(ptr.cast::<Counted<T>>())
            }))
        }

        /// # Safety
        /// As `std::sync::Arc::increment_strong_count`: `ptr` is the
        /// pointer of a live `Arc`.
        pub(crate) unsafe fn increment_strong_count(ptr: *const T) {
            // SAFETY: by the contract the count is at least one, and this
            // borrowed `Arc` is never dropped.
            let this = ManuallyDrop::new(unsafe { Self::from_raw(ptr) });
            let _added = ManuallyDrop::new(Self::clone(&this));
        }

        /// # Safety
        /// As `std::sync::Arc::decrement_strong_count`: `ptr` is the
        /// pointer of a live `Arc` and the caller owns one of its
        /// references, which this releases.
        pub(crate) unsafe fn decrement_strong_count(ptr: *const T) {
            // SAFETY: by the contract the caller owns the reference that
            // this `Arc` stands for and drops.
            drop(unsafe { Self::from_raw(ptr) });
        }
    }

    impl<T> Clone for Arc<T> {
        fn clone(&self) -> Self {
            let clone = loom::sync::Arc::clone(&self.0);
            // SeqCst: see `strong_count`.
            clone.count.strong.fetch_add(1, SeqCst);
            Self(ManuallyDrop::new(clone))
        }
    }

    impl<T> Drop for Arc<T> {
        fn drop(&mut self) {
            let count = std::sync::Arc::clone(&self.0.count);
            // SAFETY: `self.0` is dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.0) };
            // SeqCst: see `strong_count`.
            if count.strong.fetch_sub(1, SeqCst) == 2 {
                // Relaxed: see the module.
                count.left_one.fetch_add(1, Relaxed);
            }
        }
    }

    impl<T> Deref for Arc<T> {
        type Target = T;

        fn deref(&self) -> &T {
            &self.0.value
        }
    }
}

/// Under `cfg(rebound_loom)`: a loom-visible stand-in for crossbeam-epoch,
/// for what rebound defers through it under loom: the release of a
/// replaced tail block (the loom index frees nothing through the epoch).
///
/// A deferred function runs once every thread pinned when it was deferred
/// has unpinned, as crossbeam-epoch guarantees; here, when the number of
/// pinned threads drops to zero (later than crossbeam may run it, never
/// earlier). A pin is an Acquire increment of a loom counter and an unpin
/// an AcqRel decrement, so a thread that pins acquires what every thread
/// did before it last unpinned (the release sequence of the decrements):
/// a producer pinning after another replaced the tail loads the new tail,
/// which crossbeam gets from its SeqCst fences. Pinning does not acquire
/// what a thread pinned at the same time did, so a missing Release in a
/// producer's hand-over stays visible. The deferred functions wait in a
/// loom mutex; the last thread to unpin takes them, under that mutex, only
/// if nobody pinned meanwhile.
mod loom_epoch {
    use super::{AtomicUsize, Mutex, Ordering, lock};
    use std::marker::PhantomData;

    /// A deferred function, boxed with its lifetime erased.
    struct Deferred(Box<dyn FnOnce()>);

    // SAFETY: `Guard::defer_unchecked`'s contract makes the caller promise
    // that the function may run on any thread (as crossbeam-epoch's does).
    unsafe impl Send for Deferred {}

    struct Epoch {
        pinned: AtomicUsize,
        deferred: Mutex<Vec<Deferred>>,
    }

    loom::lazy_static! {
        /// One per loom execution (loom resets its lazy statics).
        static ref EPOCH: Epoch = Epoch {
            pinned: AtomicUsize::new(0),
            deferred: Mutex::new(Vec::new()),
        };
    }

    /// A pinned thread. Not `Send`, like crossbeam's.
    #[derive(Debug)]
    pub(crate) struct Guard {
        _not_send: PhantomData<*mut ()>,
    }

    pub(crate) fn pin() -> Guard {
        // Acquire: pairs with the AcqRel decrement of every earlier unpin.
        EPOCH.pinned.fetch_add(1, Ordering::Acquire);
        Guard {
            _not_send: PhantomData,
        }
    }

    impl Guard {
        /// Runs `f` once every thread pinned now has unpinned.
        ///
        /// # Safety
        /// As crossbeam-epoch's `Guard::defer_unchecked`: `f` may run on any
        /// thread, later, so whatever it uses must be `Send` and outlive
        /// the threads pinned now.
        pub(crate) unsafe fn defer_unchecked<F: FnOnce() -> R, R>(&self, f: F) {
            let f: Box<dyn FnOnce() + '_> = Box::new(move || drop(f()));
            // SAFETY: only the lifetime changes; by the contract `f` stays
            // valid until it runs, which is before every thread pinned now
            // (this one included) has unpinned and returned.
            let f: Box<dyn FnOnce()> = unsafe { std::mem::transmute(f) };
            lock(&EPOCH.deferred).push(Deferred(f));
        }

        /// Nothing to hand over: deferred functions wait in one list.
        pub(crate) fn flush(&self) {}
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            // AcqRel: Release publishes this thread's uses of what others
            // deferred (for the thread that runs them); Acquire, if this is
            // the last unpin, sees every other thread's.
            if EPOCH.pinned.fetch_sub(1, Ordering::AcqRel) != 1 {
                return;
            }
            let ready = {
                let mut deferred = lock(&EPOCH.deferred);
                // Acquire: as above. A thread that pinned since keeps the
                // list for its own unpin: it may have loaded a tail that
                // one of these functions releases.
                if EPOCH.pinned.load(Ordering::Acquire) != 0 {
                    return;
                }
                std::mem::take(&mut *deferred)
            };
            for Deferred(f) in ready {
                f();
            }
        }
    }
}

/// A loom-visible stand-in for the index's crossbeam skiplist, with the
/// part of its API the index uses: a loom `Mutex<BTreeMap>` held only around
/// each step, so that claims still race on the batches' cursors and the
/// messages' state words exactly as they do through the skiplist. A walk
/// goes node by node ([`Entry::next`] looks up the node after its key), so
/// it meets nodes inserted ahead of it, as a skiplist walk does. Nodes are
/// std `Arc`s on purpose: their counts are bookkeeping of this model, not a
/// synchronisation loom must explore (the blocks the batches point at are
/// loom `Arc`s). Their frees go through no epoch, so the guards are empty.
mod loom_skiplist {
    use super::{Mutex, lock};
    use std::collections::BTreeMap;
    use std::ops::Bound::{Excluded, Unbounded};
    use std::sync::Arc as Node;

    /// The index's epoch guard: nothing to pin.
    #[derive(Debug)]
    pub(crate) struct SkipGuard(());

    impl SkipGuard {
        pub(crate) fn flush(&self) {}
    }

    pub(crate) fn skip_pin() -> SkipGuard {
        SkipGuard(())
    }

    /// No collector: nodes are freed by their `Arc`s.
    #[derive(Debug)]
    pub(crate) struct Collector;

    pub(crate) fn skip_collector() -> Collector {
        Collector
    }

    pub(crate) struct SkipList<K, V> {
        map: Mutex<BTreeMap<K, Node<V>>>,
    }

    /// A node met by a walk; it keeps its value alive after it left the map.
    pub(crate) struct Entry<'a, K, V> {
        list: &'a SkipList<K, V>,
        key: K,
        value: Node<V>,
    }

    /// What an insert or a `pop_front` hands back.
    pub(crate) struct RefEntry;

    impl RefEntry {
        pub(crate) fn release(self, _guard: &SkipGuard) {}
    }

    impl<K: Ord + Copy, V> SkipList<K, V> {
        pub(crate) fn new(_collector: Collector) -> Self {
            Self {
                map: Mutex::new(BTreeMap::new()),
            }
        }

        pub(crate) fn insert(&self, key: K, value: V, _guard: &SkipGuard) -> RefEntry {
            lock(&self.map).insert(key, Node::new(value));
            RefEntry
        }

        pub(crate) fn contains_key(&self, key: &K, _guard: &SkipGuard) -> bool {
            lock(&self.map).contains_key(key)
        }

        /// The first node after `key` (the first of all with `None`), now.
        fn after(&self, key: Option<&K>) -> Option<Entry<'_, K, V>> {
            let map = lock(&self.map);
            let mut ahead = match key {
                Some(key) => map.range((Excluded(*key), Unbounded)),
                None => map.range(..),
            };
            ahead.next().map(|(key, value)| Entry {
                list: self,
                key: *key,
                value: Node::clone(value),
            })
        }

        pub(crate) fn front(&self, _guard: &SkipGuard) -> Option<Entry<'_, K, V>> {
            self.after(None)
        }

        pub(crate) fn iter(&self, _guard: &SkipGuard) -> impl Iterator<Item = Entry<'_, K, V>> {
            std::iter::successors(self.after(None), |entry| entry.next())
        }

        pub(crate) fn pop_front(&self, _guard: &SkipGuard) -> Option<RefEntry> {
            lock(&self.map).pop_first().map(|_| RefEntry)
        }
    }

    impl<'a, K: Ord + Copy, V> Entry<'a, K, V> {
        pub(crate) fn key(&self) -> &K {
            &self.key
        }

        pub(crate) fn value(&self) -> &V {
            &self.value
        }

        /// Unlinks the node; whether this call did.
        pub(crate) fn remove(&self) -> bool {
            lock(&self.list.map).remove(&self.key).is_some()
        }

        pub(crate) fn next(&self) -> Option<Entry<'a, K, V>> {
            self.list.after(Some(&self.key))
        }
    }

    impl<K: Copy, V> Clone for Entry<'_, K, V> {
        fn clone(&self) -> Self {
            Entry {
                list: self.list,
                key: self.key,
                value: Node::clone(&self.value),
            }
        }
    }
}

/// Under `cfg(rebound_loom)` (feature `async`): a loom-visible stand-in for
/// `event_listener::Event`, whose own loom support needs a global
/// `cfg(loom)` that would also switch the other crates that read it. The
/// same contract, in a loom mutex: listeners in a first-in first-out list,
/// `notify_additional(n)` notifies the first `n` not notified yet and wakes
/// their wakers, a notified listener's poll consumes the notification and
/// leaves the list, `discard` leaves it and says whether it was notified,
/// and a notified listener dropped without either passes its notification
/// on (as event-listener's does).
#[cfg(feature = "async")]
pub(crate) use loom_event::{TaskEvent, TaskListener};

#[cfg(feature = "async")]
mod loom_event {
    use super::{Mutex, lock};
    use loom::sync::Arc;
    use std::collections::VecDeque;
    use std::task::{Context, Poll, Waker};

    #[derive(Default)]
    struct List {
        next_id: u64,
        /// `(id, notified, waker)`, in the order the listeners joined.
        entries: VecDeque<(u64, bool, Option<Waker>)>,
    }

    impl List {
        fn notify_additional(&mut self, mut n: usize) {
            for (_, notified, waker) in self.entries.iter_mut() {
                if n == 0 {
                    break;
                }
                if !*notified {
                    *notified = true;
                    n -= 1;
                    if let Some(waker) = waker.take() {
                        waker.wake();
                    }
                }
            }
        }

        /// Removes listener `id`; whether it was notified (`None`: it had
        /// left already).
        fn remove(&mut self, id: u64) -> Option<bool> {
            let at = self.entries.iter().position(|e| e.0 == id)?;
            self.entries.remove(at).map(|e| e.1)
        }
    }

    #[derive(Default)]
    pub(crate) struct TaskEvent {
        list: Arc<Mutex<List>>,
    }

    pub(crate) struct TaskListener {
        list: Arc<Mutex<List>>,
        id: u64,
    }

    impl TaskEvent {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        pub(crate) fn listen(&self) -> TaskListener {
            let mut list = lock(&self.list);
            let id = list.next_id;
            list.next_id += 1;
            list.entries.push_back((id, false, None));
            TaskListener {
                list: Arc::clone(&self.list),
                id,
            }
        }

        pub(crate) fn notify_additional(&self, n: usize) {
            lock(&self.list).notify_additional(n);
        }
    }

    impl TaskListener {
        pub(crate) fn poll_notified(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            let mut list = lock(&self.list);
            let entry = list
                .entries
                .iter_mut()
                .find(|e| e.0 == self.id)
                .expect("polled after it was notified");
            if !entry.1 {
                entry.2 = Some(cx.waker().clone());
                return Poll::Pending;
            }
            list.remove(self.id);
            Poll::Ready(())
        }

        /// Leaves the list (so that the drop that follows finds nothing
        /// to pass on).
        pub(crate) fn discard(self) -> bool {
            lock(&self.list).remove(self.id) == Some(true)
        }
    }

    impl Drop for TaskListener {
        fn drop(&mut self) {
            let mut list = lock(&self.list);
            if list.remove(self.id) == Some(true) {
                list.notify_additional(1);
            }
        }
    }
}
