//! Race 8: an ack (or a dead-letter) versus `close`, with another consumer
//! blocked in `consume` waiting for the queue to drain. While the queue is open an ack
//! is counted with a plain store and wakes nobody, so an ack that saw the
//! queue open just before it closed can go unseen by the blocked consumer;
//! that consumer then parks for a bounded recheck interval instead of for
//! good. The model fires the timers (moves the mock clock past the recheck)
//! until the consumer is done: a consumer parked without a timeout, or one
//! that returned `Closed` before the ack, fails it.
#![cfg(rebound_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use rebound::__loom::advance;
use rebound::{Closed, Delivery, Queue};
use rebound_loom_tests::{Drops, Msg, model, queue};
use std::time::Duration;

/// The shape of both models: `a` is claimed; one thread settles it with
/// `settle` while the main thread closes the queue; a consumer blocked in
/// `consume` must return `Closed`, and then pass `check`. The mock clock is
/// moved past the recheck interval as often as it takes.
fn settle_vs_close(settle: fn(Delivery<Msg>), check: fn(&Queue<Msg>)) {
    model(move || {
        let drops = Drops::new();
        let q = queue(4);
        q.produce(drops.msg("a")).unwrap();
        let d = q.consume().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let settler = thread::spawn(move || settle(d));
        let consumer = {
            let (q, done) = (q.clone(), Arc::clone(&done));
            thread::spawn(move || {
                let got = q.consume().map(|d| d.name());
                assert_eq!(got, Err(Closed), "nothing else was ever pending");
                check(&q);
                // SeqCst (here and below): model bookkeeping, not the queue's.
                done.store(true, Ordering::SeqCst);
            })
        };
        q.close();
        settler.join().unwrap();
        while !done.load(Ordering::SeqCst) {
            advance(&q, Duration::from_millis(1));
            thread::yield_now();
        }
        consumer.join().unwrap();
        drop(q);
        assert_eq!(drops.count(), 1);
    });
}

#[test]
fn ack_vs_close_lets_a_blocked_consumer_see_closed_after_the_ack() {
    settle_vs_close(
        |d| d.ack().unwrap(),
        |q| {
            assert_eq!(
                q.stats().acked,
                1,
                "Closed only once the message in flight is settled"
            );
        },
    );
}

#[test]
fn dead_letter_vs_close_is_in_the_list_when_the_blocked_consumer_sees_closed() {
    settle_vs_close(
        |d| d.dead_letter().unwrap(),
        |q| {
            let letters = q.drain_dead_letters();
            assert_eq!(
                letters
                    .iter()
                    .map(|l| l.payload().name())
                    .collect::<Vec<_>>(),
                ["a"],
                "the dead letter is in the list once the queue is drained"
            );
        },
    );
}
