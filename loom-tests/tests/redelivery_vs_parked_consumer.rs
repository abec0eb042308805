//! Race 15: a consumer parks on an empty queue while a redeliverer pass
//! puts a message back into the index: one rolled back by its holder, or
//! one whose lease ran out. No lost wake-up: the pass wakes the parked
//! consumer (or the consumer's poll after it registered as a sleeper finds
//! the message), which gets the message as attempt 2. Nothing else is
//! pending and nothing is delayed, so the consumer parks without a timeout:
//! a consumer left asleep is a loom deadlock (the main thread joins it).
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::{Redeliverer, advance};
use rebound::{Delivery, LeaseExpired, Queue, Stats, TryConsumeError};
use rebound_loom_tests::{Drops, LEASE, Msg, model, queue};

/// Parks a consumer on a queue whose one message `m` is held as `d`, lets
/// `put_back` bring `d`'s message back (it runs the redeliverer's pass),
/// and checks that the consumer got it as attempt 2 and acked it, and that
/// nothing is left or leaked. Returns the queue's stats.
fn parked_consumer_gets_back(
    put_back: impl FnOnce(&Queue<Msg>, Delivery<Msg>, &mut Redeliverer<Msg>),
) -> Stats {
    let drops = Drops::new();
    let q = queue(4);
    q.produce(drops.msg("m")).unwrap();
    let mut redeliverer = Redeliverer::new();
    let d = q.try_consume().unwrap();
    let consumer = {
        let q = q.clone();
        thread::spawn(move || {
            let d = q.consume().expect("the queue is open");
            assert_eq!((d.name(), d.attempt()), ("m", 2));
            d.ack().unwrap();
        })
    };
    put_back(&q, d, &mut redeliverer);
    consumer.join().unwrap();
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    let stats = q.stats();
    assert_eq!((stats.redelivered, stats.acked), (1, 1));
    drop((q, redeliverer));
    assert_eq!(drops.count(), 1);
    stats
}

#[test]
fn parked_consumer_vs_a_rollback_put_back_gets_it() {
    model(|| {
        let stats = parked_consumer_gets_back(|q, d, redeliverer| {
            d.rollback().unwrap(); // due at once: no backoff
            redeliverer.redeliver_due(q);
        });
        assert_eq!(stats.rolled_back, 1);
    });
}

#[test]
fn parked_consumer_vs_an_expired_lease_put_back_gets_it() {
    model(|| {
        let stats = parked_consumer_gets_back(|q, d, redeliverer| {
            advance(q, LEASE); // `d`'s lease ends
            redeliverer.redeliver_due(q);
            assert_eq!(d.ack(), Err(LeaseExpired));
        });
        assert_eq!(stats.expired, 1);
    });
}
