//! The normal world of the loom seam: std and crossbeam.

use super::SetMut;

pub(crate) use crossbeam_epoch::{Guard, pin};
/// The ordered index's skiplist and the epoch it frees its nodes through
/// (`SkipGuard`, `skip_pin`: crossbeam-epoch's, the same as [`Guard`] and
/// [`pin`] here).
pub(crate) use crossbeam_epoch::{Guard as SkipGuard, pin as skip_pin};
pub(crate) use crossbeam_skiplist::base::SkipList;

/// The collector a new [`SkipList`] frees its nodes through.
pub(crate) fn skip_collector() -> crossbeam_epoch::Collector {
    crossbeam_epoch::default_collector().clone()
}
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
};
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
pub(crate) use std::thread;

/// Spinning while another thread finishes: crossbeam's `Backoff`.
pub(crate) use crossbeam_utils::Backoff as SpinWait;

/// The clock every timestamp, lease and due time is read from.
pub(crate) fn now() -> super::Instant {
    super::Instant::now()
}

/// Waits on `cond` for at most `timeout` (forever with `None`), ignoring poison
/// for the same reason as [`lock`](super::lock).
pub(crate) fn wait<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Option<std::time::Duration>,
) -> MutexGuard<'a, T> {
    match timeout {
        Some(t) => match cond.wait_timeout(guard, t) {
            Ok((g, _)) => g,
            Err(poison) => poison.into_inner().0,
        },
        None => cond
            .wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    }
}

macro_rules! set_mut {
    ($($atomic:ident: $int:ty),*) => {$(
        impl SetMut<$int> for $atomic {
            fn set_mut(&mut self, value: $int) {
                *self.get_mut() = value;
            }
        }
    )*};
}
set_mut!(AtomicUsize: usize, AtomicU64: u64);

/// A cell whose accesses are checked by loom under `cfg(rebound_loom)`; here
/// it is `std::cell::UnsafeCell` with closure-scoped access.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared pointer to the contents.
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a unique pointer to the contents.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Where waiting tasks are notified (feature `async`): an
/// [`event_listener::Event`], whose listeners serve any executor.
#[cfg(feature = "async")]
#[derive(Debug, Default)]
pub(crate) struct TaskEvent(event_listener::Event);

/// One task's place in a [`TaskEvent`]'s list, first in, first notified.
#[cfg(feature = "async")]
#[derive(Debug)]
pub(crate) struct TaskListener(event_listener::EventListener);

#[cfg(feature = "async")]
impl TaskEvent {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A listener, in the list from now on.
    pub(crate) fn listen(&self) -> TaskListener {
        TaskListener(self.0.listen())
    }

    /// Notifies the first `n` listeners not notified yet.
    pub(crate) fn notify_additional(&self, n: usize) {
        use event_listener::IntoNotification;
        // Relaxed (no fence of the event's own): the caller's SeqCst load
        // of `Waiters::waiting` already orders this after its publish and
        // after the insertion of every listener it counted.
        self.0.notify(n.additional().relaxed());
    }
}

#[cfg(feature = "async")]
impl TaskListener {
    /// Ready once notified (the listener has then left the list; poll it no
    /// more); registers `cx`'s waker otherwise.
    pub(crate) fn poll_notified(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::future::Future::poll(std::pin::Pin::new(&mut self.0), cx)
    }

    /// Leaves the list; whether it had been notified (and the notification
    /// is now discarded: the caller passes it on).
    pub(crate) fn discard(self) -> bool {
        event_listener::Listener::discard(self.0)
    }
}
