//! Opening a journal: lock the directory, read every segment, cut a torn
//! tail, and fold the records into the state of each live message.

use super::JournalConfig;
use super::format::{self, Header, Phase, Read, Record, State};
use super::segment::{self, Segment};
use super::writer::{Entry, Journal, LiveMap};
use crate::codec::DecodeError;
use crate::error::BuildError;
use crate::id::MessageId;
use fs4::FileExt;
use std::collections::VecDeque;
use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What [`Builder::open`](crate::Builder::open) found in the journal and
/// did with it (see [`Queue::recovery`](crate::Queue::recovery)).
///
/// ```
/// use rebound::Queue;
/// let dir = std::env::temp_dir().join(format!("rebound-doc-recovery-{}", std::process::id()));
/// let q: Queue<String> = Queue::builder().journal(&dir).open().unwrap();
/// q.produce("survives".into()).unwrap();
/// drop(q); // or a crash
/// let q: Queue<String> = Queue::builder().journal(&dir).open().unwrap();
/// let r = q.recovery().unwrap();
/// assert_eq!((r.records, r.pending, r.bytes_discarded), (1, 1, 0));
/// assert_eq!(*q.consume().unwrap(), "survives");
/// # drop(q);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Recovery {
    /// Records read and replayed.
    pub records: u64,
    /// Messages put back ready now (never delivered, or due during the
    /// downtime, or held at the crash).
    pub pending: u64,
    /// Messages put back waiting for a due time still ahead.
    pub delayed: u64,
    /// Messages that were held (a delivery in progress) when the process
    /// died. They are back at once with their attempt count kept, or
    /// dead-lettered ([`DeadLetterReason::Crashed`](crate::DeadLetterReason::Crashed))
    /// if that was their last allowed attempt.
    pub in_flight_at_crash: u64,
    /// Dead letters waiting to be drained, those made at this open
    /// included.
    pub dead_letters: u64,
    /// Messages dead-lettered at this open: held on their last allowed
    /// attempt when the process died.
    pub dead_lettered_at_open: u64,
    /// Bytes of a torn tail (a record the process died writing) cut off,
    /// or, with [`Builder::repair`](crate::Builder::repair), of
    /// everything after a corrupt record.
    pub bytes_discarded: u64,
    /// Segment files read.
    pub segments: u64,
    /// How long opening took.
    pub elapsed: Duration,
}

/// Why a journaled queue could not be opened.
///
/// ```
/// use rebound::{OpenError, Queue};
/// let dir = std::env::temp_dir().join(format!("rebound-doc-openerror-{}", std::process::id()));
/// let first: Queue<Vec<u8>> = Queue::builder().journal(&dir).open().unwrap();
/// let second = Queue::<Vec<u8>>::builder().journal(&dir).open();
/// assert!(matches!(second, Err(OpenError::Locked { .. })));
/// # drop(first);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// Reading, writing or creating `path` failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Another live queue, in this process or another, has the directory
    /// open.
    Locked {
        /// The journal directory.
        path: PathBuf,
    },
    /// A record before the end of the journal is damaged (a torn record at
    /// the very end is cut off instead, see [`Recovery::bytes_discarded`]).
    /// [`Builder::repair`](crate::Builder::repair) cuts the journal there
    /// instead of failing.
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damaged record in it.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The segment was written by a format version this build cannot read.
    Version {
        /// The segment file.
        path: PathBuf,
        /// The version it has.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A payload passed its checksum but the payload type cannot decode it
    /// (the type changed since it was written).
    Payload {
        /// The message.
        id: MessageId,
        /// The payload type's error.
        source: DecodeError,
    },
    /// A setting is out of range, or the queue's threads could not start.
    Build(BuildError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io { path, source } => {
                write!(f, "journal I/O error on {}: {source}", path.display())
            }
            OpenError::Locked { path } => {
                write!(f, "journal {} is open in another queue", path.display())
            }
            OpenError::Corrupt {
                path,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "journal segment {} is corrupt at byte {offset}: {reason}",
                    path.display()
                )
            }
            OpenError::Version {
                path,
                found,
                supported,
            } => write!(
                f,
                "journal segment {} has format version {found}; this build reads version {supported}",
                path.display()
            ),
            OpenError::Payload { id, source } => write!(f, "message {id} in the journal: {source}"),
            OpenError::Build(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } => Some(source),
            OpenError::Payload { source, .. } => Some(source),
            OpenError::Build(e) => Some(e),
            _ => None,
        }
    }
}

impl From<BuildError> for OpenError {
    fn from(e: BuildError) -> Self {
        OpenError::Build(e)
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What reading the journal found.
pub(crate) struct Found {
    pub(crate) journal: Journal,
    /// Every live message (dead letters included), in produce order.
    pub(crate) messages: Vec<(u128, Entry)>,
    /// Own ids still inside their dedup window, and when it ends (Unix ms).
    pub(crate) windows: Vec<(u128, u64)>,
    pub(crate) recovery: Recovery,
}

/// Opens (or creates) the journal in `config.dir` and reads it.
pub(crate) fn open(config: JournalConfig) -> Result<Found, OpenError> {
    let dir = config.dir.clone();
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(&dir).map_err(io_at(&dir))?;
    let lock_path = dir.join("LOCK");
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let lock = options.open(&lock_path).map_err(io_at(&lock_path))?;
    match FileExt::try_lock(&lock) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => return Err(OpenError::Locked { path: dir }),
        Err(fs4::TryLockError::Error(e)) => return Err(io_at(&lock_path)(e)),
    }

    // A spare segment made ahead and never used.
    let _ = std::fs::remove_file(dir.join(segment::SPARE));
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
        let entry = entry.map_err(io_at(&dir))?;
        if let Some(number) = entry.file_name().to_str().and_then(segment::number_of) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();

    let mut fold = Fold::default();
    let mut segments: VecDeque<Arc<Segment>> = VecDeque::new();
    let mut cut = false;
    for (i, &number) in numbers.iter().enumerate() {
        let path = dir.join(segment::file_name(number));
        if cut {
            // `repair` cut the journal before this segment.
            fold.recovery.bytes_discarded += std::fs::metadata(&path).map_or(0, |m| m.len());
            std::fs::remove_file(&path).map_err(io_at(&path))?;
            continue;
        }
        let last = i + 1 == numbers.len();
        let seg = Segment::open(path.clone(), number).map_err(io_at(&path))?;
        match format::read_header(seg.bytes()) {
            Header::Valid { number: n } if n == number => {}
            Header::Blank if last => {
                // The process died creating it.
                drop(seg);
                std::fs::remove_file(&path).map_err(io_at(&path))?;
                continue;
            }
            Header::Version(found) => {
                return Err(OpenError::Version {
                    path,
                    found,
                    supported: format::VERSION,
                });
            }
            _ if config.repair => {
                fold.recovery.bytes_discarded += seg.len() as u64;
                drop(seg);
                std::fs::remove_file(&path).map_err(io_at(&path))?;
                cut = true;
                continue;
            }
            _ => {
                return Err(OpenError::Corrupt {
                    path,
                    offset: 0,
                    reason: "bad segment header",
                });
            }
        }
        let seg = Arc::new(seg);
        let stop = fold.segment(&seg);
        if let Some((offset, reason, claimed_end)) = stop {
            let bytes = seg.bytes();
            let end = bytes
                .iter()
                .rposition(|&b| b != 0)
                .map_or(offset, |p| p + 1);
            // A torn tail is the last record written: nothing follows it.
            // (Records are written one at a time, under the journal's lock,
            // frame last; a process that dies mid-record leaves its body
            // with a zero frame, and a power loss may leave a frame with
            // part of its body.) Damage with records after it, or with a
            // frame that claims less than the bytes that follow, is not a
            // tear.
            let torn =
                last && end <= claimed_end && !format::any_record_from(&bytes[..end], offset + 1);
            if torn || config.repair {
                // A torn tail (or, repairing, everything from the damage on).
                fold.recovery.bytes_discarded += end.saturating_sub(offset) as u64;
                seg.zero(offset..end.max(offset)).map_err(io_at(&path))?;
                cut = !torn;
            } else {
                return Err(OpenError::Corrupt {
                    path,
                    offset: offset as u64,
                    reason,
                });
            }
        }
        segments.push_back(seg);
    }

    let next = match numbers.last() {
        None => 0,
        Some(&n) => n.checked_add(1).ok_or_else(|| OpenError::Corrupt {
            path: dir.join(segment::file_name(n)),
            offset: 0,
            reason: "segment number out of range",
        })?,
    };
    let active = Segment::create(&dir, next, config.segment_bytes).map_err(io_at(&dir))?;
    segment::sync_dir(&dir).map_err(io_at(&dir))?;
    segments.push_back(Arc::new(active));
    fold.recovery.segments = numbers.len() as u64;

    // Dedup windows that ended while the queue was down are forgotten;
    // the others stay in the map, homed at their record, until they end.
    let now_ms = super::writer::wall_ms();
    fold.live
        .retain(|_, e| !matches!(e.state.phase, Phase::Window { until_ms } if until_ms <= now_ms));
    let next_seq = fold
        .live
        .values()
        .map(|e| (e.seq & !format::SEQ_FLAGS) + 1)
        .max()
        .unwrap_or(0);
    let mut messages = Vec::with_capacity(fold.live.len());
    let mut windows = Vec::new();
    for (&id, &e) in &fold.live {
        match e.state.phase {
            Phase::Window { until_ms } => windows.push((id, until_ms)),
            _ => messages.push((id, e)),
        }
    }
    messages.sort_unstable_by_key(|(_, e)| e.seq & !format::SEQ_FLAGS);
    windows.sort_unstable_by_key(|&(_, until_ms)| until_ms);
    let journal = Journal::new(config, lock, segments, fold.live, next_seq, &windows);
    Ok(Found {
        journal,
        messages,
        windows,
        recovery: fold.recovery,
    })
}

#[derive(Default)]
struct Fold {
    live: LiveMap,
    recovery: Recovery,
}

impl Fold {
    /// Folds the records of `seg`. Returns where and why reading stopped
    /// early, if it did (a bad record, or bytes after the end), and where
    /// the bad record's frame says it ends.
    fn segment(&mut self, seg: &Segment) -> Option<(usize, &'static str, usize)> {
        let bytes = seg.bytes();
        let mut at = Segment::FIRST;
        loop {
            match format::read(bytes, at) {
                Read::Record(record, next) => {
                    self.apply(record, seg.number, at, next - at);
                    self.recovery.records += 1;
                    at = next;
                }
                Read::End => {
                    // Past the zero frame there must be nothing but zeros.
                    let rest = bytes.get(at..).unwrap_or(&[]);
                    return rest.iter().any(|&b| b != 0).then_some((
                        at,
                        "bytes after the end of the records",
                        usize::MAX,
                    ));
                }
                Read::Bad(reason) => {
                    let len = bytes
                        .get(at + 4..at + 8)
                        .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
                    let claimed_end = at.saturating_add(format::FRAME + len as usize);
                    return Some((at, reason, claimed_end));
                }
            }
        }
    }

    fn apply(&mut self, record: Record<'_>, segment: u64, at: usize, len: usize) {
        let id = record.id();
        let raise = |live: &mut LiveMap, state: State| {
            if let Some(e) = live.get_mut(&id) {
                e.raise(state);
            }
        };
        match record {
            Record::Produce { seq, due_ms, .. } => {
                self.live.insert(
                    id,
                    Entry {
                        segment,
                        at: at as u32,
                        len: len as u32,
                        seq,
                        state: State {
                            attempt: 0,
                            phase: Phase::Waiting { due_ms },
                        },
                    },
                );
            }
            Record::Carry { seq, state, .. } => {
                let entry = self.live.entry(id).or_insert(Entry {
                    segment,
                    at: at as u32,
                    len: len as u32,
                    seq,
                    state,
                });
                entry.segment = segment;
                entry.at = at as u32;
                entry.len = len as u32;
                entry.raise(state);
            }
            Record::Claim { attempt, .. } => raise(
                &mut self.live,
                State {
                    attempt,
                    phase: Phase::Held,
                },
            ),
            Record::Rollback {
                attempt, due_ms, ..
            } => raise(
                &mut self.live,
                State {
                    attempt,
                    phase: Phase::Waiting { due_ms },
                },
            ),
            Record::Defer {
                attempt, due_ms, ..
            } => {
                if let Some(e) = self.live.get_mut(&id) {
                    e.defer(attempt, due_ms);
                }
            }
            Record::Dead {
                attempts, reason, ..
            } => raise(
                &mut self.live,
                State {
                    attempt: attempts,
                    phase: Phase::Dead { reason },
                },
            ),
            Record::Ack { .. } | Record::Drained { .. } => {
                self.live.remove(&id);
            }
            Record::Hold { group, .. } => {
                if let Some(e) = self.live.get_mut(&id) {
                    e.state.phase = Phase::Holding { group };
                }
            }
            Record::Release { .. } => match self.live.get(&id).map(|e| e.state.phase) {
                Some(Phase::Dead { reason }) => {
                    if let Some(e) = self.live.get_mut(&id) {
                        e.state.phase = Phase::Released { reason };
                    }
                }
                Some(Phase::Holding { .. }) => {
                    self.live.remove(&id);
                }
                _ => {}
            },
            Record::Window { until_ms, .. } => {
                self.live.insert(
                    id,
                    Entry {
                        segment,
                        at: at as u32,
                        len: len as u32,
                        seq: 0,
                        state: State {
                            attempt: 0,
                            phase: Phase::Window { until_ms },
                        },
                    },
                );
            }
        }
    }
}

/// The payload bytes of a live message, from its home record.
pub(crate) fn payload_of<'a>(
    segments: &'a VecDeque<Arc<Segment>>,
    entry: &Entry,
) -> Option<&'a [u8]> {
    let seg = segments.iter().find(|s| s.number == entry.segment)?;
    format::payload_at(seg.bytes(), entry.at as usize)
}
