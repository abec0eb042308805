//! `Outcome`: what a processing handler asks the runtime to do with its
//! delivery.

use std::time::Duration;

/// What a handler run by [`Queue::process`](crate::Queue::process) wants done
/// with the message it was given.
///
/// A handler may return an `Outcome`, `()` (ack), `Result<(), E>` (`Ok`
/// acks, `Err` retries with the queue's backoff) or `Result<Outcome, E>`
/// (`Err` retries), so `?` works inside handlers. A handler that panics is
/// treated like [`Outcome::Retry`] and counted as
/// [`panicked`](crate::Report::panicked).
///
/// ```
/// use rebound::{Outcome, Queue};
/// use std::time::Duration;
///
/// let q: Queue<&str> = Queue::new();
/// q.produce("ok").unwrap();
/// q.produce("busy").unwrap();
/// q.produce("garbage").unwrap();
/// q.close();
/// let handle = q.process(&rebound::Pool::global(), |job| match **job {
///     "ok" => Outcome::Ack,
///     "busy" if job.attempt() == 1 => Outcome::RetryAfter(Duration::from_millis(5)),
///     "busy" => Outcome::Ack,
///     _ => Outcome::DeadLetter,
/// });
/// let report = handle.join();
/// assert_eq!((report.acked, report.retried, report.dead_lettered), (2, 1, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Done: acknowledge the message; it is not delivered again.
    Ack,
    /// Failed for now: roll back, redeliver after the queue's
    /// [`Backoff`](crate::Backoff) for this attempt (or dead-letter it if
    /// this was its last attempt).
    Retry,
    /// Failed for now: roll back, redeliver after this delay instead of the
    /// queue's backoff (or dead-letter it if this was its last attempt).
    RetryAfter(Duration),
    /// Not now: put the message back for this long without using an
    /// attempt; its next delivery has the same attempt number
    /// ([`Delivery::defer`](crate::Delivery::defer)). Counted in
    /// [`Report::deferred`](crate::Report::deferred).
    Defer(Duration),
    /// Give up: park the message in the dead letters now (reason
    /// [`Rejected`](crate::DeadLetterReason::Rejected)).
    DeadLetter,
}

impl From<()> for Outcome {
    /// `()` acks.
    ///
    /// ```
    /// assert_eq!(rebound::Outcome::from(()), rebound::Outcome::Ack);
    /// ```
    fn from((): ()) -> Self {
        Outcome::Ack
    }
}

impl<E> From<Result<(), E>> for Outcome {
    /// `Ok(())` acks; `Err(_)` retries with the queue's backoff.
    ///
    /// ```
    /// use rebound::Outcome;
    /// assert_eq!(Outcome::from(Ok::<(), String>(())), Outcome::Ack);
    /// assert_eq!(Outcome::from(Err::<(), _>("timeout")), Outcome::Retry);
    /// ```
    fn from(result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Outcome::Ack,
            Err(_) => Outcome::Retry,
        }
    }
}

impl<E> From<Result<Outcome, E>> for Outcome {
    /// `Ok(outcome)` is that outcome; `Err(_)` retries with the queue's
    /// backoff.
    ///
    /// ```
    /// use rebound::Outcome;
    /// assert_eq!(Outcome::from(Ok::<_, ()>(Outcome::DeadLetter)), Outcome::DeadLetter);
    /// assert_eq!(Outcome::from(Err::<Outcome, _>(())), Outcome::Retry);
    /// ```
    fn from(result: Result<Outcome, E>) -> Self {
        result.unwrap_or(Outcome::Retry)
    }
}
