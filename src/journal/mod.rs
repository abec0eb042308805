//! Durability: the crash-safe journal of a queue opened with
//! [`Builder::journal`](crate::Builder::journal).
//!
//! Every produce, claim and settle of a journaled queue appends a record
//! (`format.rs`) to the active segment (`segment.rs`) under one lock, the
//! journal's, before the call returns. A producer holds the lock from
//! before its messages become claimable until their records are written,
//! so no record about a message can precede its produce record. Recovery
//! (`recovery.rs`) folds the records of every segment into the state of
//! each live message, and `restore.rs` puts those back into a new queue.
//! Compaction (`upkeep.rs`) copies the live messages of the oldest segment
//! forward and deletes it. docs/durability.md has the format and the
//! guarantees.
//!
//! Lock order: the sleepers' lock (`Waiters`) before the journal's (a
//! consumer's second poll under the former may claim, which journals);
//! nothing that holds the journal's lock takes the sleepers'.

mod format;
mod hooks;
mod recovery;
mod restore;
mod segment;
mod upkeep;
mod writer;

pub(crate) use hooks::Attached;
pub use recovery::{OpenError, Recovery};
pub(crate) use restore::open;

use std::path::PathBuf;
use std::time::Duration;

/// When a journaled queue's records are forced to disk.
///
/// Every mode hands each record to the operating system (a store into a
/// shared file mapping) before the call that made it returns: a crash of
/// the process, `kill -9` included, loses nothing in any mode. The modes
/// differ in what survives a power loss or a kernel crash.
///
/// ```
/// use rebound::{Durability, Queue};
/// let dir = std::env::temp_dir().join(format!("rebound-doc-durability-{}", std::process::id()));
/// let q: Queue<Vec<u8>> = Queue::builder()
///     .journal(&dir)
///     .durability(Durability::Fsync)
///     .open()
///     .unwrap();
/// q.produce(b"on disk when this returns".to_vec()).unwrap();
/// # drop(q);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// No sync: records survive any process crash, not a power loss. The
    /// default, and near memory speed.
    #[default]
    Buffered,
    /// A produce, settle or drain returns after its record is on disk
    /// (`fdatasync`). Concurrent callers share one sync (group commit), and
    /// a batch pays one. Claims are not waited for: after a power loss a
    /// message's attempt count may lack the claims made since the last
    /// sync.
    Fsync,
    /// As `Buffered`, and a background thread syncs every given interval:
    /// a power loss loses at most about that much. NATS JetStream's file
    /// store works this way, every 2 minutes by default (`sync_interval`).
    Interval(Duration),
}

/// Where and how a queue is journaled (see [`crate::Builder::journal`]).
#[derive(Debug, Clone)]
pub(crate) struct JournalConfig {
    pub(crate) dir: PathBuf,
    pub(crate) durability: Durability,
    pub(crate) repair: bool,
    pub(crate) segment_bytes: usize,
}

impl JournalConfig {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            durability: Durability::Buffered,
            repair: false,
            segment_bytes: segment::SEGMENT_BYTES,
        }
    }
}

/// What a journal has done since its queue was opened (see
/// [`Queue::journal_stats`](crate::Queue::journal_stats)).
///
/// ```
/// use rebound::Queue;
/// let dir = std::env::temp_dir().join(format!("rebound-doc-jstats-{}", std::process::id()));
/// let q: Queue<String> = Queue::builder().journal(&dir).open().unwrap();
/// q.produce("a".into()).unwrap();
/// let s = q.journal_stats().unwrap();
/// assert!(s.bytes_written > 0);
/// assert_eq!(s.segments, 1);
/// # drop(q);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct JournalStats {
    /// Record bytes appended.
    pub bytes_written: u64,
    /// Syncs (`fdatasync`) made.
    pub syncs: u64,
    /// Segment files in the directory now (the next one, made ahead,
    /// included).
    pub segments: u64,
    /// Bytes of the segment files now.
    pub disk_bytes: u64,
    /// Bytes of the records of the messages still live (the least the
    /// journal could shrink to).
    pub live_bytes: u64,
    /// Segments deleted by compaction.
    pub compacted: u64,
    /// Records that could not be written or synced (a full disk, an I/O
    /// error). A produce that fails so returns its value
    /// ([`ProduceError::Journal`](crate::ProduceError::Journal)); a claim
    /// or settle that fails so still happens in memory, and after a restart
    /// its message may come back (at least once, never lost).
    pub write_errors: u64,
    /// A sync (`fdatasync`) failed. The journal stops promising: every
    /// later produce is refused with
    /// [`ProduceError::Journal`](crate::ProduceError::Journal), and the
    /// calls waiting on that sync returned without it (their records are
    /// in the page cache: a process crash loses nothing, a power loss
    /// may). Reopen the queue once the disk is healthy.
    pub sync_failed: Option<std::io::ErrorKind>,
}
