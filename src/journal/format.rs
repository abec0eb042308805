//! The journal's bytes: the segment header, the record frame and checksum,
//! and the record kinds. docs/durability.md draws them.
//!
//! Everything is little-endian. A segment is a fixed-size file: a
//! [`SEGMENT_HEADER`]-byte header, then records back to back, then zeros.
//! A record is a frame `crc: u32, len: u32` followed by `len` body bytes;
//! `crc` is the CRC32C of the `len` field and the body (the bytes after
//! it). A frame of eight zero bytes is the end of the segment's records (a
//! body is never empty).

use crate::dead_letter::DeadLetterReason;

/// The first bytes of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"RBNDJRNL";
/// The format version this build writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Bytes before the first record: magic, version, segment number, CRC.
pub(crate) const SEGMENT_HEADER: usize = 32;
/// Bytes of a record's frame (`crc`, `len`).
pub(crate) const FRAME: usize = 8;

/// The top bit of a produce record's `seq` (and a carry's): the message's
/// id is its own (given to `produce_with_id` or kept by a redrive), not
/// one minted by `produce`. Produce numbers never reach it.
pub(crate) const OWN_ID: u64 = 1 << 63;
/// The next bit of a produce record's `seq` (and a carry's): the message
/// is in an ordered group, and its payload bytes begin with the group's
/// key (8 bytes, little-endian). Produce numbers never reach it.
pub(crate) const GROUPED: u64 = 1 << 62;
/// The flag bits of a produce number.
pub(crate) const SEQ_FLAGS: u64 = OWN_ID | GROUPED;

/// A grouped record's payload split into its group key and the payload
/// proper (`None`: too short to hold a key).
pub(crate) fn split_group(payload: &[u8]) -> Option<(u64, &[u8])> {
    let (key, rest) = payload.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*key), rest))
}

const PRODUCE: u8 = 1;
const CLAIM: u8 = 2;
const ROLLBACK: u8 = 3;
const ACK: u8 = 4;
const DEAD: u8 = 5;
const DRAINED: u8 = 6;
const CARRY: u8 = 7;
const DEFER: u8 = 8;
const WINDOW: u8 = 9;
const RELEASE: u8 = 10;
const HOLD: u8 = 11;

/// Where a live message stands, as the journal knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for delivery number `attempt + 1`, due at `due_ms` (Unix
    /// milliseconds; 0: at once).
    Waiting { due_ms: u64 },
    /// Delivery number `attempt` was in progress.
    Held,
    /// Dead-lettered, not drained yet.
    Dead { reason: DeadLetterReason },
    /// Dead-lettered, not drained yet, and no longer holding its ordered
    /// group (`release_group` was called while it held it).
    Released { reason: DeadLetterReason },
    /// Not a message any more: a dead letter drained while it held its
    /// ordered group `group` (`hold_groups`), which it holds until a
    /// redrive of it or `release_group`. Keeps its home and produce number,
    /// so that a redrive puts it back in its place.
    Holding { group: u64 },
    /// Not a message any more: an id of its own, acked (or its dead letter
    /// drained), that stays taken until `until_ms` (Unix milliseconds) for
    /// the queue's dedup window. Never carried; its home is its `Window`
    /// record.
    Window { until_ms: u64 },
}

/// A live message's attempt and phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) attempt: u32,
    pub(crate) phase: Phase,
}

impl State {
    /// Records of one message can reach the journal out of order (a
    /// rollback's record may land after the next claim's), so each state has
    /// a rank and a record only ever raises it: delivery `a` held ranks
    /// `2a`, waiting after delivery `a` ranks `2a + 1`, dead ranks above all.
    pub(crate) fn rank(self) -> u64 {
        match self.phase {
            Phase::Held => 2 * u64::from(self.attempt),
            Phase::Waiting { .. } => 2 * u64::from(self.attempt) + 1,
            Phase::Dead { .. }
            | Phase::Released { .. }
            | Phase::Holding { .. }
            | Phase::Window { .. } => u64::MAX,
        }
    }
}

/// One decoded record. Ids are a [`crate::MessageId`]'s 128 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// A produced message: its produce-order number and its payload.
    Produce {
        id: u128,
        seq: u64,
        due_ms: u64,
        payload: &'a [u8],
    },
    /// Delivery number `attempt` began.
    Claim { id: u128, attempt: u32 },
    /// Delivery number `attempt` was rolled back; the next is due at `due_ms`.
    Rollback { id: u128, attempt: u32, due_ms: u64 },
    /// Delivery number `attempt` was deferred: it did not use an attempt,
    /// and delivery number `attempt` again is due at `due_ms`.
    Defer { id: u128, attempt: u32, due_ms: u64 },
    /// Acknowledged: final.
    Ack { id: u128 },
    /// The message of `id`, whose id was its own, is gone (acked, or its
    /// dead letter drained), and `id` stays taken until `until_ms` (the
    /// dedup window). Written after its Ack or Drained record.
    Window { id: u128, until_ms: u64 },
    /// Dead-lettered after `attempts` deliveries.
    Dead {
        id: u128,
        attempts: u32,
        reason: DeadLetterReason,
    },
    /// A dead letter was drained: final.
    Drained { id: u128 },
    /// The dead letter `id` no longer holds its ordered group
    /// (`release_group`); if it was drained, it is forgotten.
    Release { id: u128 },
    /// The dead letter `id`, holding its ordered group `group`, was drained
    /// (instead of a Drained record): it holds the group until a redrive of
    /// it or a Release record.
    Hold { id: u128, group: u64 },
    /// A live message copied forward by compaction, with its whole state.
    Carry {
        id: u128,
        seq: u64,
        state: State,
        payload: &'a [u8],
    },
}

impl Record<'_> {
    pub(crate) fn id(&self) -> u128 {
        match *self {
            Record::Produce { id, .. }
            | Record::Claim { id, .. }
            | Record::Rollback { id, .. }
            | Record::Defer { id, .. }
            | Record::Window { id, .. }
            | Record::Ack { id }
            | Record::Dead { id, .. }
            | Record::Drained { id }
            | Record::Release { id }
            | Record::Hold { id, .. }
            | Record::Carry { id, .. } => id,
        }
    }

    /// Appends this record, framed, to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME]);
        match *self {
            Record::Produce {
                id,
                seq,
                due_ms,
                payload,
            } => {
                out.push(PRODUCE);
                put_produce_fields(out, id, seq, due_ms);
                out.extend_from_slice(payload);
            }
            Record::Claim { id, attempt } => {
                out.push(CLAIM);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
            }
            Record::Rollback {
                id,
                attempt,
                due_ms,
            } => {
                out.push(ROLLBACK);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
                out.extend_from_slice(&due_ms.to_le_bytes());
            }
            Record::Defer {
                id,
                attempt,
                due_ms,
            } => {
                out.push(DEFER);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
                out.extend_from_slice(&due_ms.to_le_bytes());
            }
            Record::Window { id, until_ms } => {
                out.push(WINDOW);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&until_ms.to_le_bytes());
            }
            Record::Ack { id } => {
                out.push(ACK);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Record::Dead {
                id,
                attempts,
                reason,
            } => {
                out.push(DEAD);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&attempts.to_le_bytes());
                out.push(reason_byte(reason));
            }
            Record::Drained { id } => {
                out.push(DRAINED);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Record::Release { id } => {
                out.push(RELEASE);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Record::Hold { id, group } => {
                out.push(HOLD);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&group.to_le_bytes());
            }
            Record::Carry {
                id,
                seq,
                state,
                payload,
            } => {
                out.push(CARRY);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&state.attempt.to_le_bytes());
                let (phase, extra) = match state.phase {
                    Phase::Waiting { due_ms } => (0u8, due_ms),
                    Phase::Held => (1, 0),
                    Phase::Dead { reason } => (2, u64::from(reason_byte(reason))),
                    Phase::Released { reason } => (4, u64::from(reason_byte(reason))),
                    Phase::Holding { group } => (5, group),
                    // Never carried (compaction rewrites a `Window` record);
                    // encoded all the same so that no state is unwritable.
                    Phase::Window { until_ms } => (3, until_ms),
                };
                out.push(phase);
                out.extend_from_slice(&extra.to_le_bytes());
                out.extend_from_slice(payload);
            }
        }
        seal(out, start);
    }
}

fn put_produce_fields(out: &mut Vec<u8>, id: u128, seq: u64, due_ms: u64) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&due_ms.to_le_bytes());
}

/// Fills in the frame of the record that starts at `start` and runs to the
/// end of `out`.
pub(crate) fn seal(out: &mut [u8], start: usize) {
    let len = (out.len() - start - FRAME) as u32;
    out[start + 4..start + FRAME].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Writes the id, produce number and due time into the produce record at
/// `start` of `out` (written by [`produce_frame`] with placeholders), and
/// seals it.
pub(crate) fn fill_produce(out: &mut [u8], start: usize, id: u128, seq: u64) {
    let at = start + FRAME + 1;
    out[at..at + 16].copy_from_slice(&id.to_le_bytes());
    out[at + 16..at + 24].copy_from_slice(&seq.to_le_bytes());
    let end = start + FRAME + read_u32(out, start + 4) as usize;
    seal(&mut out[..end], start);
}

/// The id, produce number and due time of the produce record at `start` of
/// `out`, as this process framed it.
pub(crate) fn produce_fields(out: &[u8], start: usize) -> (u128, u64, u64) {
    let at = start + FRAME + 1;
    let mut r = Reader(&out[at..]);
    let fields = (r.u128(), r.u64(), r.u64());
    match fields {
        (Some(id), Some(seq), Some(due_ms)) => (id, seq, due_ms),
        _ => (0, 0, 0),
    }
}

/// Starts a produce record for a payload that `encode` appends, with the id
/// and produce number left to [`fill_produce`]. Returns where it starts.
pub(crate) fn produce_frame(
    out: &mut Vec<u8>,
    due_ms: u64,
    encode: impl FnOnce(&mut Vec<u8>),
) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME]);
    out.push(PRODUCE);
    put_produce_fields(out, 0, 0, due_ms);
    encode(out);
    let len = (out.len() - start - FRAME) as u32;
    out[start + 4..start + FRAME].copy_from_slice(&len.to_le_bytes());
    start
}

fn reason_byte(reason: DeadLetterReason) -> u8 {
    match reason {
        DeadLetterReason::MaxAttempts => 0,
        DeadLetterReason::Rejected => 1,
        DeadLetterReason::Crashed => 2,
    }
}

fn reason_from(byte: u8) -> Option<DeadLetterReason> {
    Some(match byte {
        0 => DeadLetterReason::MaxAttempts,
        1 => DeadLetterReason::Rejected,
        2 => DeadLetterReason::Crashed,
        _ => return None,
    })
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// What [`read`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read<'a> {
    /// A whole, valid record, and the offset of the next one.
    Record(Record<'a>, usize),
    /// The end of the records: a zero frame, or no room for a frame.
    End,
    /// Not a valid record: torn, corrupt, or of an unknown kind.
    Bad(&'static str),
}

/// The payload of the Produce or Carry record at `at` (a live message's
/// home record).
pub(crate) fn payload_at(seg: &[u8], at: usize) -> Option<&[u8]> {
    match read(seg, at) {
        Read::Record(Record::Produce { payload, .. } | Record::Carry { payload, .. }, _) => {
            Some(payload)
        }
        _ => None,
    }
}

/// Whether a whole, valid record starts anywhere in `seg[from..]`: damage
/// followed by records is not a torn tail.
pub(crate) fn any_record_from(seg: &[u8], from: usize) -> bool {
    (from..seg.len().saturating_sub(FRAME)).any(|at| matches!(read(seg, at), Read::Record(..)))
}

/// Reads the record at `at` of a segment's bytes `seg`.
pub(crate) fn read(seg: &[u8], at: usize) -> Read<'_> {
    let Some(frame) = seg.get(at..at + FRAME) else {
        return Read::End;
    };
    if frame == [0; FRAME] {
        return Read::End;
    }
    let crc = read_u32(frame, 0);
    let len = read_u32(frame, 4) as usize;
    let Some(body) = seg.get(at + FRAME..).and_then(|rest| rest.get(..len)) else {
        return Read::Bad("record runs past the end of its segment");
    };
    if len == 0 || crc32c::crc32c(&seg[at + 4..at + FRAME + len]) != crc {
        return Read::Bad("checksum mismatch");
    }
    match decode(body) {
        Some(record) => Read::Record(record, at + FRAME + len),
        None => Read::Bad("unknown record kind or malformed record"),
    }
}

/// A record's body (checksum already verified).
fn decode(body: &[u8]) -> Option<Record<'_>> {
    let (&kind, rest) = body.split_first()?;
    let mut r = Reader(rest);
    let id = r.u128()?;
    let record = match kind {
        PRODUCE => Record::Produce {
            id,
            seq: r.u64()?,
            due_ms: r.u64()?,
            payload: r.rest(),
        },
        CLAIM => Record::Claim {
            id,
            attempt: r.u32()?,
        },
        ROLLBACK => Record::Rollback {
            id,
            attempt: r.u32()?,
            due_ms: r.u64()?,
        },
        DEFER => Record::Defer {
            id,
            attempt: r.u32()?,
            due_ms: r.u64()?,
        },
        WINDOW => Record::Window {
            id,
            until_ms: r.u64()?,
        },
        ACK => Record::Ack { id },
        DEAD => Record::Dead {
            id,
            attempts: r.u32()?,
            reason: reason_from(r.u8()?)?,
        },
        DRAINED => Record::Drained { id },
        RELEASE => Record::Release { id },
        HOLD => Record::Hold {
            id,
            group: r.u64()?,
        },
        CARRY => {
            let seq = r.u64()?;
            let attempt = r.u32()?;
            let phase = r.u8()?;
            let extra = r.u64()?;
            let phase = match phase {
                0 => Phase::Waiting { due_ms: extra },
                1 => Phase::Held,
                2 => Phase::Dead {
                    reason: reason_from(u8::try_from(extra).ok()?)?,
                },
                3 => Phase::Window { until_ms: extra },
                4 => Phase::Released {
                    reason: reason_from(u8::try_from(extra).ok()?)?,
                },
                5 => Phase::Holding { group: extra },
                _ => return None,
            };
            Record::Carry {
                id,
                seq,
                state: State { attempt, phase },
                payload: r.rest(),
            }
        }
        _ => return None,
    };
    // Fixed-size records must be exactly their size.
    let sized = !matches!(record, Record::Produce { .. } | Record::Carry { .. });
    if sized && !r.0.is_empty() {
        return None;
    }
    // Attempts start at 1: only a message never delivered is at attempt 0,
    // and it can only be waiting.
    let attempt_zero = match record {
        Record::Claim { attempt, .. }
        | Record::Rollback { attempt, .. }
        | Record::Defer { attempt, .. } => attempt == 0,
        Record::Dead { attempts, .. } => attempts == 0,
        Record::Carry { state, .. } => {
            state.attempt == 0 && !matches!(state.phase, Phase::Waiting { .. })
        }
        _ => false,
    };
    if attempt_zero {
        return None;
    }
    Some(record)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn u128(&mut self) -> Option<u128> {
        self.take().map(u128::from_le_bytes)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// A segment's header.
pub(crate) fn header(number: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&number.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment's header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A valid header of this version, for segment `number`.
    Valid { number: u64 },
    /// All zeros: the segment was being created when the process died.
    Blank,
    /// A valid header of another format version.
    Version(u32),
    /// Anything else.
    Bad,
}

pub(crate) fn read_header(seg: &[u8]) -> Header {
    let Some(h) = seg.get(..SEGMENT_HEADER) else {
        return if seg.iter().all(|&b| b == 0) {
            Header::Blank
        } else {
            Header::Bad
        };
    };
    if h.iter().all(|&b| b == 0) {
        return Header::Blank;
    }
    if h[..8] != MAGIC || crc32c::crc32c(&h[..28]) != read_u32(h, 28) {
        return Header::Bad;
    }
    let version = read_u32(h, 8);
    if version != VERSION {
        return Header::Version(version);
    }
    Header::Valid {
        number: u64::from_le_bytes(h[12..20].try_into().expect("8 bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Vec<u8>> {
        let records = [
            Record::Produce {
                id: 1 << 100 | 7,
                seq: 3,
                due_ms: 0,
                payload: b"hello",
            },
            Record::Claim { id: 9, attempt: 2 },
            Record::Rollback {
                id: 9,
                attempt: 2,
                due_ms: 1_700_000_000_000,
            },
            Record::Defer {
                id: 9,
                attempt: 3,
                due_ms: 1_700_000_000_500,
            },
            Record::Ack { id: 9 },
            Record::Window {
                id: 9,
                until_ms: 1_700_000_120_000,
            },
            Record::Dead {
                id: 4,
                attempts: 5,
                reason: DeadLetterReason::Crashed,
            },
            Record::Drained { id: 4 },
            Record::Release { id: 4 },
            Record::Hold {
                id: 4,
                group: u64::MAX - 3,
            },
            Record::Carry {
                id: 6,
                seq: 12 | GROUPED,
                state: State {
                    attempt: 2,
                    phase: Phase::Holding { group: 77 },
                },
                payload: &[1, 2, 3],
            },
            Record::Carry {
                id: 7,
                seq: 13,
                state: State {
                    attempt: 1,
                    phase: Phase::Released {
                        reason: DeadLetterReason::MaxAttempts,
                    },
                },
                payload: &[],
            },
            Record::Carry {
                id: 5,
                seq: 11,
                state: State {
                    attempt: 3,
                    phase: Phase::Dead {
                        reason: DeadLetterReason::Rejected,
                    },
                },
                payload: &[],
            },
        ];
        records
            .iter()
            .map(|r| {
                let mut out = Vec::new();
                r.write(&mut out);
                out
            })
            .collect()
    }

    #[test]
    fn every_record_kind_round_trips() {
        let mut log = vec![0u8; 3];
        for bytes in samples() {
            log.extend_from_slice(&bytes);
        }
        log.extend_from_slice(&[0; 16]);
        let mut at = 3;
        let mut seen = 0;
        while let Read::Record(record, next) = read(&log, at) {
            let mut again = Vec::new();
            record.write(&mut again);
            assert_eq!(again, &log[at..next]);
            at = next;
            seen += 1;
        }
        assert_eq!(seen, samples().len());
        assert_eq!(read(&log, at), Read::End);
    }

    #[test]
    fn a_filled_produce_frame_equals_a_written_record() {
        let mut out = vec![1, 2];
        let start = produce_frame(&mut out, 42, |o| o.extend_from_slice(b"xyz"));
        fill_produce(&mut out, start, 77, 8);
        let mut direct = Vec::new();
        Record::Produce {
            id: 77,
            seq: 8,
            due_ms: 42,
            payload: b"xyz",
        }
        .write(&mut direct);
        assert_eq!(&out[2..], &direct[..]);
    }

    /// The bounded property test of the decoder: truncations, every single
    /// bit flip, garbage, and records of other kinds or versions never
    /// panic, and never read back as a record that was not written.
    #[test]
    fn damaged_bytes_never_panic_and_never_decode_as_another_record() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for bytes in samples() {
            let Read::Record(original, _) = read(&bytes, 0) else {
                panic!("sample does not read")
            };
            for cut in 0..bytes.len() {
                assert!(
                    !matches!(read(&bytes[..cut], 0), Read::Record(..)),
                    "cut {cut}"
                );
            }
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                if let Read::Record(r, _) = read(&flipped, 0) {
                    panic!("bit {bit} flipped still reads as {r:?} (was {original:?})");
                }
            }
            // A valid frame around a body of an unknown kind.
            let mut other = bytes.clone();
            other[FRAME] = 0x80 | rng.u8(..);
            seal(&mut other, 0);
            assert!(matches!(read(&other, 0), Read::Bad(_)));
        }
        for _ in 0..20_000 {
            let len = rng.usize(0..64);
            let garbage: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let mut at = 0;
            // Whatever it reads, it reads forward and stops.
            while let Read::Record(_, next) = read(&garbage, at) {
                assert!(next > at);
                at = next;
            }
        }
    }

    #[test]
    fn headers_tell_blank_bad_and_other_versions() {
        let h = header(12);
        assert_eq!(read_header(&h), Header::Valid { number: 12 });
        assert_eq!(read_header(&[0; 64]), Header::Blank);
        let mut v2 = h;
        v2[8] = 2;
        let crc = crc32c::crc32c(&v2[..28]);
        v2[28..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(read_header(&v2), Header::Version(2));
        let mut bad = h;
        bad[15] ^= 4;
        assert_eq!(read_header(&bad), Header::Bad);
    }
}
