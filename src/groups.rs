//! Ordered groups: the messages of one key are claimed one at a time, in
//! the order their `produce_in_group` calls returned, across rollbacks,
//! defers, expiries and redeliveries.
//!
//! Only a group's *head* is ever claimable. Every grouped message is in
//! the producers' chain, written `Blocked`, and linked behind the one
//! before it in its group (an MCS queue through the messages' id-table
//! entries): a producer swaps the group's tail for its message, under its
//! shard's lock, and links itself behind the old tail, or is the head if
//! the group was idle. When the head's payload leaves the queue (its last
//! holder lets go of it acked or dead: `Shared::release_payload`), that
//! holder follows the link without a lock and unblocks the next message,
//! in place or, if a block's cursor passed it, moved into a new slot; with
//! nothing linked it empties the tail (the group is idle). A rolled-back,
//! deferred or expired head stays the head and comes back through the
//! redeliverer as any message does, so order holds across retries. Two
//! messages of one group are never claimable at once: the second stays
//! `Blocked` until the first is final and no handler holds it.
//!
//! One mutex per shard of groups (64 shards, each on its own cache line),
//! taken by a grouped produce, a dead head that holds its group, a
//! release, a move and a sweep: ungrouped messages never touch it, and
//! neither does a head's settle otherwise. An idle group is kept until a
//! sweep (see [`Groups::sweep`]).

use crate::block::Block;
use crate::id::MessageId;
use crate::state::Tag;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, MODEL, Mutex, Ordering, lock};
use crossbeam_utils::CachePadded;
use std::collections::HashMap;
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
/// message (at `produce_in_group`). Block numbering (`seq << 6 | slot`)
/// stays below it.
pub(crate) const GROUP_NUMBER: u64 = 1 << 61;

/// Numbers a thread takes for grouped messages' ids at a time.
const NUMBERS: u64 = 1024;

std::thread_local! {
    /// The numbers this thread took last: the nonce of their queue, the
    /// next one and the end. (One queue's at a time: a thread producing
    /// into two queues in turn leaves numbers unused, of 2^61.)
    static RANGE: std::cell::Cell<(u64, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
}

/// Shards of the group map: enough that two threads rarely want one lock.
const SHARDS: usize = if MODEL { 2 } else { 64 };

/// A shard's table is shrunk only above this capacity (see `Groups::shrink`).
const SHRINK_FROM: usize = 64;

/// Where a message lives: its block and slot in one word (a block is
/// aligned to more than 64 bytes, and a slot number is below 64). Zero is
/// no message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SlotAt(usize);

impl SlotAt {
    pub(crate) const NONE: SlotAt = SlotAt(0);

    pub(crate) fn new<T>(block: &Block<T>, slot: usize) -> Self {
        let ptr = block as *const Block<T> as usize;
        debug_assert!(ptr & 63 == 0 && slot < 64);
        SlotAt(ptr | slot)
    }

    pub(crate) fn from_bits(bits: usize) -> Self {
        SlotAt(bits)
    }

    pub(crate) fn bits(self) -> usize {
        self.0
    }

    pub(crate) fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The block and slot.
    ///
    /// # Safety
    /// The block is alive for `'a`: the message there holds its prepaid
    /// reference (it was never claimed), or the caller holds one.
    pub(crate) unsafe fn get<'a, T>(self) -> (&'a Block<T>, usize) {
        // SAFETY: by the contract.
        (
            unsafe { &*((self.0 & !63) as *const Block<T>) },
            self.0 & 63,
        )
    }
}

/// A queue's groups.
pub(crate) struct Groups<T> {
    shards: Box<[CachePadded<Shard>]>,
    /// Numbers for grouped messages' ids (see [`GROUP_NUMBER`]).
    next: AtomicU64,
    /// Set by teardown before it clears the groups: a head settled after
    /// it moves nothing (see `Shared::grouped_gone`).
    torn_down: AtomicBool,
    /// Blocks with a message their cursor skipped (`Tag::Skipped`): such a
    /// block may have left the index, and teardown must find it.
    skipped: Mutex<Vec<Arc<Block<T>>>>,
}

type Map = HashMap<u64, Box<Group>, foldhash::fast::RandomState>;

/// One shard: its groups under a lock. A move writes its message under
/// it, and teardown's `clear` takes it, so no move is in progress once a
/// shard is cleared.
struct Shard {
    groups: Mutex<Map>,
}

/// One group with a message at its head (or idle, until swept). Boxed:
/// a head's settle reaches it through its message (`IdTable::cell`),
/// without the shard's lock.
pub(crate) struct Group {
    /// The group's last message (`SlotAt` bits): the next produce links
    /// behind it. Zero while the group is idle, or held by a dead letter
    /// with nothing behind it. Swapped by producers under the shard's lock;
    /// compare-exchanged to zero, without the lock, by the settle of a head
    /// with nothing linked behind it (see `Shared::head_gone`).
    tail: AtomicUsize,
    /// The dead letter holding the group, and the message after it. Under
    /// the shard's lock.
    held: Option<MessageId>,
    first: SlotAt,
    /// When the head became the head (queue clock). Stored by whoever
    /// makes a head; Relaxed: a statistic.
    since: AtomicU64,
}

impl Group {
    /// Sets when the head became the head.
    pub(crate) fn started(&self, now: u64) {
        // Relaxed: a statistic, read under the shard's lock by `counts`.
        self.since.store(now, Ordering::Relaxed);
    }

    fn tail(&self) -> SlotAt {
        // Acquire: pairs with the Release of the swap or exchange that
        // wrote it (a settle's accesses to the group come before its idle).
        SlotAt::from_bits(self.tail.load(Ordering::Acquire))
    }

    /// The settle of head `at`, with nothing linked behind it: the group
    /// goes idle if `at` is still its last message. False if a producer
    /// swapped the tail meanwhile: it is linking a message behind `at`.
    pub(crate) fn idle_after(&self, at: SlotAt) -> bool {
        // AcqRel: Release orders this settle's accesses before a sweep that
        // frees the idle group; Acquire pairs with a producer's swap.
        self.tail
            .compare_exchange(at.bits(), 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the group has a head, or a dead letter holds it.
    fn active(&self) -> bool {
        self.held.is_some() || !self.tail().is_none()
    }
}

/// What entering a group made of the message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Placed {
    /// The group was idle (or a redrive made it the head again): it is the
    /// head, to be unblocked by the caller.
    Head,
    /// It waits behind the group's head.
    Waits,
}

/// What a snapshot of the groups found (see `Stats`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GroupCounts {
    pub(crate) groups: u64,
    pub(crate) held: u64,
    /// The oldest head's start (queue clock).
    pub(crate) oldest: Option<u64>,
}

/// What a dead or acked head left its group to do (see `Groups::head_gone`).
pub(crate) enum Next {
    /// The group is idle, or held: nothing to unblock.
    Nothing,
    /// Unblock this message, now the head.
    Unblock(SlotAt),
}

impl<T> Groups<T> {
    pub(crate) fn new() -> Self {
        Groups {
            shards: (0..SHARDS)
                .map(|_| {
                    CachePadded::new(Shard {
                        groups: Mutex::new(HashMap::default()),
                    })
                })
                .collect(),
            next: AtomicU64::new(0),
            torn_down: AtomicBool::new(false),
            skipped: Mutex::new(Vec::new()),
        }
    }

    /// The shard of `key`: a fixed multiplicative hash (the shard maps
    /// are seeded per queue; a key only picks its lock here).
    fn slot(&self, key: u64) -> &Shard {
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        &self.shards[h as usize % SHARDS]
    }

    /// The next number for a grouped message's id, in the queue whose
    /// nonce is `nonce`. Each thread takes [`NUMBERS`] at a time, so that
    /// producers do not share a counter's line per message.
    pub(crate) fn next_number(&self, nonce: u64) -> u64 {
        if MODEL {
            // Relaxed: only hands out distinct numbers.
            return GROUP_NUMBER | self.next.fetch_add(1, Ordering::Relaxed);
        }
        RANGE.with(|range| {
            let (owner, next, end) = range.get();
            let (next, end) = if owner == nonce && next < end {
                (next, end)
            } else {
                // Relaxed: only hands out distinct ranges.
                let start = self.next.fetch_add(NUMBERS, Ordering::Relaxed);
                (start, start + NUMBERS)
            };
            range.set((nonce, next + 1, end));
            GROUP_NUMBER | next
        })
    }

    /// Whether teardown has begun (see [`Self::clear`]).
    pub(crate) fn torn_down(&self) -> bool {
        self.torn_down.load(Ordering::SeqCst)
    }

    /// Runs `place` with the group of `key` locked: `place` gets a function
    /// that puts the blocked message at `at` (id `id`) into the group:
    /// its head if the group is idle (the caller unblocks it), else
    /// linked behind the group's last message. A `redrive`n dead letter
    /// that holds its group is its head again.
    pub(crate) fn enter<R>(
        &self,
        key: u64,
        now: u64,
        redrive: bool,
        place: impl FnOnce(&mut dyn FnMut(SlotAt, MessageId) -> Placed) -> R,
    ) -> R {
        let mut shard = lock(&self.slot(key).groups);
        place(&mut |at, id| {
            // SAFETY: `at` is blocked (never claimed): it holds its prepaid
            // reference.
            let (block, slot) = unsafe { at.get::<T>() };
            if !shard.contains_key(&key) {
                // Idle groups go before the table grows (see `sweep`).
                if shard.len() >= SHRINK_FROM && shard.len() == shard.capacity() {
                    Self::sweep_shard(&mut shard);
                }
                let group = shard.entry(key).or_insert_with(|| {
                    Box::new(Group {
                        tail: AtomicUsize::new(at.bits()),
                        held: None,
                        first: SlotAt::NONE,
                        since: AtomicU64::new(now),
                    })
                });
                block.ids.set_cell(slot, group);
                return Placed::Head;
            }
            let group = shard.get_mut(&key).expect("present");
            block.ids.set_cell(slot, group);
            if group.held.is_some() {
                // No head: nothing settles, the tail is this lock's alone.
                let tail = group.tail();
                if redrive && group.held == Some(id) {
                    group.held = None;
                    block.ids.link(slot, group.first);
                    group.first = SlotAt::NONE;
                    if tail.is_none() {
                        group.tail.store(at.bits(), Ordering::Release);
                    }
                    group.started(now);
                    return Placed::Head;
                }
                if tail.is_none() {
                    group.first = at;
                } else {
                    // SAFETY: a message behind a held group's letter is
                    // blocked or skipped (prepaid).
                    let (last, last_slot) = unsafe { tail.get::<T>() };
                    last.ids.link(last_slot, at);
                }
                group.tail.store(at.bits(), Ordering::Release);
                return Placed::Waits;
            }
            // AcqRel: Acquire pairs with the settle that made the group idle
            // (or the producer before); Release publishes `at`'s entry to a
            // settle that fails its exchange and waits for the link.
            let last = SlotAt::from_bits(group.tail.swap(at.bits(), Ordering::AcqRel));
            if last.is_none() {
                group.started(now);
                return Placed::Head;
            }
            // SAFETY: the group's last message is alive while it is the
            // last: blocked or skipped (prepaid), or a head whose last
            // settle, finding nothing linked, fails its exchange of the tail
            // (this swap changed it) and waits for this link before it lets
            // go of its block.
            let (last, last_slot) = unsafe { last.get::<T>() };
            last.ids.link(last_slot, at);
            Placed::Waits
        })
    }

    /// The dead head at `at` (id `id`) of group `key` holds it
    /// (`Builder::hold_groups`): the message behind it, if any, waits for
    /// a redrive or a release.
    pub(crate) fn hold(&self, key: u64, at: SlotAt, id: MessageId) {
        let mut shard = lock(&self.slot(key).groups);
        // No group: the queue was torn down (a delivery outlived it).
        let Some(group) = shard.get_mut(&key) else {
            return;
        };
        // SAFETY: the caller (the head's last holder) keeps its block.
        let (block, slot) = unsafe { at.get::<T>() };
        // Producers link under this lock: the link is there iff the tail
        // moved past `at`.
        let next = block.ids.next(slot);
        group.held = Some(id);
        group.first = next;
        if next.is_none() {
            debug_assert_eq!(group.tail(), at);
            group.tail.store(0, Ordering::Release);
        }
    }

    /// Runs `f` with group `key` locked if the dead letter `id` holds it
    /// (journals the hold of a drained letter, ordered against a release).
    /// Whether it does.
    #[cfg(feature = "journal")]
    pub(crate) fn holds(&self, key: u64, id: MessageId, f: impl FnOnce()) -> bool {
        let shard = lock(&self.slot(key).groups);
        let held = shard.get(&key).is_some_and(|g| g.held == Some(id));
        if held {
            f();
        }
        held
    }

    /// Releases group `key` at `now` if its dead head holds it, calling
    /// `released` with the letter's id under the lock. The message to
    /// unblock, now the head, if any; whether it was held.
    pub(crate) fn release(
        &self,
        key: u64,
        now: u64,
        released: impl FnOnce(MessageId),
    ) -> (bool, Next) {
        let mut shard = lock(&self.slot(key).groups);
        let Some(group) = shard.get_mut(&key) else {
            return (false, Next::Nothing);
        };
        let Some(letter) = group.held.take() else {
            return (false, Next::Nothing);
        };
        released(letter);
        if group.first.is_none() {
            // Idle now (nothing behind the letter: the tail is zero).
            return (true, Next::Nothing);
        }
        group.started(now);
        (
            true,
            Next::Unblock(std::mem::replace(&mut group.first, SlotAt::NONE)),
        )
    }

    /// The head `old` of group `key` was skipped by its block's cursor and
    /// moved (its payload taken by the caller): under the lock, `place`
    /// writes it, blocked, into a new slot, which takes the old one's place
    /// in the group (what follows it, and the tail). Under the lock, so that
    /// teardown's `clear` finds it done. `None` if the queue was torn down (the caller drops the payload).
    pub(crate) fn moved(
        &self,
        key: u64,
        old: SlotAt,
        place: impl FnOnce() -> SlotAt,
    ) -> Option<SlotAt> {
        let mut shard = lock(&self.slot(key).groups);
        let group = shard.get_mut(&key)?;
        // SAFETY: the caller keeps the old block (it holds the prepaid
        // reference of the moved message until this returns).
        let (old_block, old_slot) = unsafe { old.get::<T>() };
        let next = old_block.ids.next(old_slot);
        let at = place();
        // SAFETY: `at` was just written, blocked.
        let (block, new_slot) = unsafe { at.get::<T>() };
        block.ids.set_cell(new_slot, group);
        block.ids.link(new_slot, next);
        // The moved message is not claimable, so no settle exchanges the
        // tail meanwhile, and producers wait for this lock.
        let _ =
            group
                .tail
                .compare_exchange(old.bits(), at.bits(), Ordering::AcqRel, Ordering::Acquire);
        Some(at)
    }

    /// A block whose cursor skipped a blocked message: kept for teardown
    /// (see `skipped`). Blocks all of whose skipped messages moved on are
    /// let go of from time to time.
    pub(crate) fn skipped(&self, block: &Arc<Block<T>>) {
        let mut list = lock(&self.skipped);
        if list.last().is_some_and(|b| Arc::ptr_eq(b, block)) {
            return;
        }
        if list.len() >= 64 && list.len().is_power_of_two() {
            list.retain(|b| {
                (0..b.len())
                    .any(|i| matches!(b.slot(i).state.load().tag(), Tag::Skipped | Tag::Blocked))
            });
        }
        list.push(Arc::clone(block));
    }

    /// Teardown: no head moves on from here (`torn_down`; a delivery that
    /// outlives the queue may still settle one), and every group is
    /// forgotten (a move in progress holds its shard's lock). Returns the blocks with a
    /// skipped message, and the groups, to be dropped once no settle can
    /// reach them (through the epoch, see `teardown`).
    pub(crate) fn clear(&self) -> (Vec<Arc<Block<T>>>, Vec<Map>) {
        self.torn_down.store(true, Ordering::SeqCst);
        let mut maps = Vec::new();
        for slot in self.shards.iter() {
            maps.push(std::mem::take(&mut *lock(&slot.groups)));
        }
        (std::mem::take(&mut *lock(&self.skipped)), maps)
    }

    /// Forgets the idle groups (no head, not held): their last head's
    /// settle made them idle without the lock, and is done with them
    /// (`Group::idle_after`). Run when a shard's table is full, and by the
    /// redeliverer when the queue goes quiet.
    pub(crate) fn sweep(&self) {
        for slot in self.shards.iter() {
            Self::sweep_shard(&mut lock(&slot.groups));
        }
    }

    fn sweep_shard(shard: &mut Map) {
        shard.retain(|_, g| g.active());
        Self::shrink(shard);
    }

    /// Gives a shard's table back to the allocator once it is mostly empty
    /// (a quarter full, and past a small size), so that groups that went
    /// idle cost nothing: the table is rebuilt at twice what is left, which
    /// leaves room to grow again before the next rebuild.
    fn shrink(shard: &mut Map) {
        if shard.capacity() > SHRINK_FROM && shard.len() * 4 < shard.capacity() {
            shard.shrink_to(shard.len() * 2);
        }
    }

    /// Puts a restored group back (journal), before the queue is shared:
    /// `head` (in the queue already), or the dead letter `held` holding it,
    /// then `members`, blocked, in order.
    #[cfg(feature = "journal")]
    pub(crate) fn restore(
        &self,
        key: u64,
        head: SlotAt,
        held: Option<MessageId>,
        members: &[SlotAt],
        now: u64,
    ) {
        let mut shard = lock(&self.slot(key).groups);
        let last = members.last().copied().unwrap_or(head);
        let group = shard.entry(key).or_insert_with(|| {
            Box::new(Group {
                tail: AtomicUsize::new(last.bits()),
                held,
                first: if held.is_some() {
                    members.first().copied().unwrap_or(SlotAt::NONE)
                } else {
                    SlotAt::NONE
                },
                since: AtomicU64::new(now),
            })
        });
        let mut before = head;
        for &at in std::iter::once(&head).chain(members) {
            if at.is_none() {
                continue;
            }
            // SAFETY: restored messages, in blocks not shared yet (held by
            // the index).
            let (block, slot) = unsafe { at.get::<T>() };
            block.ids.set_cell(slot, group);
            if before != at && !before.is_none() {
                // SAFETY: as above.
                let (last, last_slot) = unsafe { before.get::<T>() };
                last.ids.link(last_slot, at);
            }
            before = at;
        }
    }

    /// Counts groups and held groups, and finds the oldest head. One shard
    /// locked at a time: under traffic, a snapshot of each shard, not of
    /// all at once.
    pub(crate) fn counts(&self) -> GroupCounts {
        let mut c = GroupCounts::default();
        for slot in self.shards.iter() {
            let shard = lock(&slot.groups);
            for group in shard.values().filter(|g| g.active()) {
                c.groups += 1;
                c.held += u64::from(group.held.is_some());
                // Relaxed: a statistic.
                let since = group.since.load(Ordering::Relaxed);
                c.oldest = Some(c.oldest.map_or(since, |o: u64| o.min(since)));
            }
        }
        c
    }
}

/// How long ago `since` was, at `now` (queue clock).
pub(crate) fn age(since: u64, now: u64) -> Duration {
    Duration::from_nanos(now.saturating_sub(since))
}
