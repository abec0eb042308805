//! The lease extender of a processor with
//! [`auto_extend`](crate::Processor::auto_extend): one thread per processor
//! that extends the leases of the handlers still running, each before it
//! runs out, until the handler has held it `max` longer than one lease.
//!
//! A handler's [`Watch`] puts it on the extender's list when it starts and
//! takes it off when it returns. Only the in-memory [`Queue`]'s processors
//! have one ([`start`] finds the queue behind the runtime's `Source`; over
//! any other, each delivery keeps its own lease, `Settle::keep_alive`); the
//! runner sees it as a [`Extend`] of its source's deliveries. The thread sleeps until the earliest
//! extension due, with no timeout while the list is empty, and a new entry
//! wakes it only if it needs an extension before the thread would wake
//! anyway: a processor whose handlers finish within half a lease costs the
//! thread about one wake-up per half lease while busy, none while idle.
//! Under a [`ManualClock`](crate::ManualClock) the extender runs when the
//! clock is advanced, before the queue looks at the new time (as if it had
//! kept up while the time passed), and its thread never wakes by itself.

use super::Core;
use super::report::Tally;
use super::source::Source;
use crate::clock;
use crate::delivery::Delivery;
use crate::manual_clock::Advanced;
use crate::queue::Queue;
use crate::shared::Shared;
use crate::sync::{Arc, Condvar, Mutex, MutexGuard, lock, thread, wait};
use std::any::Any;
use std::time::Duration;

/// A lease extender as the runner sees it: over its source's deliveries
/// `D`, whatever the queue behind them.
pub(super) trait Extend<D>: Send + Sync {
    /// Puts the handler of `delivery` on the list; its id, or `None` if
    /// the claim is already gone.
    fn watch(&self, delivery: &D) -> Option<u64>;
    /// Takes the handler `id` off the list.
    fn unwatch(&self, id: u64);
}

/// Starts the extender of a processor over `source`, if the source is the
/// in-memory queue (over any other, `None`: the runner asks each delivery's
/// `Settle::keep_alive` instead). `S::Delivery` is then `Delivery<S::Message>`; the box goes through
/// `Any` to say so to the compiler.
pub(super) fn start<S: Source>(
    source: &S,
    core: Arc<Core>,
    max: Duration,
) -> std::io::Result<Option<Box<dyn Extend<S::Delivery>>>> {
    let Some(queue) = (source as &dyn Any).downcast_ref::<Queue<S::Message>>() else {
        return Ok(None);
    };
    let extender: Box<dyn Extend<Delivery<S::Message>>> =
        Box::new(Extender::start(Arc::clone(&queue.shared), core, max)?);
    let any: Box<dyn Any> = Box::new(extender);
    Ok(any
        .downcast::<Box<dyn Extend<S::Delivery>>>()
        .ok()
        .map(|extender| *extender))
}

/// A handler on its extender's list; dropping it takes it off.
pub(super) struct Watch<'a, D> {
    extender: &'a dyn Extend<D>,
    id: Option<u64>,
}

impl<'a, D> Watch<'a, D> {
    /// Watches the handler of `delivery` until dropped.
    pub(super) fn new(extender: &'a dyn Extend<D>, delivery: &D) -> Self {
        Watch {
            extender,
            id: extender.watch(delivery),
        }
    }
}

impl<D> Drop for Watch<'_, D> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.extender.unwatch(id);
        }
    }
}

/// A handler being watched.
struct Entry<T> {
    id: u64,
    /// A copy of the handler's claim that can only extend its lease.
    lease: Delivery<T>,
    /// When the lease ends, as last set (nanoseconds on the queue's clock).
    end: u64,
    /// When to extend it next: halfway through what is left of it.
    extend_at: u64,
    /// The latest it may be extended to: one lease and `max` after the
    /// handler started.
    cap: u64,
}

struct State<T> {
    watched: Vec<Entry<T>>,
    next_id: u64,
    /// When the thread wakes next (nanoseconds on the queue's clock;
    /// `u64::MAX`: only when notified).
    wake_at: u64,
    stopped: bool,
}

/// What the thread, the handlers' watches and the manual clock share.
struct Inner<T> {
    shared: Arc<Shared<T>>,
    core: Arc<Core>,
    max: Duration,
    state: Mutex<State<T>>,
    cond: Condvar,
}

/// The extender of one processor: stops its thread when dropped (with the
/// processor's last pool job).
struct Extender<T> {
    inner: Arc<Inner<T>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl<T: Send + Sync + 'static> Extender<T> {
    /// Starts the extender thread of a processor of the queue `shared`.
    fn start(shared: Arc<Shared<T>>, core: Arc<Core>, max: Duration) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            shared,
            core,
            max,
            state: Mutex::new(State {
                watched: Vec::new(),
                next_id: 0,
                wake_at: u64::MAX,
                stopped: false,
            }),
            cond: Condvar::new(),
        });
        let worker = Arc::clone(&inner);
        let thread = thread::Builder::new()
            .name("rebound-extender".into())
            .spawn(move || worker.run())?;
        if let Some(manual) = &inner.shared.clock.manual {
            manual.attach_first(inner.address(), Box::new(Arc::clone(&inner)));
        }
        Ok(Extender {
            inner,
            thread: Some(thread),
        })
    }
}

impl<T: Send + Sync + 'static> Extend<Delivery<T>> for Extender<T> {
    /// Restarts the lease first, so that the handler gets a whole lease
    /// however long the message waited for a pool thread; a claim already
    /// gone is not watched.
    fn watch(&self, delivery: &Delivery<T>) -> Option<u64> {
        let inner = &self.inner;
        let lease = inner.shared.config.lease;
        let now = inner.shared.clock.precise();
        delivery.extend_lease(lease).ok()?;
        let end = clock::add(now, lease);
        let mut state = lock(&inner.state);
        let id = state.next_id;
        state.next_id += 1;
        let extend_at = halfway(now, end);
        state.watched.push(Entry {
            id,
            lease: delivery.lease_copy(),
            end,
            extend_at,
            cap: clock::add(end, inner.max),
        });
        if extend_at < state.wake_at {
            state.wake_at = extend_at;
            inner.cond.notify_one();
        }
        Some(id)
    }

    fn unwatch(&self, id: u64) {
        let mut state = lock(&self.inner.state);
        if let Some(at) = state.watched.iter().position(|e| e.id == id) {
            let entry = state.watched.swap_remove(at);
            drop(state);
            drop(entry);
        }
    }
}

impl<T> Drop for Extender<T> {
    fn drop(&mut self) {
        let inner = &self.inner;
        if let Some(manual) = &inner.shared.clock.manual {
            manual.detach(inner.address());
        }
        lock(&inner.state).stopped = true;
        inner.cond.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<T> Inner<T> {
    /// Who it is to its manual clock.
    fn address(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }
}

impl<T: Send + Sync + 'static> Inner<T> {
    /// The thread: extend what is due, sleep until the next is.
    fn run(&self) {
        let mut state = lock(&self.state);
        loop {
            if state.stopped {
                return;
            }
            let now = self.shared.clock.precise();
            let next = self.extend_due(&mut state, now);
            state.wake_at = next;
            // A manual clock's times come by `advance`, which runs
            // `extend_due` itself: no timeout.
            let timeout = (next != u64::MAX && !self.shared.clock.is_manual())
                .then(|| Duration::from_nanos(next.saturating_sub(now).max(1)));
            state = wait(&self.cond, state, timeout);
        }
    }

    /// Extends every watched lease whose extension is due at `now`, drops
    /// those that reached their cap or whose claim is gone, and returns
    /// when the next extension is due (`u64::MAX`: none watched).
    fn extend_due(&self, state: &mut MutexGuard<'_, State<T>>, now: u64) -> u64 {
        let lease = self.shared.config.lease;
        let mut next = u64::MAX;
        state.watched.retain_mut(|entry| {
            if entry.extend_at <= now {
                let target = clock::add(now, lease).min(entry.cap);
                if target <= entry.end || target <= now {
                    // At its cap: it runs out as any lease does.
                    return false;
                }
                if entry
                    .lease
                    .extend_lease(Duration::from_nanos(target - now))
                    .is_err()
                {
                    return false;
                }
                self.core.tallies.add(Tally::Extended);
                entry.end = target;
                entry.extend_at = if target == entry.cap {
                    // No more: look at it once more only to drop it.
                    target
                } else {
                    halfway(now, target)
                };
            }
            next = next.min(entry.extend_at);
            true
        });
        next
    }
}

impl<T: Send + Sync + 'static> Advanced for Arc<Inner<T>> {
    /// The manual clock moved: extend, at the new time, what the thread
    /// would have extended while it passed (this runs before the queue's
    /// own look at the new time, see `ManualClock::attach_first`).
    fn advanced(&self) -> Box<dyn FnOnce() + Send> {
        let mut state = lock(&self.state);
        let now = self.shared.clock.precise();
        let next = self.extend_due(&mut state, now);
        state.wake_at = next;
        Box::new(|| {})
    }
}

/// Halfway from `now` to `end`.
fn halfway(now: u64, end: u64) -> u64 {
    now + end.saturating_sub(now) / 2
}
