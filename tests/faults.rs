//! Regression tests for faults found by adversarial use: huge delays,
//! payload destructors that panic, a linearizable `try_consume`, and the
//! routing of messages that are due at once.

use rebound::{
    Backoff, ConsumeTimeoutError, Delivery, Outcome, Pool, ProduceError, Queue, TryConsumeError,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

/// A payload that counts its drops and, if armed, panics in its destructor.
struct Bomb {
    armed: bool,
    drops: Arc<AtomicUsize>,
}

impl Bomb {
    fn new(armed: bool, drops: &Arc<AtomicUsize>) -> Self {
        Bomb {
            armed,
            drops: Arc::clone(drops),
        }
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.armed {
            panic!("payload destructor panics");
        }
    }
}

/// Waits until `done` holds, failing after [`PATIENCE`].
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "never happened: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A backoff whose delays are as long as `Duration` goes, jittered: a
/// rollback and a lease expiry must both put the message back (delayed),
/// neither may panic, and the redeliverer must live on to bring back the
/// next rollback.
#[test]
fn a_huge_jittered_backoff_strands_nothing_and_the_redeliverer_lives_on() {
    let q: Queue<u32> = Queue::builder()
        .lease(Duration::from_millis(20))
        .backoff(Backoff::fixed(Duration::MAX).with_jitter(1e-20))
        .build();
    q.produce(1).unwrap();
    q.produce(2).unwrap();
    q.consume().unwrap().rollback().unwrap();
    // Held past its lease: the redeliverer expires it, with the same backoff.
    let held = q.consume().unwrap();
    eventually("the lease expired", || q.stats().expired == 1);
    assert!(held.ack().is_err());
    eventually("both came back, delayed", || q.stats().delayed == 2);
    q.produce(3).unwrap();
    let d = q.consume().unwrap();
    assert_eq!(*d, 3);
    d.rollback_after(Duration::ZERO).unwrap();
    let again = q
        .consume_timeout(PATIENCE)
        .expect("the redeliverer is alive");
    assert_eq!((*again, again.attempt()), (3, 2));
    again.ack().unwrap();
}

/// An ack whose payload's destructor panics is still counted, so `close`
/// drains and consumers get `Closed`.
#[test]
fn an_ack_whose_payload_drop_panics_is_counted_and_close_drains() {
    let drops = Arc::new(AtomicUsize::new(0));
    let q: Queue<Bomb> = Queue::new();
    q.produce(Bomb::new(true, &drops)).unwrap();
    let d = q.consume().unwrap();
    let acked = catch_unwind(AssertUnwindSafe(move || d.ack()));
    assert!(acked.is_err(), "the destructor's panic reaches the acker");
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    let s = q.stats();
    assert_eq!((s.acked, s.in_flight), (1, 0));
    q.close();
    assert!(matches!(
        q.consume_timeout(PATIENCE),
        Err(ConsumeTimeoutError::Closed)
    ));
}

/// Dropping the last handle with a panicking payload among 200 others
/// drops all of them, then resumes the panic.
#[test]
fn teardown_drops_every_payload_when_one_destructor_panics() {
    let drops = Arc::new(AtomicUsize::new(0));
    let q: Queue<Bomb> = Queue::new();
    // A dead letter not drained, whose destructor panics.
    q.produce(Bomb::new(true, &drops)).unwrap();
    q.consume().unwrap().dead_letter().unwrap();
    // A pending one that panics, 200 that do not, and a delayed one.
    q.produce(Bomb::new(true, &drops)).unwrap();
    for _ in 0..200 {
        q.produce(Bomb::new(false, &drops)).unwrap();
    }
    q.produce_after(Bomb::new(false, &drops), Duration::from_secs(3600))
        .unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    let torn_down = catch_unwind(AssertUnwindSafe(move || drop(q)));
    assert!(torn_down.is_err(), "the first panic is resumed");
    assert_eq!(drops.load(Ordering::SeqCst), 203);
}

/// A payload destructor that panics when the runtime acks its message
/// neither aborts the process nor loses the count.
#[test]
fn the_runtime_contains_a_payload_destructor_that_panics() {
    let drops = Arc::new(AtomicUsize::new(0));
    let q: Queue<Bomb> = Queue::new();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let handle = q.process(pool, |_: &Delivery<Bomb>| Outcome::Ack);
    for i in 0..10 {
        q.produce(Bomb::new(i % 2 == 0, &drops)).unwrap();
    }
    q.close();
    let report = handle.join();
    assert_eq!(report.acked, 10);
    assert_eq!(drops.load(Ordering::SeqCst), 10);
    assert_eq!(q.stats().acked, 10);
}

/// A handler that fails under a backoff whose jitter used to panic on huge
/// delays: the runtime retries it (delayed for as long as `Duration` goes)
/// instead of aborting the process.
#[test]
fn the_runtime_survives_a_huge_jittered_backoff() {
    let q: Queue<u32> = Queue::builder()
        .backoff(Backoff::fixed(Duration::MAX).with_jitter(1e-20))
        .build();
    let handle = q.process(Pool::global(), |_: &Delivery<u32>| Outcome::Retry);
    q.produce(1).unwrap();
    eventually("the message was retried", || q.stats().delayed == 1);
    let report = handle.shutdown(PATIENCE);
    assert_eq!((report.retried, report.in_flight), (1, 0));
}

/// crossbeam-channel's `list::linearizable`, on our API: each thread
/// produces, then claims and acks one message, so at least one message is
/// queued whenever a `try_consume` runs. `Empty` would be false.
#[test]
fn try_consume_is_linearizable() {
    const ROUNDS: usize = 25_000;
    const THREADS: usize = 4;
    let q: Queue<usize> = Queue::new();
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for i in 0..ROUNDS {
                    q.produce(i).unwrap();
                    match q.try_consume() {
                        Ok(d) => d.ack().unwrap(),
                        Err(e) => panic!("round {i}: {e:?} while a message was queued"),
                    }
                }
            });
        }
    });
    assert_eq!(q.stats().acked, (THREADS * ROUNDS) as u64);
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
}

/// `produce_after(ZERO)` and `produce_at(past)` are immediate messages: in
/// order with the producer's other immediate messages, with stamps that
/// agree with that order.
#[test]
fn messages_due_at_once_keep_their_producers_order() {
    let q: Queue<u32> = Queue::new();
    let past = Instant::now();
    thread::sleep(Duration::from_millis(2));
    let later_past = Instant::now();
    for round in 0..50 {
        let base = round * 5;
        q.produce(base).unwrap();
        q.produce_after(base + 1, Duration::ZERO).unwrap();
        q.produce_at(base + 2, later_past).unwrap();
        q.produce_at(base + 3, past).unwrap();
        q.produce(base + 4).unwrap();
    }
    let mut last_stamp = None;
    for expected in 0..250 {
        let d = q.try_consume().unwrap();
        assert_eq!(*d, expected);
        if let Some(last) = last_stamp {
            assert!(d.timestamp() >= last, "stamps follow the claim order");
        }
        last_stamp = Some(d.timestamp());
        d.ack().unwrap();
    }
}

/// A closed queue refuses an empty batch as it refuses any produce.
#[test]
fn an_empty_batch_on_a_closed_queue_is_refused() {
    let q: Queue<u8> = Queue::new();
    assert_eq!(q.produce_batch(Vec::new()).unwrap(), Vec::new());
    q.close();
    match q.produce_batch(Vec::new()) {
        Err(ProduceError::Closed(values)) => assert!(values.is_empty()),
        other => panic!("expected Closed, got {other:?}"),
    }
}

/// `close_due`: a message delayed past the life of the process (and one
/// rolled back with such a backoff) does not keep consumers, or the
/// runtime's `join`, waiting; it stays in the queue.
#[test]
fn close_due_does_not_wait_for_messages_delayed_past_the_process() {
    let q: Queue<u32> = Queue::builder()
        .backoff(Backoff::fixed(Duration::MAX))
        .build();
    q.produce_after(1, Duration::MAX).unwrap();
    q.produce(2).unwrap();
    let handle = q.process(Pool::global(), |_: &Delivery<u32>| Outcome::Retry);
    q.close_due();
    let report = handle.join();
    assert_eq!((report.claimed, report.retried), (1, 1));
    let s = q.stats();
    assert_eq!((s.delayed, s.in_flight, s.rolled_back), (2, 0, 1));
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Closed);
}

/// The last handle dropped by a thread that is already unwinding (a panic
/// elsewhere), with a payload whose destructor panics: teardown contains
/// that panic (a second one would abort the process) and the first panic
/// goes on.
#[test]
fn teardown_during_a_panic_does_not_abort() {
    let drops = Arc::new(AtomicUsize::new(0));
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        let q: Queue<Bomb> = Queue::new();
        q.produce(Bomb::new(true, &drops)).unwrap();
        q.produce(Bomb::new(false, &drops)).unwrap();
        panic!("the handler's own panic");
    }));
    let message = unwound.unwrap_err();
    assert_eq!(
        message.downcast_ref::<&str>(),
        Some(&"the handler's own panic")
    );
    assert_eq!(drops.load(Ordering::SeqCst), 2);
}
