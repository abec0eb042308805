//! What a grouped message does on its way in and out: `produce_in_group`,
//! a grouped dead letter's redrive, `release_group`, and the publish of a
//! group's next head. The groups themselves are `groups.rs`'s.

use crate::error::ProduceError;
use crate::groups::Placed;
use crate::id::MessageId;
use crate::id_table::Own;
use crate::shared::Shared;
use crate::stats::Counter;
use crate::sync::{Arc, lock};
use std::iter;

impl<T: Send + Sync + 'static> Shared<T> {
    /// Puts a message that became its group's head into the producers'
    /// chain (its id and group into its block's id table), and wakes a
    /// consumer. Not counted: it was admitted when it was produced.
    pub(crate) fn publish_grouped(this: &Arc<Self>, own: Own, value: T) {
        Self::push_grouped(this, own, value);
        this.waiters.notify_after_publish(false);
    }

    /// [`Self::publish_grouped`] without the wake-up (under the journal's
    /// lock, the caller wakes consumers after it).
    pub(crate) fn push_grouped(this: &Arc<Self>, own: Own, value: T) {
        Shared::push_fresh(this, iter::once(value), this.recent_ns(), Some(own), |_| {});
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
        let now = this.recent_ns();
        // Published after the group's lock is released: nothing else of the
        // group can be published before this head is settled (this call's
        // handle keeps teardown away meanwhile).
        let placed = this
            .groups
            .enter(key, now, redriven.is_some(), |place| place(id, value));
        if let Placed::Head(value) = placed {
            let group = Some(key);
            Self::publish_grouped(this, Own { id, group }, value);
        }
        if redriven.is_some() {
            this.counters.bump(Counter::Redriven, 1);
        }
        Ok(id)
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
        let now = this.recent_ns();
        let mut ids = Vec::with_capacity(values.len());
        // At most the first value is the head (if the group was idle); it
        // is published after the unlock, as in `produce_in_group`.
        let head = this.groups.enter(key, now, false, |place| {
            let mut head = None;
            for value in values {
                let id = this.mint_grouped();
                ids.push(id);
                if let Placed::Head(value) = place(id, value) {
                    head = Some((id, value));
                }
            }
            head
        });
        if let Some((id, value)) = head {
            let group = Some(key);
            Self::publish_grouped(this, Own { id, group }, value);
        }
        Ok(ids)
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
        let mut next = None;
        let held = this
            .groups
            .release(key, this.recent_ns(), released, |own, value| {
                next = Some((own, value));
            });
        drop(letters);
        if let Some((own, value)) = next {
            Self::publish_grouped(this, own, value);
        }
        held
    }
}
