//! Opening a journaled queue: the messages the journal found go back into a
//! new queue, with their ids, attempts and due times.
//!
//! - Never delivered, due: in blocks of their own, keyed before anything
//!   produced after the open, in produce order, after the ones below that
//!   are due.
//! - Never delivered, due later: a block of one each, keyed at the due time.
//! - Delivered before (rolled back, or held when the process died): made
//!   `RolledBack` at their attempt and handed to the redeliverer, exactly
//!   as a rollback is; a held one is due at once. A held one on its last
//!   allowed attempt is dead-lettered instead (`DeadLetterReason::Crashed`).
//! - Dead letters not drained: back in the dead letters.

use super::format::{self, Phase};
use super::hooks::Attached;
use super::recovery::{self, OpenError};
use super::writer::{Entry, wall_ms};
use super::{JournalConfig, upkeep};

use crate::batch::{Batch, MessageRef, RefBatch};
use crate::block::{BLOCK_CAPACITY, Block, Key};
use crate::codec::Payload;
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::groups::SlotAt;
use crate::id::MessageId;
use crate::id_table::{IdTable, Own};
use crate::queue::Queue;
use crate::shared::{Config, Shared};
use crate::stats::Counter;
use crate::sync::Arc;
use crate::sync::{PlainMutex, lock, lock_plain};
use crate::teardown::teardown;
use std::time::Instant;

/// Opens the journal in `jconfig.dir` and the queue over it.
pub(crate) fn open<T: Payload + Send + Sync + 'static>(
    config: Config,
    jconfig: JournalConfig,
) -> Result<Queue<T>, OpenError> {
    let started = Instant::now();
    let found = recovery::open(jconfig)?;
    let journal = std::sync::Arc::new(found.journal);
    let attached = Attached {
        journal: std::sync::Arc::clone(&journal),
        encode: T::encode,
        upkeep: PlainMutex::new(None),
    };
    let shared = Shared::with_journal(config, None, teardown::<T>, Some(attached));
    journal.set_origin(shared.clock.precise());
    // A queue handle from here on: an error below tears it down.
    let queue = Queue { shared };
    let mut recovery = found.recovery;
    {
        // Not under the journal's lock: restoring a dead letter writes a
        // record.
        let segments = lock_plain(&journal.inner).segments.clone();
        let mut restore = Restore::new(&queue.shared);
        let corrupt = |entry: &Entry, reason| OpenError::Corrupt {
            path: journal.dir.clone(),
            offset: u64::from(entry.at),
            reason,
        };
        // In produce order: a group's members in its order.
        for (id, entry) in &found.messages {
            if let Phase::Holding { group } = entry.state.phase {
                // A drained letter holding its group: not a message.
                restore.holding(group, MessageId::from_bits(*id));
                continue;
            }
            let payload = recovery::payload_of(&segments, entry)
                .ok_or_else(|| corrupt(entry, "a live message's record is missing"))?;
            let id = MessageId::from_bits(*id);
            let (group, payload) = if entry.seq & format::GROUPED != 0 {
                let (key, payload) = format::split_group(payload)
                    .ok_or_else(|| corrupt(entry, "a grouped record without its group key"))?;
                (Some(key), payload)
            } else {
                (None, payload)
            };
            let value = T::decode(payload).map_err(|source| OpenError::Payload { id, source })?;
            let own = Own { id, group };
            match group {
                Some(key) => restore.grouped(key, own, *entry, value),
                None => restore.message(own, entry, value, &mut recovery),
            }
        }
        restore.groups(&mut recovery);
        restore.finish();
        let now_ns = queue.shared.clock.precise();
        let now_ms = wall_ms();
        for &(id, until_ms) in &found.windows {
            let left_ns = until_ms.saturating_sub(now_ms).saturating_mul(1_000_000);
            let until = now_ns.saturating_add(left_ns);
            queue.shared.dedup.windowed(MessageId::from_bits(id), until);
        }
    }
    Shared::open_first_block(&queue.shared);
    queue.spawn_redeliverer()?;
    let worker = std::sync::Arc::clone(&journal);
    let thread = std::thread::Builder::new()
        .name("rebound-journal".into())
        .spawn(move || upkeep::run(worker))
        .map_err(|e| OpenError::Build(crate::error::BuildError::Spawn(e.kind())))?;
    if let Some(attached) = &queue.shared.journal {
        *lock_plain(&attached.upkeep) = Some(thread);
    }
    recovery.dead_letters = lock(&queue.shared.dead_letters)
        .as_ref()
        .map_or(0, |l| l.len() as u64);
    recovery.elapsed = started.elapsed();
    *lock_plain(&journal.recovery) = Some(recovery);
    Ok(queue)
}

/// Puts restored messages into a queue not yet shared.
struct Restore<'a, T> {
    shared: &'a Arc<Shared<T>>,
    now_ns: u64,
    now_ms: u64,
    /// Never delivered and due, waiting to fill a block.
    fresh: Vec<(Own, T)>,
    /// Full blocks' worth of those, put into the index after `again`.
    blocks: Vec<Vec<(Own, T)>>,
    /// Delivered before: `(id, value, attempt, due)`.
    again: Vec<(Own, T, u32, u64)>,
    /// Grouped messages, by group, each group's in its order.
    grouped: std::collections::HashMap<u64, Vec<(Own, Entry, T)>>,
    /// Groups held by a drained dead letter, and its id.
    holding: std::collections::HashMap<u64, MessageId>,
    /// Groups to put back once every message has its slot: key, the dead
    /// letter holding it or the id of its head, and the messages waiting.
    groups: Vec<RestoredGroup<T>>,
    /// Where each restored group head went.
    heads: std::collections::HashMap<MessageId, SlotAt>,
}

/// A group to put back: its key, what leads it, and its messages waiting.
type RestoredGroup<T> = (u64, RestoredHead, Vec<(Own, T)>);

/// What leads a restored group.
#[derive(Clone, Copy)]
enum RestoredHead {
    /// A dead letter holding the group.
    Held(MessageId),
    /// A live message, restored as any.
    Live(MessageId),
}

impl<'a, T: Send + Sync + 'static> Restore<'a, T> {
    fn new(shared: &'a Arc<Shared<T>>) -> Self {
        Self {
            shared,
            now_ns: shared.clock.precise(),
            now_ms: wall_ms(),
            fresh: Vec::new(),
            blocks: Vec::new(),
            again: Vec::new(),
            grouped: std::collections::HashMap::new(),
            holding: std::collections::HashMap::new(),
            groups: Vec::new(),
            heads: std::collections::HashMap::new(),
        }
    }

    /// The queue-clock time of Unix time `due_ms` (now, if it has passed).
    fn due_ns(&self, due_ms: u64) -> u64 {
        // `now_ms` is rounded down: one more millisecond, never early.
        let ahead = due_ms.saturating_add(1).saturating_sub(self.now_ms);
        self.now_ns.saturating_add(ahead.saturating_mul(1_000_000))
    }

    /// Held at the crash on its last allowed attempt: it died with the
    /// process, and is a dead letter now.
    fn crashed(&self, entry: &Entry) -> bool {
        entry.state.phase == Phase::Held && entry.state.attempt >= self.shared.config.max_attempts
    }

    /// A grouped message, kept until its group is whole (see `groups`).
    fn grouped(&mut self, key: u64, own: Own, entry: Entry, value: T) {
        self.grouped
            .entry(key)
            .or_default()
            .push((own, entry, value));
    }

    /// A drained dead letter `id` holds `group` (see `Phase::Holding`).
    fn holding(&mut self, group: u64, id: MessageId) {
        self.holding.insert(group, id);
    }

    /// Puts the groups back. In each, dead letters ahead of the first live
    /// message stay dead letters (the first of them holds the group if the
    /// queue holds groups and it was not released; so does a drained letter
    /// that held it); the first live message is the head, restored as any
    /// message is (with its attempts); the rest wait behind it, as they did
    /// (never delivered: only a head is ever delivered).
    fn groups(&mut self, r: &mut super::Recovery) {
        let hold = self.shared.config.hold_groups;
        let holding = std::mem::take(&mut self.holding);
        let mut keys: Vec<u64> = self.grouped.keys().copied().collect();
        keys.extend(holding.keys().filter(|k| !self.grouped.contains_key(k)));
        for key in keys {
            let members = self.grouped.remove(&key).unwrap_or_default();
            let mut head = None;
            if let Some(&letter) = holding.get(&key) {
                if hold {
                    head = Some((letter, true));
                } else if let Some(attached) = &self.shared.journal {
                    // Opened without `hold_groups`: nothing holds a group.
                    attached.journal.released(letter);
                }
            }
            let mut waiting = Vec::new();
            for (own, entry, value) in members {
                let phase = entry.state.phase;
                let crashed = self.crashed(&entry);
                if crashed || matches!(phase, Phase::Dead { .. } | Phase::Released { .. }) {
                    if head.is_none() && hold && !matches!(phase, Phase::Released { .. }) {
                        head = Some((own.id, true));
                    }
                    self.message(own, &entry, value, r);
                } else if head.is_none() {
                    head = Some((own.id, false));
                    self.message(own, &entry, value, r);
                } else {
                    self.shared.counters.add(Counter::Produced, 1);
                    self.shared.counters.add(Counter::GroupedWaited, 1);
                    r.pending += 1;
                    waiting.push((own, value));
                }
            }
            if let Some((head, held)) = head {
                let head = if held {
                    RestoredHead::Held(head)
                } else {
                    RestoredHead::Live(head)
                };
                self.groups.push((key, head, waiting));
            }
        }
    }

    fn message(&mut self, own: Own, entry: &Entry, value: T, r: &mut super::Recovery) {
        let attempt = entry.state.attempt;
        let shared = self.shared;
        let id = own.id;
        shared.counters.add(Counter::Produced, 1);
        let crashed = self.crashed(entry);
        // Its id stays taken: given to `produce_with_id` (or redriven), or
        // minted by an earlier open's `produce`.
        if entry.seq & format::OWN_ID != 0 {
            let dead = crashed
                || matches!(
                    entry.state.phase,
                    Phase::Dead { .. } | Phase::Released { .. }
                );
            shared.dedup.restored(id, dead, self.now_ns);
        } else if let Some(minter) = id.minter() {
            shared.dedup.minted_before(minter);
        }
        match entry.state.phase {
            Phase::Waiting { due_ms } => {
                let due = self.due_ns(due_ms);
                if due > self.now_ns {
                    r.delayed += 1;
                } else {
                    r.pending += 1;
                }
                match (attempt, due > self.now_ns) {
                    (0, false) => self.push_fresh(own, value),
                    (0, true) => self.fresh_block(vec![(own, value)], due),
                    _ => self.again.push((own, value, attempt, due)),
                }
            }
            // A record never says this (the decoder refuses it), but a slot
            // restored at attempt 0 must be a fresh one: its prepaid
            // reference is its first claim's.
            Phase::Held if attempt == 0 => {
                r.pending += 1;
                self.push_fresh(own, value);
            }
            Phase::Held => {
                r.in_flight_at_crash += 1;
                if crashed {
                    r.dead_lettered_at_open += 1;
                    if let Some(attached) = &shared.journal {
                        attached
                            .journal
                            .dead(id, attempt, DeadLetterReason::Crashed, false);
                    }
                    self.dead(own, attempt, DeadLetterReason::Crashed, value);
                } else {
                    r.pending += 1;
                    self.again.push((own, value, attempt, self.now_ns));
                }
            }
            Phase::Dead { reason } | Phase::Released { reason } => {
                self.dead(own, attempt, reason, value);
            }
            // Not messages (`Found::windows`, never in `Found::messages`;
            // holds, taken apart by `open`).
            Phase::Window { .. } | Phase::Holding { .. } => {}
        }
    }

    fn dead(&self, own: Own, attempts: u32, reason: DeadLetterReason, payload: T) {
        self.shared.counters.add(Counter::DeadLettered, 1);
        if let Some(list) = lock(&self.shared.dead_letters).as_mut() {
            list.push(DeadLetter {
                id: own.id,
                attempts,
                reason,
                group: own.group.map(crate::GroupKey::from),
                payload,
            });
        }
    }

    /// A never-delivered message due now, into the next fresh block.
    fn push_fresh(&mut self, own: Own, value: T) {
        self.fresh.push((own, value));
        if self.fresh.len() == BLOCK_CAPACITY {
            self.flush_fresh();
        }
    }

    fn flush_fresh(&mut self) {
        if !self.fresh.is_empty() {
            let batch = std::mem::take(&mut self.fresh);
            self.blocks.push(batch);
        }
    }

    /// A block of messages never delivered, keyed at `ts` (0: before
    /// everything produced after the open), in the index.
    fn fresh_block(&mut self, messages: Vec<(Own, T)>, ts: u64) {
        let shared = self.shared;
        let (ids, values): (Vec<Own>, Vec<T>) = messages.into_iter().unzip();
        let block = self.restored_block(&ids, ts);
        let key = block.key();
        for (index, value) in values.into_iter().enumerate() {
            // SAFETY: the block is not shared yet and all its slots were
            // reserved for this thread by `Block::with_ids`; their timestamp
            // is the block's key.
            unsafe { block.slot(index).write(value, 0) };
        }
        self.note_heads(&block, &ids);
        shared.index.insert(key, Batch::Fresh(Arc::clone(&block)));
        shared.register(block);
    }

    /// A block of restored messages with ids `ids`, keyed at `ts`, its
    /// slots all reserved for this thread (not in the index yet).
    fn restored_block(&self, ids: &[Own], ts: u64) -> Arc<Block<T>> {
        let shared = self.shared;
        let key = Key {
            ts,
            seq: shared.next_seq(),
        };
        let len = ids.len();
        Block::with_ids(Arc::clone(shared), key, len, len, false, IdTable::with(ids))
    }

    /// Notes where the grouped messages among `ids` (in `block`, one per
    /// slot) went: the live ones are their groups' heads.
    fn note_heads(&mut self, block: &Block<T>, ids: &[Own]) {
        for (index, own) in ids.iter().enumerate() {
            if own.group.is_some() {
                self.heads.insert(own.id, SlotAt::new(block, index));
            }
        }
    }

    /// Puts the messages in: first those delivered before (the ones in
    /// progress at the crash were first in line), then the never-delivered
    /// ones in produce order; then the groups, their waiting messages
    /// blocked behind their heads.
    fn finish(mut self) {
        self.flush_fresh();
        self.put_back_again();
        for batch in std::mem::take(&mut self.blocks) {
            self.fresh_block(batch, 0);
        }
        for (key, head, waiting) in std::mem::take(&mut self.groups) {
            let (ids, values): (Vec<Own>, Vec<T>) = waiting.into_iter().unzip();
            let mut members = Vec::with_capacity(ids.len());
            for (chunk, values) in ids.chunks(BLOCK_CAPACITY).zip(chunks(values)) {
                let block = self.restored_block(chunk, 0);
                for (index, value) in values.into_iter().enumerate() {
                    // SAFETY: as in `fresh_block`.
                    unsafe { block.slot(index).write_blocked(value, 0) };
                    members.push(SlotAt::new(&block, index));
                }
                self.shared
                    .index
                    .insert(block.key(), Batch::Fresh(Arc::clone(&block)));
                self.shared.register(block);
            }
            let (head, held) = match head {
                RestoredHead::Held(letter) => (SlotAt::NONE, Some(letter)),
                RestoredHead::Live(id) => {
                    let head = self.heads.get(&id).copied();
                    debug_assert!(head.is_some(), "a restored head has a slot");
                    (head.unwrap_or(SlotAt::NONE), None)
                }
            };
            self.shared
                .groups
                .restore(key, head, held, &members, self.now_ns);
        }
    }

    /// Messages delivered before: due now, into the index; due later,
    /// through the redeliverer.
    fn put_back_again(&mut self) {
        let shared = self.shared;
        let again = std::mem::take(&mut self.again);
        let mut rest = again.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<_> = rest.by_ref().take(BLOCK_CAPACITY).collect();
            let len = chunk.len();
            let ids: Vec<Own> = chunk.iter().map(|m| m.0).collect();
            let block = self.restored_block(&ids, 0);
            let mut refs = Vec::with_capacity(len);
            let mut ready = Vec::new();
            for (index, (_, value, attempt, due)) in chunk.into_iter().enumerate() {
                let slot = block.slot(index);
                // SAFETY: as in `fresh_block`.
                unsafe { slot.write(value, 0) };
                let now = due <= self.now_ns;
                assert!(attempt > 0, "a restored redelivery is past attempt 0");
                slot.state.restore(attempt, now);
                // SAFETY: `Block::with_ids` gave this slot a prepaid
                // reference for its first claim from attempt 0, which it will
                // never have (it is at `attempt` > 0 now): released here,
                // once. `block` keeps the count above zero.
                unsafe { Arc::decrement_strong_count(Arc::as_ptr(&block)) };
                let message = MessageRef {
                    block: Arc::clone(&block),
                    slot: index as u32,
                    attempt,
                    ts: if now { 0 } else { due },
                };
                if now {
                    ready.push(message);
                } else {
                    refs.push(message);
                }
            }
            self.note_heads(&block, &ids);
            shared.register(block);
            // Due now: claimable as soon as `open` returns, before anything
            // produced after it (keyed at the origin, like the fresh ones).
            if !ready.is_empty() {
                let key = Key {
                    ts: 0,
                    seq: shared.next_seq(),
                };
                shared
                    .index
                    .insert(key, Batch::Redelivery(Box::new(RefBatch::new(ready))));
            }
            // Due later: the redeliverer puts them back when due.
            for message in refs {
                shared.hand_over_rollback(message);
            }
        }
    }
}

/// `values` in chunks of a block's capacity, in order.
fn chunks<T>(values: Vec<T>) -> impl Iterator<Item = Vec<T>> {
    let mut rest = values.into_iter().peekable();
    std::iter::from_fn(move || {
        rest.peek()?;
        Some(rest.by_ref().take(BLOCK_CAPACITY).collect())
    })
}
