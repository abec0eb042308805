//! Race 13: a consumer walks the chain while a producer writes the last slot
//! of the open block and opens the next one with its following message.
//! The walk may meet the first block while that slot is not reserved yet
//! (the block looks drained) or reserved and still being written (busy),
//! and meet the next block, opened meanwhile, with the producer's later
//! message ready in it. That first block keeps the chain's place either
//! way (`Walk::visit`): the producer's messages are claimed in the order it
//! produced them, asserted exactly (not sorted).
#![cfg(rebound_loom)]

use loom::thread;
use rebound::TryConsumeError;
use rebound_loom_tests::{Drops, model, queue};

#[test]
fn chain_walk_vs_a_block_filling_and_the_next_opening_claims_in_order() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        // The first slot of the first block, claimed: the walk starts at
        // the second one.
        q.produce(drops.msg("a")).unwrap();
        q.try_consume().unwrap().ack().unwrap();
        let producer = {
            let q = q.clone();
            let (x1, x2) = (drops.msg("x1"), drops.msg("x2"));
            thread::spawn(move || {
                q.produce(x1).unwrap(); // the first block's last slot
                q.produce(x2).unwrap(); // opens the next block
            })
        };
        // Two claims while it produces, then the rest.
        let mut got = Vec::new();
        for _ in 0..2 {
            if let Ok(d) = q.try_consume() {
                got.push(d.name());
                d.ack().unwrap();
            }
        }
        producer.join().unwrap();
        while let Ok(d) = q.try_consume() {
            got.push(d.name());
            d.ack().unwrap();
        }
        assert_eq!(got, ["x1", "x2"], "one producer's messages, in order");
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        drop(q);
        assert_eq!(drops.count(), 3);
    });
}
