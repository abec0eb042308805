//! Message ids: UUIDs minted without a clock read or a random draw per message.

use std::fmt;
use uuid::Uuid;

/// The version nibble (bits 76..80) and variant bits (62..64) of a UUID
/// read as a big-endian `u128`.
const VERSION_VARIANT_MASK: u128 = 0xf << 76 | 0x3 << 62;
/// Version 8, variant RFC 4122 (`0b10`).
const VERSION_8_VARIANT_RFC: u128 = 0x8 << 76 | 0x2 << 62;

/// The id of a message, stable across redeliveries.
///
/// A UUID (version 8): the high 64 bits are a random number drawn once per
/// queue, the low 62 bits a per-queue counter, so ids are unique within a
/// queue, unlikely to collide across queues, and ordered by production
/// within one block. Minting one costs a shift and an or.
///
/// ```
/// let q = rebound::Queue::<u8>::new();
/// let a = q.produce(1).unwrap();
/// let b = q.produce(2).unwrap();
/// assert!(a < b);
/// assert_eq!(a.as_uuid().get_version_num(), 8);
/// assert_eq!(q.consume().unwrap().id(), a);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(Uuid);

impl MessageId {
    pub(crate) fn new(queue_nonce: u64, number: u64) -> Self {
        debug_assert!(number < 1 << 62, "message number overflow");
        // `Uuid::new_v8(bytes)`, in one integer: setting the version and
        // variant bits byte by byte and then reading the 16 bytes back would
        // cost a failed store-to-load forward on every produce.
        let bits = (u128::from(queue_nonce) << 64 | u128::from(number)) & !VERSION_VARIANT_MASK
            | VERSION_8_VARIANT_RFC;
        Self(Uuid::from_u128(bits))
    }

    /// The id's 128 bits (the journal's form of it).
    #[cfg(feature = "journal")]
    pub(crate) fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The id whose bits are `bits`.
    #[cfg(feature = "journal")]
    pub(crate) fn from_u128(bits: u128) -> Self {
        Self(Uuid::from_u128(bits))
    }

    /// A placeholder, overwritten before anyone sees it.
    pub(crate) const PLACEHOLDER: MessageId = MessageId(Uuid::nil());

    /// The UUID.
    ///
    /// ```
    /// let q = rebound::Queue::<u8>::new();
    /// let id = q.produce(1).unwrap();
    /// assert!(!id.as_uuid().is_nil());
    /// ```
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_by_number_and_stay_distinct_across_queues() {
        let a = MessageId::new(7, 1);
        let b = MessageId::new(7, 2);
        assert!(a < b);
        assert_ne!(MessageId::new(8, 1), a);
        assert_eq!(a.as_uuid().get_version_num(), 8);
    }

    #[test]
    fn ids_are_the_uuid_crates_v8_of_nonce_and_number() {
        for (nonce, number) in [
            (0u64, 0u64),
            (u64::MAX, (1 << 62) - 1),
            (0x0123_4567_89ab_cdef, 42),
        ] {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&nonce.to_be_bytes());
            bytes[8..].copy_from_slice(&number.to_be_bytes());
            assert_eq!(MessageId::new(nonce, number).0, Uuid::new_v8(bytes));
        }
    }
}
