//! `MessageId`: a message's name in its queue, and how a handle mints the
//! names of scheduled messages.

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The id of a message, the same on every delivery of it and in the dead
/// letters. One of:
/// - `w42`: the sequence number the server gave it in the work stream;
/// - `d42`: a message of `produce_after` on a server without message
///   schedules (nats-server 2.9 to 2.11): its sequence number in the
///   delayed stream;
/// - `s1f0c…-7`: a message of `produce_after` on a server with message
///   schedules (2.12 and later), minted by the producing handle: a random
///   64-bit number the handle drew when it connected (16 hex digits) and
///   the handle's count of scheduled messages.
///
/// ```
/// use rebound_nats::MessageId;
/// let id: MessageId = "w42".parse().unwrap();
/// assert_eq!(id.to_string(), "w42");
/// assert_eq!(id.sequence(), 42);
/// let id: MessageId = "s00000000000000ff-3".parse().unwrap();
/// assert_eq!(id.to_string(), "s00000000000000ff-3");
/// assert!("x1".parse::<MessageId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    kind: Kind,
    sequence: u64,
}

/// Where a [`MessageId`]'s number comes from.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    /// The work stream's sequence.
    Work,
    /// The delayed stream's sequence.
    Delayed,
    /// A handle's count of scheduled messages, with the handle's nonce.
    Scheduled(u64),
}

impl MessageId {
    pub(crate) fn work(sequence: u64) -> Self {
        Self {
            kind: Kind::Work,
            sequence,
        }
    }

    pub(crate) fn delayed(sequence: u64) -> Self {
        Self {
            kind: Kind::Delayed,
            sequence,
        }
    }

    /// The stream sequence number (`w`, `d`), or the producing handle's
    /// count (`s`, the number after the dash).
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
        match self.kind {
            Kind::Work => write!(f, "w{}", self.sequence),
            Kind::Delayed => write!(f, "d{}", self.sequence),
            Kind::Scheduled(nonce) => write!(f, "s{nonce:016x}-{}", self.sequence),
        }
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
        f.write_str(
            "a message id is `w` or `d` followed by a sequence number, \
             or `s`, up to 16 hex digits, `-` and a number",
        )
    }
}

impl std::error::Error for ParseIdError {}

impl FromStr for MessageId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, ParseIdError> {
        let number = |digits: &str| {
            // `u64::from_str` takes a leading `+`; an id does not.
            if digits.bytes().all(|b| b.is_ascii_digit()) {
                digits.parse().map_err(|_| ParseIdError)
            } else {
                Err(ParseIdError)
            }
        };
        let kind = match s.as_bytes().first() {
            Some(b'w') => Kind::Work,
            Some(b'd') => Kind::Delayed,
            Some(b's') => {
                let (nonce, count) = s[1..].split_once('-').ok_or(ParseIdError)?;
                let hex = !nonce.is_empty()
                    && nonce.len() <= 16
                    && nonce.bytes().all(|b| b.is_ascii_hexdigit());
                if !hex {
                    return Err(ParseIdError);
                }
                let nonce = u64::from_str_radix(nonce, 16).map_err(|_| ParseIdError)?;
                return Ok(Self {
                    kind: Kind::Scheduled(nonce),
                    sequence: number(count)?,
                });
            }
            _ => return Err(ParseIdError),
        };
        Ok(Self {
            kind,
            sequence: number(&s[1..])?,
        })
    }
}

/// Mints the ids of one handle's scheduled messages without asking the
/// server: a nonce drawn when the handle connects, and a count.
#[derive(Debug)]
pub(crate) struct Mint {
    nonce: u64,
    count: AtomicU64,
}

impl Mint {
    /// A mint with a fresh nonce: SipHash, under the per-process random
    /// keys of `RandomState` (drawn from the operating system, a new pair
    /// for every call), of the process id and the time. Two handles share
    /// a nonce with a chance of about 2^-64.
    pub(crate) fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(now);
        Self {
            nonce: hasher.finish(),
            count: AtomicU64::new(1),
        }
    }

    /// The next id, never handed out before by this mint.
    pub(crate) fn next(&self) -> MessageId {
        // Relaxed: only the uniqueness of the count matters, which the
        // read-modify-write gives under any ordering.
        let sequence = self.count.fetch_add(1, Ordering::Relaxed);
        MessageId {
            kind: Kind::Scheduled(self.nonce),
            sequence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let mint = Mint::new();
        for id in [
            MessageId::work(1),
            MessageId::delayed(u64::MAX),
            mint.next(),
        ] {
            assert_eq!(id.to_string().parse::<MessageId>(), Ok(id));
        }
    }

    #[test]
    fn a_mint_never_repeats_and_two_mints_differ() {
        let (a, b) = (Mint::new(), Mint::new());
        let (a1, a2, b1) = (a.next(), a.next(), b.next());
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
        assert_eq!(a2.sequence(), a1.sequence() + 1);
    }

    #[test]
    fn malformed_scheduled_ids_are_refused() {
        for text in [
            "s",
            "s-1",
            "sab",
            "sab-",
            "sxyz-1",
            "s00000000000000000-1",
            "sab-+1",
            "w+1",
            "d",
        ] {
            assert_eq!(text.parse::<MessageId>(), Err(ParseIdError), "{text}");
        }
    }
}
