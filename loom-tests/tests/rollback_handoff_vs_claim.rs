//! Race 4: a holder rolls back (the hand-off to the redeliverer through the
//! inbox) while the redeliverer runs a pass and another consumer claims.
//! The rolled-back message is reinserted exactly once, with attempt + 1,
//! and the other message is delivered once, untouched.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::Redeliverer;
use rebound::TryConsumeError;
use rebound_loom_tests::{Drops, model, queue};

#[test]
fn rollback_handoff_vs_claim_reinserts_exactly_once() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        q.produce(drops.msg("a")).unwrap();
        q.produce(drops.msg("b")).unwrap();
        let mut redeliverer = Redeliverer::new();
        let a = q.try_consume().unwrap();
        assert_eq!(a.name(), "a");

        let holder = thread::spawn(move || a.rollback().unwrap());
        let consumer = {
            let q = q.clone();
            thread::spawn(move || {
                let d = q.try_consume().expect("`b` is ready");
                let got = (d.name(), d.attempt());
                d.ack().unwrap();
                got
            })
        };
        redeliverer.redeliver_due(&q);
        holder.join().unwrap();
        let mut delivered = vec![consumer.join().unwrap()];
        redeliverer.redeliver_due(&q);
        loop {
            match q.try_consume() {
                Ok(d) => {
                    delivered.push((d.name(), d.attempt()));
                    d.ack().unwrap();
                }
                Err(e) => {
                    assert_eq!(e, TryConsumeError::Empty);
                    break;
                }
            }
        }
        delivered.sort_unstable();
        assert_eq!(delivered, [("a", 2), ("b", 1)]);
        let stats = q.stats();
        assert_eq!(
            (stats.rolled_back, stats.redelivered, stats.acked),
            (1, 1, 2)
        );
        drop((q, redeliverer));
        assert_eq!(drops.count(), 2);
    });
}
