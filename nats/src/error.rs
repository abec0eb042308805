//! The errors of the JetStream queue: each says what failed and hands back
//! what the caller gave.

use std::fmt;

/// An error from the NATS server or the connection to it, as text (the
/// client's errors are of many types; this keeps ours one type that is
/// `Send + Sync + 'static`).
///
/// ```
/// let e = rebound_nats::NatsError::new("no responders");
/// assert!(e.to_string().contains("no responders"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsError {
    message: String,
}

impl NatsError {
    /// An error with this message.
    ///
    /// ```
    /// assert_eq!(rebound_nats::NatsError::new("x").message(), "x");
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// What went wrong.
    ///
    /// ```
    /// assert_eq!(rebound_nats::NatsError::new("timed out").message(), "timed out");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn from_error(context: &str, error: impl fmt::Display) -> Self {
        Self::new(format!("{context}: {error}"))
    }
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nats: {}", self.message)
    }
}

impl std::error::Error for NatsError {}

/// [`Builder::connect`](crate::Builder::connect) could not make the queue.
///
/// ```
/// use rebound_nats::{ConnectError, Queue};
/// let err = Queue::<Vec<u8>>::builder("nats://127.0.0.1:4222", "bad.name").connect().unwrap_err();
/// assert!(matches!(err, ConnectError::Name(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The queue's name is not one NATS token of `A-Z a-z 0-9 _ -`.
    Name(String),
    /// A setting is out of range (what, and why).
    Setting(String),
    /// The private runtime that drives the client could not start.
    Runtime(std::io::ErrorKind),
    /// The server could not be reached, or refused a stream or consumer.
    Nats(NatsError),
    /// The server has message schedules (nats-server 2.12 and later), and
    /// the queue's work stream or its consumer, made without them by an
    /// older rebound-nats, could not be updated for them: the stream to
    /// take the subjects `<name>.sched.>` with `allow_msg_schedules`, the
    /// consumer to be filtered on `<name>.work`.
    Schedules(NatsError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Name(name) => write!(
                f,
                "queue name {name:?} must be non-empty and use only A-Z a-z 0-9 _ -"
            ),
            ConnectError::Setting(what) => write!(f, "invalid setting: {what}"),
            ConnectError::Runtime(kind) => write!(f, "could not start the client runtime: {kind}"),
            ConnectError::Nats(e) => write!(f, "could not connect: {e}"),
            ConnectError::Schedules(e) => write!(
                f,
                "could not enable message schedules on the queue's work stream and consumer: {e}"
            ),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Nats(e) | ConnectError::Schedules(e) => Some(e),
            _ => None,
        }
    }
}

/// A produce that was refused; the value (or values) come back.
///
/// Its `Debug` does not need `T: Debug`.
///
/// ```no_run
/// use rebound_nats::Queue;
/// let q: Queue<String> = Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
/// q.close();
/// let err = q.produce("late".to_string()).unwrap_err();
/// assert!(err.is_closed());
/// assert_eq!(err.into_inner(), "late");
/// ```
#[non_exhaustive]
pub enum ProduceError<T> {
    /// This handle's queue is closed.
    Closed(T),
    /// The server did not confirm the message: it may or may not be stored
    /// (produce again to be sure; at-least-once).
    Nats(T, NatsError),
}

impl<T> ProduceError<T> {
    /// The value that was not produced.
    ///
    /// ```
    /// let e = rebound_nats::ProduceError::Closed(5);
    /// assert_eq!(e.into_inner(), 5);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            ProduceError::Closed(value) | ProduceError::Nats(value, _) => value,
        }
    }

    /// Whether the queue was closed.
    ///
    /// ```
    /// assert!(rebound_nats::ProduceError::Closed(()).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, ProduceError::Closed(_))
    }
}

impl<T> fmt::Debug for ProduceError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProduceError::Closed(_) => f.write_str("Closed(..)"),
            ProduceError::Nats(_, e) => f.debug_tuple("Nats").field(&"..").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for ProduceError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProduceError::Closed(_) => f.write_str("the queue is closed"),
            ProduceError::Nats(_, e) => write!(f, "the message was not confirmed: {e}"),
        }
    }
}

impl<T> std::error::Error for ProduceError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProduceError::Nats(_, e) => Some(e),
            ProduceError::Closed(_) => None,
        }
    }
}
