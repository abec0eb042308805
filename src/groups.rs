//! Ordered groups: the messages of one key are claimed one at a time, in
//! the order their `produce_in_group` calls returned, across rollbacks,
//! defers, expiries and redeliveries.
//!
//! Only a group's *head* is ever in the index. The group's later messages
//! wait here, in a FIFO per group, with their ids minted; when the head's
//! payload leaves the queue (its last holder lets go of it acked or dead:
//! `Shared::release_payload`), the next one is published into the
//! producers' chain and becomes the head. A rolled-back, deferred or
//! expired head stays the head and comes back through the redeliverer as
//! any message does, so order holds across retries. Two messages of one
//! group are never claimable at once: the second is not in the index until
//! the first is final and no handler holds it.
//!
//! One mutex per shard of groups (64 shards, each on its own cache line),
//! taken by a grouped produce and by a head's final settle: ungrouped
//! messages never touch it. An idle group (no message waiting, none at
//! its head) is removed: it costs nothing.

use crate::id::MessageId;
use crate::id_table::Own;
use crate::sync::{AtomicU64, AtomicUsize, MODEL, Mutex, Ordering, lock, thread};
use crossbeam_utils::CachePadded;
use std::collections::hash_map::{Entry, OccupiedEntry};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

/// The key of an ordered group: messages produced with
/// [`Queue::produce_in_group`](crate::Queue::produce_in_group) under one
/// key are delivered one at a time, in order.
///
/// A `u64` is the key itself. A string or bytes key is hashed to 64 bits
/// with XXH3 (a specified algorithm: the same key gives the same group in
/// every process and every version, as the journal needs). Two keys that
/// collide are one group: each keeps its order and its one-at-a-time
/// delivery, they are just not processed in parallel with each other
/// (with a million string keys the chance that any two collide is about
/// 3 in 100 million).
///
/// ```
/// use rebound::GroupKey;
/// assert_eq!(GroupKey::from(42u64).as_u64(), 42);
/// assert_eq!(GroupKey::from("account-7"), GroupKey::from(String::from("account-7")));
/// assert_eq!(GroupKey::from("account-7"), GroupKey::from(&b"account-7"[..]));
/// assert_ne!(GroupKey::from("account-7"), GroupKey::from("account-8"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey(u64);

impl GroupKey {
    /// The key's 64 bits (what the journal stores).
    ///
    /// ```
    /// assert_eq!(rebound::GroupKey::from(7u64).as_u64(), 7);
    /// ```
    pub fn as_u64(&self) -> u64 {
        self.0
    }
}

impl From<u64> for GroupKey {
    fn from(key: u64) -> Self {
        GroupKey(key)
    }
}

impl From<&[u8]> for GroupKey {
    fn from(key: &[u8]) -> Self {
        GroupKey(xxhash_rust::xxh3::xxh3_64(key))
    }
}

impl From<&str> for GroupKey {
    fn from(key: &str) -> Self {
        GroupKey::from(key.as_bytes())
    }
}

impl From<String> for GroupKey {
    fn from(key: String) -> Self {
        GroupKey::from(key.as_bytes())
    }
}

impl From<&String> for GroupKey {
    fn from(key: &String) -> Self {
        GroupKey::from(key.as_bytes())
    }
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupKey({:#018x})", self.0)
    }
}

/// The bit of a message number that marks an id minted for a grouped
/// message (at `produce_in_group`, before the message has a slot). Block
/// numbering (`seq << 6 | slot`) stays below it.
pub(crate) const GROUP_NUMBER: u64 = 1 << 61;

/// Shards of the group map: enough that two threads rarely want one lock.
const SHARDS: usize = if MODEL { 2 } else { 64 };

/// A shard's table is shrunk only above this capacity (see `Groups::shrink`).
const SHRINK_FROM: usize = 64;

/// A queue's groups.
pub(crate) struct Groups<T> {
    shards: Box<[CachePadded<Slot<T>>]>,
    /// Numbers for grouped messages' ids (see [`GROUP_NUMBER`]).
    next: AtomicU64,
    /// Whether a dead-lettered head holds its group (`Builder::hold_groups`).
    hold: bool,
}

type Shard<T> = HashMap<u64, Group<T>, foldhash::fast::RandomState>;

/// One shard: its groups under a lock, and how many of its heads are being
/// published outside it (see `Groups::head_gone` and `Groups::clear`).
struct Slot<T> {
    groups: Mutex<Shard<T>>,
    publishing: AtomicUsize,
}

/// One group with a message at its head.
struct Group<T> {
    /// The message at the head: in the index, held, waiting for
    /// redelivery, or (`held`) a dead letter.
    head: MessageId,
    /// Held by its head's dead letter until a redrive or `release_group`.
    held: bool,
    /// When the head became the head (queue clock).
    since: u64,
    /// The group's later messages, in order.
    waiting: VecDeque<(MessageId, T)>,
}

/// What a group's produce did with the value.
pub(crate) enum Placed<T> {
    /// The group was idle: the value is its head, to be published now.
    Head(T),
    /// It waits behind the group's head.
    Waits,
}

/// What a snapshot of the groups found (see `Stats`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GroupCounts {
    pub(crate) groups: u64,
    pub(crate) held: u64,
    pub(crate) waiting: u64,
    /// The oldest head's start (queue clock).
    pub(crate) oldest: Option<u64>,
}

impl<T> Groups<T> {
    pub(crate) fn new(hold: bool) -> Self {
        Groups {
            shards: (0..SHARDS)
                .map(|_| {
                    CachePadded::new(Slot {
                        groups: Mutex::new(HashMap::default()),
                        publishing: AtomicUsize::new(0),
                    })
                })
                .collect(),
            next: AtomicU64::new(0),
            hold,
        }
    }

    /// The shard of `key`: a fixed multiplicative hash (the shard maps
    /// are seeded per queue; a key only picks its lock here).
    fn slot(&self, key: u64) -> &Slot<T> {
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        &self.shards[h as usize % SHARDS]
    }

    /// The groups of `key`'s shard.
    fn shard(&self, key: u64) -> &Mutex<Shard<T>> {
        &self.slot(key).groups
    }

    /// The next number for a grouped message's id.
    pub(crate) fn next_number(&self) -> u64 {
        // Relaxed: only hands out distinct numbers.
        GROUP_NUMBER | self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `place` with the group of `key` locked: `place` gets a function
    /// that puts message `id` (value `value`) into the group and returns
    /// `Placed::Head` if it is the head now (the caller publishes it before
    /// it unlocks, so the records of one group follow its order), else
    /// keeps it waiting at the group's end. A `redrive`n dead letter that
    /// holds its group is its head again.
    pub(crate) fn enter<R>(
        &self,
        key: u64,
        now: u64,
        redrive: bool,
        place: impl FnOnce(&mut dyn FnMut(MessageId, T) -> Placed<T>) -> R,
    ) -> R {
        let mut shard = lock(self.shard(key));
        place(&mut |id, value| match shard.entry(key) {
            Entry::Occupied(mut e) => {
                let group = e.get_mut();
                if redrive && group.held && group.head == id {
                    group.held = false;
                    group.since = now;
                    Placed::Head(value)
                } else {
                    if group.waiting.capacity() == 0 {
                        // Most groups have few messages waiting: room for
                        // one at first (a deque's first push makes room for
                        // four), doubling from there.
                        group.waiting.reserve_exact(1);
                    }
                    group.waiting.push_back((id, value));
                    Placed::Waits
                }
            }
            Entry::Vacant(e) => {
                e.insert(Group {
                    head: id,
                    held: false,
                    since: now,
                    waiting: VecDeque::new(),
                });
                Placed::Head(value)
            }
        })
    }

    /// The head `id` of group `key` left the queue (acked, or dead if
    /// `dead`) at `now`: the next message becomes the head and is given to
    /// `publish`, unless a dead head holds its group. Published after the
    /// unlock (nothing else of the group can be published before this new
    /// head is settled, and a short critical section keeps the lock from
    /// being held by a descheduled thread), counted in the shard's
    /// `publishing` so that teardown (`Self::clear`) waits for it.
    pub(crate) fn head_gone(
        &self,
        key: u64,
        id: MessageId,
        dead: bool,
        now: u64,
        publish: impl FnOnce(Own, T),
    ) {
        let slot = self.slot(key);
        let mut shard = lock(&slot.groups);
        // No group: the queue was torn down (a delivery outlived it).
        let Entry::Occupied(mut e) = shard.entry(key) else {
            return;
        };
        let group = e.get_mut();
        if group.head != id || group.held {
            debug_assert!(false, "only a group's head leaves it");
            return;
        }
        if dead && self.hold {
            group.held = true;
            return;
        }
        match Self::advance(e, now) {
            Some((own, value)) => {
                // Relaxed: under the lock, which orders it before
                // teardown's clear of this shard (see `clear`).
                slot.publishing.fetch_add(1, Ordering::Relaxed);
                drop(shard);
                publish(own, value);
                // Release: pairs with the Acquire load in `clear`, so the
                // message is in the index before teardown walks it.
                slot.publishing.fetch_sub(1, Ordering::Release);
            }
            None => Self::shrink(&mut shard),
        }
    }

    /// Runs `f` with group `key` locked if the dead letter `id` holds it
    /// (journals the hold of a drained letter, ordered against a release).
    /// Whether it does.
    #[cfg(feature = "journal")]
    pub(crate) fn holds(&self, key: u64, id: MessageId, f: impl FnOnce()) -> bool {
        let shard = lock(self.shard(key));
        let held = shard.get(&key).is_some_and(|g| g.held && g.head == id);
        if held {
            f();
        }
        held
    }

    /// Releases group `key` at `now` if its dead head holds it, calling
    /// `released` with the letter's id under the lock and `publish` with
    /// the next message (now the head) after it. Whether it was held.
    pub(crate) fn release(
        &self,
        key: u64,
        now: u64,
        released: impl FnOnce(MessageId),
        publish: impl FnOnce(Own, T),
    ) -> bool {
        let mut shard = lock(self.shard(key));
        match shard.entry(key) {
            Entry::Occupied(e) if e.get().held => {
                released(e.get().head);
                match Self::advance(e, now) {
                    // After the unlock, as in `head_gone`; a handle makes
                    // this call, so no teardown runs meanwhile.
                    Some((own, value)) => {
                        drop(shard);
                        publish(own, value);
                    }
                    None => Self::shrink(&mut shard),
                }
                true
            }
            _ => false,
        }
    }

    /// Teardown: forgets every group, handing each waiting value to `drop`,
    /// and waits for the heads being published (`head_gone`): a head
    /// settled after this publishes nothing, one settled before is in the
    /// index when this returns.
    pub(crate) fn clear(&self, mut drop: impl FnMut(T)) {
        for slot in self.shards.iter() {
            let groups = std::mem::take(&mut *lock(&slot.groups));
            // Acquire: pairs with the Release decrement in `head_gone`; an
            // increment made under the lock before the clear above is seen.
            while slot.publishing.load(Ordering::Acquire) != 0 {
                thread::yield_now();
            }
            for (_, group) in groups {
                for (_, value) in group.waiting {
                    drop(value);
                }
            }
        }
    }

    /// The group's next message becomes its head (returned, to be
    /// published), or the group, now idle, is removed.
    fn advance(mut e: OccupiedEntry<'_, u64, Group<T>>, now: u64) -> Option<(Own, T)> {
        let key = *e.key();
        let group = e.get_mut();
        match group.waiting.pop_front() {
            Some((id, value)) => {
                group.head = id;
                group.held = false;
                group.since = now;
                Some((
                    Own {
                        id,
                        group: Some(key),
                    },
                    value,
                ))
            }
            None => {
                e.remove();
                None
            }
        }
    }

    /// Gives a shard's table back to the allocator once it is mostly empty
    /// (a quarter full, and past a small size), so that groups that went
    /// idle cost nothing: the table is rebuilt at twice what is left, which
    /// leaves room to grow again before the next rebuild.
    fn shrink(shard: &mut Shard<T>) {
        if shard.capacity() > SHRINK_FROM && shard.len() * 4 < shard.capacity() {
            shard.shrink_to(shard.len() * 2);
        }
    }

    /// Puts a restored group back (journal): `head` is its head (already in
    /// the queue, or a dead letter holding it if `held`), `waiting` the rest
    /// in order.
    #[cfg(feature = "journal")]
    pub(crate) fn restore(
        &self,
        key: u64,
        head: MessageId,
        held: bool,
        now: u64,
        waiting: VecDeque<(MessageId, T)>,
    ) {
        lock(self.shard(key)).insert(
            key,
            Group {
                head,
                held,
                since: now,
                waiting,
            },
        );
    }

    /// Counts groups, held groups and waiting messages, and finds the
    /// oldest head. One shard locked at a time: under traffic, a snapshot
    /// of each shard, not of all at once.
    pub(crate) fn counts(&self) -> GroupCounts {
        let mut c = GroupCounts::default();
        for slot in self.shards.iter() {
            let shard = lock(&slot.groups);
            c.groups += shard.len() as u64;
            for group in shard.values() {
                c.held += u64::from(group.held);
                c.waiting += group.waiting.len() as u64;
                c.oldest = Some(c.oldest.map_or(group.since, |o: u64| o.min(group.since)));
            }
        }
        c
    }
}

/// How long ago `since` was, at `now` (queue clock).
pub(crate) fn age(since: u64, now: u64) -> Duration {
    Duration::from_nanos(now.saturating_sub(since))
}
