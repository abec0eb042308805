//! `DeadLetter`: a message read back from the dead-letter stream.

use crate::id::MessageId;
use rebound::DeadLetterReason;
use std::fmt;

/// A message that will not be delivered again, as
/// [`Queue::drain_dead_letters`](crate::Queue::drain_dead_letters) reads it
/// from the dead-letter stream.
///
/// ```no_run
/// use rebound_nats::Queue;
/// let q: Queue<String> = Queue::builder("nats://127.0.0.1:4222", "jobs").max_attempts(1).connect().unwrap();
/// q.produce("poison".into()).unwrap();
/// q.consume().unwrap().rollback().unwrap();
/// let dead = q.drain_dead_letters().unwrap();
/// assert_eq!((dead[0].attempts(), dead[0].reason()), (1, rebound::DeadLetterReason::MaxAttempts));
/// assert_eq!(dead[0].payload(), "poison");
/// ```
pub struct DeadLetter<T> {
    pub(crate) id: MessageId,
    pub(crate) attempts: u32,
    pub(crate) reason: DeadLetterReason,
    pub(crate) payload: T,
}

impl<T> DeadLetter<T> {
    /// The message's id.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// let id = q.produce("x".into()).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.drain_dead_letters().unwrap()[0].id(), id);
    /// ```
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// How many times it was delivered.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.drain_dead_letters().unwrap()[0].attempts(), 1);
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why it was dead-lettered: [`MaxAttempts`](DeadLetterReason::MaxAttempts)
    /// or [`Rejected`](DeadLetterReason::Rejected) (a handler's
    /// `dead_letter`, or a payload that would not decode).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.drain_dead_letters().unwrap()[0].reason(), rebound::DeadLetterReason::Rejected);
    /// ```
    pub fn reason(&self) -> DeadLetterReason {
        self.reason
    }

    /// The message.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.drain_dead_letters().unwrap()[0].payload(), "x");
    /// ```
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Takes the message.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// let s: String = q.drain_dead_letters().unwrap().pop().unwrap().into_payload();
    /// ```
    pub fn into_payload(self) -> T {
        self.payload
    }
}

impl<T> fmt::Debug for DeadLetter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("attempts", &self.attempts)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}
