//! The block pool: new blocks on their way to the redeliverer's watch
//! list, and dead blocks back to producers for reuse. One owner of block
//! reuse, one verb for it: [`BlockPool::recycle`] takes dead blocks in,
//! [`BlockPool::recycled`] hands one out made fresh.
//!
//! Chain blocks are appended to a queue, in the order they were opened,
//! when its lock is free; other blocks, and chain blocks when the lock is
//! taken, go on a lock-free stack. Opening a block never waits for a lock:
//! on a machine with as many busy threads as cores the redeliverer can be
//! preempted while holding one, and a producer parked behind it would stall
//! for up to milliseconds. Pushing onto the stack is a compare-exchange; taking
//! it is one swap of the whole list, so there is no pop of single nodes and
//! no ABA.
//!
//! Chain blocks die in about the order they were opened, so a producer
//! opening a block first looks at the oldest one queued: if nothing else
//! references it, the producer takes it back and reuses it
//! ([`Registrations::recycled`]). In a steady stream most blocks thus never
//! reach the redeliverer, which takes the queue only for a lease scan or
//! once [`REGISTER_WAKE`] blocks wait (an old block still held, a slow
//! consumer). Inspecting every new block on each upkeep instead would be a
//! chain of cache misses that takes a core from a producer or a consumer
//! every 10 ms and sets the latency tail (docs/design.md, "The
//! redeliverer").
//!
//! Dead blocks the redeliverer finds are kept in a spare list, bounded in
//! bytes ([`SPARE_BYTES`]), for producers whose oldest queued block is not
//! dead yet; the list is emptied when the queue goes idle.

use crate::block::{BLOCK_CAPACITY, Block, Key};
use crate::sync::{Arc, AtomicPtr, AtomicUsize, Mutex, Ordering, lock, try_lock};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ptr;

/// Wake the redeliverer to prune once this many new blocks are waiting.
pub(crate) const REGISTER_WAKE: usize = 256;

/// The most memory the dead chain blocks kept for reuse may take, in
/// bytes: about 1 500 blocks of `u64`s, seven of 4 KiB payloads, none
/// of 64 KiB ones.
pub(crate) const SPARE_BYTES: usize = 2 << 20;

/// New blocks, and dead ones for reuse.
pub(crate) struct BlockPool<T> {
    registered: Registrations<T>,
    /// Dead chain blocks the redeliverer handed back for reuse (at most
    /// [`SPARE_BYTES`] of them); emptied when the queue goes idle and at
    /// teardown.
    spare: Mutex<Vec<Arc<Block<T>>>>,
}

impl<T> BlockPool<T> {
    pub(crate) fn new() -> Self {
        Self {
            registered: Registrations::new(),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Registers a new block for the redeliverer; returns how many blocks
    /// are waiting, this one included.
    pub(crate) fn register(&self, block: Arc<Block<T>>) -> usize {
        self.registered.push(block)
    }

    /// Blocks registered and not taken yet (a hint).
    pub(crate) fn waiting(&self) -> usize {
        self.registered.len()
    }

    /// Moves the registered blocks into `into` (see [`Registrations::take`]).
    pub(crate) fn take(&self, into: &mut Vec<Arc<Block<T>>>, all: bool) {
        self.registered.take(into, all);
    }

    /// Keeps dead chain blocks for reuse by producers, up to
    /// [`SPARE_BYTES`] of them; the rest are freed. Called by the
    /// redeliverer with blocks it held the only reference to. Freeing them
    /// one by one there contended with the producers' allocations and
    /// showed in the tail latency.
    pub(crate) fn recycle(&self, dead: &mut Vec<Arc<Block<T>>>) {
        // Chain blocks only: a delayed message's block of one is not reused.
        dead.retain(|block| block.is_chained());
        let limit = SPARE_BYTES / Block::<T>::bytes(BLOCK_CAPACITY);
        let mut spare = lock(&self.spare);
        let keep = dead.len().min(limit.saturating_sub(spare.len()));
        spare.extend(dead.drain(..keep));
        drop(spare);
        // The rest are freed here, outside the lock.
        dead.clear();
    }

    /// Frees the spare blocks (the queue went idle, or is torn down).
    pub(crate) fn shed_spares(&self) {
        let spare = std::mem::take(&mut *lock(&self.spare));
        drop(spare);
    }

    /// A dead chain block made fresh (see [`Block::reset`]), keyed `key`,
    /// whose first `reserved` slots are the caller's: the oldest registered
    /// one if nothing references it any more, else a spare one. `None` if
    /// neither has one or their locks are taken just now: a producer never
    /// waits for them.
    pub(crate) fn recycled(&self, key: Key, reserved: usize) -> Option<Arc<Block<T>>> {
        let mut block = self
            .registered
            .recycled()
            .or_else(|| try_lock(&self.spare)?.pop())?;
        // Either source hands over the only reference (`recycled` saw it so
        // under its lock; the spare list holds blocks the redeliverer found
        // dead), so this always succeeds, and its Acquire is what orders the
        // reuse after the last holder's drop. If it did not, the block is
        // dropped and the caller allocates.
        Arc::get_mut(&mut block)?.reset(key, reserved);
        crate::block::prepay(&block);
        Some(block)
    }

    #[cfg(test)]
    pub(crate) fn spare_len(&self) -> usize {
        lock(&self.spare).len()
    }
}

pub(crate) struct Registrations<T> {
    /// Chain blocks, oldest first, appended while the lock was free.
    queued: Mutex<VecDeque<Arc<Block<T>>>>,
    /// The last block pushed, linked through `Block::next_registered`; each
    /// node is a strong reference made raw with `Arc::into_raw`.
    head: AtomicPtr<Block<T>>,
    /// Blocks pushed and not taken yet.
    len: AtomicUsize,
    /// The stack owns `Arc<Block<T>>`s (made raw): it is `Send`/`Sync`
    /// only as they are.
    _owns: PhantomData<Arc<Block<T>>>,
}

impl<T> Registrations<T> {
    pub(crate) fn new() -> Self {
        Self {
            queued: Mutex::new(VecDeque::new()),
            head: AtomicPtr::new(ptr::null_mut()),
            len: AtomicUsize::new(0),
            _owns: PhantomData,
        }
    }

    /// Pushes `block`; returns how many blocks are waiting, this one
    /// included.
    pub(crate) fn push(&self, block: Arc<Block<T>>) -> usize {
        // Counted before the node is published, so that a `take` that
        // removes it always subtracts after this add: `len` never wraps.
        // Relaxed: a count for deciding when to wake the redeliverer; the
        // inbox lock orders it with the redeliverer's decision to sleep.
        let waiting = self.len.fetch_add(1, Ordering::Relaxed) + 1;
        if block.is_chained() {
            if let Some(mut queued) = try_lock(&self.queued) {
                queued.push_back(block);
                return waiting;
            }
        }
        let node = Arc::into_raw(block).cast_mut();
        // Relaxed: the compare-exchange below publishes the link.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` came from `Arc::into_raw` above, and this thread
            // owns that reference until the compare-exchange publishes it.
            let next = unsafe { &(*node).next_registered };
            // Relaxed: published by the Release compare-exchange below.
            next.store(head, Ordering::Relaxed);
            // Release: pairs with the Acquire swap in `take`, so the taker
            // sees the link and the block's fields. Relaxed on failure: the
            // head read back is only stored as a link, never dereferenced.
            match self
                .head
                .compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(current) => head = current,
            }
        }
        waiting
    }

    /// Blocks waiting (a hint: pushes and takes may be in progress).
    pub(crate) fn len(&self) -> usize {
        // Relaxed: see `push`.
        self.len.load(Ordering::Relaxed)
    }

    /// The oldest queued chain block, taken back, if nothing else
    /// references it (so every message in it is final): the caller reuses
    /// it, through `Arc::get_mut`. `None` if the queue's lock is taken.
    pub(crate) fn recycled(&self) -> Option<Arc<Block<T>>> {
        let mut queued = try_lock(&self.queued)?;
        // `strong_count` is a Relaxed load: it only decides whether to take
        // the block. Under the lock the queue's reference is the only one
        // left, and nobody can make another (there are no `Weak`s to
        // blocks), so the caller's `Arc::get_mut` succeeds, and its Acquire
        // pairs with the last other holder's Release drop.
        if Arc::strong_count(queued.front()?) != 1 {
            return None;
        }
        let block = queued.pop_front()?;
        // Relaxed: see `push`.
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(block)
    }

    /// Moves the waiting blocks into `into`: those on the stack, and the
    /// queued ones too if `all` or if [`REGISTER_WAKE`] or more wait.
    pub(crate) fn take(&self, into: &mut Vec<Arc<Block<T>>>, all: bool) {
        let mut taken = 0;
        if all || self.len() >= REGISTER_WAKE {
            // Moves pointers under the lock (a few microseconds at most).
            let mut queued = lock(&self.queued);
            taken = queued.len();
            into.extend(queued.drain(..));
        }
        // Acquire: pairs with the Release compare-exchange in `push`.
        let mut node = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        while !node.is_null() {
            // SAFETY: every node in the list came from `Arc::into_raw` in
            // `push`, and the swap above took the whole list out of reach of
            // every other taker, so each reference is turned back once.
            let block = unsafe { Arc::from_raw(node.cast_const()) };
            // Relaxed: written before the push that published this node,
            // which the Acquire swap above synchronised with.
            node = block.next_registered.load(Ordering::Relaxed);
            into.push(block);
            taken += 1;
        }
        // Relaxed: see `push`.
        self.len.fetch_sub(taken, Ordering::Relaxed);
    }
}

impl<T> Drop for Registrations<T> {
    fn drop(&mut self) {
        // Teardown takes every block first; this only guards against a leak.
        let mut rest = Vec::new();
        self.take(&mut rest, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Queue;
    use crate::block::Key;
    use std::thread;
    use std::time::Duration;

    /// A burst of large messages, drained: the spare blocks kept for reuse
    /// stay within their byte budget, and once the queue goes idle every
    /// dead block is freed (each block holds a reference to the shared
    /// state, so its count tells how many blocks are alive).
    #[test]
    fn an_idle_queue_gives_back_the_blocks_a_burst_left() {
        type Page = [u8; 4096];
        let q: Queue<Page> = Queue::new();
        for _ in 0..16 {
            q.produce_batch((0..1024).map(|_| [7u8; 4096])).unwrap();
        }
        let mut drained = 0;
        while let Ok(batch) = q.try_consume_batch(1024) {
            drained += batch.len();
            batch.into_iter().for_each(|d| d.ack().unwrap());
        }
        assert_eq!(drained, 16 * 1024);
        // A consumer that finds nothing parks, and hands the epoch the
        // frees it deferred (unlinked index nodes, replaced tails).
        assert!(q.consume_timeout(Duration::from_millis(1)).is_err());
        // However many dead blocks the redeliverer hands over at once.
        let mut dead: Vec<_> = (0..64)
            .map(|_| {
                let key = Key {
                    ts: 0,
                    seq: q.shared.next_seq(),
                };
                Block::new(Arc::clone(&q.shared), key, 0, 0, true)
            })
            .collect();
        q.shared.blocks.recycle(&mut dead);
        let spare = q.shared.blocks.spare_len();
        assert!(
            (1..=SPARE_BYTES / Block::<Page>::bytes(BLOCK_CAPACITY)).contains(&spare),
            "{spare} spare blocks of 4 KiB messages"
        );
        // The handle and the redeliverer thread hold the other two.
        let blocks = || Arc::strong_count(&q.shared) - 2;
        let start = std::time::Instant::now();
        while blocks() > 2 && start.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(blocks() <= 2, "{} blocks kept by an idle queue", blocks());
    }

    /// Registrations: a queued chain block goes back to a producer only
    /// once nothing else references it, and only the oldest; a block of one
    /// (a delayed message) is never queued there; the redeliverer takes the
    /// queued blocks only when it asks for all (a lease scan).
    #[test]
    fn only_the_oldest_registered_chain_block_comes_back_and_only_when_dead() {
        let q: Queue<u32> = Queue::new();
        // Blocks without slots: no prepaid references, so the handles
        // below are all there is.
        let block = |chained| {
            let key = Key {
                ts: 0,
                seq: q.shared.next_seq(),
            };
            Block::new(Arc::clone(&q.shared), key, 0, 0, chained)
        };
        let regs = Registrations::new();
        let (a, b, single) = (block(true), block(true), block(false));
        let (a_at, b_at) = (Arc::as_ptr(&a), Arc::as_ptr(&b));
        for block in [&a, &b, &single] {
            regs.push(Arc::clone(block));
        }
        assert_eq!(regs.len(), 3);
        drop(b);
        assert!(
            regs.recycled().is_none(),
            "b is dead, but a is older and held"
        );
        drop(a);
        assert_eq!(regs.recycled().map(|a| Arc::as_ptr(&a)), Some(a_at));
        assert_eq!(regs.recycled().map(|b| Arc::as_ptr(&b)), Some(b_at));
        drop(single);
        assert!(regs.recycled().is_none(), "a block of one is never reused");
        assert_eq!(regs.len(), 1);
        let c = block(true);
        regs.push(Arc::clone(&c));
        let mut taken = Vec::new();
        regs.take(&mut taken, false);
        assert!(taken.len() == 1 && !taken[0].is_chained(), "only the stack");
        regs.take(&mut taken, true);
        assert_eq!(taken.len(), 2);
        assert_eq!(regs.len(), 0);
    }
}
