//! Race 9: producers open blocks, registering each with the redeliverer
//! through a lock-free stack, while the redeliverer takes the stack in a
//! pass. Every block is taken exactly once: none is lost from the watch list
//! (loom reports a leaked `Arc` at the end of the execution, and the
//! messages would not all be freed) and none is taken twice (a reference
//! turned back twice would be dropped twice).
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::Redeliverer;
use rebound_loom_tests::{Drops, model, queue};

#[test]
fn producers_registering_blocks_vs_a_redeliverer_pass_take_each_once() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        // Two producers fill the first two-slot block and open more.
        let producers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let q = q.clone();
                let msg = drops.msg(name);
                let again = drops.msg(name);
                thread::spawn(move || {
                    q.produce(msg).unwrap();
                    q.produce(again).unwrap();
                })
            })
            .collect();
        let mut redeliverer = Redeliverer::new();
        redeliverer.redeliver_due(&q);
        for producer in producers {
            producer.join().unwrap();
        }
        redeliverer.redeliver_due(&q);
        for _ in 0..4 {
            q.try_consume()
                .expect("every message is pending")
                .ack()
                .unwrap();
        }
        assert_eq!(q.stats().acked, 4);
        drop(redeliverer);
        drop(q);
        assert_eq!(drops.count(), 4);
    });
}
