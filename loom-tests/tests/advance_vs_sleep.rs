//! Race 23: a consumer goes to sleep on a delayed message while a
//! `ManualClock` is advanced past its due time. Under a manual clock a
//! consumer waits for a due time with no timeout (the clock does not move
//! by itself), so only the advance can wake it: its SeqCst store of the
//! time, then the waiter count's fence and load (`Waiters::notify`),
//! against the consumer's registration, then its poll, which reads the
//! clock. No lost wake-up: the consumer gets the message. A consumer left
//! asleep is a loom deadlock (the main thread joins it).
#![cfg(rebound_loom)]

use loom::thread;
use rebound::{Backoff, ManualClock, Queue};
use rebound_loom_tests::{Drops, LEASE, Msg, model};
use std::time::Duration;

#[test]
fn consumer_sleeping_vs_manual_clock_advance_gets_the_delayed_message() {
    model(|| {
        let drops = Drops::new();
        let clock = ManualClock::new();
        let q: Queue<Msg> = Queue::builder()
            .clock(clock.clone())
            .lease(LEASE)
            .backoff(Backoff::fixed(Duration::ZERO))
            .build();
        let delay = Duration::from_secs(3600);
        q.produce_after(drops.msg("later"), delay).unwrap();
        let consumer = {
            let q = q.clone();
            thread::spawn(move || {
                let d = q.consume().expect("the queue is open");
                assert_eq!(d.name(), "later");
                d.ack().unwrap();
            })
        };
        clock.advance(delay);
        consumer.join().unwrap();
        assert_eq!(q.stats().acked, 1);
        drop(q);
        assert_eq!(drops.count(), 1);
    });
}
