//! The redeliverer: one pure pass, [`Redeliverer::redeliver_due`], and the
//! thread that loops it.
//!
//! A pass (1) reinserts rolled-back messages handed over through the
//! [`Inbox`], with the due time their holder computed; (2) when the earliest
//! possible lease deadline has come, scans the blocks that may hold claims
//! and expires those whose lease ran out; (3) forgets blocks nobody else
//! references any more. Reinserted messages go into the index as batches of
//! references, one batch per 100 microseconds of due time.

use crate::batch::{Batch, MessageRef, RefBatch};
use crate::block::Block;
use crate::clock;
#[cfg(not(rebound_loom))]
use crate::clock::{Clock, UPKEEP_INTERVAL};
use crate::index::Key;
use crate::queue::Shared;
use crate::registrations::Registrations;
use crate::state::{Expire, MAX_TICK_SPAN, Reinsert, TICK_MASK, tick_reached};
use crate::stats::Counter;
use crate::sync::{Arc, Condvar, Mutex, lock};
#[cfg(not(rebound_loom))]
use crate::sync::{now, wait};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
#[cfg(not(rebound_loom))]
use std::time::Duration;

/// Wake the redeliverer to prune once this many new blocks are waiting.
pub(crate) const REGISTER_WAKE: usize = 256;
/// Nanoseconds per index batch of redelivered messages (100 us). Redelivery
/// due times are rounded up to a multiple of it, so a batch falls due whole.
const BATCH_SPAN_NS: u64 = 100_000;
/// `ts` rounded up to a multiple of [`BATCH_SPAN_NS`] (unchanged within a
/// span of the clock's end).
fn round_up_to_span(ts: u64) -> u64 {
    ts.checked_next_multiple_of(BATCH_SPAN_NS).unwrap_or(ts)
}

/// While rollbacks arrive, a busy redeliverer looks at them at most this
/// often (1 ms, in nanoseconds), and at least this often while any is due.
const INBOX_INTERVAL_NS: u64 = 1_000_000;

struct InboxState<T> {
    backtracked: Vec<MessageRef<T>>,
    /// The earliest due time in `backtracked` (`u64::MAX` if empty).
    earliest: u64,
    /// When the busy redeliverer, asleep, looks at the inbox next
    /// (nanoseconds); 0 while it is awake or idle.
    wake_at: u64,
    /// The earliest it may look again: its last look plus
    /// [`INBOX_INTERVAL_NS`], so that a stream of rollbacks wakes it at
    /// most once per interval.
    floor: u64,
    /// The redeliverer is idle (no clock upkeep) and waits on `cond`: new
    /// work must notify it. While busy it looks at the inbox every upkeep
    /// interval anyway.
    idle: bool,
    /// Someone restarted the clock upkeep.
    kicked: bool,
    stopped: bool,
}

/// What consumers and producers hand to the redeliverer.
pub(crate) struct Inbox<T> {
    state: Mutex<InboxState<T>>,
    cond: Condvar,
    /// New blocks, pushed without the lock.
    blocks: Registrations<T>,
}

impl<T> Inbox<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(InboxState {
                backtracked: Vec::new(),
                earliest: u64::MAX,
                wake_at: 0,
                floor: 0,
                idle: false,
                kicked: false,
                stopped: false,
            }),
            cond: Condvar::new(),
            blocks: Registrations::new(),
        }
    }

    /// Hands over a rolled-back message; gives it back if the redeliverer is
    /// stopped (the queue is being torn down).
    pub(crate) fn push_backtracked(&self, message: MessageRef<T>) -> Result<(), MessageRef<T>> {
        let mut state = lock(&self.state);
        if state.stopped {
            return Err(message);
        }
        // Look one batch span before it is due, so that it is back in the
        // index by then and a parked consumer's own timed wait (on the
        // index's next due time) ends when it falls due. Looking only once
        // it was due chained two wake-ups (this thread's, then the
        // consumer's): `rollback_after(1 ms)` came back a median 195 us late
        // instead of 100 us (scratch harness, same session).
        let due = round_up_to_span(message.ts).saturating_sub(BATCH_SPAN_NS);
        state.earliest = state.earliest.min(due);
        state.backtracked.push(message);
        if state.idle {
            state.idle = false;
            self.cond.notify_one();
        } else {
            // Asleep until later than this message needs: bring the look
            // forward (never closer than the floor to the last one).
            let look = due.max(state.floor);
            if look < state.wake_at {
                state.wake_at = look;
                self.cond.notify_one();
            }
        }
        Ok(())
    }

    /// Holds the lock the redeliverer takes on every wake-up: a test stalls
    /// it (as if it were off the CPU) for as long as it keeps the guard.
    #[cfg(all(test, not(rebound_loom)))]
    pub(crate) fn stall(&self) -> impl Sized + '_ {
        lock(&self.state)
    }

    /// Wakes an idle redeliverer so that it resumes the clock upkeep.
    pub(crate) fn kick(&self) {
        let mut state = lock(&self.state);
        state.kicked = true;
        if state.idle {
            state.idle = false;
            self.cond.notify_one();
        }
    }

    /// Tells the redeliverer about a new block whose leases it must watch.
    /// Takes the lock only to wake an idle redeliverer, once per
    /// [`REGISTER_WAKE`] blocks.
    pub(crate) fn register(&self, block: Arc<Block<T>>) {
        if self.blocks.push(block) == REGISTER_WAKE {
            // The lock orders this with an idle redeliverer's last look at
            // the count: either it saw `REGISTER_WAKE` blocks or it is
            // waiting by the time this takes the lock.
            let mut state = lock(&self.state);
            if state.idle {
                state.idle = false;
                self.cond.notify_one();
            }
        }
    }

    #[cfg(not(rebound_loom))]
    fn has_work(&self) -> bool {
        self.blocks.len() >= REGISTER_WAKE || !lock(&self.state).backtracked.is_empty()
    }

    /// Takes the rolled-back messages and new blocks, at `now`; all new
    /// blocks if `all` (see [`Registrations::take`]).
    fn take(
        &self,
        now: u64,
        backtracked: &mut Vec<MessageRef<T>>,
        blocks: &mut Vec<Arc<Block<T>>>,
        all: bool,
    ) {
        let mut state = lock(&self.state);
        std::mem::swap(&mut state.backtracked, backtracked);
        state.earliest = u64::MAX;
        state.floor = now.saturating_add(INBOX_INTERVAL_NS);
        drop(state);
        self.blocks.take(blocks, all);
    }

    /// A dead chain block for a producer to reuse (see
    /// [`Registrations::reclaim`]).
    pub(crate) fn reclaim(&self) -> Option<Arc<Block<T>>> {
        self.blocks.reclaim()
    }

    /// Stops the redeliverer and returns what was still waiting for it.
    /// (No handle is left, so no producer registers a block any more.)
    pub(crate) fn stop(&self) -> (Vec<Arc<Block<T>>>, Vec<MessageRef<T>>) {
        let mut state = lock(&self.state);
        state.stopped = true;
        self.cond.notify_all();
        let mut blocks = Vec::new();
        self.blocks.take(&mut blocks, true);
        (blocks, std::mem::take(&mut state.backtracked))
    }

    /// Sleeps until `until` (nanoseconds on `clock`; `u64::MAX`: forever).
    /// An idle sleep is cut short by new work or a kick; a busy one ends
    /// early when a rolled-back message falls due, but no earlier than the
    /// floor. Returns `None` once stopped, else whether the redeliverer was
    /// kicked or has work waiting.
    #[cfg(not(rebound_loom))]
    fn sleep(&self, clock: &Clock, until: u64, idle: bool) -> Option<bool> {
        let mut state = lock(&self.state);
        loop {
            if state.stopped {
                return None;
            }
            let woken = std::mem::take(&mut state.kicked)
                || !state.backtracked.is_empty()
                || self.blocks.len() >= REGISTER_WAKE;
            let until = if idle {
                until
            } else {
                until.min(state.earliest.max(state.floor))
            };
            let now = clock.nanos(now());
            if (idle && woken) || now >= until {
                state.wake_at = 0;
                return Some(woken);
            }
            state.idle = idle;
            state.wake_at = if idle { 0 } else { until };
            let timeout = (until != u64::MAX).then(|| Duration::from_nanos(until - now));
            state = wait(&self.cond, state, timeout);
            state.idle = false;
        }
    }
}

/// The redeliverer's own state: the blocks it watches for expired leases.
pub(crate) struct Redeliverer<T> {
    /// Every block that may hold a claimed message.
    watched: Vec<Arc<Block<T>>>,
    /// No lease can end before this tick: every claim seen in the last scan
    /// ends later, and every claim made since ends a full lease after it.
    next_scan: u64,
    /// Prune `watched` when it grows past this.
    prune_at: usize,
    backtracked: Vec<MessageRef<T>>,
    ready: Vec<MessageRef<T>>,
    /// Blocks the last scan found dead, on their way to [`Shared::recycle`].
    dead: Vec<Arc<Block<T>>>,
    /// The due times of the redelivery batches put into the index that may
    /// not have fallen due yet (see [`Self::next_redelivery_due`]).
    falling_due: FallingDue,
}

/// Due times still to come, kept across passes: a pass that puts back only
/// later (or no) redeliveries must not forget an earlier one.
#[derive(Default)]
struct FallingDue(BinaryHeap<Reverse<u64>>);

impl FallingDue {
    fn push(&mut self, due: u64) {
        self.0.push(Reverse(due));
    }

    /// The earliest due time after `now`, forgetting those reached.
    fn next_after(&mut self, now: u64) -> Option<u64> {
        while let Some(&Reverse(due)) = self.0.peek() {
            if due > now {
                return Some(due);
            }
            self.0.pop();
        }
        None
    }
}

impl<T: Send + Sync + 'static> Redeliverer<T> {
    pub(crate) fn new() -> Self {
        Self {
            watched: Vec::new(),
            next_scan: 0,
            prune_at: REGISTER_WAKE,
            backtracked: Vec::new(),
            ready: Vec::new(),
            dead: Vec::new(),
            falling_due: FallingDue::default(),
        }
    }

    /// One pass at `now` (nanoseconds since the queue's origin). Returns
    /// when the next pass is needed at the latest, in nanoseconds; new work
    /// needs one sooner.
    pub(crate) fn redeliver_due(&mut self, shared: &Shared<T>, now: u64) -> u64 {
        let now_tick = clock::tick_floor(now) & TICK_MASK;
        let scan = tick_reached(self.next_scan, now_tick);
        // A lease scan must see every block that may hold a claim: all of
        // them, the queued ones too.
        shared
            .inbox
            .take(now, &mut self.backtracked, &mut self.watched, scan);
        for message in self.backtracked.drain(..) {
            let state = &message.block.slot(message.slot as usize).state;
            if let Reinsert::Pending { attempt } = state.transition_to_pending() {
                self.ready.push(MessageRef { attempt, ..message });
            }
        }
        if scan || self.watched.len() >= self.prune_at {
            self.scan(shared, now, now_tick, scan);
        }
        self.reinsert(shared, now);
        let ahead = self.next_scan.wrapping_sub(now_tick) & TICK_MASK;
        clock::tick_nanos(clock::tick_floor(now) + ahead.min(MAX_TICK_SPAN))
    }

    /// When the next redelivery put back into the index falls due (after
    /// `now`), if any. A busy redeliverer wakes then (at most once per inbox
    /// interval) to refresh the recent clock: consumers polling with it see
    /// the message only then, and producers stamp later messages after it.
    #[cfg_attr(rebound_loom, allow(dead_code))]
    pub(crate) fn next_redelivery_due(&mut self, now: u64) -> Option<u64> {
        self.falling_due.next_after(now)
    }

    /// Drops blocks only the watch list references and, if `expire`,
    /// expires every claim whose lease ended by `now_tick`.
    fn scan(&mut self, shared: &Shared<T>, now: u64, now_tick: u64, expire: bool) {
        let config = shared.config;
        let mut earliest = shared.deadline_tick(now, config.lease);
        // Leases timed from a recent reading that stood too long end that
        // much later (`clock::Lags`): the expiry looks a reached deadline up
        // in the lag log, mapping its tick back to nanoseconds by `now`.
        let lags = if expire {
            shared.clock.lags(now, config.lease)
        } else {
            clock::Lags::default()
        };
        let now_floor = clock::tick_floor(now);
        let grace = |deadline: u64| {
            let behind = now_tick.wrapping_sub(deadline) & TICK_MASK;
            let deadline_ns = clock::tick_nanos(now_floor.saturating_sub(behind));
            lags.grace(deadline_ns, config.lease)
        };
        let ready = &mut self.ready;
        // Moved out, not cloned: a clone and a drop would be two more
        // read-modify-writes on each dead block's count.
        let dying = self.watched.extract_if(.., |block| {
            // Only the watch list holds it: not in the index, not held by any
            // delivery or batch, so every message in it is final.
            if Arc::strong_count(block) == 1 {
                return true;
            }
            if !expire {
                return false;
            }
            for slot in 0..block.len() {
                match block.slot(slot).state.transition_to_expired(
                    now_tick,
                    config.max_attempts,
                    grace,
                ) {
                    Expire::NotClaimed => {}
                    Expire::NotDue { deadline } => {
                        if tick_reached(deadline, earliest) {
                            earliest = deadline;
                        }
                    }
                    Expire::Redeliver { attempt } => {
                        shared.counters.bump(Counter::Expired, 1);
                        ready.push(MessageRef {
                            block: Arc::clone(block),
                            slot: slot as u32,
                            attempt,
                            ts: clock::add(now, config.backoff.delay(attempt)),
                        });
                    }
                    Expire::DeadLettered { .. } => {
                        // The old holder still holds it; its release moves
                        // the payload to the dead letters.
                        shared.counters.bump(Counter::Expired, 1);
                        shared.counters.add(Counter::DeadLettered, 1);
                        shared.settled();
                    }
                }
            }
            false
        });
        self.dead.extend(dying);
        shared.recycle(&mut self.dead);
        if expire {
            self.next_scan = earliest;
        }
        self.prune_at = (self.watched.len() * 2).max(REGISTER_WAKE);
    }

    /// Puts `ready` into the index, one batch per [`BATCH_SPAN_NS`] of due
    /// time.
    ///
    /// Due times are first rounded up to a multiple of the span, so every
    /// message of a batch falls due at once: a batch whose head was due and
    /// the rest not stayed in every claim walk's way until it was, which
    /// cost 10% of the one-consumer rate with 10% of messages rolled back
    /// for 1 ms (see docs/design.md). Never early; at most 100 us late.
    /// Remembers the batches due after `now` in `falling_due`.
    fn reinsert(&mut self, shared: &Shared<T>, now: u64) {
        if self.ready.is_empty() {
            return;
        }
        for message in &mut self.ready {
            message.ts = round_up_to_span(message.ts);
        }
        let count = self.ready.len() as u64;
        self.ready
            .sort_unstable_by_key(|m| (m.ts, m.block.message_number(m.slot as usize)));
        let mut rest = self.ready.drain(..).peekable();
        while let Some(first) = rest.next() {
            let span = first.ts / BATCH_SPAN_NS;
            let key = Key {
                ts: first.ts,
                seq: shared.next_seq(),
            };
            if first.ts > now {
                self.falling_due.push(first.ts);
            }
            let mut entries = vec![first];
            while let Some(next) = rest.next_if(|m| m.ts / BATCH_SPAN_NS == span) {
                entries.push(next);
            }
            shared
                .index
                .insert(key, Batch::Redelivery(Box::new(RefBatch::new(entries))));
        }
        shared.counters.bump(Counter::Redelivered, count);
        shared.waiters.notify(true);
    }

    /// The queue went idle: frees every dead block it keeps, the spare
    /// ones and those only the watch list and the registrations hold, so
    /// that an idle queue gives back the memory a burst left behind.
    #[cfg(not(rebound_loom))]
    fn shed(&mut self, shared: &Shared<T>) {
        // Index nodes and replaced tails, which hold blocks, are freed
        // through the epoch: move it on first, so that the frees waiting
        // for it run now (those in an idle thread's own bag wait for that
        // thread; a consumer hands its bag over when it parks).
        for _ in 0..4 {
            crate::sync::pin().flush();
        }
        shared.inbox.blocks.take(&mut self.watched, true);
        self.watched.retain(|block| Arc::strong_count(block) > 1);
        self.prune_at = (self.watched.len() * 2).max(REGISTER_WAKE);
        shared.shed_spares();
    }

    #[cfg(not(rebound_loom))]
    fn into_watched(self) -> Vec<Arc<Block<T>>> {
        self.watched
    }
}

/// How long without traffic before the redeliverer goes idle (64 ms, in
/// nanoseconds).
#[cfg(not(rebound_loom))]
const IDLE_AFTER_NS: u64 = 64_000_000;

/// The redeliverer thread, until the queue is torn down; then it hands back
/// the blocks it watched.
///
/// While the queue sees traffic it wakes every [`UPKEEP_INTERVAL`], when a
/// lease may have ended, and when a rolled-back message falls due (at most
/// once per [`INBOX_INTERVAL_NS`]): it refreshes the recent clock and runs a
/// pass if rollbacks or enough new blocks are waiting or a lease may have
/// ended. After [`IDLE_AFTER_NS`] without traffic it stops the upkeep and
/// sleeps until the next possible lease end, new work, or a kick.
/// Not under `cfg(rebound_loom)`: there the models run the passes.
#[cfg(not(rebound_loom))]
pub(crate) fn run<T: Send + Sync + 'static>(shared: Arc<Shared<T>>) -> Vec<Arc<Block<T>>> {
    let mut redeliverer = Redeliverer::new();
    let mut next_pass = 0;
    let mut busy = true;
    let mut quiet_since = 0;
    let mut woken = false;
    let mut traffic = shared.counters.traffic();
    loop {
        let at = now();
        let now = if busy {
            shared.clock.refresh(at)
        } else {
            shared.clock.nanos(at)
        };
        if now >= next_pass || shared.inbox.has_work() {
            next_pass = redeliverer.redeliver_due(&shared, now);
        }
        if busy {
            let seen = shared.counters.traffic();
            if seen != traffic || std::mem::take(&mut woken) {
                quiet_since = now;
            }
            traffic = seen;
            if now.saturating_sub(quiet_since) >= IDLE_AFTER_NS && shared.clock.stop_upkeep(now) {
                busy = false;
                redeliverer.shed(&shared);
            }
        }
        // While idle nobody reads the recent clock (it is stale), so only
        // a busy redeliverer wakes for a redelivery falling due.
        let until = if busy {
            let refresh = redeliverer
                .next_redelivery_due(now)
                .map_or(u64::MAX, |due| {
                    due.max(now.saturating_add(INBOX_INTERVAL_NS))
                });
            clock::add(now, UPKEEP_INTERVAL).min(next_pass).min(refresh)
        } else {
            next_pass
        };
        match shared.inbox.sleep(&shared.clock, until, !busy) {
            None => break,
            Some(true) => {
                // Traffic counts from the next reading: `now` is from before
                // the sleep, maybe a long idle one.
                busy = true;
                woken = true;
            }
            Some(false) => {}
        }
    }
    redeliverer.into_watched()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A redelivery due at 35 ms is put back in one pass, one due at 1.1 ms
    /// in a later pass: after the second falls due, the first is still
    /// remembered (the redeliverer wakes for it to refresh the clock).
    #[test]
    fn a_later_pass_does_not_forget_an_earlier_redelivery_falling_due() {
        let mut due = FallingDue::default();
        due.push(35_000_000);
        assert_eq!(due.next_after(1_000_000), Some(35_000_000));
        due.push(1_100_000);
        assert_eq!(due.next_after(1_000_000), Some(1_100_000));
        assert_eq!(due.next_after(2_000_000), Some(35_000_000));
        assert_eq!(due.next_after(35_000_000), None);
    }

    #[test]
    fn rounding_up_to_the_batch_span_is_never_early_and_saturates() {
        assert_eq!(round_up_to_span(1), BATCH_SPAN_NS);
        assert_eq!(round_up_to_span(BATCH_SPAN_NS), BATCH_SPAN_NS);
        assert_eq!(round_up_to_span(u64::MAX - 1), u64::MAX - 1);
    }
}
