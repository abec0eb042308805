//! What a grouped message does on its way in and out: `produce_in_group`,
//! a grouped dead letter's redrive, `release_group`, and the hand-over to
//! a group's next head when its head is gone. The groups themselves are
//! `groups.rs`'s.

use crate::block::Block;
use crate::chain::Grouped;
use crate::error::ProduceError;
use crate::groups::{Next, Placed, SlotAt};
use crate::id::MessageId;
use crate::id_table::Own;
use crate::shared::Shared;
use crate::state::Unblock;
use crate::stats::Counter;
use crate::sync::{Arc, SpinWait, lock, pin};
use std::iter;

impl<T: Send + Sync + 'static> Shared<T> {
    /// Writes a grouped message into the producers' chain, blocked (not
    /// claimable until its group makes it the head), stamped `now`, and
    /// returns where.
    pub(crate) fn push_blocked(this: &Arc<Self>, own: Own, value: T, now: u64) -> SlotAt {
        let mut grouped = Grouped {
            own: Some(own),
            at: SlotAt::NONE,
        };
        Shared::push_fresh(this, iter::once(value), now, &mut grouped, |_| {});
        debug_assert!(!grouped.at.is_none());
        grouped.at
    }

    /// Puts `value` into group `key`: its head if the group is idle, else
    /// behind the group's other messages. `redriven`: the id of a grouped
    /// dead letter being redriven (see `Groups::enter`); otherwise an id is
    /// minted.
    pub(crate) fn produce_in_group(
        this: &Arc<Self>,
        key: u64,
        value: T,
        redriven: Option<MessageId>,
    ) -> Result<MessageId, ProduceError<T>> {
        #[cfg(feature = "journal")]
        if let Some(attached) = &this.journal {
            return Self::produce_in_group_journaled(this, attached, key, value, redriven);
        }
        if !this.admit(1) {
            return Err(ProduceError::Closed(value));
        }
        let id = redriven.unwrap_or_else(|| this.mint_grouped());
        let group = Some(key);
        let now = this.recent_ns();
        let at = Self::push_blocked(this, Own { id, group }, value, now);
        let placed = this
            .groups
            .enter(key, now, redriven.is_some(), |place| place(at, id));
        Self::placed(this, key, at, placed);
        if redriven.is_some() {
            this.counters.bump(Counter::Redriven, 1);
        }
        Ok(id)
    }

    /// After a grouped message at `at` entered group `key`: a head is
    /// unblocked (after the group's unlock: nothing else of the group can
    /// be unblocked before this head is gone), a message behind one is
    /// counted as waiting.
    pub(crate) fn placed(this: &Arc<Self>, key: u64, at: SlotAt, placed: Placed) {
        match placed {
            Placed::Head => Self::unblock(this, key, at),
            Placed::Waits => this.counters.bump(Counter::GroupedWaited, 1),
        }
    }

    /// Puts `values` into group `key`, in order, accepted whole or not at
    /// all: one admission and one lock of the group for the batch.
    pub(crate) fn produce_batch_in_group(
        this: &Arc<Self>,
        key: u64,
        values: Vec<T>,
    ) -> Result<Vec<MessageId>, ProduceError<Vec<T>>> {
        #[cfg(feature = "journal")]
        if let Some(attached) = &this.journal {
            return Self::produce_batch_in_group_journaled(this, attached, key, values);
        }
        if !this.admit(values.len() as u64) {
            return Err(ProduceError::Closed(values));
        }
        let group = Some(key);
        let now = this.recent_ns();
        let written: Vec<(MessageId, SlotAt)> = values
            .into_iter()
            .map(|value| {
                let id = this.mint_grouped();
                (id, Self::push_blocked(this, Own { id, group }, value, now))
            })
            .collect();
        let placed: Vec<Placed> = this.groups.enter(key, now, false, |place| {
            written.iter().map(|&(id, at)| place(at, id)).collect()
        });
        for (&(_, at), placed) in written.iter().zip(placed) {
            Self::placed(this, key, at, placed);
        }
        Ok(written.into_iter().map(|(id, _)| id).collect())
    }

    /// Releases group `key` if a dead letter holds it (see
    /// `Queue::release_group`).
    pub(crate) fn release_group(this: &Arc<Self>, key: u64) -> bool {
        let released = |_letter| {
            #[cfg(feature = "journal")]
            if let Some(attached) = &this.journal {
                attached.journal.released(_letter);
            }
        };
        // Under the dead letters' lock, as a dead head marks its group held
        // (see `Shared::dead_letter_payload`): a group is found held only
        // once its letter is on the list.
        let letters = lock(&this.dead_letters);
        let (held, next) = this.groups.release(key, this.recent_ns(), released);
        drop(letters);
        if let Next::Unblock(at) = next {
            this.counters.bump(Counter::GroupedStarted, 1);
            Self::unblock(this, key, at);
        }
        held
    }

    /// The head in `slot` of `block`, of group `key`, left the queue
    /// (acked, or dead if `dead`): the message linked behind it becomes the
    /// head, without a lock. With nothing linked, the group goes idle,
    /// unless a producer is linking one meanwhile (its swap of the group's
    /// tail made the exchange fail): this waits for the link. A dead head
    /// of a queue that holds its groups holds its group, under the lock.
    pub(crate) fn head_gone(this: &Arc<Self>, block: &Block<T>, slot: usize, key: u64, dead: bool) {
        // Pinned: teardown drops what a settle may still reach (the next
        // message's block, the group) only through the epoch, after every
        // settle pinned before its `torn_down` is done.
        let _guard = pin();
        if this.groups.torn_down() {
            return;
        }
        let at = SlotAt::new(block, slot);
        if dead && this.config.hold_groups {
            this.groups.hold(key, at, this.message_id(block, slot));
            return;
        }
        // SAFETY: the group lives while its head is not gone, and this is
        // the head's last holder: only this call ends the head (a sweep
        // frees a group only once it is idle, and teardown only through
        // the epoch).
        let group = unsafe { &*block.ids.cell(slot) };
        let mut next = block.ids.next(slot);
        if next.is_none() {
            if group.idle_after(at) {
                return;
            }
            let spin = SpinWait::new();
            loop {
                next = block.ids.next(slot);
                if !next.is_none() {
                    break;
                }
                spin.snooze();
            }
        }
        group.started(this.recent_ns());
        this.counters.bump(Counter::GroupedStarted, 1);
        Self::unblock(this, key, next);
    }

    /// Makes the message at `at`, now the head of group `key`, claimable:
    /// in place, or (its block's cursor passed it) written again into the
    /// chain, taking its place in the group, until a write stays in place.
    pub(crate) fn unblock(this: &Arc<Self>, key: u64, mut at: SlotAt) {
        loop {
            // SAFETY: `at` is blocked or skipped, never claimed: its block
            // holds its prepaid reference (and teardown drops blocks only
            // through the epoch; see `head_gone`).
            let (block, slot) = unsafe { at.get::<T>() };
            match block.slot(slot).state.unblock() {
                Unblock::InPlace => {
                    this.waiters.notify_after_publish(false);
                    return;
                }
                Unblock::Gone => return,
                Unblock::Move => {
                    // SAFETY: `unblock` moved the slot from `Skipped` to
                    // `Moved`, which only this caller could do: the payload
                    // is this caller's to take, once.
                    let value = unsafe { block.slot(slot).take() };
                    let own = Own {
                        id: this.message_id(block, slot),
                        group: Some(key),
                    };
                    let moved = this.groups.moved(key, at, || {
                        Self::push_blocked(this, own, value, this.recent_ns())
                    });
                    // SAFETY: `Moved` is at attempt 1: its prepaid
                    // reference is released here, once (teardown releases
                    // only those of slots at attempt 0).
                    unsafe { release_one_prepaid(block) };
                    match moved {
                        Some(new) => at = new,
                        None => return,
                    }
                }
            }
        }
    }
}

/// Releases one prepaid reference of `block` (that of a message moved on).
///
/// # Safety
/// The caller owns that reference: it moved the message out of its slot.
unsafe fn release_one_prepaid<T>(block: &Block<T>) {
    // SAFETY: by the contract the count includes a reference the caller
    // owns, released once here.
    unsafe { crate::sync::Arc::decrement_strong_count(block as *const Block<T>) };
}
