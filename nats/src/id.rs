//! `MessageId`: a message's place in its queue's streams.

use std::fmt;
use std::str::FromStr;

/// The id of a message, the same on every delivery of it and in the dead
/// letters: the sequence number the server gave it in the work stream
/// (`w42`), or, for a message of `produce_after`, in the delayed stream
/// (`d42`).
///
/// ```
/// use rebound_nats::MessageId;
/// let id: MessageId = "w42".parse().unwrap();
/// assert_eq!(id.to_string(), "w42");
/// assert_eq!(id.sequence(), 42);
/// assert!("x1".parse::<MessageId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    delayed: bool,
    sequence: u64,
}

impl MessageId {
    pub(crate) fn work(sequence: u64) -> Self {
        Self {
            delayed: false,
            sequence,
        }
    }

    pub(crate) fn delayed(sequence: u64) -> Self {
        Self {
            delayed: true,
            sequence,
        }
    }

    /// The stream sequence number.
    ///
    /// ```
    /// let id: rebound_nats::MessageId = "d7".parse().unwrap();
    /// assert_eq!(id.sequence(), 7);
    /// ```
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stream = if self.delayed { 'd' } else { 'w' };
        write!(f, "{stream}{}", self.sequence)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// Text that is not a [`MessageId`].
///
/// ```
/// assert!("".parse::<rebound_nats::MessageId>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError;

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message id is `w` or `d` followed by a sequence number")
    }
}

impl std::error::Error for ParseIdError {}

impl FromStr for MessageId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        let delayed = match s.as_bytes().first() {
            Some(b'w') => false,
            Some(b'd') => true,
            _ => return Err(ParseIdError),
        };
        let sequence = s[1..].parse().map_err(|_| ParseIdError)?;
        Ok(Self { delayed, sequence })
    }
}
