//! New blocks on their way to the redeliverer's watch list: a lock-free
//! stack that producers push onto and the redeliverer takes whole.
//!
//! Opening a block must never wait for a lock the redeliverer holds: on a
//! machine with as many busy threads as cores, the redeliverer can be
//! preempted while holding it, and a producer parked behind it stalled for
//! up to milliseconds. Pushing is a compare-exchange; taking is one swap of
//! the whole list, so there is no pop of single nodes and no ABA.

use crate::block::Block;
use crate::sync::{Arc, AtomicPtr, AtomicUsize, Ordering};
use std::marker::PhantomData;
use std::ptr;

pub(crate) struct Registrations<T> {
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
    #[cfg_attr(rebound_loom, allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        // Relaxed: see `push`.
        self.len.load(Ordering::Relaxed)
    }

    /// Moves every waiting block into `into`.
    pub(crate) fn take(&self, into: &mut Vec<Arc<Block<T>>>) {
        // Acquire: pairs with the Release compare-exchange in `push`.
        let mut node = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        let mut taken = 0;
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
        self.take(&mut rest);
    }
}
