//! `ManualClock`: leases, delays, backoff and timestamps follow it, and
//! what it makes due is claimable once it is advanced.
//!
//! Every wait here is a real-time timeout that only ends a test that has
//! already failed: a message the clock made due arrives at once.

use rebound::{Backoff, ManualClock, Queue, TryConsumeError};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// How long a test waits (real time) for what must arrive at once.
const PATIENCE: Duration = Duration::from_secs(30);
const HOUR: Duration = Duration::from_secs(3600);

fn manual<T: Send + Sync + 'static>(clock: &ManualClock) -> rebound::Builder<T> {
    Queue::builder().clock(clock.clone())
}

#[test]
fn a_delay_of_an_hour_ends_when_the_clock_says_so() {
    let clock = ManualClock::new();
    let q: Queue<u32> = manual(&clock).build();
    q.produce_after(1, HOUR).unwrap();
    thread::sleep(Duration::from_millis(20));
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    clock.advance(HOUR - Duration::from_secs(1));
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
    assert_eq!(q.stats().delayed, 1);
    clock.advance(Duration::from_secs(1));
    // No upkeep wait: the advance itself refreshed the queue's reading.
    let d = q.try_consume().unwrap();
    assert_eq!(*d, 1);
    d.ack().unwrap();
}

#[test]
fn a_lease_of_30_s_runs_out_after_30_s_of_the_clock_and_not_before() {
    let clock = ManualClock::new();
    let q: Queue<u32> = manual(&clock)
        .lease(Duration::from_secs(30))
        .backoff(Backoff::fixed(Duration::from_secs(60)))
        .build();
    q.produce(7).unwrap();
    let held = q.consume().unwrap();
    clock.advance(Duration::from_secs(29));
    assert!(
        q.consume_timeout(Duration::from_millis(50)).is_err(),
        "expired early"
    );
    assert_eq!(q.stats().expired, 0);
    clock.advance(Duration::from_secs(1));
    // Expired by the time `advance` returns (its redeliverer caught up),
    // and back after the backoff's minute, counted from the expiry.
    assert_eq!(q.stats().expired, 1);
    assert!(q.try_consume().is_err());
    clock.advance(Duration::from_secs(60));
    let again = q.consume_timeout(PATIENCE).unwrap();
    assert_eq!((*again, again.attempt()), (7, 2));
    assert!(held.ack().is_err(), "the old holder lost its lease");
    again.ack().unwrap();
    assert_eq!(q.stats().expired, 1);
}

#[test]
fn backoff_of_an_hour_and_rollback_after_follow_the_clock() {
    let clock = ManualClock::new();
    let q: Queue<u32> = manual(&clock).backoff(Backoff::fixed(HOUR)).build();
    q.produce(1).unwrap();
    q.consume().unwrap().rollback().unwrap();
    assert!(q.consume_timeout(Duration::from_millis(50)).is_err());
    clock.advance(HOUR);
    let d = q.consume_timeout(PATIENCE).unwrap();
    assert_eq!(d.attempt(), 2);
    d.rollback_after(Duration::from_secs(5)).unwrap();
    clock.advance(Duration::from_secs(4));
    assert!(q.consume_timeout(Duration::from_millis(50)).is_err());
    clock.advance(Duration::from_secs(1));
    assert_eq!(q.consume_timeout(PATIENCE).unwrap().attempt(), 3);
}

#[test]
fn a_rollback_with_no_backoff_comes_back_without_advancing() {
    let clock = ManualClock::new();
    let q: Queue<u32> = manual(&clock)
        .backoff(Backoff::fixed(Duration::ZERO))
        .build();
    q.produce(1).unwrap();
    for attempt in 1..=5 {
        let d = q.consume_timeout(PATIENCE).unwrap();
        assert_eq!(d.attempt(), attempt);
        d.rollback().unwrap();
    }
}

#[test]
fn timestamps_are_readings_of_the_manual_clock() {
    let clock = ManualClock::new();
    let q: Queue<u32> = manual(&clock).build();
    clock.advance(Duration::from_secs(10));
    let at = clock.now();
    q.produce(1).unwrap();
    q.produce_at(2, at + Duration::from_secs(5)).unwrap();
    let d = q.try_consume().unwrap();
    assert_eq!(d.timestamp(), at);
    d.ack().unwrap();
    clock.advance(Duration::from_secs(5));
    let d = q.try_consume().unwrap();
    assert_eq!(d.timestamp(), at + Duration::from_secs(5));
    d.ack().unwrap();
}

#[test]
fn clones_share_one_clock_and_one_advance_drives_every_queue() {
    let clock = ManualClock::new();
    let a: Queue<u32> = manual(&clock).build();
    let b: Queue<u32> = Queue::builder().clock(clock.clone()).build();
    a.produce_after(1, HOUR).unwrap();
    b.produce_after(2, HOUR).unwrap();
    let other = clock.clone();
    other.advance(HOUR);
    assert_eq!(*a.try_consume().unwrap(), 1);
    assert_eq!(*b.try_consume().unwrap(), 2);
}

/// A consumer blocked in `consume` on a delayed message sleeps with no
/// timeout under a manual clock: only the advance can wake it. (Its own
/// wait is twice as long as the test's: a lost wake-up fails the test, not
/// a late poll.)
#[test]
fn an_advance_wakes_a_consumer_blocked_on_a_delayed_message() {
    let clock = ManualClock::new();
    let q: Queue<u32> = manual(&clock).build();
    q.produce_after(1, HOUR).unwrap();
    let (got, get) = std::sync::mpsc::channel();
    let consumer = {
        let q = q.clone();
        thread::spawn(move || {
            let d = q.consume_timeout(2 * PATIENCE).map(|d| *d);
            got.send(d).unwrap();
        })
    };
    // Whether the consumer is asleep yet or not, the advance reaches it.
    thread::sleep(Duration::from_millis(20));
    clock.advance(HOUR);
    let d = get
        .recv_timeout(PATIENCE)
        .expect("the advance woke the consumer");
    assert_eq!(d.unwrap(), 1);
    consumer.join().unwrap();
}

#[test]
fn consume_timeout_measures_real_time_under_a_manual_clock() {
    let clock = ManualClock::new();
    let q: Queue<u32> = manual(&clock).build();
    // The clock never moves: the timeout still ends the wait.
    assert!(q.consume_timeout(Duration::from_millis(10)).is_err());
}

#[test]
fn the_clock_lets_go_of_a_queue_whose_handles_are_gone() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let clock = ManualClock::new();
    {
        let q: Queue<Counted> = manual(&clock).build();
        q.produce(Counted(Arc::clone(&dropped))).unwrap();
        q.produce_after(Counted(Arc::clone(&dropped)), HOUR)
            .unwrap();
    }
    // Torn down with the clock still alive: both payloads dropped.
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
    clock.advance(HOUR);
    // `dropped` is held only here and by no queue: no `Counted` leaked.
    assert_eq!(Arc::strong_count(&dropped), 1);
}

#[cfg(feature = "journal")]
#[test]
fn a_journaled_queue_refuses_a_manual_clock() {
    let dir = std::env::temp_dir().join(format!("rebound-manual-journal-{}", std::process::id()));
    let err = Queue::<Vec<u8>>::builder()
        .clock(ManualClock::new())
        .journal(&dir)
        .open()
        .unwrap_err();
    assert!(matches!(
        err,
        rebound::OpenError::Build(rebound::BuildError::ManualClockJournal)
    ));
    assert!(!dir.exists(), "refused before touching the directory");
}
