//! `Payload`: how a message's value becomes bytes in the journal and back.
//!
//! The in-memory queue never encodes anything; a journaled queue
//! ([`Builder::journal`](crate::Builder::journal)) encodes each produced
//! value once, when it is produced, and decodes it once, when the journal is
//! opened again after a restart.

use std::fmt;

/// A value that can be written to the journal and read back.
///
/// `decode(encode(v))` must give back a value equal to `v`. The encoding
/// is the payload's own business: the journal frames and checksums it, so
/// `decode` only ever sees the exact bytes `encode` wrote (or is not called
/// at all, when the record fails its checksum).
///
/// Implemented for `Vec<u8>`, `Box<[u8]>` and `String`, and, with the
/// `serde` feature, for any serde type through `Serde`.
///
/// ```
/// use rebound::{DecodeError, Payload};
///
/// #[derive(Debug, PartialEq)]
/// struct Job { user: u32 }
///
/// impl Payload for Job {
///     fn encode(&self, out: &mut Vec<u8>) {
///         out.extend_from_slice(&self.user.to_le_bytes());
///     }
///     fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
///         let user = bytes.try_into().map_err(|_| DecodeError::new("a Job is 4 bytes"))?;
///         Ok(Job { user: u32::from_le_bytes(user) })
///     }
/// }
///
/// let mut bytes = Vec::new();
/// Job { user: 7 }.encode(&mut bytes);
/// assert_eq!(Job::decode(&bytes).unwrap(), Job { user: 7 });
/// assert!(Job::decode(b"xy").is_err());
/// ```
pub trait Payload: Sized {
    /// Appends this value's bytes to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Reads a value back from the bytes [`Self::encode`] wrote.
    ///
    /// # Errors
    /// [`DecodeError`] if the bytes are not a value of this type (for
    /// example, a journal written by an older version of the type).
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// Bytes that are not a value of the payload type.
///
/// ```
/// let e = rebound::DecodeError::new("bad tag");
/// assert_eq!(e.to_string(), "cannot decode payload: bad tag");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    message: String,
}

impl DecodeError {
    /// An error saying what was wrong with the bytes.
    ///
    /// ```
    /// let e = rebound::DecodeError::new("too short");
    /// assert!(e.to_string().contains("too short"));
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decode payload: {}", self.message)
    }
}

impl std::error::Error for DecodeError {}

impl Payload for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.to_vec())
    }
}

impl Payload for Box<[u8]> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.into())
    }
}

impl Payload for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError::new(e.to_string()))
    }
}

/// Journals any serde type, encoded with [postcard](https://docs.rs/postcard)
/// (compact, stable wire format). Dereferences to the value.
///
/// ```
/// use rebound::{Payload, Serde};
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Job { id: u64, name: String }
///
/// let job = Serde(Job { id: 1, name: "mail".into() });
/// let mut bytes = Vec::new();
/// job.encode(&mut bytes);
/// assert_eq!(Serde::<Job>::decode(&bytes).unwrap().name, "mail");
/// ```
#[cfg(feature = "serde")]
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serde<T>(pub T);

#[cfg(feature = "serde")]
impl<T> std::ops::Deref for Serde<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(feature = "serde")]
impl<T> std::ops::DerefMut for Serde<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Payload for Serde<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        // postcard fails only if the value's own `Serialize` fails; the
        // payload is then empty, and `decode` of it fails loudly at the next
        // open instead of the produce panicking inside the queue.
        if let Ok(bytes) = postcard::to_allocvec(&self.0) {
            out.extend_from_slice(&bytes);
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        postcard::from_bytes(bytes)
            .map(Serde)
            .map_err(|e| DecodeError::new(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_payloads_round_trip_and_bad_utf8_is_an_error() {
        let mut out = Vec::new();
        vec![1u8, 2, 3].encode(&mut out);
        assert_eq!(Vec::<u8>::decode(&out).unwrap(), vec![1, 2, 3]);
        assert_eq!(&*Box::<[u8]>::decode(&out).unwrap(), &[1, 2, 3]);
        out.clear();
        "héllo".to_string().encode(&mut out);
        assert_eq!(String::decode(&out).unwrap(), "héllo");
        assert!(String::decode(&[0xff, 0xfe]).is_err());
    }
}
