//! The retry budget: how many redeliveries per second a queue lets through,
//! and the redeliverer's bookkeeping that holds it there.

use crate::batch::MessageRef;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;

/// The window the budget is held over: one second, in nanoseconds.
const WINDOW_NS: u64 = 1_000_000_000;

/// A retry budget against redelivery storms: redeliveries (rollbacks and
/// expired leases coming back) per second are held to at most
/// `max(min_per_sec, ratio × first deliveries per second)`, over a sliding
/// window of one second ([`Builder::retry_budget`](crate::Builder::retry_budget)).
///
/// A [`defer`](crate::Delivery::defer) is not a redelivery: the budget
/// lets deferred messages by.
///
/// When every handler fails at once (a database down), each failure comes
/// back after its backoff and fails again, and the queue spends its
/// consumers on messages that cannot succeed. A budget lets new messages
/// through and paces the retries: a redelivery over budget is postponed
/// until the window has room, never dropped, never dead-lettered for it,
/// and the postponement uses no attempt. [`Stats::throttled`](crate::Stats::throttled)
/// counts the postponed redeliveries. Finagle's and Envoy's retry budgets
/// are the model; docs/design.md has the algorithm.
///
/// `ratio` must be finite and at least 0 (checked by
/// [`Builder::try_build`](crate::Builder::try_build), brought to 0 by
/// [`Builder::build`](crate::Builder::build)).
///
/// ```
/// use rebound::{Backoff, ManualClock, Queue, RetryBudget};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// // At most max(2, 10% of first deliveries) redeliveries per second.
/// let q: Queue<u32> = Queue::builder()
///     .clock(clock.clone())
///     .backoff(Backoff::fixed(Duration::ZERO))
///     .retry_budget(RetryBudget::new(0.1, 2))
///     .build();
/// for i in 0..5 {
///     q.produce(i).unwrap();
/// }
/// for _ in 0..5 {
///     q.consume().unwrap().rollback().unwrap(); // all five fail
/// }
/// // Two come back in this second; the rest wait for the next ones.
/// for second in 0..3 {
///     let back = if second < 2 { 2 } else { 1 };
///     for _ in 0..back {
///         let d = q.consume_timeout(Duration::from_secs(5)).unwrap();
///         assert_eq!(d.attempt(), 2); // postponed, not charged an attempt
///         d.ack().unwrap();
///     }
///     assert!(q.try_consume().is_err());
///     clock.advance(Duration::from_secs(1));
/// }
/// assert_eq!(q.stats().throttled, 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: u32,
}

impl RetryBudget {
    /// Redeliveries per second held to `max(min_per_sec, ratio × first
    /// deliveries per second)`. `ratio` 0.2 lets one retry through per
    /// five new messages; `min_per_sec` keeps retries going when no new
    /// messages arrive.
    ///
    /// ```
    /// let budget = rebound::RetryBudget::new(0.2, 10);
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().retry_budget(budget).build();
    /// # drop(q);
    /// ```
    pub fn new(ratio: f64, min_per_sec: u32) -> RetryBudget {
        RetryBudget { ratio, min_per_sec }
    }

    /// Whether `ratio` is usable: finite and not negative.
    pub(crate) fn is_valid(&self) -> bool {
        self.ratio.is_finite() && self.ratio >= 0.0
    }

    /// This budget with an unusable `ratio` brought to 0.
    pub(crate) fn clamped(self) -> RetryBudget {
        if self.is_valid() {
            self
        } else {
            RetryBudget { ratio: 0.0, ..self }
        }
    }

    /// Redeliveries allowed in a window holding `first` first deliveries.
    fn limit(&self, first: u64) -> u64 {
        // `as`: saturating float-to-int; the ratio is finite and >= 0.
        let share = (self.ratio * first as f64) as u64;
        share.max(u64::from(self.min_per_sec))
    }
}

/// A redelivery the budget holds back until it is due, ordered by due
/// time, then by message, as the index orders them.
struct Held<T>(MessageRef<T>);

impl<T> Held<T> {
    fn key(&self) -> (u64, u64) {
        (self.0.ts, self.0.block.message_number(self.0.slot as usize))
    }
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Held<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The redeliverer's side of a budget: the redeliveries it holds back, what
/// it let through in the last window, and the first deliveries it saw.
/// Used by the redeliverer thread only (no synchronisation).
pub(crate) struct Pacer<T> {
    budget: RetryBudget,
    /// Redeliveries taken in and not due yet.
    held: BinaryHeap<Reverse<Held<T>>>,
    /// Redeliveries due and over budget (postponed), in the order they
    /// fell due: the first to go when the window has room.
    postponed: VecDeque<MessageRef<T>>,
    /// Redeliveries let through, as `(time, count)`, over the last window.
    released: VecDeque<(u64, u64)>,
    /// The sum of the counts in `released`.
    in_window: u64,
    /// `(time, first deliveries so far)` readings in the last window.
    firsts: VecDeque<(u64, u64)>,
    /// First deliveries so far at the window's start: the newest reading
    /// that left the window (0 at the queue's origin).
    baseline: u64,
}

impl<T> Pacer<T> {
    pub(crate) fn new(budget: RetryBudget) -> Self {
        Pacer {
            budget,
            held: BinaryHeap::new(),
            postponed: VecDeque::new(),
            released: VecDeque::new(),
            in_window: 0,
            firsts: VecDeque::new(),
            baseline: 0,
        }
    }

    /// Takes in a redelivery: it goes to the index once it is due and
    /// the budget has room (see [`Self::release`]).
    pub(crate) fn hold(&mut self, message: MessageRef<T>) {
        self.held.push(Reverse(Held(message)));
    }

    /// Moves into `out` the redeliveries due by `now` that the budget lets
    /// through (those postponed first, then the others in due order),
    /// given `first_deliveries`, the queue's first deliveries so far.
    /// Returns how many fell due and were postponed (each is counted once,
    /// when it falls due), and when to look again (`u64::MAX`: only when
    /// more come in).
    pub(crate) fn release(
        &mut self,
        now: u64,
        first_deliveries: u64,
        out: &mut Vec<MessageRef<T>>,
    ) -> (u64, u64) {
        // The window is `(now - 1 s, now]`; none of it is before the
        // queue's origin.
        let window_start = now.checked_sub(WINDOW_NS);
        let left = |at: u64| window_start.is_some_and(|start| at <= start);
        while self.released.front().is_some_and(|&(at, _)| left(at)) {
            if let Some((_, n)) = self.released.pop_front() {
                self.in_window -= n;
            }
        }
        match self.firsts.back_mut() {
            Some((at, seen)) if *at == now => *seen = first_deliveries,
            _ => self.firsts.push_back((now, first_deliveries)),
        }
        while self.firsts.front().is_some_and(|&(at, _)| left(at)) {
            if let Some((_, seen)) = self.firsts.pop_front() {
                self.baseline = seen;
            }
        }
        let firsts = first_deliveries.saturating_sub(self.baseline);
        let mut fell_due = 0;
        while self.held.peek().is_some_and(|Reverse(h)| h.0.ts <= now) {
            if let Some(Reverse(Held(message))) = self.held.pop() {
                self.postponed.push_back(message);
                fell_due += 1;
            }
        }
        let room = self.budget.limit(firsts).saturating_sub(self.in_window);
        let let_through = room.min(self.postponed.len() as u64);
        out.extend(self.postponed.drain(..let_through as usize));
        if let_through > 0 {
            match self.released.back_mut() {
                Some((at, n)) if *at == now => *n += let_through,
                _ => self.released.push_back((now, let_through)),
            }
            self.in_window += let_through;
        }
        // Those that fell due now are at the back: the ones still there
        // are over budget.
        let throttled = fell_due.min(self.postponed.len() as u64);
        let next = if !self.postponed.is_empty() {
            // Room comes back when the oldest release leaves the window
            // (or, with none in it, when first deliveries raise the limit:
            // look again a window later).
            self.released
                .front()
                .map_or(now.saturating_add(WINDOW_NS), |&(at, _)| {
                    at.saturating_add(WINDOW_NS)
                })
                .max(now.saturating_add(1))
        } else {
            self.held.peek().map_or(u64::MAX, |Reverse(h)| h.0.ts)
        };
        (throttled, next)
    }

    /// Gives up every redelivery it holds (teardown).
    pub(crate) fn into_held(self) -> impl Iterator<Item = MessageRef<T>> {
        self.held
            .into_iter()
            .map(|Reverse(Held(message))| message)
            .chain(self.postponed)
    }
}

impl<T> fmt::Debug for Pacer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacer")
            .field("budget", &self.budget)
            .field("held", &self.held.len())
            .field("postponed", &self.postponed.len())
            .field("in_window", &self.in_window)
            .finish()
    }
}
