//! The ordered index of pending messages: a crossbeam-skiplist of batches
//! keyed by `(timestamp, sequence)`.
//!
//! Keys are unique by construction (the sequence comes from a per-queue
//! counter), because `SkipList::insert` silently replaces an equal key.
//! Ownership of a message is never decided here: the skiplist only finds
//! candidates, and the message's state word decides who gets it. Entries are
//! unlinked with `Entry::remove`, whose `bool` says who unlinked it.
//!
//! Under `cfg(rebound_loom)` the skiplist (whose atomics loom cannot see, and
//! whose epoch-deferred frees would outlive a loom execution) is replaced by
//! a loom-visible model with the same API: a loom `Mutex<BTreeMap>` of
//! shared batch references, walked outside the lock exactly as the skiplist
//! is, so that claims still race on the messages' state words.

use crate::batch::{Batch, Claimed, Head};
use crate::sync::Backoff;
#[cfg(not(rebound_loom))]
use crossbeam_epoch as epoch;
#[cfg(not(rebound_loom))]
use crossbeam_skiplist::base::SkipList;

/// The key of a batch: the timestamp of its first message, then a sequence
/// number unique within the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) ts: u64,
    pub(crate) seq: u64,
}

/// Outcome of [`Index::claim`].
pub(crate) enum Poll<T> {
    Claimed(Claimed<T>),
    /// Nothing is ready. `next_due` is the earliest known future due time.
    Empty {
        next_due: Option<u64>,
    },
}

#[cfg(not(rebound_loom))]
pub(crate) struct Index<T> {
    list: SkipList<Key, Batch<T>>,
}

#[cfg(not(rebound_loom))]
impl<T: Send + Sync + 'static> Index<T> {
    pub(crate) fn new() -> Self {
        Self {
            list: SkipList::new(epoch::default_collector().clone()),
        }
    }

    pub(crate) fn insert(&self, key: Key, batch: Batch<T>) {
        let guard = epoch::pin();
        debug_assert!(
            !self.list.contains_key(&key, &guard),
            "duplicate index key {key:?}"
        );
        self.list.insert(key, batch, &guard).release(&guard);
    }

    /// Claims the ready message with the smallest timestamp.
    ///
    /// Walks batches from the front. A batch's key is the timestamp of its
    /// first message, so once a key is not smaller than the best head found
    /// so far, no later batch can hold an earlier message.
    pub(crate) fn claim(&self, now_ns: u64, deadline_tick: u64) -> Poll<T> {
        self.claim_pinned(&epoch::pin(), now_ns, deadline_tick)
    }

    /// Claims up to `max` ready messages, in order, into `out`, each as
    /// [`Self::claim`] would (one pin for all). Returns the earliest known
    /// future due time if it claimed none.
    pub(crate) fn claim_many(
        &self,
        now_ns: u64,
        deadline_tick: u64,
        max: usize,
        out: &mut Vec<Claimed<T>>,
    ) -> Option<u64> {
        let guard = epoch::pin();
        for _ in 0..max {
            match self.claim_pinned(&guard, now_ns, deadline_tick) {
                Poll::Claimed(claimed) => out.push(claimed),
                Poll::Empty { next_due } => return next_due,
            }
        }
        None
    }

    /// The walk of [`Self::claim`]. The loom model (`model::Index::claim`
    /// below) repeats it step for step: keep them in step.
    fn claim_pinned(&self, guard: &epoch::Guard, now_ns: u64, deadline_tick: u64) -> Poll<T> {
        let backoff = Backoff::new();
        loop {
            let mut best = None;
            let mut next_due: Option<u64> = None;
            let mut busy = false;
            let mut cursor = self.list.front(guard);
            while let Some(entry) = cursor {
                let key = entry.key();
                if best
                    .as_ref()
                    .is_some_and(|&(_, _, best_ts)| key.ts >= best_ts)
                {
                    break;
                }
                if key.ts > now_ns {
                    next_due = Some(next_due.map_or(key.ts, |d| d.min(key.ts)));
                    break;
                }
                match entry.value().head() {
                    Head::Ready { pos, ts } if ts <= now_ns => {
                        if best.as_ref().is_none_or(|&(_, _, best_ts)| ts < best_ts) {
                            best = Some((entry.clone(), pos, ts));
                        }
                    }
                    Head::Ready { ts, .. } => next_due = Some(next_due.map_or(ts, |d| d.min(ts))),
                    Head::Busy => busy = true,
                    Head::Drained => {}
                    Head::Exhausted => {
                        // Whoever unlinks it is irrelevant: nothing in it can
                        // be claimed again, and the epoch frees the node.
                        let _ = entry.remove();
                    }
                }
                // Later keys are not smaller than this one: if the best head
                // is already due by this key, none of them can beat it. With
                // the recent clock, most heads share their block's key, so
                // this usually saves visiting the next node.
                if best
                    .as_ref()
                    .is_some_and(|&(_, _, best_ts)| key.ts >= best_ts)
                {
                    break;
                }
                cursor = entry.next();
            }
            match best {
                Some((entry, pos, _)) => {
                    if let Some(claimed) = entry.value().claim(pos, deadline_tick) {
                        return Poll::Claimed(claimed);
                    }
                    // Another consumer won that message: look again.
                    backoff.spin();
                }
                None if busy && !backoff.is_completed() => {
                    // A producer is between reserving and publishing a slot.
                    backoff.snooze();
                }
                None => return Poll::Empty { next_due },
            }
        }
    }

    /// Counts pending messages: `(ready by now_ns, delayed)`.
    pub(crate) fn count_pending(&self, now_ns: u64) -> (u64, u64) {
        let guard = epoch::pin();
        self.list.iter(&guard).fold((0, 0), |(r, d), entry| {
            let (ready, delayed) = entry.value().count_pending(now_ns);
            (r + ready, d + delayed)
        })
    }

    /// Calls `f` on every batch (teardown).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Batch<T>)) {
        let guard = epoch::pin();
        for entry in self.list.iter(&guard) {
            f(entry.value());
        }
    }

    /// Unlinks every batch; the epoch frees them.
    pub(crate) fn clear(&self) {
        let guard = epoch::pin();
        while let Some(entry) = self.list.pop_front(&guard) {
            entry.release(&guard);
        }
        guard.flush();
    }
}

#[cfg(rebound_loom)]
pub(crate) use model::Index;

/// The loom-visible index: same API, same walk, a lock only around the map.
#[cfg(rebound_loom)]
mod model {
    use super::{Backoff, Batch, Claimed, Head, Key, Poll};
    use crate::sync::{Mutex, lock};
    use std::collections::BTreeMap;
    /// A reference to a node, like a skiplist `Entry`: it keeps the batch
    /// alive after it left the map. A std `Arc` on purpose: its count is
    /// bookkeeping of this model, not a synchronisation loom must explore
    /// (the blocks the batches point at are loom `Arc`s).
    use std::sync::Arc as Node;

    pub(crate) struct Index<T> {
        map: Mutex<BTreeMap<Key, Node<Batch<T>>>>,
    }

    impl<T: Send + Sync + 'static> Index<T> {
        pub(crate) fn new() -> Self {
            Self {
                map: Mutex::new(BTreeMap::new()),
            }
        }

        pub(crate) fn insert(&self, key: Key, batch: Batch<T>) {
            let previous = lock(&self.map).insert(key, Node::new(batch));
            debug_assert!(previous.is_none(), "duplicate index key {key:?}");
        }

        /// The nodes in key order, as a skiplist walk would meet them.
        fn nodes(&self) -> Vec<(Key, Node<Batch<T>>)> {
            lock(&self.map)
                .iter()
                .map(|(key, batch)| (*key, Node::clone(batch)))
                .collect()
        }

        pub(crate) fn claim_many(
            &self,
            now_ns: u64,
            deadline_tick: u64,
            max: usize,
            out: &mut Vec<Claimed<T>>,
        ) -> Option<u64> {
            for _ in 0..max {
                match self.claim(now_ns, deadline_tick) {
                    Poll::Claimed(claimed) => out.push(claimed),
                    Poll::Empty { next_due } => return next_due,
                }
            }
            None
        }

        /// The skiplist `claim_pinned`'s walk, step for step, over a
        /// snapshot of the nodes (a skiplist walk may also miss nodes
        /// inserted behind it).
        pub(crate) fn claim(&self, now_ns: u64, deadline_tick: u64) -> Poll<T> {
            let backoff = Backoff::new();
            loop {
                let mut best: Option<(Node<Batch<T>>, usize, u64)> = None;
                let mut next_due: Option<u64> = None;
                let mut busy = false;
                for (key, batch) in self.nodes() {
                    if best
                        .as_ref()
                        .is_some_and(|&(_, _, best_ts)| key.ts >= best_ts)
                    {
                        break;
                    }
                    if key.ts > now_ns {
                        next_due = Some(next_due.map_or(key.ts, |d| d.min(key.ts)));
                        break;
                    }
                    match batch.head() {
                        Head::Ready { pos, ts } if ts <= now_ns => {
                            if best.as_ref().is_none_or(|&(_, _, best_ts)| ts < best_ts) {
                                best = Some((batch, pos, ts));
                            }
                        }
                        Head::Ready { ts, .. } => {
                            next_due = Some(next_due.map_or(ts, |d| d.min(ts)));
                        }
                        Head::Busy => busy = true,
                        Head::Drained => {}
                        Head::Exhausted => {
                            lock(&self.map).remove(&key);
                        }
                    }
                    if best
                        .as_ref()
                        .is_some_and(|&(_, _, best_ts)| key.ts >= best_ts)
                    {
                        break;
                    }
                }
                match best {
                    Some((batch, pos, _)) => {
                        if let Some(claimed) = batch.claim(pos, deadline_tick) {
                            return Poll::Claimed(claimed);
                        }
                        backoff.spin();
                    }
                    None if busy && !backoff.is_completed() => backoff.snooze(),
                    None => return Poll::Empty { next_due },
                }
            }
        }

        pub(crate) fn count_pending(&self, now_ns: u64) -> (u64, u64) {
            self.nodes().iter().fold((0, 0), |(r, d), (_, batch)| {
                let (ready, delayed) = batch.count_pending(now_ns);
                (r + ready, d + delayed)
            })
        }

        pub(crate) fn for_each(&self, mut f: impl FnMut(&Batch<T>)) {
            for (_, batch) in self.nodes() {
                f(&batch);
            }
        }

        pub(crate) fn clear(&self) {
            let nodes = std::mem::take(&mut *lock(&self.map));
            drop(nodes);
        }
    }
}
