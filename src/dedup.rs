//! Idempotent produce: which of the ids given to `Queue::produce_with_id`
//! (or kept by `Queue::redrive`) are taken.
//!
//! An id is taken while its message is live (pending, delayed, held, or
//! waiting for redelivery) or a dead letter not drained yet, and for the
//! queue's dedup window after it was acked or dead-lettered (JetStream's
//! `Nats-Msg-Id` window is the model). Ids minted by `produce` are unique by
//! construction and never enter this map; `produce` does not touch it.
//! One lock guards it: only produces with an id, and the final settles of
//! their messages, take it.

use crate::id::MessageId;
use crate::sync::{Mutex, lock};
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};

/// What an id in the map is used by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    /// A live message.
    Live,
    /// A dead letter not drained yet, dead-lettered at `at`.
    Dead { at: u64 },
    /// Acked (or its dead letter drained) with its window starting at `at`.
    Settled { at: u64 },
}

#[derive(Debug, Default)]
struct Taken {
    /// By the id's 128 bits (hashed as one integer, not as 16 bytes), with
    /// foldhash: a few nanoseconds a lookup against SipHash's twenty, and a
    /// per-map random seed, so ids chosen by a caller cannot be made to
    /// collide without knowing it.
    ids: HashMap<u128, Use, foldhash::fast::RandomState>,
    /// Settled ids by the start of their window, earliest first (an entry
    /// whose id was taken again since is skipped when it comes up).
    windows: BinaryHeap<Reverse<(u64, MessageId)>>,
    /// The high bits of the ids this queue's `produce` mints, and of those
    /// minted by earlier opens of its journal for messages still in it.
    minters: Vec<u64>,
}

/// The taken ids of one queue.
#[derive(Debug)]
pub(crate) struct Dedup {
    /// The dedup window, in nanoseconds.
    window: u64,
    taken: Mutex<Taken>,
}

/// Why an id cannot be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Duplicate;

impl Dedup {
    /// `minter`: the high bits of the ids this queue's `produce` mints.
    pub(crate) fn new(window: u64, minter: u64) -> Self {
        Dedup {
            window,
            taken: Mutex::new(Taken {
                minters: vec![minter],
                ..Taken::default()
            }),
        }
    }

    /// Takes `id` for a message about to be produced (`now` reads the
    /// queue clock, only if a window needs it), unless it is taken or
    /// `produce` minted it. A `redrive` may reuse a settled id still in its
    /// window (it is the same message coming back).
    pub(crate) fn take(
        &self,
        id: MessageId,
        now: impl FnOnce() -> u64,
        redrive: bool,
    ) -> Result<(), Duplicate> {
        let mut taken = lock(&self.taken);
        if !taken.windows.is_empty() {
            self.forget_expired(&mut taken, now());
        }
        if !redrive && id.minter().is_some_and(|m| taken.minters.contains(&m)) {
            return Err(Duplicate);
        }
        match taken.ids.entry(id.as_u128()) {
            Entry::Occupied(mut e) => match *e.get() {
                Use::Settled { .. } if redrive => {
                    e.insert(Use::Live);
                    Ok(())
                }
                _ => Err(Duplicate),
            },
            Entry::Vacant(e) => {
                e.insert(Use::Live);
                Ok(())
            }
        }
    }

    /// Gives back an id taken by [`Self::take`] whose produce failed.
    pub(crate) fn give_back(&self, id: MessageId) {
        let mut taken = lock(&self.taken);
        if taken.ids.get(&id.as_u128()) == Some(&Use::Live) {
            taken.ids.remove(&id.as_u128());
        }
    }

    /// Notes a live message restored from a journal with its own id (a
    /// dead letter if `dead`, at `now`).
    #[cfg(feature = "journal")]
    pub(crate) fn restored(&self, id: MessageId, dead: bool, now: u64) {
        let mut taken = lock(&self.taken);
        let used = if dead {
            Use::Dead { at: now }
        } else {
            Use::Live
        };
        taken.ids.insert(id.as_u128(), used);
    }

    /// Notes an id restored from a journal inside its dedup window, which
    /// ends at `until` (queue clock).
    #[cfg(feature = "journal")]
    pub(crate) fn windowed(&self, id: MessageId, until: u64) {
        let mut taken = lock(&self.taken);
        let at = until.saturating_sub(self.window);
        taken.ids.insert(id.as_u128(), Use::Settled { at });
        taken.windows.push(Reverse((at, id)));
    }

    /// Notes that ids minted with `minter` by an earlier open are in the
    /// journal (never accepted by `produce_with_id` either).
    #[cfg(feature = "journal")]
    pub(crate) fn minted_before(&self, minter: u64) {
        let mut taken = lock(&self.taken);
        if !taken.minters.contains(&minter) {
            taken.minters.push(minter);
        }
    }

    /// The message of `id` was acked (`dead`: dead-lettered); `now` reads
    /// the queue clock, only if a window or a dead letter needs it. Returns
    /// when the id's dedup window ends, if one started (to be journaled).
    pub(crate) fn settled(
        &self,
        id: MessageId,
        dead: bool,
        now: impl FnOnce() -> u64,
    ) -> Option<u64> {
        let mut taken = lock(&self.taken);
        let Entry::Occupied(mut e) = taken.ids.entry(id.as_u128()) else {
            return None;
        };
        if *e.get() != Use::Live {
            return None;
        }
        if dead {
            e.insert(Use::Dead { at: now() });
            None
        } else if self.window == 0 {
            e.remove();
            None
        } else {
            let at = now();
            self.start_window(&mut taken, id, at, at)
        }
    }

    /// The dead letters of `ids` were drained at `now`. Returns the ids
    /// whose dedup window started, and when each ends (to be journaled).
    pub(crate) fn drained_all(
        &self,
        ids: impl Iterator<Item = MessageId>,
        now: u64,
    ) -> Vec<(MessageId, u64)> {
        let mut taken = lock(&self.taken);
        let mut windows = Vec::new();
        if taken.ids.is_empty() {
            return windows;
        }
        for id in ids {
            if let Some(&Use::Dead { at }) = taken.ids.get(&id.as_u128()) {
                windows.extend(
                    self.start_window(&mut taken, id, at, now)
                        .map(|until| (id, until)),
                );
            }
        }
        windows
    }

    /// `id` stays taken for the window from `at`, or is free if that ended
    /// by `now`. Returns when the window ends, if it has not.
    fn start_window(&self, taken: &mut Taken, id: MessageId, at: u64, now: u64) -> Option<u64> {
        let until = at.saturating_add(self.window);
        if until <= now {
            taken.ids.remove(&id.as_u128());
            None
        } else {
            taken.ids.insert(id.as_u128(), Use::Settled { at });
            taken.windows.push(Reverse((at, id)));
            Some(until)
        }
    }

    /// Frees the settled ids whose window ended by `now`.
    fn forget_expired(&self, taken: &mut Taken, now: u64) {
        while let Some(&Reverse((at, id))) = taken.windows.peek() {
            if at.saturating_add(self.window) > now {
                break;
            }
            taken.windows.pop();
            if taken.ids.get(&id.as_u128()) == Some(&Use::Settled { at }) {
                taken.ids.remove(&id.as_u128());
            }
        }
    }

    /// How many ids are taken (live, dead or in their window) at `now`.
    #[cfg(test)]
    fn len(&self, now: u64) -> usize {
        let mut taken = lock(&self.taken);
        self.forget_expired(&mut taken, now);
        taken.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> MessageId {
        MessageId::from_bits(n)
    }

    #[test]
    fn an_id_is_taken_while_live_and_dead_and_for_the_window_after() {
        let d = Dedup::new(100, 0);
        d.take(id(1), || 0, false).unwrap();
        assert_eq!(d.take(id(1), || 5, false), Err(Duplicate));
        d.settled(id(1), true, || 10);
        assert_eq!(d.take(id(1), || 500, false), Err(Duplicate), "undrained");
        // The window runs from the dead-lettering.
        d.drained_all([id(1)].into_iter(), 50);
        assert_eq!(d.take(id(1), || 109, false), Err(Duplicate));
        d.take(id(1), || 110, false).unwrap();
        d.settled(id(1), false, || 200);
        assert_eq!(d.take(id(1), || 299, false), Err(Duplicate));
        // A redrive may come back inside the window.
        d.take(id(1), || 299, true).unwrap();
        d.settled(id(1), false, || 300);
        assert_eq!(d.len(399), 1);
        assert_eq!(d.len(400), 0);
    }

    #[test]
    fn without_a_window_an_acked_id_is_free_at_once_and_a_failed_produce_gives_it_back() {
        let d = Dedup::new(0, 0);
        d.take(id(2), || 0, false).unwrap();
        d.settled(id(2), false, || 1);
        d.take(id(2), || 1, false).unwrap();
        d.give_back(id(2));
        assert_eq!(d.len(1), 0);
    }

    #[test]
    fn ids_minted_by_produce_are_refused() {
        let minter = MessageId::new(42, 7).minter().unwrap();
        let d = Dedup::new(0, minter);
        assert_eq!(d.take(MessageId::new(42, 9), || 0, false), Err(Duplicate));
        d.take(MessageId::new(43, 9), || 0, false).unwrap();
    }
}
