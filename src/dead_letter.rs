//! Messages that will not be delivered again.

use crate::groups::GroupKey;
use crate::id::MessageId;
use std::fmt;

/// Why a message was dead-lettered.
///
/// ```
/// use rebound::{DeadLetterReason, Queue};
/// let q = Queue::<u8>::new();
/// q.produce(1).unwrap();
/// q.consume().unwrap().dead_letter().unwrap();
/// assert_eq!(q.drain_dead_letters()[0].reason(), DeadLetterReason::Rejected);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// Its last allowed delivery failed (rollback, drop, panic or expiry).
    MaxAttempts,
    /// A handler called [`Delivery::dead_letter`](crate::Delivery::dead_letter).
    Rejected,
    /// Journaled queues only: its last allowed delivery was in progress when
    /// the process died (a handler that aborts or crashes the process for
    /// this message ends here after `max_attempts` runs, instead of crashing
    /// every restart).
    Crashed,
}

/// A message that will not be delivered again, with what is known of why.
///
/// ```
/// use rebound::{DeadLetterReason, Queue};
/// let q: Queue<&str> = Queue::builder().max_attempts(1).build();
/// let id = q.produce("poison").unwrap();
/// q.consume().unwrap().rollback().unwrap();
/// let dead = q.drain_dead_letters();
/// assert_eq!(dead.len(), 1);
/// assert_eq!((dead[0].id(), dead[0].attempts(), dead[0].reason()), (id, 1, DeadLetterReason::MaxAttempts));
/// assert_eq!(*dead[0].payload(), "poison");
/// ```
pub struct DeadLetter<T> {
    pub(crate) id: MessageId,
    pub(crate) attempts: u32,
    pub(crate) reason: DeadLetterReason,
    /// The ordered group it belongs to, if any.
    pub(crate) group: Option<GroupKey>,
    pub(crate) payload: T,
}

impl<T> DeadLetter<T> {
    /// The message's id.
    ///
    /// ```
    /// # use rebound::Queue;
    /// # let q = Queue::<u8>::new();
    /// let id = q.produce(1).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.drain_dead_letters()[0].id(), id);
    /// ```
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The ordered group it was produced in
    /// ([`Queue::produce_in_group`](crate::Queue::produce_in_group)), if
    /// any. [`Queue::redrive`](crate::Queue::redrive) puts it back into
    /// that group.
    ///
    /// ```
    /// # use rebound::{GroupKey, Queue};
    /// # let q = Queue::<u8>::new();
    /// q.produce_in_group("account-7", 1).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.drain_dead_letters()[0].group(), Some(GroupKey::from("account-7")));
    /// ```
    pub fn group(&self) -> Option<GroupKey> {
        self.group
    }

    /// How many times it was delivered.
    ///
    /// ```
    /// # use rebound::Queue;
    /// # let q = Queue::<u8>::new();
    /// q.produce(1).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.drain_dead_letters()[0].attempts(), 1);
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Why it was dead-lettered.
    ///
    /// ```
    /// # use rebound::{DeadLetterReason, Queue};
    /// # let q = Queue::<u8>::new();
    /// q.produce(1).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.drain_dead_letters()[0].reason(), DeadLetterReason::Rejected);
    /// ```
    pub fn reason(&self) -> DeadLetterReason {
        self.reason
    }

    /// The message.
    ///
    /// ```
    /// # use rebound::Queue;
    /// # let q = Queue::<u8>::new();
    /// q.produce(9).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(*q.drain_dead_letters()[0].payload(), 9);
    /// ```
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Takes the message.
    ///
    /// ```
    /// # use rebound::Queue;
    /// # let q = Queue::<String>::new();
    /// q.produce("x".into()).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// let s: String = q.drain_dead_letters().pop().unwrap().into_payload();
    /// assert_eq!(s, "x");
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
