//! The async consumers (feature `async`) under tokio (multi-thread and
//! current-thread), async-executor and `futures::executor::block_on`:
//! every message delivered with the sync guarantees (acked exactly once,
//! rollbacks and delays included), `select!` against a short timeout losing
//! nothing and hanging nowhere, wake-ups at due times without a runtime
//! timer, sync and async consumers on one queue, the stream ending after
//! close and drain, and cancellation (a dropped waiter passes its wake-up
//! on, a cancelled task's delivery rolls back).
#![cfg(feature = "async")]

use futures::StreamExt;
use futures::task::ArcWake;
use rebound::{Backoff, Closed, Delivery, Queue};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

/// Messages per delivery test.
const MESSAGES: u64 = 20_000;
/// Consumer tasks per delivery test.
const TASKS: usize = 4;
/// Rounds of the `select!` test.
const ROUNDS: u64 = 10_000;
/// How long any test may take before it counts as hung.
const HANG: Duration = Duration::from_secs(30);

/// Runs `f` on a thread of its own and returns what it returns; panics if it
/// takes longer than [`HANG`] (a lost wake-up leaves a task waiting forever,
/// and `futures::executor::block_on` has no timer to give up with).
fn within<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, result) = std::sync::mpsc::channel();
    thread::spawn(move || done.send(f()).unwrap());
    result.recv_timeout(HANG).expect("hung")
}

/// `futures::executor::block_on`, within [`HANG`].
fn block_on<F: Future + Send + 'static>(f: F) -> F::Output
where
    F::Output: Send,
{
    within(move || futures::executor::block_on(f))
}

/// A queue whose rollbacks come back after 1 ms (so that they fall due
/// while tasks wait, and only the redeliverer can wake them).
fn queue() -> Queue<u64> {
    Queue::builder()
        .backoff(Backoff::fixed(Duration::from_millis(1)))
        .build()
}

/// Produces `0..MESSAGES` from a thread, every 100th with a 1 ms delay, then
/// closes the queue.
fn produce_all(q: &Queue<u64>) -> thread::JoinHandle<()> {
    let q = q.clone();
    thread::spawn(move || {
        for n in 0..MESSAGES {
            if n % 100 == 0 {
                q.produce_after(n, Duration::from_millis(1)).unwrap();
            } else {
                q.produce(n).unwrap();
            }
            if n % 1_000 == 0 {
                thread::sleep(Duration::from_micros(200)); // let consumers wait
            }
        }
        q.close();
    })
}

/// What every consumer here does with a delivery: rolls back every 10th
/// message on its first attempt, acks the rest into `acked`.
fn settle(d: Delivery<u64>, acked: &mut Vec<u64>) {
    if d.is_multiple_of(10) && d.attempt() == 1 {
        d.rollback().unwrap();
    } else {
        acked.push(*d);
        d.ack().unwrap();
    }
}

/// Consumes until `Closed` (see [`settle`]); returns what it acked.
async fn consume_until_closed(q: Queue<u64>) -> Vec<u64> {
    let mut acked = Vec::new();
    while let Ok(d) = q.consume_async().await {
        settle(d, &mut acked);
    }
    acked
}

/// Every message acked exactly once, counted by the queue too.
fn assert_all_acked(q: &Queue<u64>, per_task: Vec<Vec<u64>>) {
    let mut all: Vec<u64> = per_task.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all.len() as u64, MESSAGES, "each message acked once");
    assert!(
        all.iter().copied().eq(0..MESSAGES),
        "each message acked once"
    );
    let s = q.stats();
    assert_eq!((s.produced, s.acked, s.in_flight), (MESSAGES, MESSAGES, 0));
    assert_eq!(s.rolled_back, MESSAGES / 10);
}

fn tokio_every_message_delivered(rt: tokio::runtime::Runtime) {
    let q = queue();
    let producer = produce_all(&q);
    let acked = rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| tokio::spawn(consume_until_closed(q.clone())))
            .collect();
        let all = futures::future::try_join_all(tasks);
        tokio::time::timeout(HANG, all)
            .await
            .expect("hung")
            .unwrap()
    });
    producer.join().unwrap();
    assert_all_acked(&q, acked);
}

#[test]
fn tokio_multi_thread_every_message_delivered() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    tokio_every_message_delivered(rt);
}

#[test]
fn tokio_current_thread_every_message_delivered() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    tokio_every_message_delivered(rt);
}

#[test]
fn async_executor_every_message_delivered() {
    let q = queue();
    let producer = produce_all(&q);
    let ex = Arc::new(async_executor::Executor::new());
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| ex.spawn(consume_until_closed(q.clone())))
        .collect();
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let ex = Arc::clone(&ex);
            let stopped = stopped.clone();
            thread::spawn(move || futures::executor::block_on(ex.run(stopped.recv())))
        })
        .collect();
    let acked = block_on(futures::future::join_all(tasks));
    drop(stop);
    for t in threads {
        t.join().unwrap().unwrap_err();
    }
    producer.join().unwrap();
    assert_all_acked(&q, acked);
}

#[test]
fn futures_block_on_every_message_delivered() {
    let q = queue();
    let producer = produce_all(&q);
    // Several tasks in one future on one thread: `join_all` polls them.
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| consume_until_closed(q.clone()))
        .collect();
    let acked = block_on(futures::future::join_all(tasks));
    producer.join().unwrap();
    assert_all_acked(&q, acked);
}

#[test]
fn batches_every_message_delivered() {
    let q = queue();
    let producer = produce_all(&q);
    let consume = |q: Queue<u64>| async move {
        let mut acked = Vec::new();
        while let Ok(batch) = q.consume_batch_async(64).await {
            assert!((1..=64).contains(&batch.len()));
            for d in batch {
                settle(d, &mut acked);
            }
        }
        acked
    };
    let tasks: Vec<_> = (0..2).map(|_| consume(q.clone())).collect();
    let acked = block_on(futures::future::join_all(tasks));
    producer.join().unwrap();
    assert_all_acked(&q, acked);
    // As `consume_batch`: `max == 0` is an empty batch at once, then
    // `Closed` for anything more.
    let (empty, closed) = block_on(async move {
        let empty = q.consume_batch_async(0).await.map(|b| b.len());
        (empty, q.consume_batch_async(1).await.map(|b| b.len()))
    });
    assert_eq!((empty, closed), (Ok(0), Err(Closed)));
}

/// `select!` of `consume_async` against a short timeout, at least
/// [`ROUNDS`] rounds in all, by consumer tasks that come and go, while one
/// task waits with plain `consume_async`. The messages come in bursts; after
/// each burst the selecting tasks stop (their last round may have lost its
/// race while it held a wake-up) and only the plain waiter is left: it must
/// get whatever remains, promptly, with nobody else polling the queue. A
/// lost message or a swallowed wake-up leaves a message unacked, and the
/// test fails instead of hanging. Every message produced is acked once.
#[test]
fn select_against_a_timeout_loses_nothing_and_hangs_nowhere() {
    const SELECTORS: usize = 3;
    const BURST: u64 = 20;
    /// How long the plain waiter may take to drain what a burst left.
    const DRAIN: Duration = Duration::from_secs(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let q: Queue<u64> = Queue::new();
    let acked = Arc::new(AtomicU64::new(0));
    let rounds = Arc::new(AtomicU64::new(0));
    let timeouts = Arc::new(AtomicU64::new(0));
    // The phase number: selectors select while it is odd.
    let (phase, _) = tokio::sync::watch::channel(0u64);
    let phase = Arc::new(phase);
    rt.block_on(async {
        let selectors: Vec<_> = (0..SELECTORS)
            .map(|i| {
                let (q, acked, rounds, timeouts) =
                    (q.clone(), acked.clone(), rounds.clone(), timeouts.clone());
                let mut phases = phase.subscribe();
                tokio::spawn(async move {
                    let mut round = i as u64;
                    loop {
                        let now = *phases.borrow_and_update();
                        if now == u64::MAX {
                            return;
                        }
                        if now % 2 == 0 {
                            phases.changed().await.unwrap();
                            continue;
                        }
                        round += 1;
                        rounds.fetch_add(1, Ordering::Relaxed);
                        // Alternately a timer and a single yield: the
                        // consumer loses after one poll.
                        let timeout = async {
                            if round.is_multiple_of(2) {
                                tokio::time::sleep(Duration::from_micros(100)).await;
                            } else {
                                tokio::task::yield_now().await;
                            }
                        };
                        tokio::select! {
                            d = q.consume_async() => {
                                let Ok(d) = d else { return }; // closed at the end
                                d.ack().unwrap();
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            () = timeout => {
                                timeouts.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        let waiter = {
            let (q, acked) = (q.clone(), acked.clone());
            tokio::spawn(async move {
                while let Ok(d) = q.consume_async().await {
                    d.ack().unwrap();
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let mut produced = 0;
        while rounds.load(Ordering::Relaxed) < ROUNDS {
            phase.send_modify(|p| *p += 1); // selectors on
            for _ in 0..BURST {
                q.produce(produced).unwrap();
                produced += 1;
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            }
            phase.send_modify(|p| *p += 1); // selectors off
            let drained = async {
                while acked.load(Ordering::Relaxed) < produced {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            };
            if tokio::time::timeout(DRAIN, drained).await.is_err() {
                panic!(
                    "lost: {} of {produced} acked, {} left with the plain waiter",
                    acked.load(Ordering::Relaxed),
                    q.stats().ready
                );
            }
        }
        phase.send_replace(u64::MAX);
        q.close();
        let end = async {
            for s in selectors {
                s.await.unwrap();
            }
            waiter.await.unwrap();
        };
        tokio::time::timeout(HANG, end).await.expect("hung");
        let s = q.stats();
        assert_eq!(
            (s.produced, s.acked),
            (produced, produced),
            "produced vs acked"
        );
    });
    let s = q.stats();
    assert_eq!(acked.load(Ordering::Relaxed), s.produced);
    assert_eq!(
        (s.rolled_back, s.in_flight, s.ready),
        (0, 0, 0),
        "nothing claimed by a lost branch"
    );
    eprintln!(
        "{} rounds, {} timeouts, {} messages",
        rounds.load(Ordering::Relaxed),
        timeouts.load(Ordering::Relaxed),
        s.produced
    );
}

/// On a current-thread runtime: lets the task spawned last run until it
/// waits registered (it yields to the executor a few times after it first
/// finds nothing, then registers).
async fn until_registered() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// [`ROUNDS`] rounds of the race a `select!` can lose while holding a
/// wake-up, on a current-thread runtime so that the order is set: task `s`
/// waits in `select!` of `consume_async` against a timeout, task `w`
/// waits with plain `consume_async` behind it; a message comes (its
/// wake-up goes to `s`, the first waiter) and `s`'s timeout fires before
/// `s` runs again. `select!` polls its branches in random order: if the
/// timeout wins, the wake-up `s` got must go on to `w`, which gets the
/// message; if `consume_async` wins, `s` has it and `w` gets the next one.
/// Produced and acked agree after every round; none hangs.
#[test]
fn select_loser_passes_its_wake_up_on_every_round() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let q: Queue<u64> = Queue::new();
    let mut lost_races = 0;
    rt.block_on(async {
        for round in 0..ROUNDS {
            let (fire, timeout) = tokio::sync::oneshot::channel::<()>();
            let s = {
                let q = q.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        d = q.consume_async() => {
                            d.unwrap().ack().unwrap();
                            true
                        }
                        _ = timeout => false,
                    }
                })
            };
            until_registered().await; // `s` registers
            let w = {
                let q = q.clone();
                tokio::spawn(async move {
                    let d = q.consume_async().await.unwrap();
                    d.ack().unwrap();
                })
            };
            until_registered().await; // `w` registers behind it
            q.produce(round).unwrap();
            fire.send(()).unwrap();
            if s.await.unwrap() {
                q.produce(round).unwrap(); // `s` won its race: one for `w`
            } else {
                lost_races += 1;
            }
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .unwrap_or_else(|_| panic!("round {round}: the waiter behind a lost race hangs"))
                .unwrap();
        }
    });
    let s = q.stats();
    assert_eq!(s.produced, s.acked, "produced vs acked");
    assert_eq!((s.in_flight, s.ready), (0, 0));
    assert!(
        lost_races > 0,
        "the timeout never won: the race was not run"
    );
    eprintln!("{lost_races} of {ROUNDS} races lost by consume_async");
}

/// A waker that records that it was woken.
struct Flag(AtomicBool);

impl ArcWake for Flag {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = futures::task::waker(Arc::clone(&flag));
    (flag, waker)
}

fn poll<F: Future + Unpin>(f: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(waker))
}

/// Polls `f` until it waits registered: pending without having woken
/// itself (a task that finds nothing yields to the executor a few times
/// before it registers).
fn poll_until_registered<F: Future + Unpin>(f: &mut F, flag: &Flag, waker: &Waker) {
    let start = std::time::Instant::now();
    loop {
        flag.0.store(false, Ordering::SeqCst);
        assert!(poll(f, waker).is_pending(), "nothing to take yet");
        if !flag.0.load(Ordering::SeqCst) {
            return;
        }
        assert!(start.elapsed() < HANG, "never registered");
        thread::yield_now();
    }
}

/// Two tasks wait; a message comes and wakes one of them, which is then
/// dropped (cancelled) without being polled: the wake-up is passed on, and
/// the other task gets the message.
#[test]
fn a_cancelled_waiter_passes_its_wake_up_on() {
    let q: Queue<u64> = Queue::new();
    let (flag_a, waker_a) = flag();
    let (flag_b, waker_b) = flag();
    let mut a = Box::pin(q.consume_async());
    let mut b = Box::pin(q.consume_async());
    poll_until_registered(&mut a, &flag_a, &waker_a);
    poll_until_registered(&mut b, &flag_b, &waker_b);
    q.produce(7).unwrap();
    let a_woken = flag_a.0.load(Ordering::SeqCst);
    let b_woken = flag_b.0.load(Ordering::SeqCst);
    assert!(a_woken != b_woken, "one producer wakes one task");
    let (woken, mut other, other_flag, other_waker) = if a_woken {
        (a, b, flag_b, waker_b)
    } else {
        (b, a, flag_a, waker_a)
    };
    drop(woken);
    assert!(
        other_flag.0.load(Ordering::SeqCst),
        "the wake-up was passed on"
    );
    match poll(&mut other, &other_waker) {
        Poll::Ready(Ok(d)) => assert_eq!((*d, d.attempt()), (7, 1)),
        other => panic!(
            "expected the message, got {:?}",
            other.map(|r| r.map(|d| *d))
        ),
    }
}

/// A future dropped while it waits claims nothing: the message produced
/// meanwhile is still there, at attempt 1, and nothing is in flight.
#[test]
fn a_dropped_future_claims_nothing() {
    let q: Queue<u64> = Queue::new();
    let (flag, waker) = flag();
    let mut f = Box::pin(q.consume_async());
    poll_until_registered(&mut f, &flag, &waker);
    q.produce(1).unwrap();
    drop(f);
    assert_eq!(q.stats().in_flight, 0);
    let d = q.try_consume().unwrap();
    assert_eq!((*d, d.attempt()), (1, 1));
    d.ack().unwrap();
}

/// A task that got a delivery and is aborted before it settles it drops it:
/// the message rolls back and comes to the next consumer as attempt 2.
#[test]
fn a_cancelled_tasks_delivery_rolls_back() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let q: Queue<u64> = Queue::builder()
        .backoff(Backoff::fixed(Duration::ZERO))
        .build();
    q.produce(5).unwrap();
    rt.block_on(async {
        let (got, got_it) = tokio::sync::oneshot::channel();
        let task = {
            let q = q.clone();
            tokio::spawn(async move {
                let d = q.consume_async().await.unwrap();
                got.send(()).unwrap();
                std::future::pending::<()>().await;
                drop(d);
            })
        };
        got_it.await.unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        let again = tokio::time::timeout(HANG, q.consume_async())
            .await
            .expect("hung")
            .unwrap();
        assert_eq!((*again, again.attempt()), (5, 2));
        again.ack().unwrap();
    });
    assert_eq!(q.stats().rolled_back, 1);
}

/// A task waiting on an empty queue gets a delayed message, a rolled-back
/// one and an expired one when they fall due: the runtime has no timer
/// (`futures::executor::block_on`), only the queue's redeliverer can wake it.
#[test]
fn a_waiting_task_wakes_for_delayed_and_redelivered_messages() {
    let q: Queue<&str> = Queue::builder()
        .lease(Duration::from_millis(20))
        .backoff(Backoff::fixed(Duration::from_millis(5)))
        .build();
    let q2 = q.clone();
    block_on(async move {
        let q = q2;
        q.produce_after("delayed", Duration::from_millis(20))
            .unwrap();
        let d = q.consume_async().await.unwrap();
        assert_eq!(*d, "delayed");
        d.rollback().unwrap(); // back in 5 ms
        let d = q.consume_async().await.unwrap();
        assert_eq!((*d, d.attempt()), ("delayed", 2));
        let expired = d; // held past its 20 ms lease
        let d = q.consume_async().await.unwrap();
        assert_eq!((*d, d.attempt()), ("delayed", 3));
        assert!(expired.ack().is_err());
        d.ack().unwrap();
    });
    // The same with a task that starts waiting before the message exists.
    let producer = {
        let q = q.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(10));
            q.produce_after("later", Duration::from_millis(30)).unwrap();
        })
    };
    let q2 = q.clone();
    let d = block_on(async move { q2.consume_async().await.map(|d| (*d, d.ack())) }).unwrap();
    assert_eq!(d, ("later", Ok(())));
    producer.join().unwrap();
}

/// A task waiting on a closed queue for a message in flight gets `Closed`
/// once a thread acks it.
#[test]
fn a_task_on_a_closed_queue_waits_for_the_last_settle() {
    let q: Queue<u64> = Queue::new();
    q.produce(1).unwrap();
    let held = q.try_consume().unwrap();
    q.close();
    let acker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        held.ack().unwrap();
    });
    let q2 = q.clone();
    let closed = block_on(async move { q2.consume_async().await.map(|d| *d) });
    assert_eq!(closed, Err(Closed));
    acker.join().unwrap();
    assert_eq!(q.stats().acked, 1);
}

/// Two consumer threads and two consumer tasks on one queue, rollbacks
/// included: every message acked exactly once.
#[test]
fn sync_and_async_consumers_on_one_queue() {
    let q = queue();
    let producer = produce_all(&q);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                let mut acked = Vec::new();
                while let Ok(d) = q.consume() {
                    settle(d, &mut acked);
                }
                acked
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let mut acked = rt.block_on(async {
        let tasks: Vec<_> = (0..2)
            .map(|_| tokio::spawn(consume_until_closed(q.clone())))
            .collect();
        let all = futures::future::try_join_all(tasks);
        tokio::time::timeout(HANG, all)
            .await
            .expect("hung")
            .unwrap()
    });
    acked.extend(threads.into_iter().map(|t| t.join().unwrap()));
    producer.join().unwrap();
    assert_all_acked(&q, acked);
}

/// `deliveries()` yields every message, rollbacks included, and ends once
/// the queue is closed and drained; it stays ended.
#[test]
fn the_stream_ends_after_close_and_drain() {
    let q = queue();
    let producer = produce_all(&q);
    let q2 = q.clone();
    let acked = block_on(async move {
        let q = q2;
        let mut acked = Vec::new();
        let mut stream = Box::pin(q.deliveries());
        while let Some(d) = stream.next().await {
            settle(d, &mut acked);
        }
        assert!(stream.next().await.is_none(), "ended for good");
        acked
    });
    producer.join().unwrap();
    assert_all_acked(&q, vec![acked]);
}

/// The stream and the futures are `Send`: they can be spawned on a
/// multi-threaded runtime (checked by the compiler).
#[test]
fn the_futures_and_the_stream_are_send() {
    fn send<S: Send>(_: &S) {}
    let q: Queue<u64> = Queue::new();
    send(&q.consume_async());
    send(&q.consume_batch_async(8));
    send(&q.deliveries());
    let _: Option<Delivery<u64>> = None;
}
