//! New blocks on their way to the redeliverer's watch list, and the
//! oldest of them back to producers once dead.
//!
//! Chain blocks are appended to a queue, in the order they were opened,
//! when its lock is free; other blocks, and chain blocks when the lock is
//! taken, go on a lock-free stack. Opening a block never waits for a lock:
//! on a machine with as many busy threads as cores the redeliverer can be
//! preempted while holding one, and a producer parked behind it stalled for
//! up to milliseconds. Pushing onto the stack is a compare-exchange; taking
//! it is one swap of the whole list, so there is no pop of single nodes and
//! no ABA.
//!
//! Chain blocks die in about the order they were opened, so a producer
//! opening a block first looks at the oldest one queued: if nothing else
//! references it, the producer takes it back and reuses it
//! ([`Registrations::reclaim`]). In a steady stream most blocks thus never
//! reach the redeliverer, which takes the queue only for a lease scan or
//! once [`REGISTER_WAKE`] blocks wait (an old block still held, a slow
//! consumer). Before, the redeliverer took every block every 10 ms and
//! looked at each (is it dead?): about 50 us for the 1 000 blocks of a 1p1c
//! stream at 6 M msg/s, a chain of cache misses that took a core from a
//! producer or a consumer on this 2-core machine and set the p99 of the
//! produce -> claim latency (docs/benchmarks.md, "Latency").
//!
//! [`REGISTER_WAKE`]: crate::redelivery::REGISTER_WAKE

use crate::block::Block;
use crate::redelivery::REGISTER_WAKE;
use crate::sync::{Arc, AtomicPtr, AtomicUsize, Mutex, Ordering, lock, try_lock};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ptr;

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
    pub(crate) fn reclaim(&self) -> Option<Arc<Block<T>>> {
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
