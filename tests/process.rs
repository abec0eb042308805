//! The processing runtime: handlers that fail, panic, run past their lease,
//! and shut down mid-flight. Afterwards every message is accounted for as in
//! the core's guarantees, the concurrency limit was never exceeded, and the
//! pool's threads survived every panic.

use rebound::{Backoff, DeadLetterReason, Delivery, Outcome, Pool, Queue};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration;

const MESSAGES: u32 = 6_000;
const MAX_ATTEMPTS: u32 = 4;
const THREADS: usize = 3;

/// Silences the default hook for the panics the handlers raise on purpose.
fn quiet_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"handler panicked") {
            default(info);
        }
    }));
}

fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap(),
    )
}

/// The pool's worker threads, asked of the pool itself.
fn pool_threads(pool: &rayon::ThreadPool) -> HashSet<ThreadId> {
    pool.broadcast(|_| thread::current().id())
        .into_iter()
        .collect()
}

/// Counts handlers running at once and remembers the most.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Concurrency {
    fn enter(&self) -> Exit<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Exit(self)
    }
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

struct Exit<'a>(&'a Concurrency);
impl Drop for Exit<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What each message does, by its number.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Plan {
    /// Fails (`Err`) on every attempt: dead-lettered after `MAX_ATTEMPTS`.
    Poison,
    /// Returns `Outcome::DeadLetter` on its first delivery.
    Reject,
    /// Panics on attempt 1, acks on attempt 2.
    PanicOnce,
    /// `Err` on attempt 1, `RetryAfter(0)` on attempt 2, acks on attempt 3.
    FailTwice,
    /// Acks at once.
    Fine,
}

fn plan(n: u32) -> Plan {
    match n % 50 {
        0 => Plan::Poison,
        1 => Plan::Reject,
        2..=6 => Plan::PanicOnce,
        7..=11 => Plan::FailTwice,
        _ => Plan::Fine,
    }
}

#[test]
fn failing_and_panicking_handlers_lose_nothing() {
    quiet_panics();
    let q: Queue<u32> = Queue::builder()
        .lease(Duration::from_secs(60))
        .backoff(Backoff::fixed(Duration::from_millis(1)))
        .max_attempts(MAX_ATTEMPTS)
        .build();
    let pool = pool(THREADS);
    let running = Arc::new(Concurrency::default());
    let deliveries: Arc<Vec<AtomicU32>> =
        Arc::new((0..MESSAGES).map(|_| AtomicU32::new(0)).collect());
    let acks: Arc<Vec<AtomicU32>> = Arc::new((0..MESSAGES).map(|_| AtomicU32::new(0)).collect());
    let handler_threads = Arc::new(Mutex::new(HashSet::new()));

    let handle = {
        let (running, deliveries, acks) = (running.clone(), deliveries.clone(), acks.clone());
        let handler_threads = handler_threads.clone();
        q.process(&pool, move |d: &Delivery<u32>| -> Result<Outcome, &str> {
            let _inside = running.enter();
            handler_threads
                .lock()
                .unwrap()
                .insert(thread::current().id());
            let n = **d;
            let seen = deliveries[n as usize].fetch_add(1, Ordering::SeqCst) + 1;
            assert_eq!(
                d.attempt(),
                seen,
                "message {n}: attempts in order, one at a time"
            );
            let outcome = match (plan(n), d.attempt()) {
                (Plan::Poison, _) => return Err("poison"),
                (Plan::Reject, _) => Outcome::DeadLetter,
                (Plan::PanicOnce, 1) => panic!("handler panicked"),
                (Plan::FailTwice, 1) => return Err("transient"),
                (Plan::FailTwice, 2) => Outcome::RetryAfter(Duration::ZERO),
                _ => Outcome::Ack,
            };
            if outcome == Outcome::Ack {
                acks[n as usize].fetch_add(1, Ordering::SeqCst);
            }
            Ok(outcome)
        })
    };
    assert_eq!(handle.concurrency(), THREADS);
    thread::scope(|s| {
        for p in 0..2 {
            let q = &q;
            s.spawn(move || {
                for n in (p..MESSAGES).step_by(2) {
                    q.produce(n).unwrap();
                }
            });
        }
    });
    q.close();
    let report = handle.join();

    // Every message: acked exactly once, or dead-lettered with the right count.
    let dead: HashMap<u32, (u32, DeadLetterReason)> = q
        .drain_dead_letters()
        .into_iter()
        .map(|d| (*d.payload(), (d.attempts(), d.reason())))
        .collect();
    let count = |p: Plan| (0..MESSAGES).filter(|&n| plan(n) == p).count() as u64;
    for n in 0..MESSAGES {
        let (acked, delivered) = (
            acks[n as usize].load(Ordering::SeqCst),
            deliveries[n as usize].load(Ordering::SeqCst),
        );
        match plan(n) {
            Plan::Poison => {
                assert_eq!((acked, delivered), (0, MAX_ATTEMPTS), "message {n}");
                assert_eq!(dead[&n], (MAX_ATTEMPTS, DeadLetterReason::MaxAttempts));
            }
            Plan::Reject => {
                assert_eq!((acked, delivered), (0, 1), "message {n}");
                assert_eq!(dead[&n], (1, DeadLetterReason::Rejected));
            }
            Plan::PanicOnce => assert_eq!((acked, delivered), (1, 2), "message {n}"),
            Plan::FailTwice => assert_eq!((acked, delivered), (1, 3), "message {n}"),
            Plan::Fine => assert_eq!((acked, delivered), (1, 1), "message {n}"),
        }
        if acked == 1 {
            assert!(!dead.contains_key(&n), "message {n} acked and dead");
        }
    }

    // The processor's report adds up, and agrees with the queue.
    let (poison, reject, panic_once, fail_twice) = (
        count(Plan::Poison),
        count(Plan::Reject),
        count(Plan::PanicOnce),
        count(Plan::FailTwice),
    );
    let total = u64::from(MESSAGES);
    assert_eq!(report.acked, total - poison - reject);
    assert_eq!(report.panicked, panic_once);
    assert_eq!(
        report.retried,
        poison * u64::from(MAX_ATTEMPTS - 1) + 2 * fail_twice
    );
    assert_eq!(report.dead_lettered, poison + reject);
    assert_eq!((report.expired, report.in_flight), (0, 0));
    assert_eq!(
        report.claimed,
        report.acked + report.retried + report.dead_lettered + report.panicked
    );
    let s = q.stats();
    assert_eq!(s.produced, total);
    assert_eq!((s.ready, s.delayed, s.in_flight), (0, 0, 0));
    assert_eq!(
        s.produced,
        s.acked + s.dead_lettered + s.ready + s.delayed + s.in_flight
    );
    assert_eq!(
        (s.acked, s.dead_lettered),
        (report.acked, report.dead_lettered)
    );
    assert_eq!(s.delivered, report.claimed);

    // Never more handlers at once than the limit, and the panics killed no
    // pool thread: the threads that ran handlers are the pool's threads now.
    assert!(
        running.max() <= THREADS,
        "{} handlers at once",
        running.max()
    );
    let alive = pool_threads(&pool);
    assert_eq!(alive.len(), THREADS);
    assert!(handler_threads.lock().unwrap().is_subset(&alive));
}

#[test]
fn panics_never_kill_the_only_pool_thread() {
    quiet_panics();
    let q: Queue<u32> = Queue::builder()
        .backoff(Backoff::fixed(Duration::ZERO))
        .build();
    let pool = pool(1);
    let before = pool_threads(&pool);
    let ran_on = Arc::new(Mutex::new(HashSet::new()));
    let handle = {
        let ran_on = ran_on.clone();
        q.process(&pool, move |d: &Delivery<u32>| {
            ran_on.lock().unwrap().insert(thread::current().id());
            if d.attempt() == 1 {
                panic!("handler panicked");
            }
        })
    };
    for n in 0..200 {
        q.produce(n).unwrap();
    }
    q.close();
    let report = handle.join();
    assert_eq!((report.panicked, report.acked), (200, 200));
    assert_eq!(*ran_on.lock().unwrap(), before);
    assert_eq!(pool_threads(&pool), before);
}

#[test]
fn handlers_past_their_lease_lose_the_message_to_its_redelivery() {
    const N: u32 = 40;
    let slow = |n: u32| n == 5 || n == 23;
    let q: Queue<u32> = Queue::builder()
        .lease(Duration::from_millis(30))
        .backoff(Backoff::fixed(Duration::ZERO))
        .build();
    let pool = pool(THREADS);
    let redelivered: Arc<Vec<AtomicBool>> =
        Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
    let handle = {
        let redelivered = redelivered.clone();
        q.process(&pool, move |d: &Delivery<u32>| {
            let n = **d as usize;
            if d.attempt() > 1 {
                redelivered[n].store(true, Ordering::SeqCst);
            } else if slow(**d) {
                // Outlive the lease: return only once the queue took the
                // message back and another handler got it (no timing guess).
                while !redelivered[n].load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        })
    };
    for n in 0..N {
        q.produce(n).unwrap();
    }
    q.close();
    let report = handle.join();
    // The late handlers' acks were refused (`expired`), their redeliveries'
    // taken: every message acked exactly once. (A handler of another message
    // delayed past its 30 ms lease by a loaded machine would show up the
    // same way, hence `>=`.)
    assert!(report.expired >= 2, "{report:?}");
    assert_eq!(report.acked, u64::from(N));
    assert_eq!(report.claimed, report.acked + report.expired);
    let s = q.stats();
    assert_eq!(s.expired, report.expired);
    assert_eq!(
        (s.acked, s.dead_lettered, s.in_flight),
        (u64::from(N), 0, 0)
    );
}

#[test]
fn a_handler_that_extends_its_lease_keeps_the_message() {
    let q: Queue<u32> = Queue::builder().lease(Duration::from_millis(500)).build();
    let handle = q.process(Pool::from(pool(2)), |d: &Delivery<u32>| {
        // Twice the lease in all, extending well before each end.
        for _ in 0..40 {
            thread::sleep(Duration::from_millis(25));
            d.extend_lease(Duration::from_millis(500))?;
        }
        Ok::<(), rebound::LeaseExpired>(())
    });
    q.produce(1).unwrap();
    q.close();
    let report = handle.join();
    assert_eq!((report.claimed, report.acked, report.expired), (1, 1, 0));
    assert_eq!(q.stats().expired, 0);
}

#[test]
fn shutdown_mid_flight_returns_every_message() {
    const N: u32 = 20;
    const LIMIT: usize = 2;
    let q: Queue<u32> = Queue::builder().lease(Duration::from_secs(60)).build();
    let pool = pool(4);
    let gate = Arc::new(AtomicBool::new(false));
    let running = Arc::new(Concurrency::default());
    let acks: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(0)).collect());
    let handler = {
        let (gate, running, acks) = (gate.clone(), running.clone(), acks.clone());
        move |d: &Delivery<u32>| {
            let _inside = running.enter();
            while !gate.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
            acks[**d as usize].fetch_add(1, Ordering::SeqCst);
        }
    };
    for n in 0..N {
        q.produce(n).unwrap();
    }
    let first = q
        .processor()
        .concurrency(LIMIT)
        .start(&pool, handler.clone())
        .unwrap();
    while running.now.load(Ordering::SeqCst) < LIMIT {
        thread::yield_now();
    }
    // Both handlers are stuck at the gate: the timeout runs out.
    let report = first.shutdown(Duration::from_millis(10));
    assert_eq!(
        (report.claimed, report.in_flight, report.acked),
        (LIMIT as u64, LIMIT as u64, 0)
    );
    // No over-claiming: the other messages were never touched.
    let s = q.stats();
    assert_eq!(
        (s.delivered, s.ready),
        (LIMIT as u64, u64::from(N) - LIMIT as u64)
    );

    // The unfinished handlers keep their deliveries and settle them when
    // they return; a new processor handles the rest.
    gate.store(true, Ordering::SeqCst);
    let second = q.process(&pool, handler);
    q.close();
    let report = second.join();
    assert_eq!(report.acked, u64::from(N) - LIMIT as u64);
    for n in 0..N as usize {
        assert_eq!(acks[n].load(Ordering::SeqCst), 1, "message {n}");
    }
    let s = q.stats();
    assert_eq!((s.acked, s.in_flight, s.ready), (u64::from(N), 0, 0));
    assert!(running.max() <= 4);
}

#[test]
fn shutdown_waits_for_handlers_that_finish_in_time() {
    let q: Queue<u32> = Queue::new();
    let started = Arc::new(AtomicUsize::new(0));
    let handle = {
        let started = started.clone();
        q.processor()
            .concurrency(1)
            .start(pool(2), move |_: &Delivery<u32>| {
                started.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(20));
            })
            .unwrap()
    };
    for n in 0..5 {
        q.produce(n).unwrap();
    }
    while started.load(Ordering::SeqCst) == 0 {
        thread::yield_now();
    }
    let report = handle.shutdown(Duration::from_secs(30));
    assert_eq!(report.in_flight, 0);
    assert!(report.acked >= 1);
    assert_eq!(report.claimed, report.acked);
    // Nothing claimed after the shutdown; the rest is still in the queue.
    let s = q.stats();
    assert_eq!(s.ready + s.acked, 5);
    assert_eq!(s.in_flight, 0);
}

#[test]
fn dropping_the_handle_stops_claiming() {
    let q: Queue<u32> = Queue::new();
    let handle = q.process(Pool::global(), |_: &Delivery<u32>| ());
    drop(handle);
    q.produce(1).unwrap();
    // No processor is left: the message waits for a consumer.
    let d = q.try_consume().unwrap();
    assert_eq!(d.attempt(), 1);
    d.ack().unwrap();
}
