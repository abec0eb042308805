//! Where the queue calls its journal: produce, claim, settle, drain, and
//! the last handle's teardown.

use super::format;
use super::upkeep;
use super::writer::Journal;
use crate::dead_letter::DeadLetterReason;
use crate::error::ProduceError;
use crate::id::MessageId;
use crate::shared::Shared;
use crate::stats::Counter;
use crate::state::Tag;
use crate::sync::{PlainMutex, lock_plain};
use std::iter;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A queue's journal, with what the queue needs of its payload type.
pub(crate) struct Attached<T> {
    pub(crate) journal: Arc<Journal>,
    /// `Payload::encode`, captured where `T: Payload` is known.
    pub(crate) encode: fn(&T, &mut Vec<u8>),
    pub(crate) upkeep: PlainMutex<Option<JoinHandle<()>>>,
}

impl<T> Attached<T> {
    /// Stops the upkeep thread, and syncs what `Interval` has not yet.
    pub(crate) fn shutdown(&self) {
        upkeep::shutdown(&self.journal);
        if let Some(thread) = lock_plain(&self.upkeep).take() {
            let _ = thread.join();
        }
        if matches!(self.journal.config.durability, super::Durability::Interval(_)) {
            self.journal.sync_now();
        }
    }

    /// Journals a holder's settle of delivery `attempt` of `id` into `to`;
    /// `due` is a rollback's due time (queue clock).
    pub(crate) fn settled(&self, id: MessageId, attempt: u32, to: Tag, due: u64) {
        let j = &self.journal;
        match to {
            Tag::Acked => j.acked(id),
            Tag::RolledBack => j.rolled_back(id, attempt, due),
            Tag::DeadRejected => j.dead(id, attempt, DeadLetterReason::Rejected, true),
            Tag::DeadMaxAttempts => j.dead(id, attempt, DeadLetterReason::MaxAttempts, true),
            _ => {}
        }
    }
}

impl<T: Send + Sync + 'static> Shared<T> {
    /// Produces `values` on a journaled queue: ready now, or at `due`
    /// (`(due, now)` on the queue clock) for a single delayed value. Their
    /// records are written before this returns, and before any record about
    /// them can be (see `Journal::produce`).
    pub(crate) fn produce_journaled(
        this: &Arc<Self>,
        attached: &Attached<T>,
        values: Vec<T>,
        due: Option<(u64, u64)>,
    ) -> Result<Vec<MessageId>, ProduceError<Vec<T>>> {
        let n = values.len();
        if !this.admit(n as u64) {
            return Err(ProduceError::Closed(values));
        }
        let delayed = due.filter(|&(due, now)| due > now).map(|(due, _)| due);
        let due_ms = delayed.map_or(0, |due| attached.journal.wall_of(due));
        let mut records = Vec::with_capacity(n * (format::PRODUCE_FIELDS + format::FRAME + 16));
        let starts: Vec<usize> = values
            .iter()
            .map(|v| format::produce_frame(&mut records, due_ms, |out| (attached.encode)(v, out)))
            .collect();
        let mut ids = Vec::with_capacity(n);
        let produced = attached.journal.produce(records, &starts, values, |values, id| {
            let mut each = |i| {
                id(i);
                ids.push(i);
            };
            match delayed {
                Some(due) => {
                    for value in values {
                        Shared::new_block(this, &mut iter::once(value), 1, due, 1, false, &mut each);
                    }
                    this.waiters.notify(true);
                }
                None => {
                    Shared::push_fresh(this, values.into_iter(), this.recent_ns(), each);
                    this.waiters.notify_after_publish(n > 1);
                }
            }
        });
        match produced {
            Ok(()) => Ok(ids),
            Err((values, error)) => {
                this.counters.sub(Counter::Produced, n as u64);
                this.settled();
                Err(ProduceError::Journal(values, error.kind()))
            }
        }
    }
}
