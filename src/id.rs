//! Message ids: UUIDs minted without a clock read or a random draw per message.

use std::fmt;
use uuid::Uuid;

/// The version nibble (bits 76..80) and variant bits (62..64) of a UUID
/// read as a big-endian `u128`.
const VERSION_VARIANT_MASK: u128 = 0xf << 76 | 0x3 << 62;
/// Version 8, variant RFC 4122 (`0b10`).
const VERSION_8_VARIANT_RFC: u128 = 0x8 << 76 | 0x2 << 62;

/// The namespace of [`MessageId::from_key`]'s name-based UUIDs (a random
/// UUID drawn once for rebound; never changes).
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x7b1e_5d0c_93a4_4f62_8e2d_1c6a_f0b3_9e57);

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

    /// The id's 128 bits (the journal's and the dedup map's form of it).
    pub(crate) fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The id whose bits are `bits`.
    pub(crate) fn from_bits(bits: u128) -> Self {
        Self(Uuid::from_u128(bits))
    }

    /// An id of your own, for [`Queue::produce_with_id`](crate::Queue::produce_with_id):
    /// a UUID you already have (an order's, a request's, an upstream
    /// message's).
    ///
    /// ```
    /// use rebound::MessageId;
    /// use uuid::Uuid;
    /// let uuid = Uuid::from_u128(0x6f1c_29a4_5f0e_4c3b_9d1a_0b6e_4f2d_8c71);
    /// assert_eq!(MessageId::from_uuid(uuid).as_uuid(), &uuid);
    /// ```
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The id of a key of yours: the UUID version 5 (SHA-1, name-based) of
    /// `key` in rebound's own namespace, so one key always gives the same
    /// id, in every process and every version of rebound. Use it for
    /// [`Queue::produce_with_id`](crate::Queue::produce_with_id) when the
    /// thing that must not be queued twice has a name ("invoice 2026-118",
    /// "resize photos/42.jpg") rather than a UUID.
    ///
    /// ```
    /// use rebound::MessageId;
    /// let a = MessageId::from_key("invoice 2026-118");
    /// assert_eq!(a, MessageId::from_key(b"invoice 2026-118"));
    /// assert_ne!(a, MessageId::from_key("invoice 2026-119"));
    /// assert_eq!(a.as_uuid().get_version_num(), 5);
    /// ```
    pub fn from_key(key: impl AsRef<[u8]>) -> Self {
        Self(Uuid::new_v5(&KEY_NAMESPACE, key.as_ref()))
    }

    /// The high 64 bits of an id with the shape `produce` mints (version
    /// 8): the nonce of the queue that minted it, with the version bits set.
    pub(crate) fn minter(&self) -> Option<u64> {
        (self.0.as_u128() & VERSION_VARIANT_MASK == VERSION_8_VARIANT_RFC)
            .then_some((self.0.as_u128() >> 64) as u64)
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
