//! Teardown: what the last `Queue` handle does when it goes.

use crate::batch::Batch;
use crate::shared::Shared;
use crate::state::Discard;
use crate::sync::{Arc, lock, pin, thread};
use crate::unwind::{Panic, catch};

/// The last handle is gone: stop the redeliverer, drop every message nobody
/// holds, and break the `Shared -> index -> Block -> Shared` cycle.
pub(crate) fn teardown<T: Send + Sync + 'static>(shared: &Shared<T>) {
    // First, holding no lock: the manual clock (if any) lets go of it.
    shared.detach_clock();
    #[cfg(feature = "journal")]
    if let Some(attached) = &shared.journal {
        attached.shutdown();
    }
    // No group moves on from here (a delivery that outlives the queue may
    // still settle a group's head); the messages waiting in groups are in
    // their blocks, found below (in the index, or skipped by their block's
    // cursor and listed by the groups).
    let mut panic = None;
    let (skipped, groups) = shared.groups.clear();
    let rolled_back = shared.inbox.stop();
    let mut blocks = skipped;
    shared.blocks.take(&mut blocks, true);
    let worker = lock(&shared.redeliverer).take();
    if let Some(worker) = worker {
        if worker.thread().id() != thread::current().id() {
            if let Ok(watched) = worker.join() {
                blocks.extend(watched);
            }
        }
    }
    blocks.extend(rolled_back.into_iter().map(|m| m.block));
    shared.index.for_each(|batch| {
        if let Batch::Fresh(block) = batch {
            blocks.push(Arc::clone(block));
        }
    });
    // A payload whose destructor panics must not keep teardown from
    // dropping the others or from breaking the cycle below: each drop is
    // contained, and the first panic resumes once teardown is done.
    for block in &blocks {
        for index in 0..block.len() {
            if let Discard::Done { fate } = block.slot(index).state.transition_to_discarded() {
                contain(&mut panic, || shared.release_payload(block, index, fate));
            }
        }
    }
    // A block may be listed more than once. Every block that still holds a
    // prepaid reference is in the index: a slot at attempt 0 (never claimed)
    // keeps its block from being exhausted, so its `Fresh` entry is still
    // there. (The watch list alone would not do: under loom the model keeps
    // it, and teardown on the redeliverer thread does not get it back.)
    blocks.sort_unstable_by_key(Arc::as_ptr);
    blocks.dedup_by(|a, b| Arc::ptr_eq(a, b));
    for block in &blocks {
        // SAFETY: no handle is left, so nothing claims any more; `blocks`
        // holds each block once, and every block with a slot at attempt 0
        // (see above).
        unsafe { crate::block::release_prepaid(block) };
    }
    // A settle of a group's head pinned before the groups were cleared may
    // still reach a blocked message's block or its group: both go once it
    // is done.
    let guard = pin();
    let late = Late(blocks, groups);
    // SAFETY: `Late` holds `Arc`s and boxes, fine to drop on any thread
    // (`Block<T>` is `Send + Sync` for `T: Send + Sync`).
    unsafe { guard.defer_unchecked(move || drop(late)) };
    guard.flush();
    drop(guard);
    shared.index.clear();
    shared.release_tail();
    let letters = lock(&shared.dead_letters).take().unwrap_or_default();
    for letter in letters {
        contain(&mut panic, || drop(letter));
    }
    // Spare blocks reference `shared`: drop them to break the cycle.
    shared.blocks.shed_spares();
    // Let the epoch run the deferred frees of the index nodes now.
    for _ in 0..4 {
        pin().flush();
    }
    if let Some(panic) = panic {
        panic.resume();
    }
}

/// What teardown drops through the epoch (see `teardown`).
struct Late<B, G>(B, G);

/// Runs `f`, keeping the first panic of teardown in `first` instead of
/// letting it unwind (a payload's destructor is the only code of the user's
/// that teardown runs).
fn contain(first: &mut Option<Panic>, f: impl FnOnce()) {
    if let Err(panic) = catch(f) {
        if first.is_none() {
            *first = Some(panic);
        } else {
            panic.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::block::BLOCK_CAPACITY;
    use crate::sync::{Arc, pin, thread};
    use crate::{Backoff, Queue};
    use std::time::Duration;

    /// Every block holds a reference to the shared state, so the shared
    /// state outlives the last handle exactly when a block leaked: a
    /// reference (prepaid or not) never released.
    #[test]
    fn dropping_the_last_handle_frees_every_block() {
        let q: Queue<String> = Queue::builder()
            .backoff(Backoff::fixed(Duration::ZERO))
            .build();
        let shared = Arc::downgrade(&q.shared);
        // Enough traffic for the redeliverer to find dead blocks and keep
        // them as spares, so that the blocks below are reused ones.
        // (The redeliverer prunes as new blocks come in, so keep them coming.)
        let start = std::time::Instant::now();
        while q.shared.blocks.spare_len() < 4 && start.elapsed() < Duration::from_secs(5) {
            q.produce_batch((0..1000).map(|i| i.to_string())).unwrap();
            while let Ok(batch) = q.try_consume_batch(1000) {
                batch.into_iter().for_each(|d| d.ack().unwrap());
            }
        }
        assert!(q.shared.blocks.spare_len() >= 4, "no spare blocks to reuse");
        // A rollback, redelivered and claimed again, then left pending.
        q.produce("again".to_string()).unwrap();
        q.try_consume().unwrap().rollback().unwrap();
        let again = q.consume().unwrap();
        assert_eq!(again.attempt(), 2);
        again.rollback().unwrap();
        // A full block and a partly filled tail, some claimed, some not.
        for i in 0..BLOCK_CAPACITY + 10 {
            q.produce(i.to_string()).unwrap();
        }
        q.try_consume().unwrap().ack().unwrap();
        // A delayed message, and a delivery that outlives the queue.
        q.produce_after("later".to_string(), Duration::from_secs(60))
            .unwrap();
        let held = q.try_consume().unwrap();
        drop(q);
        assert!(held.ack().is_ok(), "the holder still settles");
        // Index nodes are freed through the epoch, which tests running in
        // parallel may hold back for a moment; a leaked block never goes.
        let start = std::time::Instant::now();
        while shared.strong_count() > 0 && start.elapsed() < Duration::from_secs(5) {
            pin().flush();
            thread::yield_now();
        }
        assert_eq!(shared.strong_count(), 0, "a block outlived the queue");
    }
}
