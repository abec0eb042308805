//! Where the queue calls its journal: produce, claim, settle, drain, and
//! the last handle's teardown.

use super::format;
use super::upkeep;
use super::writer::{Journal, with_buffer};
use crate::dead_letter::DeadLetterReason;
use crate::error::ProduceError;
use crate::id::MessageId;
use crate::id_table::Own;
use crate::shared::Shared;
use crate::state::Tag;
use crate::stats::Counter;
use crate::sync::Arc;
use crate::sync::{PlainMutex, lock_plain};
use std::iter;
use std::thread::JoinHandle;

/// A queue's journal, with what the queue needs of its payload type.
pub(crate) struct Attached<T> {
    pub(crate) journal: std::sync::Arc<Journal>,
    /// `Payload::encode`, captured where `T: Payload` is known.
    pub(crate) encode: fn(&T, &mut Vec<u8>),
    pub(crate) upkeep: PlainMutex<Option<JoinHandle<()>>>,
}

impl<T> Attached<T> {
    /// Stops the upkeep thread, syncs what `Interval` has not yet, and
    /// closes the journal (see `Journal::close`).
    pub(crate) fn shutdown(&self) {
        upkeep::shutdown(&self.journal);
        if let Some(thread) = lock_plain(&self.upkeep).take() {
            let _ = thread.join();
        }
        if matches!(
            self.journal.config.durability,
            super::Durability::Interval(_)
        ) {
            self.journal.sync_now();
        }
        self.journal.close();
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
    /// [`Self::produce_journaled`], out of line, so that the in-memory
    /// path keeps only the branch that leads here.
    #[cold]
    #[inline(never)]
    pub(crate) fn produce_journaled_cold(
        this: &Arc<Self>,
        value: T,
        due: Option<(u64, u64)>,
        own: Option<MessageId>,
    ) -> Result<MessageId, ProduceError<T>> {
        match &this.journal {
            Some(attached) => Self::produce_journaled(this, attached, value, due, own),
            None => Err(ProduceError::Closed(value)),
        }
    }

    /// Produces `value` on a journaled queue: ready now, or at `due`
    /// (`(due, now)` on the queue clock). Its record is written before
    /// this returns, and before any record about it can be (see
    /// `Journal::produce`). Its id is `own` if given (marked in its record
    /// as an id of its own, which the dedup map takes back at open).
    pub(crate) fn produce_journaled(
        this: &Arc<Self>,
        attached: &Attached<T>,
        value: T,
        due: Option<(u64, u64)>,
        own: Option<MessageId>,
    ) -> Result<MessageId, ProduceError<T>> {
        let delayed = due.filter(|&(due, now)| due > now).map(|(due, _)| due);
        let due_ms = delayed.map_or(0, |due| attached.journal.wall_of(due));
        with_buffer(|records| {
            // The payload's own code first: if it panics, nothing is
            // counted or published yet.
            format::produce_frame(records, due_ms, |out| (attached.encode)(&value, out));
            if !this.admit(1) {
                return Err(ProduceError::Closed(value));
            }
            let mut got = MessageId::PLACEHOLDER;
            let produced = attached.journal.produce(
                records,
                &[0],
                own.map_or(0, |_| format::OWN_ID),
                value,
                |value, id| {
                    Self::publish(this, iter::once(value), delayed, own, &mut |i| {
                        id(i);
                        got = i;
                    });
                },
            );
            this.after_journaled(produced.map(|()| got), 1, delayed.is_some())
        })
    }

    /// `Shared::produce_in_group` on a journaled queue: the record (its
    /// payload led by the group key) is written with the group locked, so
    /// the records of one group follow its order, and before the message
    /// can be claimed if it is the head.
    pub(crate) fn produce_in_group_journaled(
        this: &Arc<Self>,
        attached: &Attached<T>,
        key: u64,
        value: T,
        redriven: Option<MessageId>,
    ) -> Result<MessageId, ProduceError<T>> {
        with_buffer(|records| {
            grouped_frame(records, attached, key, &value);
            if !this.admit(1) {
                return Err(ProduceError::Closed(value));
            }
            let id = redriven.unwrap_or_else(|| this.mint_grouped());
            let now = this.recent_ns();
            let mut placed = None;
            let produced = this.groups.enter(key, now, redriven.is_some(), |place| {
                let journal = &attached.journal;
                journal.produce(records, &[0], format::GROUPED, value, |value, each| {
                    each(id);
                    let group = Some(key);
                    let at = Self::push_blocked(this, Own { id, group }, value, now);
                    placed = Some((at, place(at, id)));
                })
            });
            // After the group's unlock, as in `Shared::produce_in_group`.
            if let Some((at, placed)) = placed {
                Self::placed(this, key, at, placed);
            }
            if produced.is_ok() && redriven.is_some() {
                this.counters.bump(Counter::Redriven, 1);
            }
            this.after_journaled(produced.map(|()| id), 1, false)
        })
    }

    /// `Shared::produce_batch_in_group` on a journaled queue, as
    /// [`Self::produce_in_group_journaled`].
    pub(crate) fn produce_batch_in_group_journaled(
        this: &Arc<Self>,
        attached: &Attached<T>,
        key: u64,
        values: Vec<T>,
    ) -> Result<Vec<MessageId>, ProduceError<Vec<T>>> {
        let n = values.len();
        with_buffer(|records| {
            let starts: Vec<usize> = values
                .iter()
                .map(|v| grouped_frame(records, attached, key, v))
                .collect();
            if !this.admit(n as u64) {
                return Err(ProduceError::Closed(values));
            }
            let now = this.recent_ns();
            let mut ids = Vec::with_capacity(n);
            let mut placed = Vec::with_capacity(n);
            let produced = this.groups.enter(key, now, false, |place| {
                let journal = &attached.journal;
                journal.produce(records, &starts, format::GROUPED, values, |values, each| {
                    for value in values {
                        let id = this.mint_grouped();
                        each(id);
                        ids.push(id);
                        let group = Some(key);
                        let at = Self::push_blocked(this, Own { id, group }, value, now);
                        placed.push((at, place(at, id)));
                    }
                })
            });
            for (at, placed) in placed {
                Self::placed(this, key, at, placed);
            }
            this.after_journaled(produced.map(|()| ids), n, false)
        })
    }

    /// [`Self::produce_journaled`] for a batch, ready now, accepted whole or
    /// not at all.
    pub(crate) fn produce_journaled_batch(
        this: &Arc<Self>,
        attached: &Attached<T>,
        values: Vec<T>,
    ) -> Result<Vec<MessageId>, ProduceError<Vec<T>>> {
        let n = values.len();
        with_buffer(|records| {
            let starts: Vec<usize> = values
                .iter()
                .map(|v| format::produce_frame(records, 0, |out| (attached.encode)(v, out)))
                .collect();
            if !this.admit(n as u64) {
                return Err(ProduceError::Closed(values));
            }
            let mut ids = Vec::with_capacity(n);
            let produced = attached
                .journal
                .produce(records, &starts, 0, values, |values, id| {
                    Self::publish(this, values.into_iter(), None, None, &mut |i| {
                        id(i);
                        ids.push(i);
                    });
                });
            this.after_journaled(produced.map(|()| ids), n, false)
        })
    }

    /// Puts journaled values into the queue (under the journal's lock).
    fn publish(
        this: &Arc<Self>,
        values: impl ExactSizeIterator<Item = T>,
        delayed: Option<u64>,
        own: Option<MessageId>,
        each: &mut impl FnMut(MessageId),
    ) {
        match delayed {
            Some(due) => {
                let mut own = own;
                for value in values {
                    let own = own.take();
                    Shared::new_block(this, &mut iter::once(value), 1, due, 1, false, own, each);
                }
            }
            None => Shared::push_fresh(this, values, this.recent_ns(), own, each),
        }
    }

    /// After the journal's lock is released: wakes consumers, or undoes the
    /// admission of values the journal refused.
    fn after_journaled<R, V>(
        &self,
        produced: Result<R, (V, std::io::Error)>,
        n: usize,
        delayed: bool,
    ) -> Result<R, ProduceError<V>> {
        match produced {
            Ok(r) => {
                // Not under the journal's lock: a consumer registering as a
                // sleeper holds the sleepers' lock while its second poll may
                // claim, and a claim takes the journal's lock. A delayed
                // message may need a sleeper's shorter timeout.
                self.waiters.notify(delayed || n > 1);
                Ok(r)
            }
            Err((values, error)) => {
                self.counters.sub(Counter::Produced, n as u64);
                self.settled();
                Err(ProduceError::Journal(values, error.kind()))
            }
        }
    }
}

/// Starts the produce record of a message of group `key` (the key, then
/// the payload; see `format::GROUPED`). Returns where it starts.
fn grouped_frame<T>(records: &mut Vec<u8>, attached: &Attached<T>, key: u64, value: &T) -> usize {
    format::produce_frame(records, 0, |out| {
        out.extend_from_slice(&key.to_le_bytes());
        (attached.encode)(value, out);
    })
}
