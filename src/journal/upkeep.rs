//! The journal's upkeep thread: compaction, and the syncs of
//! [`Durability::Interval`].
//!
//! Compaction keeps the directory near the size of what is live: while the
//! segments take more than twice the live records' bytes plus
//! `COMPACT_SLACK` (32 MiB), it reads the oldest segment, copies each record that
//! is still the home of a live message forward as a `Carry` record (the
//! message's whole state and payload; a dedup window that has not ended is
//! written again as a `Window` record), and then deletes the segment. A
//! message held or delayed for a long time is copied forward, so it never
//! pins old segments. The copies are made under the journal's lock, a few
//! hundred at a time, so producers wait at most for one such step.

use super::Durability;
use super::format::{self, Phase, Read, Record};
use super::segment::Segment;
use super::writer::{Journal, UPKEEP_TICK};
use crate::sync::lock_plain;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Records scanned per compaction step.
const STEP: usize = 256;

/// The upkeep loop, until the journal is shut down.
pub(crate) fn run(journal: Arc<Journal>) {
    let interval = match journal.config.durability {
        Durability::Interval(every) => Some(every.max(Duration::from_millis(1))),
        _ => None,
    };
    let mut next_sync = interval.map(|every| Instant::now() + every);
    loop {
        // SeqCst: pairs with the store in `shutdown`; checked under the
        // wake lock, which `shutdown` takes before notifying.
        {
            let mut woken = lock_plain(&journal.upkeep_lock);
            if journal.stop.load(Ordering::SeqCst) {
                break;
            }
            if !*woken {
                let timeout = next_sync.map_or(UPKEEP_TICK, |at| {
                    at.saturating_duration_since(Instant::now())
                });
                woken = journal
                    .upkeep_wake
                    .wait_timeout(woken, timeout)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            *woken = false;
        }
        if let (Some(at), Some(every)) = (next_sync, interval) {
            if Instant::now() >= at {
                journal.sync_now();
                next_sync = Some(Instant::now() + every);
            }
        }
        make_spare(&journal);
        while compact_step(&journal) {
            if journal.stop.load(Ordering::SeqCst) {
                break;
            }
        }
    }
}

/// Makes the spare segment, if there is none.
fn make_spare(journal: &Journal) {
    if lock_plain(&journal.inner).spare.is_some() {
        return;
    }
    // On failure the writer makes its next segment itself, and reports the
    // error if it cannot either.
    if let Ok(spare) = Segment::create_spare(&journal.dir, journal.config.segment_bytes) {
        lock_plain(&journal.inner).spare = Some(spare);
    }
}

/// One step of compaction. Returns whether there is more to do now.
pub(crate) fn compact_step(journal: &Journal) -> bool {
    let (oldest, start) = {
        let inner = lock_plain(&journal.inner);
        if !Journal::over_budget(&inner) {
            return false;
        }
        let oldest = Arc::clone(&inner.segments[0]);
        if inner.homed_in(oldest.number) == 0 {
            // Nothing live is homed there (the usual case, when messages are
            // settled soon after they are produced): delete it unread.
            let end = inner.appended;
            drop(inner);
            return delete_oldest(journal, oldest, end);
        }
        (oldest, inner.scan)
    };
    // The oldest segment is sealed (the active one is the last, and there
    // are at least two): read it without the lock.
    let bytes = oldest.bytes();
    let mut homes = Vec::with_capacity(STEP);
    let mut at = start;
    let mut done = false;
    while homes.len() < STEP {
        match format::read(bytes, at) {
            Read::Record(record, next) => {
                if matches!(
                    record,
                    Record::Produce { .. } | Record::Carry { .. } | Record::Window { .. }
                ) {
                    homes.push((record.id(), at));
                }
                at = next;
            }
            // Recovery cut every bad record of a sealed segment before this
            // journal wrote anything, and this process wrote only whole
            // records: the end.
            Read::End | Read::Bad(_) => {
                done = true;
                break;
            }
        }
    }
    let now_ms = super::writer::wall_ms();
    let mut guard = lock_plain(&journal.inner);
    let inner = &mut *guard;
    let mut record = Vec::new();
    for (id, home) in homes {
        let Some(&entry) = inner.live.get(&id) else {
            continue;
        };
        if entry.segment != oldest.number || entry.at as usize != home {
            continue;
        }
        record.clear();
        if let Phase::Window { until_ms } = entry.state.phase {
            // A dedup window: rewritten while it lasts, forgotten after.
            if until_ms <= now_ms {
                inner.remove(id);
                continue;
            }
            Record::Window { id, until_ms }.write(&mut record);
        } else {
            let Some(payload) = format::payload_at(bytes, home) else {
                continue;
            };
            Record::Carry {
                id,
                seq: entry.seq,
                state: entry.state,
                payload,
            }
            .write(&mut record);
        }
        if journal.make_room(inner, record.len()).is_err() {
            journal.count_error();
            return false;
        }
        // `make_room` succeeded, so there is an active segment.
        let Some(active) = inner.segments.back().map(Arc::clone) else {
            return false;
        };
        let at_new = inner.at;
        active.write_record(at_new, &record);
        inner.at += record.len();
        inner.appended += record.len() as u64;
        // Relaxed: a statistic.
        journal
            .bytes_written
            .fetch_add(record.len() as u64, Ordering::Relaxed);
        inner.rehome(id, active.number, at_new, record.len());
    }
    if !done {
        inner.scan = at;
        return true;
    }
    // Every live message homed in the oldest segment now has a newer home.
    let end = inner.appended;
    drop(guard);
    delete_oldest(journal, oldest, end)
}

/// Deletes segment `oldest`, the oldest, once the log up to `end` (every
/// copy made of its live messages) is as durable as the mode promises.
fn delete_oldest(journal: &Journal, oldest: Arc<Segment>, end: u64) -> bool {
    // The copies are not known to be on disk: keep the originals.
    if journal.wait_durable(end).is_err() {
        return false;
    }
    let mut inner = lock_plain(&journal.inner);
    if inner.segments.front().map(|s| s.number) != Some(oldest.number) {
        return false;
    }
    inner.segments.pop_front();
    inner.scan = Segment::FIRST;
    drop(inner);
    let path = oldest.path.clone();
    drop(oldest);
    if std::fs::remove_file(&path).is_err() {
        journal.count_error();
    }
    journal.dir_changed();
    // Relaxed: a statistic.
    journal.compacted.fetch_add(1, Ordering::Relaxed);
    true
}

/// Stops the upkeep thread (the caller joins it).
pub(crate) fn shutdown(journal: &Journal) {
    let mut woken = lock_plain(&journal.upkeep_lock);
    // SeqCst: pairs with the load in `run`.
    journal.stop.store(true, Ordering::SeqCst);
    *woken = true;
    journal.upkeep_wake.notify_all();
}
