//! Race 5: a consumer goes to sleep while a producer produces, or while a
//! delayed message falls due. No lost wake-up: the consumer gets the
//! message. A consumer left asleep is a loom deadlock (the main thread
//! joins it), so these models fail if a wake-up can be lost.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::advance;
use rebound_loom_tests::{Drops, model, queue};
use std::time::Duration;

#[test]
fn consumer_sleeping_vs_produce_gets_the_message() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        let consumer = {
            let q = q.clone();
            thread::spawn(move || {
                let d = q.consume().expect("the queue is open");
                assert_eq!(d.name(), "m");
                d.ack().unwrap();
            })
        };
        q.produce(drops.msg("m")).unwrap();
        consumer.join().unwrap();
        assert_eq!(q.stats().acked, 1);
        drop(q);
        assert_eq!(drops.count(), 1);
    });
}

#[test]
fn consumer_sleeping_vs_delayed_message_falling_due_gets_it() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        let consumer = {
            let q = q.clone();
            thread::spawn(move || {
                let d = q.consume().expect("the queue is open");
                assert_eq!(d.name(), "later");
                d.ack().unwrap();
            })
        };
        let delay = Duration::from_millis(1);
        q.produce_after(drops.msg("later"), delay).unwrap();
        // Time passes the due time: every timed wait ends, no other does.
        advance(&q, delay);
        consumer.join().unwrap();
        assert_eq!(q.stats().acked, 1);
        drop(q);
        assert_eq!(drops.count(), 1);
    });
}
