//! Error types. Each implements `std::error::Error`, and `Debug` never needs
//! `T: Debug`.

use std::fmt;

/// [`Queue::produce`](crate::Queue::produce) on a closed queue. The message
/// is handed back.
///
/// ```
/// let q = rebound::Queue::<String>::new();
/// q.close();
/// let err = q.produce("hello".to_string()).unwrap_err();
/// assert_eq!(err.into_inner(), "hello");
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum ProduceError<T> {
    /// The queue is closed; here is the message back.
    Closed(T),
    /// A journaled queue could not write the message's record (a full
    /// disk, an I/O error); here is the message back, not produced.
    Journal(T, std::io::ErrorKind),
    /// [`Queue::produce_with_id`](crate::Queue::produce_with_id) (or
    /// [`Queue::redrive`](crate::Queue::redrive)): a message with that id
    /// is live, a dead letter not drained yet, or was acked or
    /// dead-lettered within the queue's dedup window; here is the message
    /// back, not produced.
    Duplicate(T),
}

impl<T> ProduceError<T> {
    /// The message that was not produced.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// q.close();
    /// assert_eq!(q.produce(7).unwrap_err().into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            ProduceError::Closed(value)
            | ProduceError::Journal(value, _)
            | ProduceError::Duplicate(value) => value,
        }
    }

    /// The same error around another value (for example, one message of a
    /// batch).
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// q.close();
    /// let e = q.produce(7).unwrap_err().map(|v| v + 1);
    /// assert_eq!(e.into_inner(), 8);
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> ProduceError<U> {
        match self {
            ProduceError::Closed(value) => ProduceError::Closed(f(value)),
            ProduceError::Journal(value, kind) => ProduceError::Journal(f(value), kind),
            ProduceError::Duplicate(value) => ProduceError::Duplicate(f(value)),
        }
    }

    /// Whether the queue was closed.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// q.close();
    /// assert!(q.produce(7).unwrap_err().is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, ProduceError::Closed(_))
    }

    /// Whether the id was taken ([`ProduceError::Duplicate`]).
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// let id = rebound::MessageId::from_key("once");
    /// q.produce_with_id(id, 1).unwrap();
    /// assert!(q.produce_with_id(id, 2).unwrap_err().is_duplicate());
    /// ```
    pub fn is_duplicate(&self) -> bool {
        matches!(self, ProduceError::Duplicate(_))
    }
}

impl<T> fmt::Debug for ProduceError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProduceError::Closed(_) => f.write_str("Closed(..)"),
            ProduceError::Journal(_, kind) => write!(f, "Journal(.., {kind:?})"),
            ProduceError::Duplicate(_) => f.write_str("Duplicate(..)"),
        }
    }
}

impl<T> fmt::Display for ProduceError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProduceError::Closed(_) => f.write_str("producing on a closed queue"),
            ProduceError::Journal(_, kind) => {
                write!(f, "the journal could not write the message: {kind}")
            }
            ProduceError::Duplicate(_) => {
                f.write_str("a message with this id is live or was settled within the dedup window")
            }
        }
    }
}

impl<T> std::error::Error for ProduceError<T> {}

/// [`Queue::try_consume`](crate::Queue::try_consume) found nothing to claim.
///
/// ```
/// use rebound::{Queue, TryConsumeError};
/// let q = Queue::<u8>::new();
/// assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
/// q.close();
/// assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Closed);
/// ```
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TryConsumeError {
    /// Nothing is ready now; messages may still arrive or come back.
    Empty,
    /// Closed, and nothing is pending or in flight: nothing will ever arrive.
    Closed,
}

impl TryConsumeError {
    /// Whether nothing was ready, but messages may still come.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// assert!(q.try_consume().unwrap_err().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        matches!(self, TryConsumeError::Empty)
    }

    /// Whether the queue is closed and drained: nothing will ever come.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// q.close();
    /// assert!(q.try_consume().unwrap_err().is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, TryConsumeError::Closed)
    }
}

impl From<Closed> for TryConsumeError {
    /// ```
    /// assert_eq!(rebound::TryConsumeError::from(rebound::Closed), rebound::TryConsumeError::Closed);
    /// ```
    fn from(Closed: Closed) -> Self {
        TryConsumeError::Closed
    }
}

impl fmt::Display for TryConsumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryConsumeError::Empty => f.write_str("no message is ready"),
            TryConsumeError::Closed => f.write_str("the queue is closed and drained"),
        }
    }
}

impl std::error::Error for TryConsumeError {}

/// [`Queue::consume`](crate::Queue::consume) on a queue that is closed and
/// has nothing pending or in flight.
///
/// ```
/// let q = rebound::Queue::<u8>::new();
/// q.close();
/// assert_eq!(q.consume().unwrap_err(), rebound::Closed);
/// ```
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the queue is closed and drained")
    }
}

impl std::error::Error for Closed {}

/// [`Queue::consume_timeout`](crate::Queue::consume_timeout) gave up.
///
/// ```
/// use rebound::{ConsumeTimeoutError, Queue};
/// use std::time::Duration;
/// let q = Queue::<u8>::new();
/// assert_eq!(q.consume_timeout(Duration::from_millis(1)).unwrap_err(), ConsumeTimeoutError::Timeout);
/// ```
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ConsumeTimeoutError {
    /// Nothing became ready in time.
    Timeout,
    /// Closed, and nothing is pending or in flight.
    Closed,
}

impl ConsumeTimeoutError {
    /// Whether nothing became ready in time.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// assert!(q.consume_timeout(std::time::Duration::ZERO).unwrap_err().is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConsumeTimeoutError::Timeout)
    }

    /// Whether the queue is closed and drained: nothing will ever come.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// q.close();
    /// assert!(q.consume_timeout(std::time::Duration::ZERO).unwrap_err().is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, ConsumeTimeoutError::Closed)
    }
}

impl From<Closed> for ConsumeTimeoutError {
    /// ```
    /// use rebound::{Closed, ConsumeTimeoutError};
    /// assert_eq!(ConsumeTimeoutError::from(Closed), ConsumeTimeoutError::Closed);
    /// ```
    fn from(Closed: Closed) -> Self {
        ConsumeTimeoutError::Closed
    }
}

impl fmt::Display for ConsumeTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsumeTimeoutError::Timeout => f.write_str("timed out waiting for a message"),
            ConsumeTimeoutError::Closed => f.write_str("the queue is closed and drained"),
        }
    }
}

impl std::error::Error for ConsumeTimeoutError {}

/// A settle or extend on a [`Delivery`](crate::Delivery) whose lease had
/// already expired: it had no effect, and the message was (or will be)
/// redelivered or dead-lettered.
///
/// ```
/// use rebound::Queue;
/// use std::time::Duration;
/// let q: Queue<u8> = Queue::builder().lease(Duration::from_millis(5)).build();
/// q.produce(1).unwrap();
/// let stale = q.consume().unwrap();
/// std::thread::sleep(Duration::from_millis(50));
/// let fresh = q.consume().unwrap(); // redelivered after the lease ran out
/// assert_eq!(stale.ack(), Err(rebound::LeaseExpired));
/// assert_eq!(fresh.ack(), Ok(()));
/// ```
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct LeaseExpired;

impl fmt::Display for LeaseExpired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the delivery's lease expired before it was settled")
    }
}

impl std::error::Error for LeaseExpired {}

/// [`Builder::try_build`](crate::Builder::try_build) rejected a setting.
///
/// ```
/// use rebound::{BuildError, Queue};
/// let err = Queue::<u8>::builder().max_attempts(0).try_build().unwrap_err();
/// assert!(matches!(err, BuildError::MaxAttempts { .. }));
/// ```
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_attempts` must be between 1 and `limit`.
    MaxAttempts {
        /// The value given.
        given: u32,
        /// The largest value supported.
        limit: u32,
    },
    /// The lease must be at least 1 ms and at most `limit`.
    Lease {
        /// The value given.
        given: std::time::Duration,
        /// The longest lease supported.
        limit: std::time::Duration,
    },
    /// The operating system refused to start the redeliverer thread.
    Spawn(std::io::ErrorKind),
    /// A journaled queue is opened with `Builder::open` (with the
    /// journal's directory given), not built.
    JournalNeedsOpen,
    /// A journaled queue cannot run on a [`ManualClock`](crate::ManualClock):
    /// the journal records due times as wall-clock times, which a manual
    /// clock's readings are not, so they would not survive a reopen.
    ///
    /// ```
    /// # #[cfg(feature = "journal")] {
    /// let dir = std::env::temp_dir().join(format!("rebound-doc-manual-{}", std::process::id()));
    /// let err = rebound::Queue::<Vec<u8>>::builder()
    ///     .clock(rebound::ManualClock::new())
    ///     .journal(&dir)
    ///     .open()
    ///     .unwrap_err();
    /// assert!(matches!(err, rebound::OpenError::Build(rebound::BuildError::ManualClockJournal)));
    /// # }
    /// ```
    ManualClockJournal,
    /// A [`RetryBudget`](crate::RetryBudget)'s ratio must be finite and at
    /// least 0.
    ///
    /// ```
    /// let err = rebound::Queue::<u8>::builder()
    ///     .retry_budget(rebound::RetryBudget::new(f64::NAN, 10))
    ///     .try_build()
    ///     .unwrap_err();
    /// assert_eq!(err, rebound::BuildError::RetryBudgetRatio);
    /// ```
    RetryBudgetRatio,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::MaxAttempts { given, limit } => {
                write!(f, "max_attempts must be between 1 and {limit}, got {given}")
            }
            BuildError::Lease { given, limit } => {
                write!(f, "lease must be between 1ms and {limit:?}, got {given:?}")
            }
            BuildError::Spawn(kind) => write!(f, "could not start the redeliverer thread: {kind}"),
            BuildError::JournalNeedsOpen => f.write_str(
                "a journaled queue is opened with Builder::journal(dir)...open(), not built",
            ),
            BuildError::RetryBudgetRatio => {
                f.write_str("a retry budget's ratio must be finite and at least 0")
            }
            BuildError::ManualClockJournal => {
                f.write_str("a journaled queue cannot run on a ManualClock")
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// [`Processor::start`](crate::Processor::start) could not start.
///
/// ```
/// use rebound::{Pool, Queue, StartError};
/// let q = Queue::<u8>::new();
/// let err = q.processor().concurrency(0).start(Pool::global(), |_| ()).unwrap_err();
/// assert_eq!(err, StartError::ZeroConcurrency);
/// ```
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum StartError {
    /// A concurrency of 0 would never handle anything.
    ZeroConcurrency,
    /// The operating system refused to start the dispatcher thread.
    Spawn(std::io::ErrorKind),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::ZeroConcurrency => f.write_str("concurrency must be at least 1"),
            StartError::Spawn(kind) => write!(f, "could not start the dispatcher thread: {kind}"),
        }
    }
}

impl std::error::Error for StartError {}
