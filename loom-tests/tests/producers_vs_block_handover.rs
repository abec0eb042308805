//! Race 11: two producers append to the chain while it is handed over from
//! a full block to the next. Whichever producer's reservation reaches one
//! past the open block's last slot opens the next block and publishes it
//! as the tail (a Release store); the other one, finding the block full,
//! waits for the new tail, loads it (Acquire) and appends there. That
//! producer must see the new block initialised: loom checks its first
//! access to the block's reservation counter, created (or, for a reused
//! block, reset) by the opener, against that store.
//!
//! Every message is delivered exactly once, and each producer's messages
//! are claimed in the order it produced them (asserted exactly, not
//! sorted).
#![cfg(rebound_loom)]

use loom::thread;
use rebound::TryConsumeError;
use rebound_loom_tests::{Drops, model, queue};

#[test]
fn two_producers_across_a_block_handover_each_in_order() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        let producers: Vec<_> = [["x1", "x2"], ["y1", "y2"]]
            .into_iter()
            .map(|names| {
                let q = q.clone();
                let msgs = names.map(|name| drops.msg(name));
                thread::spawn(move || {
                    for msg in msgs {
                        q.produce(msg).unwrap();
                    }
                })
            })
            .collect();
        // One claim while they produce, the rest once they are done.
        let mut got = Vec::new();
        if let Ok(d) = q.try_consume() {
            got.push(d.name());
            d.ack().unwrap();
        }
        for producer in producers {
            producer.join().unwrap();
        }
        // Four messages: the first block's two slots and the next one's.
        while let Ok(d) = q.try_consume() {
            assert_eq!(d.attempt(), 1);
            got.push(d.name());
            d.ack().unwrap();
        }
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        let of =
            |p: char| -> Vec<&str> { got.iter().copied().filter(|n| n.starts_with(p)).collect() };
        assert_eq!(got.len(), 4, "each message delivered once: {got:?}");
        assert_eq!(of('x'), ["x1", "x2"], "x's messages in order: {got:?}");
        assert_eq!(of('y'), ["y1", "y2"], "y's messages in order: {got:?}");
        drop(q);
        assert_eq!(drops.count(), 4);
    });
}
