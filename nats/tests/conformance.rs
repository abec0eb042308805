//! One set of behaviour tests, written once in `conformance!` and
//! instantiated for both backends: the in-memory `rebound::Queue` and the
//! JetStream `rebound_nats::Queue` (each JetStream test starts its own
//! `nats-server -js` on a free loopback port with a temporary store). The
//! JetStream instance runs twice: on the default server (Debian's 2.9:
//! `produce_after` and `defer` through the delayed stream and its mover),
//! and on the nats-server 2.12 that `REBOUND_NATS_SERVER_2_12` names
//! (through message schedules); without that variable the second is
//! listed as ignored, with the reason.
//!
//! The bodies only use the names both queues share (`produce`,
//! `consume_timeout`, `ack`, `process`, ...); what differs in shape (the
//! dead letters are read over the network on JetStream) goes through the
//! two functions each instance provides: `make` and `drain`.
//!
//! No test asserts an upper bound on time; "never early" tests assert a
//! lower bound, which is exact.

mod support;

use rebound::{Backoff, DeadLetterReason, LeaseExpired, Outcome, Pool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The settings a test asks of a queue.
#[derive(Clone, Copy)]
struct Cfg {
    lease: Duration,
    backoff: Backoff,
    max_attempts: u32,
}

impl Default for Cfg {
    fn default() -> Self {
        Cfg {
            lease: Duration::from_secs(30),
            backoff: Backoff::fixed(Duration::ZERO),
            max_attempts: 16,
        }
    }
}

/// Long enough for anything to arrive on a loaded machine; only ever
/// waited for in full when a test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// The lease of the `auto_extend` tests: long enough that an extension
/// made halfway through the rights is in time on a loaded machine.
const AUTO_LEASE: Duration = Duration::from_secs(1);

macro_rules! conformance {
    ($(#[$attr:meta])* $backend:ident, $make:path, $drain:path) => {
        mod $backend {
            use super::*;

            #[test]
            $(#[$attr])*
            fn ack_removes_the_message() {
                let (_server, q) = $make(Cfg::default());
                q.produce("a".to_string()).unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                assert_eq!((d.as_str(), d.attempt()), ("a", 1));
                d.ack().unwrap();
                assert!(q.try_consume().unwrap_err().is_empty());
            }

            #[test]
            $(#[$attr])*
            fn rollback_honours_the_backoff() {
                let backoff = Duration::from_millis(300);
                let (_server, q) = $make(Cfg {
                    backoff: Backoff::fixed(backoff),
                    ..Cfg::default()
                });
                q.produce("a".to_string()).unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                let rolled = Instant::now();
                d.rollback().unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                assert!(rolled.elapsed() >= backoff, "redelivered early");
                assert_eq!(d.attempt(), 2);
                d.ack().unwrap();
            }

            #[test]
            $(#[$attr])*
            fn rollback_after_is_never_early() {
                let (_server, q) = $make(Cfg::default());
                q.produce("a".to_string()).unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                let delay = Duration::from_millis(400);
                let rolled = Instant::now();
                d.rollback_after(delay).unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                assert!(rolled.elapsed() >= delay, "redelivered early");
                assert_eq!(d.attempt(), 2);
                d.ack().unwrap();
            }

            #[test]
            $(#[$attr])*
            fn produce_after_is_never_early() {
                let (_server, q) = $make(Cfg::default());
                let delay = Duration::from_millis(500);
                let produced = Instant::now();
                let id = q.produce_after("later".to_string(), delay).unwrap();
                q.produce("now".to_string()).unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                assert_eq!(d.as_str(), "now");
                d.ack().unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                assert!(produced.elapsed() >= delay, "delivered early");
                assert_eq!((d.as_str(), d.id(), d.attempt()), ("later", id, 1));
                d.ack().unwrap();
            }

            #[test]
            $(#[$attr])*
            fn max_attempts_dead_letters_with_n_attempts() {
                let (_server, q) = $make(Cfg {
                    max_attempts: 3,
                    ..Cfg::default()
                });
                let id = q.produce("poison".to_string()).unwrap();
                for attempt in 1..=3 {
                    let d = q.consume_timeout(PATIENCE).unwrap();
                    assert_eq!(d.attempt(), attempt);
                    d.rollback_after(Duration::ZERO).unwrap();
                }
                let dead = $drain(&q);
                assert_eq!(dead.len(), 1);
                assert_eq!(
                    dead[0],
                    (
                        id.to_string(),
                        3,
                        DeadLetterReason::MaxAttempts,
                        "poison".to_string()
                    )
                );
                assert!(q.try_consume().unwrap_err().is_empty());
                assert!($drain(&q).is_empty(), "drained twice");
            }

            #[test]
            $(#[$attr])*
            fn dead_letter_is_rejected_with_its_attempts() {
                let (_server, q) = $make(Cfg::default());
                q.produce("bad".to_string()).unwrap();
                q.consume_timeout(PATIENCE).unwrap().dead_letter().unwrap();
                let dead = $drain(&q);
                assert_eq!(dead.len(), 1);
                assert_eq!((dead[0].1, dead[0].2), (1, DeadLetterReason::Rejected));
            }

            #[test]
            $(#[$attr])*
            fn an_expired_lease_redelivers_with_the_next_attempt_and_fences_the_stale_holder() {
                let (_server, q) = $make(Cfg {
                    lease: Duration::from_millis(300),
                    ..Cfg::default()
                });
                q.produce("a".to_string()).unwrap();
                let stale = q.consume_timeout(PATIENCE).unwrap();
                let fresh = q.consume_timeout(PATIENCE).unwrap();
                assert_eq!((fresh.attempt(), fresh.id()), (2, stale.id()));
                assert_eq!(
                    stale.extend_lease(Duration::from_secs(1)),
                    Err(LeaseExpired)
                );
                assert_eq!(stale.ack(), Err(LeaseExpired));
                fresh.ack().unwrap();
                assert!(q.try_consume().unwrap_err().is_empty());
            }

            #[test]
            $(#[$attr])*
            fn the_last_attempt_expiring_dead_letters() {
                let (_server, q) = $make(Cfg {
                    lease: Duration::from_millis(200),
                    max_attempts: 1,
                    ..Cfg::default()
                });
                q.produce("slow".to_string()).unwrap();
                let held = q.consume_timeout(PATIENCE).unwrap();
                // Past the lease (a lower bound): the holder's rights are over.
                std::thread::sleep(Duration::from_millis(400));
                assert_eq!(held.ack(), Err(LeaseExpired));
                let start = Instant::now();
                let mut dead = Vec::new();
                while dead.is_empty() && start.elapsed() < PATIENCE {
                    // The in-memory queue's redeliverer, or JetStream's
                    // redelivery (dead-lettered by the consumer that gets
                    // it), moves it.
                    assert!(q.consume_timeout(Duration::from_millis(100)).is_err());
                    dead = $drain(&q);
                }
                assert_eq!(dead.len(), 1, "not dead-lettered");
                assert_eq!((dead[0].1, dead[0].2), (1, DeadLetterReason::MaxAttempts));
            }

            #[test]
            $(#[$attr])*
            fn extend_lease_keeps_the_message() {
                let lease = Duration::from_millis(1200);
                let (_server, q) = $make(Cfg {
                    lease,
                    ..Cfg::default()
                });
                q.produce("long".to_string()).unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                let start = Instant::now();
                while start.elapsed() < lease * 2 {
                    std::thread::sleep(lease / 4);
                    d.extend_lease(lease).unwrap();
                }
                // Held past two leases: nobody else got it.
                assert!(q.try_consume().unwrap_err().is_empty());
                d.ack().unwrap();
            }

            #[test]
            $(#[$attr])*
            fn auto_extend_keeps_a_handler_longer_than_its_lease() {
                let (_server, q) = $make(Cfg {
                    lease: AUTO_LEASE,
                    ..Cfg::default()
                });
                q.produce("long".to_string()).unwrap();
                q.close();
                let handle = q
                    .processor()
                    .auto_extend(Duration::from_secs(60))
                    .start(own_pool(), |_d| std::thread::sleep(AUTO_LEASE * 5 / 2))
                    .unwrap();
                let report = handle.join();
                // Acked once, never redelivered (the processor would have
                // claimed the redelivery before the queue drained).
                assert_eq!(
                    (report.claimed, report.acked, report.expired),
                    (1, 1, 0),
                    "{report:?}"
                );
                assert!(report.extended >= 1, "{report:?}");
            }

            #[test]
            $(#[$attr])*
            fn auto_extend_stops_after_max() {
                let max = Duration::from_millis(500);
                let (_server, q) = $make(Cfg {
                    lease: AUTO_LEASE,
                    ..Cfg::default()
                });
                let produced = Instant::now();
                q.produce("hung".to_string()).unwrap();
                q.close();
                let again = Arc::new(std::sync::Mutex::new(None));
                let handle = {
                    let again = Arc::clone(&again);
                    q.processor()
                        .auto_extend(max)
                        .start(own_pool(), move |d| {
                            if d.attempt() == 1 {
                                // Past one lease and `max`: given up on.
                                std::thread::sleep(AUTO_LEASE * 2);
                            } else {
                                *again.lock().unwrap() = Some(produced.elapsed());
                            }
                        })
                        .unwrap()
                };
                let report = handle.join();
                assert_eq!(
                    (report.claimed, report.acked, report.expired),
                    (2, 1, 1),
                    "{report:?}"
                );
                let again = again.lock().unwrap().expect("not redelivered");
                assert!(again >= AUTO_LEASE + max, "redelivered early: {again:?}");
                assert!(report.extended >= 1, "{report:?}");
            }

            #[test]
            $(#[$attr])*
            fn defer_keeps_the_attempt_and_the_id_and_never_dead_letters() {
                let (_server, q) = $make(Cfg {
                    max_attempts: 2,
                    ..Cfg::default()
                });
                q.produce("a".to_string()).unwrap();
                q.consume_timeout(PATIENCE).unwrap().rollback().unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                let id = d.id();
                assert_eq!(d.attempt(), 2);
                let delay = Duration::from_millis(300);
                let deferred = Instant::now();
                d.defer(delay).unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                assert!(
                    deferred.elapsed() >= delay,
                    "a deferred message came back early"
                );
                assert_eq!((d.as_str(), d.attempt(), d.id()), ("a", 2, id));
                // Its last attempt: a second defer does not dead-letter it
                // either, a rollback does.
                d.defer(Duration::ZERO).unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                assert_eq!((d.attempt(), d.id()), (2, id));
                d.rollback().unwrap();
                let dead = $drain(&q);
                assert_eq!(dead.len(), 1);
                assert_eq!(
                    (dead[0].0.clone(), dead[0].1, dead[0].2),
                    (id.to_string(), 2, DeadLetterReason::MaxAttempts)
                );
            }

            #[test]
            $(#[$attr])*
            fn each_producers_messages_come_in_order() {
                let (_server, q) = $make(Cfg::default());
                const PER: usize = 40;
                std::thread::scope(|s| {
                    for p in 0..3 {
                        let q = q.clone();
                        s.spawn(move || {
                            for i in 0..PER {
                                q.produce(format!("{p}:{i}")).unwrap();
                            }
                        });
                    }
                });
                let mut next: HashMap<String, usize> = HashMap::new();
                for _ in 0..3 * PER {
                    let d = q.consume_timeout(PATIENCE).unwrap();
                    let (p, i) = d.split_once(':').unwrap();
                    let i: usize = i.parse().unwrap();
                    let expected = next.entry(p.to_string()).or_default();
                    assert_eq!(i, *expected, "producer {p} out of order");
                    *expected += 1;
                    d.ack().unwrap();
                }
            }

            #[test]
            $(#[$attr])*
            fn close_refuses_produce_and_drains() {
                let (_server, q) = $make(Cfg::default());
                q.produce_batch(vec!["a".to_string(), "b".to_string()])
                    .unwrap();
                q.close();
                assert_eq!(q.produce("c".to_string()).unwrap_err().into_inner(), "c");
                let a = q.consume().unwrap();
                assert_eq!(a.as_str(), "a");
                a.rollback_after(Duration::ZERO).unwrap();
                let mut seen = Vec::new();
                while let Ok(d) = q.consume() {
                    seen.push(d.to_string());
                    d.ack().unwrap();
                }
                seen.sort();
                assert_eq!(seen, ["a", "b"]);
            }

            #[test]
            $(#[$attr])*
            fn the_runtime_contains_panics_and_retries() {
                let (_server, q) = $make(Cfg {
                    max_attempts: 3,
                    ..Cfg::default()
                });
                for job in ["ok", "panic-once", "fail", "reject"] {
                    q.produce(job.to_string()).unwrap();
                }
                q.close();
                let handle = q.process(Pool::global(), |d| match d.as_str() {
                    "panic-once" if d.attempt() == 1 => panic!("handler panics"),
                    "fail" => Outcome::Retry,
                    "reject" => Outcome::DeadLetter,
                    _ => Outcome::Ack,
                });
                let report = handle.join();
                assert_eq!(report.acked, 2);
                assert_eq!(report.panicked, 1);
                assert_eq!(report.retried, 2);
                assert_eq!(report.dead_lettered, 2);
                assert_eq!(report.claimed, 7);
                assert_eq!(report.in_flight, 0);
                let mut dead: Vec<_> = $drain(&q).into_iter().map(|l| (l.3, l.1)).collect();
                dead.sort();
                assert_eq!(dead, [("fail".to_string(), 3), ("reject".to_string(), 1)]);
            }

            #[test]
            $(#[$attr])*
            fn shutdown_stops_an_idle_processor_and_loses_nothing() {
                let (_server, q) = $make(Cfg::default());
                let pool = Arc::new(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(2)
                        .build()
                        .unwrap(),
                );
                let handle = q
                    .processor()
                    .concurrency(1)
                    .start(&pool, |_d| Outcome::Ack)
                    .unwrap();
                q.produce("one".to_string()).unwrap();
                let start = Instant::now();
                while handle.report().acked == 0 && start.elapsed() < PATIENCE {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // The dispatcher is waiting for a message: shutdown wakes it.
                let report = handle.shutdown(PATIENCE);
                assert_eq!((report.claimed, report.acked, report.in_flight), (1, 1, 0));
                // After shutdown nothing claims: a new message stays.
                q.produce("two".to_string()).unwrap();
                let d = q.consume_timeout(PATIENCE).unwrap();
                assert_eq!((d.as_str(), d.attempt()), ("two", 1));
                d.ack().unwrap();
            }
        }
    };
}

/// A pool of two threads for one test, so that no other test's handlers
/// hold a claimed message back in the pool's queue with its lease running.
fn own_pool() -> Pool {
    Pool::from(Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    ))
}

/// A dead letter as both backends can report it: id (as text), attempts,
/// reason, payload.
type Letter = (String, u32, DeadLetterReason, String);

fn memory(cfg: Cfg) -> ((), rebound::Queue<String>) {
    let q = rebound::Queue::builder()
        .lease(cfg.lease)
        .backoff(cfg.backoff)
        .max_attempts(cfg.max_attempts)
        .build();
    ((), q)
}

fn memory_drain(q: &rebound::Queue<String>) -> Vec<Letter> {
    q.drain_dead_letters()
        .into_iter()
        .map(|l| {
            (
                l.id().to_string(),
                l.attempts(),
                l.reason(),
                l.into_payload(),
            )
        })
        .collect()
}

fn jetstream(cfg: Cfg) -> (support::NatsServer, rebound_nats::Queue<String>) {
    connect(support::NatsServer::start(), cfg)
}

fn jetstream_2_12(cfg: Cfg) -> (support::NatsServer, rebound_nats::Queue<String>) {
    let (server, q) = connect(support::NatsServer::start_2_12(), cfg);
    assert!(
        support::has_schedules(q.server_version()),
        "{} names nats-server {}, not 2.12 or later",
        support::SERVER_2_12,
        q.server_version()
    );
    (server, q)
}

fn connect(
    server: support::NatsServer,
    cfg: Cfg,
) -> (support::NatsServer, rebound_nats::Queue<String>) {
    let q = rebound_nats::Queue::builder(server.url(), "conformance")
        .lease(cfg.lease)
        .backoff(cfg.backoff)
        .max_attempts(cfg.max_attempts)
        .connect()
        .unwrap();
    (server, q)
}

fn jetstream_drain(q: &rebound_nats::Queue<String>) -> Vec<Letter> {
    q.drain_dead_letters()
        .unwrap()
        .into_iter()
        .map(|l| {
            (
                l.id().to_string(),
                l.attempts(),
                l.reason(),
                l.into_payload(),
            )
        })
        .collect()
}

conformance!(in_memory, memory, memory_drain);
conformance!(nats_jetstream, jetstream, jetstream_drain);
conformance!(
    #[cfg_attr(
        not(rebound_nats_2_12),
        ignore = "needs nats-server 2.12: set REBOUND_NATS_SERVER_2_12 (README, Testing)"
    )]
    nats_jetstream_2_12,
    jetstream_2_12,
    jetstream_drain
);
