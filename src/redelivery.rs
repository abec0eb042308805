//! The redeliverer: one pure pass, [`Redeliverer::redeliver_due`], and the
//! thread that loops it.
//!
//! A pass (1) reinserts rolled-back messages handed over through the
//! [`Inbox`], with the due time their holder computed; (2) when the earliest
//! possible lease deadline has come, scans the blocks that may hold claims
//! and expires those whose lease ran out; (3) forgets blocks nobody else
//! references any more. Reinserted messages go into the index as batches of
//! references, one batch per millisecond of due time.

use crate::batch::{Batch, MessageRef, RefBatch};
use crate::block::Block;
use crate::index::Key;
use crate::queue::Shared;
use crate::state::{Expire, Reinsert, tick_reached};
use crate::stats::Counter;
use crate::sync::{Arc, Condvar, Instant, Mutex, lock, now, wait};
use std::time::Duration;

/// The least time between two passes while rollbacks keep arriving, so that
/// they are reinserted in batches rather than one skiplist node each.
const MIN_PASS_INTERVAL: Duration = Duration::from_micros(500);
/// Wake the redeliverer to prune once this many new blocks are waiting.
const REGISTER_WAKE: usize = 256;
/// Nanoseconds per index batch of redelivered messages.
const BATCH_SPAN_NS: u64 = 1_000_000;

struct InboxState<T> {
    backtracked: Vec<MessageRef<T>>,
    blocks: Vec<Arc<Block<T>>>,
    /// The redeliverer waits on `cond` and wants a notification.
    sleeping: bool,
    stopped: bool,
}

/// What consumers and producers hand to the redeliverer.
pub(crate) struct Inbox<T> {
    state: Mutex<InboxState<T>>,
    cond: Condvar,
}

impl<T> Inbox<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(InboxState {
                backtracked: Vec::new(),
                blocks: Vec::new(),
                sleeping: false,
                stopped: false,
            }),
            cond: Condvar::new(),
        }
    }

    /// Hands over a rolled-back message; gives it back if the redeliverer is
    /// stopped (the queue is being torn down).
    pub(crate) fn push_backtracked(&self, message: MessageRef<T>) -> Result<(), MessageRef<T>> {
        let mut state = lock(&self.state);
        if state.stopped {
            return Err(message);
        }
        state.backtracked.push(message);
        if state.sleeping {
            state.sleeping = false;
            self.cond.notify_one();
        }
        Ok(())
    }

    /// Tells the redeliverer about a new block whose leases it must watch.
    pub(crate) fn register(&self, block: Arc<Block<T>>) {
        let mut state = lock(&self.state);
        if state.stopped {
            return;
        }
        state.blocks.push(block);
        if state.sleeping && state.blocks.len() >= REGISTER_WAKE {
            state.sleeping = false;
            self.cond.notify_one();
        }
    }

    fn take(&self, backtracked: &mut Vec<MessageRef<T>>, blocks: &mut Vec<Arc<Block<T>>>) {
        let mut state = lock(&self.state);
        std::mem::swap(&mut state.backtracked, backtracked);
        blocks.append(&mut state.blocks);
    }

    /// Stops the redeliverer and returns what was still waiting for it.
    pub(crate) fn stop(&self) -> (Vec<Arc<Block<T>>>, Vec<MessageRef<T>>) {
        let mut state = lock(&self.state);
        state.stopped = true;
        self.cond.notify_all();
        (std::mem::take(&mut state.blocks), std::mem::take(&mut state.backtracked))
    }

    /// Sleeps until `next` (forever with `None`), or until work arrives, but
    /// at least until `earliest`. Returns false once stopped.
    fn sleep(&self, earliest: Instant, next: Option<Instant>) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.stopped {
                return false;
            }
            let has_work = !state.backtracked.is_empty() || state.blocks.len() >= REGISTER_WAKE;
            let until = if has_work { Some(earliest) } else { next };
            let now = now();
            if until.is_some_and(|u| now >= u) {
                return true;
            }
            state.sleeping = !has_work;
            state = wait(&self.cond, state, until.map(|u| u - now));
            state.sleeping = false;
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
}

impl<T: Send + Sync + 'static> Redeliverer<T> {
    pub(crate) fn new() -> Self {
        Self { watched: Vec::new(), next_scan: 0, prune_at: REGISTER_WAKE, backtracked: Vec::new(), ready: Vec::new() }
    }

    /// One pass at time `now`. Returns when the next pass is needed at the
    /// latest (new work wakes it earlier).
    pub(crate) fn redeliver_due(&mut self, shared: &Shared<T>, now: Instant) -> Instant {
        let now_tick = shared.tick_floor(now);
        shared.inbox.take(&mut self.backtracked, &mut self.watched);
        for message in self.backtracked.drain(..) {
            let state = &message.block.slot(message.slot as usize).state;
            if let Reinsert::Pending { attempt } = state.transition_to_pending() {
                self.ready.push(MessageRef { attempt, ..message });
            }
        }
        let scan = tick_reached(self.next_scan, now_tick);
        if scan || self.watched.len() >= self.prune_at {
            self.scan(shared, now, now_tick, scan);
        }
        self.reinsert(shared);
        shared.tick_instant(now, now_tick, self.next_scan)
    }

    /// Drops blocks only the watch list references and, if `expire`,
    /// expires every claim whose lease ended by `now_tick`.
    fn scan(&mut self, shared: &Shared<T>, now: Instant, now_tick: u64, expire: bool) {
        let config = shared.config;
        let mut earliest = shared.deadline_tick(now, config.lease);
        let ready = &mut self.ready;
        self.watched.retain(|block| {
            // Only the watch list holds it: not in the index, not held by any
            // delivery or batch, so every message in it is final.
            if Arc::strong_count(block) == 1 {
                return false;
            }
            if !expire {
                return true;
            }
            for slot in 0..block.len() {
                match block.slot(slot).state.transition_to_expired(now_tick, config.max_attempts) {
                    Expire::NotClaimed => {}
                    Expire::NotDue { deadline } => {
                        if tick_reached(deadline, earliest) {
                            earliest = deadline;
                        }
                    }
                    Expire::Redeliver { attempt } => {
                        shared.counters.add(Counter::Expired, 1);
                        ready.push(MessageRef {
                            block: Arc::clone(block),
                            slot: slot as u32,
                            attempt,
                            ts: shared.due(now, config.backoff.delay(attempt)),
                        });
                    }
                    Expire::DeadLettered { .. } => {
                        // The old holder still holds it; its release moves
                        // the payload to the dead letters.
                        shared.counters.add(Counter::Expired, 1);
                        shared.counters.add(Counter::DeadLettered, 1);
                        shared.settled();
                    }
                }
            }
            true
        });
        if expire {
            self.next_scan = earliest;
        }
        self.prune_at = (self.watched.len() * 2).max(REGISTER_WAKE);
    }

    /// Puts `ready` into the index, one batch per millisecond of due time.
    fn reinsert(&mut self, shared: &Shared<T>) {
        if self.ready.is_empty() {
            return;
        }
        let count = self.ready.len() as u64;
        self.ready
            .sort_unstable_by_key(|m| (m.ts, m.block.message_number(m.slot as usize)));
        let mut rest = self.ready.drain(..).peekable();
        while let Some(first) = rest.next() {
            let span = first.ts / BATCH_SPAN_NS;
            let key = Key { ts: first.ts, seq: shared.next_seq() };
            let mut entries = vec![first];
            while let Some(next) = rest.next_if(|m| m.ts / BATCH_SPAN_NS == span) {
                entries.push(next);
            }
            shared.index.insert(key, Batch::Redelivery(RefBatch::new(entries)));
        }
        shared.counters.add(Counter::Redelivered, count);
        shared.waiters.notify(true);
    }

    fn into_watched(self) -> Vec<Arc<Block<T>>> {
        self.watched
    }
}

/// The redeliverer thread: passes until the queue is torn down, then hands
/// back the blocks it watched.
pub(crate) fn run<T: Send + Sync + 'static>(shared: Arc<Shared<T>>) -> Vec<Arc<Block<T>>> {
    let mut redeliverer = Redeliverer::new();
    loop {
        let start = now();
        let next = redeliverer.redeliver_due(&shared, start);
        if !shared.inbox.sleep(start + MIN_PASS_INTERVAL, Some(next)) {
            break;
        }
    }
    redeliverer.into_watched()
}
