//! Closing: producers are refused, consumers drain everything, then stop.

use rebound::{Backoff, Closed, ConsumeTimeoutError, ProduceError, Queue, TryConsumeError};
use std::thread;
use std::time::Duration;

#[test]
fn produce_after_close_hands_the_value_back() {
    let q: Queue<String> = Queue::new();
    q.close();
    q.close();
    let err = q.produce("kept".into()).unwrap_err();
    assert_eq!(format!("{err:?}"), "Closed(..)");
    assert_eq!(err.to_string(), "producing on a closed queue");
    assert!(matches!(&err, ProduceError::Closed(value) if value == "kept"));
    assert!(q.produce_after("x".into(), Duration::from_secs(1)).is_err());
    assert_eq!(q.stats().produced, 0);
}

#[test]
fn consumers_drain_pending_and_returning_messages_then_see_closed() {
    let q: Queue<u32> = Queue::builder()
        .backoff(Backoff::fixed(Duration::from_millis(5)))
        .build();
    for i in 0..10 {
        q.produce(i).unwrap();
    }
    q.produce_after(10, Duration::from_millis(20)).unwrap();
    let held = q.consume().unwrap();
    q.close();
    let mut got = vec![];
    // The held message is in flight: the queue is not drained yet.
    while got.len() < 10 {
        let d = q.consume().unwrap();
        got.push(*d);
        d.ack().unwrap();
    }
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    held.rollback().unwrap(); // comes back after closing
    let d = q.consume().unwrap();
    assert_eq!((*d, d.attempt()), (0, 2));
    d.ack().unwrap();
    got.sort_unstable();
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
    assert_eq!(q.consume().unwrap_err(), Closed);
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Closed);
    assert_eq!(
        q.consume_timeout(Duration::from_secs(5)).unwrap_err(),
        ConsumeTimeoutError::Closed
    );
}

#[test]
fn close_wakes_every_blocked_consumer() {
    let q: Queue<u8> = Queue::new();
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || q.consume().map(|d| *d))
        })
        .collect();
    thread::sleep(Duration::from_millis(20));
    q.close();
    for w in waiters {
        assert_eq!(w.join().unwrap(), Err(Closed));
    }
}

#[test]
fn the_last_ack_after_close_wakes_blocked_consumers() {
    let q: Queue<u8> = Queue::new();
    q.produce(1).unwrap();
    let held = q.consume().unwrap();
    q.close();
    let waiter = {
        let q = q.clone();
        thread::spawn(move || q.consume().map(|d| *d))
    };
    thread::sleep(Duration::from_millis(20));
    held.ack().unwrap();
    assert_eq!(waiter.join().unwrap(), Err(Closed));
}

#[test]
fn blocked_consumer_wakes_on_produce_and_on_a_delayed_message() {
    let q: Queue<u8> = Queue::new();
    let waiter = {
        let q = q.clone();
        thread::spawn(move || {
            let a = q.consume().map(|d| *d);
            let b = q.consume().map(|d| *d);
            (a, b)
        })
    };
    thread::sleep(Duration::from_millis(20));
    q.produce(1).unwrap();
    q.produce_after(2, Duration::from_millis(30)).unwrap();
    assert_eq!(waiter.join().unwrap(), (Ok(1), Ok(2)));
}

#[test]
fn consume_timeout_times_out_without_losing_anything() {
    let q: Queue<u8> = Queue::new();
    assert_eq!(
        q.consume_timeout(Duration::from_millis(10)).unwrap_err(),
        ConsumeTimeoutError::Timeout
    );
    q.produce_after(5, Duration::from_millis(200)).unwrap();
    assert_eq!(
        q.consume_timeout(Duration::from_millis(10)).unwrap_err(),
        ConsumeTimeoutError::Timeout
    );
    assert_eq!(*q.consume_timeout(Duration::from_secs(10)).unwrap(), 5);
}
