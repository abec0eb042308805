//! Race 19: a task registers as a waiter (`consume_async`: a listener of
//! the task event, counted in the waiters' word, then a second poll) while
//! a producer publishes and notifies, and another waiting task is
//! cancelled (its future dropped after one poll, as a `select!` branch that
//! loses). No lost wake-up: the waiting task gets the message, whichever
//! of the two tasks the producer's wake-up went to, because a cancelled
//! task that was woken and did not act on it passes the wake-up on. A task
//! left waiting is a loom deadlock (its thread parks in `block_on`, the
//! main thread joins it).
#![cfg(rebound_loom)]

use loom::thread;
use rebound_loom_tests::{Drops, block_on, model, queue};
use std::future::Future;
use std::task::{Context, Waker};

#[test]
fn task_registering_vs_produce_gets_the_message() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        let task = {
            let q = q.clone();
            thread::spawn(move || {
                let d = block_on(q.consume_async()).expect("the queue is open");
                assert_eq!(d.name(), "m");
                d.ack().unwrap();
            })
        };
        q.produce(drops.msg("m")).unwrap();
        task.join().unwrap();
        assert_eq!(q.stats().acked, 1);
        drop(q);
        assert_eq!(drops.count(), 1);
    });
}

/// Task `a` waits first (polled once, as a `select!` branch is, then
/// dropped: cancelled), task `b` registers behind it while a producer
/// publishes and notifies: the wake-up goes to `a` if `a` still waits,
/// and `a` lets go without acting on it, so it must pass it on to `b`.
#[test]
fn cancelled_task_vs_produce_passes_the_wake_up_to_the_waiting_task() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        let mut a = Box::pin(q.consume_async());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(a.as_mut().poll(&mut cx).is_pending(), "nothing yet");
        let b = {
            let q = q.clone();
            thread::spawn(move || {
                let d = block_on(q.consume_async()).expect("the queue is open");
                assert_eq!(d.name(), "m");
                d.ack().unwrap();
            })
        };
        let producer = {
            let q = q.clone();
            let m = drops.msg("m");
            thread::spawn(move || {
                q.produce(m).unwrap();
            })
        };
        drop(a); // cancelled
        producer.join().unwrap();
        b.join().unwrap();
        let stats = q.stats();
        assert_eq!((stats.acked, stats.in_flight, stats.ready), (1, 0, 0));
        drop(q);
        assert_eq!(drops.count(), 1);
    });
}
