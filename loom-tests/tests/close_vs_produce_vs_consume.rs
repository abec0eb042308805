//! Race 6: close versus produce versus consume. Every message accepted
//! before close is delivered (the consumer drains it before it sees
//! `Closed`); a produce that lost to close gets its message back and
//! nothing of it is delivered.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::Closed;
use rebound_loom_tests::{Drops, model, queue};

#[test]
fn close_vs_produce_vs_consume_delivers_every_accepted_message() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        q.produce(drops.msg("a")).unwrap();
        let producer = {
            let q = q.clone();
            let b = drops.msg("b");
            thread::spawn(move || match q.produce(b) {
                Ok(_) => true,
                Err(e) => {
                    assert_eq!(e.into_inner().name(), "b", "a refused message comes back");
                    false
                }
            })
        };
        let consumer = {
            let q = q.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match q.consume() {
                        Ok(d) => {
                            got.push(d.name());
                            d.ack().unwrap();
                        }
                        Err(Closed) => return got,
                    }
                }
            })
        };
        q.close();
        let accepted = producer.join().unwrap();
        let mut got = consumer.join().unwrap();
        got.sort_unstable();
        let expected: &[&str] = if accepted { &["a", "b"] } else { &["a"] };
        assert_eq!(got, expected, "every accepted message is delivered");
        let refused = q
            .produce(drops.msg("c"))
            .expect_err("none accepted after close");
        drop(refused);
        let stats = q.stats();
        let n = got.len() as u64;
        assert_eq!((stats.produced, stats.acked), (n, n));
        drop(q);
        assert_eq!(drops.count(), 3);
    });
}
