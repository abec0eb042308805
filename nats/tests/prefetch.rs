//! `prefetch` > 1: the messages a pull brings for several consumers are
//! each handed out once, on their first attempt, in order, and a closed
//! queue still drains (each test starts its own `nats-server -js`).

mod support;

use rebound_nats::Queue;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

const N: u32 = 1_000;
const CONSUMERS: usize = 3;

#[test]
fn prefetched_messages_are_each_handed_out_once_then_the_queue_drains() {
    let server = support::NatsServer::start();
    let q: Queue<String> = Queue::builder(server.url(), "prefetch")
        .prefetch(16)
        .connect()
        .unwrap();
    q.produce_batch((0..N).map(|i| i.to_string())).unwrap();
    q.close();
    let seen = Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        for _ in 0..CONSUMERS {
            s.spawn(|| {
                // `consume` returns `Closed` once the queue is drained.
                while let Ok(d) = q.consume() {
                    assert_eq!(d.attempt(), 1, "{} expired in the buffer", *d);
                    let n: u32 = d.parse().unwrap();
                    assert!(seen.lock().unwrap().insert(n), "{n} handed out twice");
                    d.ack().unwrap();
                }
            });
        }
    });
    assert_eq!(seen.into_inner().unwrap().len(), N as usize);
    let stats = q.stats().unwrap();
    assert_eq!(
        (stats.ready, stats.in_flight, stats.acked),
        (0, 0, u64::from(N))
    );
}

#[test]
fn prefetched_messages_come_in_order() {
    let server = support::NatsServer::start();
    let q: Queue<String> = Queue::builder(server.url(), "prefetch")
        .prefetch(4)
        .connect()
        .unwrap();
    q.produce_batch((0..40).map(|i: u32| i.to_string()))
        .unwrap();
    for expected in 0..40 {
        let d = q.consume_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(
            (d.as_str(), d.attempt()),
            (expected.to_string().as_str(), 1)
        );
        d.ack().unwrap();
    }
    assert!(q.try_consume().unwrap_err().is_empty());
}
