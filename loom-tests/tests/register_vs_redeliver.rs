//! Race 9: producers open blocks, registering each with the redeliverer,
//! while the redeliverer takes the registrations in a pass. One producer
//! fills the first two-slot chain block and opens the next (appended to the
//! registration queue, or pushed onto the lock-free stack while the pass
//! holds the queue's lock: the first pass is a lease scan and takes it);
//! the other produces a delayed message, which gets a block of its own,
//! always pushed onto the stack: pushes race each other and the pass's
//! take. Every block is taken exactly once: none is lost from the watch
//! list (loom reports a leaked `Arc` at the end of the execution) and none
//! is taken twice (a reference turned back twice would be dropped twice).
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::{Redeliverer, advance};
use rebound_loom_tests::{Drops, model, queue};
use std::time::Duration;

#[test]
fn producers_registering_blocks_vs_a_redeliverer_pass_take_each_once() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        let chain = {
            let q = q.clone();
            let msgs = [drops.msg("a"), drops.msg("b"), drops.msg("c")];
            thread::spawn(move || {
                for msg in msgs {
                    q.produce(msg).unwrap();
                }
            })
        };
        let delayed = {
            let q = q.clone();
            let msg = drops.msg("later");
            thread::spawn(move || {
                q.produce_after(msg, Duration::from_millis(1)).unwrap();
            })
        };
        let mut redeliverer = Redeliverer::new();
        redeliverer.redeliver_due(&q);
        chain.join().unwrap();
        delayed.join().unwrap();
        advance(&q, Duration::from_millis(1));
        redeliverer.redeliver_due(&q);
        for _ in 0..4 {
            q.try_consume()
                .expect("every message is due")
                .ack()
                .unwrap();
        }
        assert_eq!(q.stats().acked, 4);
        drop(redeliverer);
        drop(q);
        assert_eq!(drops.count(), 4);
    });
}
