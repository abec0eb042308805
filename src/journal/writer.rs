//! The journal's writer: appends records under one lock, keeps the state of
//! every live message (for compaction), and syncs by group commit.

use super::format::{self, Phase, Record, State};
use super::segment::{self, Segment};
use super::{Durability, JournalConfig, JournalStats};
use crate::dead_letter::DeadLetterReason;
use crate::id::MessageId;
use crate::sync::{PlainMutex, lock_plain};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a live message's payload is (its latest produce or carry record),
/// and what the journal knows of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) segment: u64,
    pub(crate) at: u32,
    /// Bytes of that record, frame included.
    pub(crate) len: u32,
    /// Produce order, kept across carries.
    pub(crate) seq: u64,
    pub(crate) state: State,
}

impl Entry {
    /// Applies a defer of delivery `attempt`, due at `due_ms`: waiting for
    /// delivery `attempt` again, which ranks just below the deferred claim
    /// (`2 * attempt - 1`). Its record is the latest about the message when
    /// it is written (the deferring holder's claim record came before its
    /// `Delivery` existed, and the message can be claimed again only after
    /// the defer hands it over, which follows the record), so it applies
    /// over any state up to that claim's; a record that lands after it
    /// with a lower rank was about an earlier round and is ignored.
    pub(crate) fn defer(&mut self, attempt: u32, due_ms: u64) {
        let held = State {
            attempt,
            phase: Phase::Held,
        };
        if self.state.rank() <= held.rank() {
            self.state = State {
                attempt: attempt.saturating_sub(1),
                phase: Phase::Waiting { due_ms },
            };
        }
    }

    /// Raises the message's state to `state`, unless that would lower its
    /// rank (see `State::rank`): records of one message may land out of
    /// order.
    pub(crate) fn raise(&mut self, state: State) {
        if state.rank() >= self.state.rank() {
            self.state = state;
        }
    }
}

/// Hashes a message id to its message number (the low 64 bits: a counter
/// within the queue that produced it), with the top 7 bits (hashbrown's
/// tag) mixed from it. Consecutive messages then land in consecutive
/// buckets: a consumer following its producers walks the table in order,
/// which the prefetcher follows, instead of missing the cache on every
/// claim and settle as a scattering hash does.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let tag = self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) & (0x7f << 57);
        (self.0 & !(0x7f << 57)) | tag
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only ids are hashed, through `write_u128`; anything else still
        // hashes correctly, if not as well.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, id: u128) {
        self.0 = id as u64 ^ ((id >> 64) as u64).rotate_left(32);
    }
}

/// The live messages by id.
pub(crate) type LiveMap = std::collections::HashMap<u128, Entry, BuildHasherDefault<IdHasher>>;

/// What the lock guards.
pub(crate) struct Inner {
    /// Oldest first; the last is the active one.
    pub(crate) segments: VecDeque<Arc<Segment>>,
    /// The write position in the active segment.
    pub(crate) at: usize,
    /// Bytes appended since open: a position in the log, for group commit.
    pub(crate) appended: u64,
    pub(crate) live: LiveMap,
    pub(crate) live_bytes: u64,
    /// Live messages homed in each segment (by number): a sealed oldest
    /// segment with none is deleted without being read.
    pub(crate) homes: FxHashMap<u64, u64>,
    pub(crate) next_seq: u64,
    /// The dedup windows in the map (`Phase::Window`), by when they end
    /// (Unix ms), earliest first: each ended one is forgotten when the
    /// next window is written.
    pub(crate) windows: VecDeque<(u64, u128)>,
    /// Compaction's position in the oldest segment.
    pub(crate) scan: usize,
    /// The next segment, made ahead by the upkeep thread.
    pub(crate) spare: Option<Segment>,
}

struct SyncState {
    /// Log position known durable.
    durable: u64,
    /// Lowest segment number that may hold unsynced records.
    from: u64,
    /// A sync is running (its caller syncs for everyone waiting).
    syncing: bool,
    /// A segment was created or deleted since the last directory sync.
    dir_dirty: bool,
    /// A sync failed: the journal refuses to promise more (see `sync_to`).
    failed: Option<io::ErrorKind>,
}

pub(crate) struct Journal {
    pub(crate) dir: PathBuf,
    pub(crate) config: JournalConfig,
    pub(crate) inner: PlainMutex<Inner>,
    sync: PlainMutex<SyncState>,
    synced: Condvar,
    /// Wakes the upkeep thread (compaction, interval syncs).
    pub(crate) upkeep_wake: Condvar,
    pub(crate) upkeep_lock: PlainMutex<bool>,
    pub(crate) stop: AtomicBool,
    /// Unix milliseconds at the queue clock's origin, for due times.
    origin_ms: AtomicU64,
    /// What the open found, once it is done.
    pub(crate) recovery: PlainMutex<Option<super::Recovery>>,
    /// The directory's lock, held until [`Self::close`].
    lock: PlainMutex<Option<File>>,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) compacted: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    /// Whether a sync failed (its error is in the sync state).
    sync_failed: AtomicBool,
}

/// The most record bytes one call may append (a batch): 1 GiB, the largest
/// segment, so that offsets and lengths fit their 32-bit fields.
const MAX_APPEND: usize = 1 << 30;

/// Bytes of old segments allowed beyond twice the live bytes before
/// compaction starts (see `upkeep.rs`).
pub(crate) const COMPACT_SLACK: u64 = 32 << 20;

/// Unix milliseconds now.
pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Journal {
    pub(crate) fn new(
        config: JournalConfig,
        lock: File,
        segments: VecDeque<Arc<Segment>>,
        live: LiveMap,
        next_seq: u64,
        windows: &[(u128, u64)],
    ) -> Journal {
        let live_bytes = live.values().map(|e| u64::from(e.len)).sum();
        let mut homes = FxHashMap::default();
        for e in live.values() {
            *homes.entry(e.segment).or_insert(0) += 1;
        }
        let from = segments.back().map_or(0, |s| s.number);
        Journal {
            dir: config.dir.clone(),
            config,
            inner: PlainMutex::new(Inner {
                segments,
                at: Segment::FIRST,
                appended: 0,
                live,
                live_bytes,
                homes,
                next_seq,
                windows: windows.iter().map(|&(id, until)| (until, id)).collect(),
                scan: Segment::FIRST,
                spare: None,
            }),
            sync: PlainMutex::new(SyncState {
                durable: 0,
                from,
                syncing: false,
                dir_dirty: true,
                failed: None,
            }),
            synced: Condvar::new(),
            upkeep_wake: Condvar::new(),
            upkeep_lock: PlainMutex::new(false),
            stop: AtomicBool::new(false),
            origin_ms: AtomicU64::new(0),
            recovery: PlainMutex::new(None),
            lock: PlainMutex::new(Some(lock)),
            bytes_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            compacted: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            sync_failed: AtomicBool::new(false),
        }
    }

    /// Sets the wall-clock time of the queue clock's origin, from a reading
    /// `now_ns` of that clock. Called once, before the queue is shared.
    pub(crate) fn set_origin(&self, now_ns: u64) {
        // Relaxed: written before the queue (and this journal) is shared
        // with any other thread; the spawn or `Arc` hand-off that shares it
        // orders this store before every load.
        // Both readings are rounded down: one more millisecond, so that a
        // due time is never early.
        self.origin_ms.store(
            wall_ms()
                .saturating_sub(now_ns / 1_000_000)
                .saturating_add(1),
            Ordering::Relaxed,
        );
    }

    /// The Unix time, in ms (rounded up: never early), of queue-clock time
    /// `ns`.
    pub(crate) fn wall_of(&self, ns: u64) -> u64 {
        // Relaxed: see `set_origin`.
        self.origin_ms
            .load(Ordering::Relaxed)
            .saturating_add(ns.div_ceil(1_000_000))
    }

    fn durability(&self) -> Durability {
        self.config.durability
    }

    pub(crate) fn stats(&self) -> JournalStats {
        let inner = lock_plain(&self.inner);
        // Relaxed: statistics only, read under no ordering promise.
        JournalStats {
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            segments: inner.segments.len() as u64 + u64::from(inner.spare.is_some()),
            disk_bytes: inner.segments.iter().map(|s| s.len() as u64).sum::<u64>()
                + inner.spare.as_ref().map_or(0, |s| s.len() as u64),
            live_bytes: inner.live_bytes,
            compacted: self.compacted.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            sync_failed: self.failed(),
        }
    }

    pub(crate) fn count_error(&self) {
        // Relaxed: a statistic.
        self.write_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Produces: `records` holds one produce record per value (ids and
    /// produce numbers still blank, see `format::produce_frame`), starting
    /// at `starts`. Under the lock, makes room for all of them (or fails
    /// with `values` given back, before anything is published), calls
    /// `publish` with the values and a callback that takes each message's
    /// id in order, then writes the records. `flags` (`format::OWN_ID`,
    /// `format::GROUPED`) go into every produce number. Returns once they
    /// are as durable as the mode promises.
    pub(crate) fn produce<V>(
        &self,
        records: &mut [u8],
        starts: &[usize],
        flags: u64,
        values: V,
        publish: impl FnOnce(V, &mut dyn FnMut(MessageId)),
    ) -> Result<(), (V, io::Error)> {
        if let Some(kind) = self.failed() {
            self.count_error();
            return Err((values, kind.into()));
        }
        if records.len() > MAX_APPEND {
            return Err((values, io::ErrorKind::InvalidInput.into()));
        }
        let end = {
            let mut inner = lock_plain(&self.inner);
            if let Err(e) = self.make_room(&mut inner, records.len()) {
                self.count_error();
                return Err((values, e));
            }
            let mut next = 0;
            let first_seq = inner.next_seq;
            let live = &inner.live;
            let grouped = flags & format::GROUPED != 0;
            publish(values, &mut |id| {
                if let Some(&start) = starts.get(next) {
                    // A redriven letter that held its group takes its place
                    // back: its old produce number, first in its group. Only
                    // grouped produces look (a hold is always a group's).
                    let held = grouped
                        .then(|| live.get(&id.as_u128()))
                        .flatten()
                        .filter(|e| matches!(e.state.phase, Phase::Holding { .. }));
                    let seq = match held {
                        Some(e) => e.seq & !format::SEQ_FLAGS,
                        None => first_seq + next as u64,
                    };
                    format::fill_produce(records, start, id.as_u128(), seq | flags);
                }
                next += 1;
            });
            debug_assert_eq!(next, starts.len(), "one id per record");
            inner.next_seq += starts.len() as u64;
            let base = inner.at;
            let segment = inner.segments.back().map_or(0, |s| s.number);
            for (i, &start) in starts.iter().enumerate() {
                let stop = starts.get(i + 1).copied().unwrap_or(records.len());
                let (id, seq, due_ms) = format::produce_fields(records, start);
                let entry = Entry {
                    segment,
                    at: (base + start) as u32,
                    len: (stop - start) as u32,
                    seq,
                    state: State {
                        attempt: 0,
                        phase: Phase::Waiting { due_ms },
                    },
                };
                inner.add(id, entry);
            }
            self.write_all(&mut inner, records, starts)
        };
        // The messages are in the queue: a failed sync cannot give them
        // back. It is counted, reported in `JournalStats::sync_failed`, and
        // every later produce is refused (see `sync_to`).
        let _ = self.wait_durable(end);
        Ok(())
    }

    /// The error of a failed sync, if one failed (see `sync_to`). One load
    /// on the produce path while none has.
    pub(crate) fn failed(&self) -> Option<io::ErrorKind> {
        // Acquire: pairs with the Release store in `sync_to`; the kind is
        // read under the lock it was written under anyway.
        if !self.sync_failed.load(Ordering::Acquire) {
            return None;
        }
        lock_plain(&self.sync).failed
    }

    /// Appends the records in `records` (starting at each of `starts`).
    fn write_all(&self, inner: &mut Inner, records: &[u8], starts: &[usize]) -> u64 {
        let Some(active) = inner.segments.back() else {
            return inner.appended;
        };
        for (i, &start) in starts.iter().enumerate() {
            let stop = starts.get(i + 1).copied().unwrap_or(records.len());
            active.write_record(inner.at + start, &records[start..stop]);
        }
        inner.at += records.len();
        inner.appended += records.len() as u64;
        // Relaxed: a statistic.
        self.bytes_written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        inner.appended
    }

    /// Makes room for `need` more bytes in the active segment, opening the
    /// next one if it is full.
    pub(crate) fn make_room(&self, inner: &mut Inner, need: usize) -> io::Result<()> {
        let active = inner
            .segments
            .back()
            .ok_or_else(|| io::Error::other("the journal is closed"))?;
        if inner.at + need <= active.len() {
            return Ok(());
        }
        let number = active
            .number
            .checked_add(1)
            .ok_or_else(|| io::Error::other("segment number out of range"))?;
        let len = self
            .config
            .segment_bytes
            .max(Segment::FIRST + need)
            .next_multiple_of(4096);
        let segment = match inner.spare.take() {
            Some(spare) if spare.len() >= len => spare.install(&self.dir, number)?,
            _ => Segment::create(&self.dir, number, len)?,
        };
        inner.segments.push_back(Arc::new(segment));
        inner.at = Segment::FIRST;
        lock_plain(&self.sync).dir_dirty = true;
        // Compaction may be due now.
        self.wake_upkeep();
        Ok(())
    }

    /// Appends one record about a live message and applies `apply` to its
    /// entry (dropping the entry if `apply` returns false). Records about
    /// messages the journal does not know (already final) are not written.
    fn note(
        &self,
        id: MessageId,
        record: Record<'_>,
        wait: bool,
        apply: impl FnOnce(&mut Entry) -> bool,
    ) {
        let end = with_buffer(|bytes| {
            // Framed and checksummed before the lock is taken.
            record.write(bytes);
            let mut guard = lock_plain(&self.inner);
            let inner = &mut *guard;
            let key = id.as_u128();
            // Closed: the queue is gone (see `close`).
            inner.segments.back()?;
            let entry = inner.live.get_mut(&key)?;
            if !apply(entry) {
                inner.remove(key);
            }
            match self.make_room(inner, bytes.len()) {
                Ok(()) => Some(self.write_all(inner, bytes, &[0])),
                Err(_) => {
                    self.count_error();
                    None
                }
            }
        });
        if let (true, Some(end)) = (wait, end) {
            if !self.defer(end) {
                // Counted, and fails the journal (see `sync_to`); the settle
                // itself was made.
                let _ = self.wait_durable(end);
            }
        }
    }

    /// Delivery number `attempt` of `id` began. Not waited for in any mode.
    pub(crate) fn claimed(&self, id: MessageId, attempt: u32) {
        let record = Record::Claim {
            id: id.as_u128(),
            attempt,
        };
        let state = State {
            attempt,
            phase: Phase::Held,
        };
        self.note(id, record, false, |e| {
            e.raise(state);
            true
        });
    }

    /// Delivery `attempt` of `id` was rolled back; the next is due at
    /// queue-clock time `due_ns`.
    pub(crate) fn rolled_back(&self, id: MessageId, attempt: u32, due_ns: u64) {
        let due_ms = self.wall_of(due_ns);
        let record = Record::Rollback {
            id: id.as_u128(),
            attempt,
            due_ms,
        };
        let state = State {
            attempt,
            phase: Phase::Waiting { due_ms },
        };
        self.note(id, record, true, |e| {
            e.raise(state);
            true
        });
    }

    /// Delivery `attempt` of `id` was deferred; it is due again at
    /// queue-clock time `due_ns`. Waited for as a rollback is.
    pub(crate) fn deferred(&self, id: MessageId, attempt: u32, due_ns: u64) {
        let due_ms = self.wall_of(due_ns);
        let record = Record::Defer {
            id: id.as_u128(),
            attempt,
            due_ms,
        };
        self.note(id, record, true, |e| {
            e.defer(attempt, due_ms);
            true
        });
    }

    /// `id`, whose message is gone and whose id was its own, stays taken
    /// until Unix time `until_ms` (the dedup window). Not waited for: a
    /// crash before it is durable only forgets the window.
    pub(crate) fn windowed(&self, id: MessageId, until_ms: u64) {
        let key = id.as_u128();
        with_buffer(|bytes| {
            Record::Window { id: key, until_ms }.write(bytes);
            let mut guard = lock_plain(&self.inner);
            let inner = &mut *guard;
            // Closed: the queue is gone (see `close`).
            if inner.segments.back().is_none() {
                return;
            }
            if self.make_room(inner, bytes.len()).is_err() {
                self.count_error();
                return;
            }
            let (segment, at) = match inner.segments.back() {
                Some(active) => (active.number, inner.at),
                None => return,
            };
            self.write_all(inner, bytes, &[0]);
            inner.add(
                key,
                Entry {
                    segment,
                    at: at as u32,
                    len: bytes.len() as u32,
                    seq: 0,
                    state: State {
                        attempt: 0,
                        phase: Phase::Window { until_ms },
                    },
                },
            );
            inner.windows.push_back((until_ms, key));
            inner.forget_windows(wall_ms());
        });
    }

    /// `id` was acknowledged.
    pub(crate) fn acked(&self, id: MessageId) {
        self.note(id, Record::Ack { id: id.as_u128() }, true, |_| false);
    }

    /// `id` was dead-lettered after `attempts` deliveries. `wait`: whether
    /// the caller returns to a user who must find it durable.
    pub(crate) fn dead(&self, id: MessageId, attempts: u32, reason: DeadLetterReason, wait: bool) {
        let record = Record::Dead {
            id: id.as_u128(),
            attempts,
            reason,
        };
        let state = State {
            attempt: attempts,
            phase: Phase::Dead { reason },
        };
        self.note(id, record, wait, |e| {
            e.raise(state);
            true
        });
    }

    /// The dead letter `id`, which holds its ordered group `group`, was
    /// drained: it keeps holding it, across a restart, until a redrive of
    /// it (a Produce record with its id) or a Release record.
    pub(crate) fn hold(&self, id: MessageId, group: u64) {
        let record = Record::Hold {
            id: id.as_u128(),
            group,
        };
        self.note(id, record, true, |e| {
            e.state.phase = Phase::Holding { group };
            true
        });
    }

    /// The dead letter `id` no longer holds its ordered group
    /// (`release_group`): an undrained one stays a dead letter, a drained
    /// one is forgotten.
    pub(crate) fn released(&self, id: MessageId) {
        let record = Record::Release { id: id.as_u128() };
        self.note(id, record, true, |e| match e.state.phase {
            Phase::Dead { reason } => {
                e.state.phase = Phase::Released { reason };
                true
            }
            Phase::Holding { .. } => false,
            _ => true,
        });
    }

    /// Dead letters `ids` were drained.
    pub(crate) fn drained(&self, ids: impl Iterator<Item = MessageId>) {
        let mut last = None;
        for id in ids {
            self.note(id, Record::Drained { id: id.as_u128() }, false, |_| false);
            last = Some(());
        }
        if last.is_some() {
            let end = lock_plain(&self.inner).appended;
            // As for a settle (see `note`).
            let _ = self.wait_durable(end);
        }
    }

    /// Returns once log position `end` is as durable as the mode promises:
    /// at once unless `Fsync`; else after a sync that covers it, made by
    /// this caller or by one running for others (group commit).
    ///
    /// # Errors
    /// The sync failed, now or before (see `sync_to`).
    pub(crate) fn wait_durable(&self, end: u64) -> io::Result<()> {
        if self.durability() != Durability::Fsync {
            return Ok(());
        }
        self.sync_to(end)
    }

    /// Runs `f`, whose settles on this journal do not wait for their records
    /// to be durable one by one; waits once, at the end, for all of them
    /// (one sync under `Fsync`).
    pub(crate) fn deferring<R>(&self, f: impl FnOnce() -> R) -> R {
        /// Ends the deferral, and waits, even if `f` panics.
        struct End<'a>(&'a Journal);
        impl Drop for End<'_> {
            fn drop(&mut self) {
                let (_, end) = DEFERRED.with(|d| d.replace((std::ptr::null(), 0)));
                // A failed sync is counted and fails the journal (see
                // `sync_to`); the acks themselves were made.
                if end > 0 {
                    let _ = self.0.wait_durable(end);
                }
            }
        }
        let nested = DEFERRED.with(|d| !d.get().0.is_null());
        if nested {
            return f();
        }
        DEFERRED.with(|d| d.set((self, 0)));
        let _end = End(self);
        f()
    }

    /// Within [`Self::deferring`] on this journal: notes `end` for the wait
    /// at its end and returns true.
    fn defer(&self, end: u64) -> bool {
        DEFERRED.with(|d| {
            let (journal, reached) = d.get();
            let mine = std::ptr::eq(journal, self);
            if mine {
                d.set((journal, reached.max(end)));
            }
            mine
        })
    }

    /// Syncs everything appended so far (interval mode, shutdown).
    pub(crate) fn sync_now(&self) {
        let end = lock_plain(&self.inner).appended;
        // A failure is counted and fails the journal (see `sync_to`).
        let _ = self.sync_to(end);
    }

    /// Syncs up to log position `end` (group commit).
    ///
    /// A failed sync fails the journal for good, as databases do since
    /// Linux marks the pages of a failed `fdatasync` clean (a retry would
    /// "succeed" without them): this and every later sync return the
    /// error, and produces are refused (`Journal::failed`).
    fn sync_to(&self, end: u64) -> io::Result<()> {
        let mut state = lock_plain(&self.sync);
        loop {
            if let Some(kind) = state.failed {
                return Err(kind.into());
            }
            if state.durable >= end {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .synced
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            state.syncing = true;
            let from = state.from;
            let dir_dirty = std::mem::take(&mut state.dir_dirty);
            drop(state);
            // Everything appended up to now, in every segment that may hold
            // unsynced records.
            let (target, segments, active) = {
                let inner = lock_plain(&self.inner);
                let segments: Vec<Arc<Segment>> = inner
                    .segments
                    .iter()
                    .filter(|s| s.number >= from)
                    .cloned()
                    .collect();
                let active = inner.segments.back().map_or(from, |s| s.number);
                (inner.appended, segments, active)
            };
            let mut result = segments.iter().try_for_each(|s| s.sync());
            if result.is_ok() && dir_dirty {
                result = segment::sync_dir(&self.dir);
            }
            // Relaxed: a statistic.
            self.syncs.fetch_add(1, Ordering::Relaxed);
            state = lock_plain(&self.sync);
            state.syncing = false;
            match result {
                Ok(()) => {
                    state.durable = state.durable.max(target);
                    state.from = active;
                }
                Err(e) => {
                    // The records are still in the page cache (a process
                    // crash loses nothing), but no longer known to reach
                    // the disk.
                    state.failed = Some(e.kind());
                    // Release: pairs with the Acquire load in `failed`.
                    self.sync_failed.store(true, Ordering::Release);
                    self.count_error();
                    self.synced.notify_all();
                    return Err(e);
                }
            }
            self.synced.notify_all();
        }
    }

    /// The last queue handle is gone: unmaps the segments and releases the
    /// directory's lock, so that the directory can be opened again at once
    /// (the queue's memory may outlive its handles a while: blocks freed
    /// through the epoch, deliveries still held). A settle made after this
    /// is not journaled: its message comes back at the next open (at least
    /// once).
    pub(crate) fn close(&self) {
        {
            let mut inner = lock_plain(&self.inner);
            inner.segments.clear();
            inner.live = LiveMap::default();
            inner.homes.clear();
        }
        self.drop_spare();
        drop(lock_plain(&self.lock).take());
    }

    /// Deletes the spare segment (the queue is going away).
    pub(crate) fn drop_spare(&self) {
        if let Some(spare) = lock_plain(&self.inner).spare.take() {
            let path = spare.path.clone();
            drop(spare);
            let _ = std::fs::remove_file(path);
        }
    }

    /// Wakes the upkeep thread.
    pub(crate) fn wake_upkeep(&self) {
        *lock_plain(&self.upkeep_lock) = true;
        self.upkeep_wake.notify_one();
    }

    /// Marks the directory as needing a sync (a segment was deleted).
    pub(crate) fn dir_changed(&self) {
        lock_plain(&self.sync).dir_dirty = true;
    }

    /// Whether the segments take more room than compaction allows.
    pub(crate) fn over_budget(inner: &Inner) -> bool {
        let disk: u64 = inner.segments.iter().map(|s| s.len() as u64).sum();
        inner.segments.len() > 1
            && (inner.scan > Segment::FIRST || disk > 2 * inner.live_bytes + COMPACT_SLACK)
    }
}

impl Inner {
    /// Notes a new live message (or a dedup window), replacing a dedup
    /// window of the same id.
    pub(crate) fn add(&mut self, id: u128, entry: Entry) {
        self.live_bytes += u64::from(entry.len);
        *self.homes.entry(entry.segment).or_insert(0) += 1;
        if let Some(old) = self.live.insert(id, entry) {
            self.live_bytes -= u64::from(old.len);
            self.unhome(old.segment);
        }
    }

    /// Forgets the dedup windows that ended by `now_ms`.
    pub(crate) fn forget_windows(&mut self, now_ms: u64) {
        while let Some(&(until, id)) = self.windows.front() {
            if until > now_ms {
                break;
            }
            self.windows.pop_front();
            let ended = self.live.get(&id).is_some_and(
                |e| matches!(e.state.phase, Phase::Window { until_ms } if until_ms == until),
            );
            if ended {
                self.remove(id);
            }
        }
    }

    /// Forgets a message gone final.
    pub(crate) fn remove(&mut self, id: u128) {
        if let Some(entry) = self.live.remove(&id) {
            self.live_bytes -= u64::from(entry.len);
            self.unhome(entry.segment);
        }
    }

    /// Gives a live message a new home record.
    pub(crate) fn rehome(&mut self, id: u128, segment: u64, at: usize, len: usize) {
        let Some(entry) = self.live.get_mut(&id) else {
            return;
        };
        let old = entry.segment;
        self.live_bytes = self.live_bytes - u64::from(entry.len) + len as u64;
        entry.segment = segment;
        entry.at = at as u32;
        entry.len = len as u32;
        *self.homes.entry(segment).or_insert(0) += 1;
        self.unhome(old);
    }

    fn unhome(&mut self, segment: u64) {
        if let Some(count) = self.homes.get_mut(&segment) {
            *count -= 1;
            if *count == 0 {
                self.homes.remove(&segment);
            }
        }
    }

    /// Live messages homed in segment `number`.
    pub(crate) fn homed_in(&self, number: u64) -> u64 {
        self.homes.get(&number).copied().unwrap_or(0)
    }
}

thread_local! {
    /// A thread settling a batch ([`Journal::deferring`]): the journal it
    /// settles on and the log position its settles reached so far.
    static DEFERRED: std::cell::Cell<(*const Journal, u64)> =
        const { std::cell::Cell::new((std::ptr::null(), 0)) };
    /// Each thread's buffer for the records it frames.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's record buffer, emptied (or a new one, if the
/// thread is already using its own: a payload's `encode` that produces).
pub(crate) fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            let r = f(&mut buffer);
            // A huge batch's buffer is not kept for the thread's life.
            if buffer.capacity() > 1 << 20 {
                *buffer = Vec::new();
            }
            r
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// A sleep of the upkeep thread when nothing wakes it.
pub(crate) const UPKEEP_TICK: Duration = Duration::from_secs(1);
