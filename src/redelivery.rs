//! The redeliverer: one pure pass, [`Redeliverer::redeliver_due`], and the
//! thread that loops it.
//!
//! A pass (1) reinserts rolled-back messages handed over through the
//! [`Inbox`](crate::inbox::Inbox), with the due time their holder computed; (2) when the earliest
//! possible lease deadline has come, scans the blocks that may hold claims
//! and expires those whose lease ran out; (3) forgets blocks nobody else
//! references any more. Reinserted messages go into the index as batches of
//! references, one batch per 100 microseconds of due time.

use crate::batch::{Batch, MessageRef, RefBatch, SPAN_NS, round_up_to_span};
use crate::block::{Block, Key};
use crate::block_pool::REGISTER_WAKE;
use crate::clock;
use crate::clock::UPKEEP_INTERVAL;
use crate::inbox::INBOX_INTERVAL_NS;
use crate::retry_budget::Pacer;
use crate::shared::Shared;
use crate::state::{Expire, MAX_TICK_SPAN, Reinsert, TICK_MASK, tick_reached};
use crate::stats::Counter;
use crate::sync::Arc;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The redeliverer's own state: the blocks it watches for expired leases.
pub(crate) struct Redeliverer<T> {
    /// Every block that may hold a claimed message.
    watched: Vec<Arc<Block<T>>>,
    /// No lease can end before this tick: every claim seen in the last scan
    /// ends later, and every claim made since ends a full lease after it.
    next_scan: u64,
    /// Prune `watched` when it grows past this.
    prune_at: usize,
    rolled_back: Vec<MessageRef<T>>,
    ready: Vec<MessageRef<T>>,
    /// Deferred messages of this pass, which the retry budget lets by.
    deferred: Vec<MessageRef<T>>,
    /// Blocks the last scan found dead, on their way to `BlockPool::recycle`.
    dead: Vec<Arc<Block<T>>>,
    /// The due times of the redelivery batches put into the index that may
    /// not have fallen due yet (see [`Self::next_redelivery_due`]).
    falling_due: FallingDue,
    /// The retry budget's bookkeeping, for a queue that has one: every
    /// redelivery passes through it on its way to the index.
    pacer: Option<Pacer<T>>,
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
            rolled_back: Vec::new(),
            ready: Vec::new(),
            deferred: Vec::new(),
            dead: Vec::new(),
            falling_due: FallingDue::default(),
            pacer: None,
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
        shared.inbox.take(now, &mut self.rolled_back);
        shared.blocks.take(&mut self.watched, scan);
        for message in self.rolled_back.drain(..) {
            let state = &message.block.slot(message.slot as usize).state;
            if let Reinsert::Pending { attempt, deferred } = state.transition_to_pending() {
                // A defer is not a redelivery: the retry budget lets it by.
                let to = if deferred {
                    &mut self.deferred
                } else {
                    &mut self.ready
                };
                to.push(MessageRef { attempt, ..message });
            }
        }
        if scan || self.watched.len() >= self.prune_at {
            self.scan(shared, now, now_tick, scan);
        }
        let paced = self.pace(shared, now);
        self.ready.append(&mut self.deferred);
        self.reinsert(shared, now);
        let ahead = self.next_scan.wrapping_sub(now_tick) & TICK_MASK;
        clock::tick_nanos(clock::tick_floor(now) + ahead.min(MAX_TICK_SPAN)).min(paced)
    }

    /// Under a retry budget: hands the redeliveries in `ready` to the
    /// pacer and takes back those it lets through now. Returns when it
    /// lets more through (`u64::MAX`: without a budget, or nothing held).
    fn pace(&mut self, shared: &Shared<T>, now: u64) -> u64 {
        let Some(budget) = shared.config.retry_budget else {
            return u64::MAX;
        };
        let pacer = self.pacer.get_or_insert_with(|| Pacer::new(budget));
        for message in self.ready.drain(..) {
            pacer.hold(message);
        }
        let first_deliveries = shared.counters.get(Counter::FirstClaims);
        let (throttled, next) = pacer.release(now, first_deliveries, &mut self.ready);
        if throttled > 0 {
            shared.counters.bump(Counter::Throttled, throttled);
        }
        next
    }

    /// When the next redelivery put back into the index falls due (after
    /// `now`), if any. A busy redeliverer wakes then (at most once per inbox
    /// interval) to refresh the recent clock: consumers polling with it see
    /// the message only then, and producers stamp later messages after it.
    pub(crate) fn next_redelivery_due(&mut self, now: u64) -> Option<u64> {
        self.falling_due.next_after(now)
    }

    /// Drops blocks only the watch list references and, if `expire`,
    /// expires every claim whose lease ended by `now_tick`.
    fn scan(&mut self, shared: &Shared<T>, now: u64, now_tick: u64, expire: bool) {
        let config = shared.config;
        let mut earliest = shared.deadline_tick(now, config.lease);
        // Leases timed from a recent reading that stood too long end that
        // much later (`clock::Lags`).
        let grace = |deadline: u64| shared.grace_ticks(deadline, now);
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
                // A journaled queue's Dead record for a last attempt that
                // expires must precede the letter's Drained record, and a
                // redrive's Produce record: the letter reaches the dead
                // letters when its stale holder lets go, which may be right
                // after the compare-exchange below, so the list stays locked
                // until the record is written.
                let _letters = last_attempt_journaled(shared, block, slot)
                    .then(|| crate::sync::lock(&shared.dead_letters));
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
                    Expire::DeadLettered { attempt } => {
                        #[cfg(feature = "journal")]
                        if let Some(attached) = &shared.journal {
                            attached.journal.dead(
                                shared.message_id(block, slot),
                                attempt,
                                crate::dead_letter::DeadLetterReason::MaxAttempts,
                                false,
                            );
                        }
                        #[cfg(not(feature = "journal"))]
                        let _ = attempt;
                        if block.ids.any() {
                            shared.own_id_settled(block, slot, crate::state::Tag::DeadMaxAttempts);
                        }
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
        shared.blocks.recycle(&mut self.dead);
        if expire {
            self.next_scan = earliest;
        }
        self.prune_at = (self.watched.len() * 2).max(REGISTER_WAKE);
    }

    /// Puts `ready` into the index, one batch per [`SPAN_NS`] of due
    /// time.
    ///
    /// Due times are first rounded up to a multiple of the span, so every
    /// message of a batch falls due at once: a batch whose head is due and
    /// the rest not would stay in every claim walk's way until it is
    /// (docs/design.md, "The redeliverer"). Never early; at most 100 us late.
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
            let span = first.ts / SPAN_NS;
            let key = Key {
                ts: first.ts,
                seq: shared.next_seq(),
            };
            if first.ts > now {
                self.falling_due.push(first.ts);
            }
            let mut entries = vec![first];
            while let Some(next) = rest.next_if(|m| m.ts / SPAN_NS == span) {
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
    fn shed(&mut self, shared: &Shared<T>) {
        // Index nodes and replaced tails, which hold blocks, are freed
        // through the epoch: move it on first, so that the frees waiting
        // for it run now (those in an idle thread's own bag wait for that
        // thread; a consumer hands its bag over when it parks).
        for _ in 0..4 {
            crate::sync::pin().flush();
        }
        shared.blocks.take(&mut self.watched, true);
        self.watched.retain(|block| Arc::strong_count(block) > 1);
        self.prune_at = (self.watched.len() * 2).max(REGISTER_WAKE);
        shared.blocks.shed_spares();
    }

    /// The blocks it watched, and those of the redeliveries the budget
    /// held back (for teardown to discard).
    fn into_watched(self) -> Vec<Arc<Block<T>>> {
        let mut blocks = self.watched;
        if let Some(pacer) = self.pacer {
            blocks.extend(pacer.into_held().map(|message| message.block));
        }
        blocks
    }
}

/// How long without traffic before the redeliverer goes idle (64 ms, in
/// nanoseconds).
const IDLE_AFTER_NS: u64 = 64_000_000;

/// The redeliverer thread, until the queue is torn down; then it hands back
/// the blocks it watched.
///
/// While the queue sees traffic it wakes every [`UPKEEP_INTERVAL`], when a
/// lease may have ended, and when a rolled-back message falls due (at most
/// once per [`INBOX_INTERVAL_NS`]): it refreshes the recent clock and runs a
/// pass if rollbacks or enough new blocks are waiting or a lease may have
/// ended. After [`IDLE_AFTER_NS`] without traffic it stops the upkeep and
/// sleeps until the next possible lease end, new work, or a kick. Busy or
/// idle, it also wakes the waiting tasks at the times they asked for
/// (`Inbox::wake_tasks_at`, feature `async`).
/// Not started in the loom world: there the models run the passes.
pub(crate) fn run<T: Send + Sync + 'static>(shared: Arc<Shared<T>>) -> Vec<Arc<Block<T>>> {
    let mut redeliverer = Redeliverer::new();
    let mut next_pass = 0;
    let mut busy = true;
    let mut quiet_since = 0;
    let mut woken = false;
    let mut traffic = shared.counters.traffic();
    loop {
        let at = shared.clock.now();
        let now = if busy {
            shared.clock.refresh(at)
        } else {
            shared.clock.nanos(at)
        };
        // Tasks have no timer: wake them when a time one waits for comes.
        #[cfg(feature = "async")]
        if shared.inbox.take_tasks_due(now) {
            shared.waiters.notify_tasks();
        }
        let has_work = shared.blocks.waiting() >= REGISTER_WAKE || shared.inbox.has_rolled_back();
        if now >= next_pass || has_work {
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
                shared.groups.sweep();
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
        match shared
            .inbox
            .sleep(&shared.clock, &shared.blocks, until, !busy)
        {
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

/// Whether the message in `slot` of `block` is held on its last allowed
/// attempt in a journaled queue: its expiry would dead-letter it.
#[inline]
fn last_attempt_journaled<T>(shared: &Shared<T>, block: &Block<T>, slot: usize) -> bool {
    #[cfg(feature = "journal")]
    if shared.journal.is_some() {
        let word = block.slot(slot).state.load();
        return word.tag() == crate::state::Tag::Claimed
            && word.attempt() >= shared.config.max_attempts;
    }
    let _ = (shared, block, slot);
    false
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
        assert_eq!(round_up_to_span(1), SPAN_NS);
        assert_eq!(round_up_to_span(SPAN_NS), SPAN_NS);
        assert_eq!(round_up_to_span(u64::MAX - 1), u64::MAX - 1);
    }

    /// A lease of 1 s or more is timed from the recent clock reading. With
    /// the thread that refreshes it off the CPU, the reading ages: a claim
    /// made 300 ms into such a stall must still hold its lease for the whole
    /// second after the claim (the stall is in the lag log, and the expiry
    /// gives it back).
    #[test]
    fn a_lease_timed_from_a_stale_reading_is_not_cut_short() {
        use crate::Queue;
        use std::thread;
        use std::time::Duration;
        let lease = Duration::from_secs(1);
        let q: Queue<u32> = Queue::builder().lease(lease).build();
        q.produce(1).unwrap();
        let stall = q.shared.inbox.stall();
        thread::sleep(Duration::from_millis(300));
        let claimed = std::time::Instant::now();
        let d = q.try_consume().unwrap();
        thread::sleep(Duration::from_millis(100));
        drop(stall);
        loop {
            let held = q.stats().expired == 0;
            let after = claimed.elapsed();
            if !held {
                assert!(after >= lease, "the lease ended early, before {after:?}");
                break;
            }
            assert!(after < lease * 5, "the lease never ended");
            thread::sleep(Duration::from_millis(5));
        }
        assert!(d.ack().is_err(), "the lease ended at last");
        let again = q.consume_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(again.attempt(), 2);
        again.ack().unwrap();
    }
}
