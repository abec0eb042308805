//! loom models of rebound's races, one test file per race (`tests/`).
//!
//! Run them with
//! `LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg rebound_loom" cargo test --release -p rebound-loom-tests --target-dir target/loom`.
//! Without `--cfg rebound_loom` this crate and its tests compile to nothing.
//! This library holds what every model shares; see `docs/verification.md`.
#![cfg(rebound_loom)]

use rebound::__loom::{Redeliverer, advance};
use rebound::{Backoff, Delivery, MessageId, Queue, TryConsumeError};
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// The lease every model uses: the shortest allowed, one mock millisecond.
pub const LEASE: Duration = Duration::from_millis(1);

/// A queue for a model: lease [`LEASE`], redelivery without backoff (due at
/// once, so a single redeliverer pass makes it claimable), `max_attempts`
/// deliveries. Under `cfg(rebound_loom)` it spawns no thread and reads a
/// mock clock.
pub fn queue(max_attempts: u32) -> Queue<Msg> {
    grouped_queue(max_attempts, false)
}

/// The ordered group the group models produce into.
pub const GROUP: u64 = 7;

/// A [`queue`] whose dead-lettered group heads hold their group if `hold`
/// (`Builder::hold_groups`).
pub fn grouped_queue(max_attempts: u32, hold: bool) -> Queue<Msg> {
    Queue::builder()
        .lease(LEASE)
        .backoff(Backoff::fixed(Duration::ZERO))
        .max_attempts(max_attempts)
        .hold_groups(hold)
        .build()
}

/// Where the group models start: `a` then `b` produced into [`GROUP`] of
/// `q`, and the head, `a`, claimed (attempt 1), with the flag its drop
/// sets. `b` is in the producers' chain, written `Blocked` in the slot
/// after `a` and linked behind it; the claim stopped at `a`, so the
/// block's cursor is at `b`, which nobody has scanned yet. When `a`'s
/// payload leaves, its last holder unblocks `b` in place, unless a scan
/// passed it first (marking it `Skipped`): then it moves `b`'s payload
/// into a new slot of the chain and unblocks it there.
pub fn head_claimed_with_next_waiting(q: &Queue<Msg>, drops: &Drops) -> (Delivery<Msg>, DropFlag) {
    let flag = DropFlag::new();
    q.produce_in_group(GROUP, drops.flagged("a", &flag))
        .unwrap();
    q.produce_in_group(GROUP, drops.msg("b")).unwrap();
    let head = q.try_consume().unwrap();
    assert_eq!((head.name(), head.attempt()), ("a", 1));
    (head, flag)
}

/// [`head_claimed_with_next_waiting`], then a claim that finds nothing:
/// its scan passed `b`, now `Skipped` (its block's cursor is past it, so
/// the block has left the index), and `a`'s last holder will move it.
/// Also returns `b`'s id.
pub fn head_claimed_with_next_skipped(
    q: &Queue<Msg>,
    drops: &Drops,
) -> (Delivery<Msg>, DropFlag, MessageId) {
    let flag = DropFlag::new();
    q.produce_in_group(GROUP, drops.flagged("a", &flag))
        .unwrap();
    let b = q.produce_in_group(GROUP, drops.msg("b")).unwrap();
    let head = q.try_consume().unwrap();
    assert_eq!((head.name(), head.attempt()), ("a", 1));
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    (head, flag, b)
}

/// Where the lease-expiry models start: a [`queue`] of `max_attempts`
/// holding one message `m`, claimed as `d`, a redeliverer that has not run
/// yet, and the mock clock moved to the end of `d`'s lease.
pub fn claimed_at_lease_end(
    drops: &Drops,
    max_attempts: u32,
) -> (Queue<Msg>, Redeliverer<Msg>, Delivery<Msg>) {
    let q = queue(max_attempts);
    q.produce(drops.msg("m")).unwrap();
    let redeliverer = Redeliverer::new();
    let d = q.try_consume().unwrap();
    advance(&q, LEASE);
    (q, redeliverer, d)
}

/// Counts the drops of the payloads of one execution, so that a model can
/// assert that every payload was dropped exactly once (never leaked, never
/// dropped twice).
#[derive(Debug)]
pub struct Drops(&'static AtomicUsize);

impl Drops {
    /// A fresh count. Leaks one word per execution on purpose: a payload
    /// dropped twice by a mutant must still find its counter.
    pub fn new() -> Self {
        Drops(Box::leak(Box::new(AtomicUsize::new(0))))
    }

    /// A payload named `name`, counted here when dropped.
    pub fn msg(&self, name: &'static str) -> Msg {
        Msg {
            name,
            drops: self.0,
            flag: None,
        }
    }

    /// A payload named `name`, counted here and setting `flag` when dropped.
    pub fn flagged(&self, name: &'static str, flag: &DropFlag) -> Msg {
        Msg {
            name,
            drops: self.0,
            flag: Some(flag.clone()),
        }
    }

    /// Payload drops so far.
    pub fn count(&self) -> usize {
        // SeqCst: read after the model joined every thread; any order works.
        self.0.load(Ordering::SeqCst)
    }
}

impl Default for Drops {
    fn default() -> Self {
        Self::new()
    }
}

/// A loom flag that a payload made by [`Drops::flagged`] sets when it is
/// dropped, for a model whose property is the order of that drop and a
/// read on another thread. loom sees the store and the load, so it runs
/// them in both orders, and the read sees the drop only if the drop
/// happens before it. ([`Drops`]' count is a std atomic, invisible to loom,
/// which takes the drop and the read for independent and runs one order.)
#[derive(Clone, Debug)]
pub struct DropFlag(loom::sync::Arc<loom::sync::atomic::AtomicBool>);

impl DropFlag {
    /// Not set.
    pub fn new() -> Self {
        DropFlag(loom::sync::Arc::new(loom::sync::atomic::AtomicBool::new(
            false,
        )))
    }

    /// Whether this thread sees the payload dropped.
    pub fn is_set(&self) -> bool {
        // Relaxed: the flag adds no ordering of its own; it reads `true`
        // only where the queue made the drop happen before this load.
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for DropFlag {
    fn default() -> Self {
        Self::new()
    }
}

/// A payload: a name, and a counter bumped when it is dropped. A std
/// atomic, invisible to loom: it is the model's bookkeeping. A payload
/// made by [`Drops::flagged`] also sets its [`DropFlag`].
pub struct Msg {
    name: &'static str,
    drops: &'static AtomicUsize,
    flag: Option<DropFlag>,
}

impl Msg {
    /// The name it was made with.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for Msg {
    fn drop(&mut self) {
        // SeqCst: bookkeeping, read once every thread is joined.
        self.drops.fetch_add(1, Ordering::SeqCst);
        if let Some(flag) = &self.flag {
            // Relaxed: see `DropFlag::is_set`.
            flag.0.store(true, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Runs `f` under loom, exploring its interleavings (bounded by
/// `LOOM_MAX_PREEMPTIONS`, which loom reads), and prints how many
/// executions that took.
pub fn model(f: impl Fn() + Sync + Send + 'static) {
    // A std counter outside the model: it counts executions, it is not part
    // of what loom explores.
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&executions);
    loom::model(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    eprintln!(
        "{}: {} executions",
        std::thread::current().name().unwrap_or("model"),
        executions.load(Ordering::Relaxed)
    );
}

/// Runs `f` to completion on the calling loom thread: polls it, and parks
/// the thread (`loom::thread::park`) each time it is pending, until its
/// waker unparks it. (loom's own `block_on` also explores spurious
/// wake-ups, each a poll more: they only add executions here, as a task
/// polled again without a notification stays registered.) A task whose
/// wake-up is lost parks for good: a loom deadlock.
pub fn block_on<F: Future>(f: F) -> F::Output {
    /// Unparks the thread that polls.
    struct Unpark(loom::thread::Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(loom::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(output) = f.as_mut().poll(&mut cx) {
            return output;
        }
        loom::thread::park();
    }
}
