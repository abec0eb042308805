//! Bounded concurrent stress: several producers and consumers, handlers that
//! ack, roll back, drop, panic, reject or outlive their lease, and poison
//! messages. Afterwards every message was acked exactly once, or
//! dead-lettered after exactly `max_attempts` deliveries (or once, if
//! rejected), and no message was ever held by two consumers at once.

use rebound::{Backoff, DeadLetterReason, LeaseExpired, Queue};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

const PRODUCERS: usize = 3;
const CONSUMERS: usize = 3;
const PER_PRODUCER: u32 = 8_000;
const MAX_ATTEMPTS: u32 = 4;

fn is_poison(n: u32) -> bool {
    n.is_multiple_of(97)
}
fn is_rejected(n: u32) -> bool {
    n % 101 == 1
}

/// A small deterministic generator per consumer thread.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
}

struct Ledger {
    holding: Vec<AtomicBool>,
    deliveries: Vec<AtomicU32>,
    acks: Vec<AtomicU32>,
}

impl Ledger {
    fn new(messages: u32) -> Self {
        let n = messages as usize;
        Self {
            holding: (0..n).map(|_| AtomicBool::new(false)).collect(),
            deliveries: (0..n).map(|_| AtomicU32::new(0)).collect(),
            acks: (0..n).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

fn quiet_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"handler panicked") {
            default(info);
        }
    }));
}

#[test]
fn mixed_failures_lose_nothing_and_never_double_hold() {
    mixed_failures(PER_PRODUCER);
}

/// The same, long: 100 rounds of 50 000 messages per producer (about 8 s
/// here in release). Run with
/// `cargo test --release --test stress -- --ignored`.
#[test]
#[ignore = "long: run by hand with --release -- --ignored"]
fn mixed_failures_long() {
    for _ in 0..100 {
        mixed_failures(50_000);
    }
}

fn mixed_failures(per_producer: u32) {
    let messages = PRODUCERS as u32 * per_producer;
    quiet_panics();
    let q: Queue<u32> = Queue::builder()
        .lease(Duration::from_secs(60))
        .backoff(Backoff::fixed(Duration::ZERO))
        .max_attempts(MAX_ATTEMPTS)
        .build();
    let ledger = Ledger::new(messages);
    thread::scope(|s| {
        for c in 0..CONSUMERS {
            let (q, ledger) = (q.clone(), &ledger);
            s.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
                while let Ok(d) = q.consume() {
                    let n = *d as usize;
                    assert!(
                        !ledger.holding[n].swap(true, Ordering::SeqCst),
                        "message {n} held twice"
                    );
                    let before = ledger.deliveries[n].fetch_add(1, Ordering::SeqCst);
                    assert_eq!(d.attempt(), before + 1, "attempts of message {n}");
                    let fail =
                        is_poison(*d) || (d.attempt() < MAX_ATTEMPTS && rng.next() % 100 < 30);
                    if is_rejected(*d) {
                        ledger.holding[n].store(false, Ordering::SeqCst);
                        d.dead_letter().unwrap();
                    } else if !fail {
                        ledger.holding[n].store(false, Ordering::SeqCst);
                        ledger.acks[n].fetch_add(1, Ordering::SeqCst);
                        d.ack().unwrap();
                    } else {
                        ledger.holding[n].store(false, Ordering::SeqCst);
                        match rng.next() % 4 {
                            0 => d.rollback().unwrap(),
                            1 => d.rollback_after(Duration::ZERO).unwrap(),
                            2 => drop(d),
                            _ => {
                                let result = catch_unwind(AssertUnwindSafe(move || {
                                    let _held = d;
                                    panic!("handler panicked");
                                }));
                                assert!(result.is_err());
                            }
                        }
                    }
                }
            });
        }
        let producers: Vec<_> = (0..PRODUCERS as u32)
            .map(|p| {
                let q = q.clone();
                s.spawn(move || {
                    for i in 0..per_producer {
                        q.produce(p * per_producer + i).unwrap();
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        q.close();
    });

    let dead: HashMap<u32, (u32, DeadLetterReason)> = q
        .drain_dead_letters()
        .into_iter()
        .map(|d| (*d.payload(), (d.attempts(), d.reason())))
        .collect();
    for n in 0..messages {
        let acks = ledger.acks[n as usize].load(Ordering::SeqCst);
        let deliveries = ledger.deliveries[n as usize].load(Ordering::SeqCst);
        if is_rejected(n) {
            assert_eq!(
                (acks, dead.get(&n)),
                (0, Some(&(1, DeadLetterReason::Rejected))),
                "message {n}"
            );
        } else if is_poison(n) {
            assert_eq!((acks, deliveries), (0, MAX_ATTEMPTS), "message {n}");
            assert_eq!(
                dead.get(&n),
                Some(&(MAX_ATTEMPTS, DeadLetterReason::MaxAttempts)),
                "message {n}"
            );
        } else {
            assert_eq!(acks, 1, "message {n} acked {acks} times");
            assert!(!dead.contains_key(&n), "message {n} both acked and dead");
        }
    }
    let s = q.stats();
    assert_eq!(s.produced, u64::from(messages));
    assert_eq!(s.acked + s.dead_lettered, s.produced);
    assert_eq!((s.ready, s.delayed, s.in_flight), (0, 0, 0));
    // Every delivery ended in exactly one ack, rollback (drop and panic
    // included) or rejection; nothing expired with a 60 s lease.
    let rejected = dead
        .values()
        .filter(|d| d.1 == DeadLetterReason::Rejected)
        .count() as u64;
    assert_eq!(s.delivered, s.acked + s.rolled_back + rejected);
    assert_eq!(s.expired, 0);
}

#[test]
fn slow_handlers_past_their_lease_never_settle_twice() {
    const N: u32 = 600;
    let q: Queue<u32> = Queue::builder()
        .lease(Duration::from_millis(5))
        .backoff(Backoff::fixed(Duration::ZERO))
        .max_attempts(64)
        .build();
    let acks: Vec<AtomicU32> = (0..N).map(|_| AtomicU32::new(0)).collect();
    let latest: Vec<AtomicU32> = (0..N).map(|_| AtomicU32::new(0)).collect();
    let stale_refused = AtomicU32::new(0);
    for i in 0..N {
        q.produce(i).unwrap();
    }
    q.close();
    thread::scope(|s| {
        for c in 0..CONSUMERS {
            let (q, acks, latest, stale_refused) = (q.clone(), &acks, &latest, &stale_refused);
            s.spawn(move || {
                let mut rng = Rng(0xDEAD_BEEF ^ (c as u64 + 7));
                while let Ok(d) = q.consume() {
                    let n = *d as usize;
                    latest[n].fetch_max(d.attempt(), Ordering::SeqCst);
                    // One in five handlers outlives its lease.
                    if rng.next().is_multiple_of(5) {
                        thread::sleep(Duration::from_millis(12));
                    }
                    let attempt = d.attempt();
                    match d.ack() {
                        Ok(()) => {
                            acks[n].fetch_add(1, Ordering::SeqCst);
                            // Only the newest delivery of a message can settle it.
                            assert_eq!(
                                latest[n].load(Ordering::SeqCst),
                                attempt,
                                "stale ack of {n} accepted"
                            );
                        }
                        Err(LeaseExpired) => {
                            stale_refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    for (n, a) in acks.iter().enumerate() {
        assert_eq!(a.load(Ordering::SeqCst), 1, "message {n}");
    }
    let s = q.stats();
    assert!(
        stale_refused.load(Ordering::SeqCst) > 0,
        "no handler outlived its lease"
    );
    assert_eq!(u64::from(stale_refused.load(Ordering::SeqCst)), s.expired);
    assert_eq!(
        (s.acked, s.dead_lettered, s.in_flight),
        (u64::from(N), 0, 0)
    );
}
