//! Race 12: a producer takes a dead chain block back and reuses it while
//! the block's last holder reads its message, acks it and lets go. A block
//! dies when nothing but the registration queue references it; the
//! producer opening a block takes the oldest registered one if its count
//! says so (`Registrations::recycled`, a Relaxed load in a normal build)
//! and makes it fresh through `Arc::get_mut`, whose Acquire orders the new
//! life's writes after the old holder's read and drop of the payload in
//! the same slot (loom checks the two against each other: the block keeps
//! its payload cells, see `Block::recycle`).
//!
//! The second model has the block come back through the other source, the
//! spare list: a redeliverer pass finds it dead (the same Relaxed count)
//! while the holder lets go, and the producer takes it from there.
//!
//! Five messages, two of them raced: a block is reused only when the tail
//! moves on from the block after it, so the first block (`a`, `b`) dies
//! once the second (`c`, `d`) is the tail and `e` opens a third. Each
//! payload is dropped exactly once, the producer's messages come out in
//! order, and the holder's ack succeeds.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::Redeliverer;
use rebound::{Delivery, Queue, TryConsumeError};
use rebound_loom_tests::{Drops, Msg, model, queue};

/// The shape of both models: the first block holds `a` (claimed, its
/// holder racing) and `b` (acked); the second `c` (acked); a producer then
/// produces `d` and `e`, racing the holder, while `meanwhile` runs on the
/// main thread.
fn reuse_vs_holder(meanwhile: fn(&Queue<Msg>, &mut Redeliverer<Msg>)) {
    model(move || {
        let drops = Drops::new();
        let q = queue(4);
        let mut redeliverer = Redeliverer::new();
        // `a` and `b` fill the first block, `c` opens the second (the
        // first stops being the tail).
        for name in ["a", "b", "c"] {
            q.produce(drops.msg(name)).unwrap();
        }
        let a = q.try_consume().unwrap();
        let b = q.try_consume().unwrap();
        // This walk finds the first block exhausted and unlinks it.
        let c = q.try_consume().unwrap();
        assert_eq!((a.name(), b.name(), c.name()), ("a", "b", "c"));
        b.ack().unwrap();
        c.ack().unwrap();
        // `a` is all that keeps the first block alive now (with the
        // registration queue's reference).
        let holder = thread::spawn(move || {
            assert_eq!(a.name(), "a");
            Delivery::ack(a).unwrap();
        });
        let producer = {
            let q = q.clone();
            let (d, e) = (drops.msg("d"), drops.msg("e"));
            thread::spawn(move || {
                q.produce(d).unwrap(); // fills the second block
                q.produce(e).unwrap(); // opens a third: the first, if dead
            })
        };
        meanwhile(&q, &mut redeliverer);
        holder.join().unwrap();
        producer.join().unwrap();
        let mut got = Vec::new();
        while let Ok(d) = q.try_consume() {
            got.push((d.name(), d.attempt()));
            d.ack().unwrap();
        }
        assert_eq!(got, [("d", 1), ("e", 1)], "the producer's, in order");
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        assert_eq!(q.stats().acked, 5);
        drop((q, redeliverer));
        assert_eq!(drops.count(), 5, "each payload dropped exactly once");
    });
}

/// The block comes back from the registration queue (the producer's own
/// look at its oldest block).
#[test]
fn producer_reusing_a_dead_block_vs_its_last_holder_acking() {
    reuse_vs_holder(|_, _| {});
}

/// The block comes back from the spare list: a redeliverer pass (a lease
/// scan, which takes every registered block) finds it dead.
#[test]
fn producer_reusing_a_spare_block_vs_its_last_holder_acking() {
    reuse_vs_holder(|q, redeliverer| {
        redeliverer.redeliver_due(q);
    });
}
