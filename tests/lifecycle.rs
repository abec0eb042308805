//! Dropping the last handle stops the redeliverer thread and frees every
//! message. One test in this binary, so that no other test's queue starts
//! threads while it counts them.

use rebound::{Backoff, Queue};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A payload that counts how many of its kind are alive.
struct Tracked(Arc<AtomicUsize>);

impl Tracked {
    fn new(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Tracked(Arc::clone(live))
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Threads of this process named like the redeliverer (Linux).
fn redeliverer_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with("rebound-redeliv"))
                .count()
        })
        .unwrap_or(0)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn dropping_the_last_handle_frees_every_message_and_stops_the_thread() {
    let live = Arc::new(AtomicUsize::new(0));
    assert_eq!(redeliverer_threads(), 0);

    // Messages in every state when the last handle goes.
    let q: Queue<Tracked> = Queue::builder()
        .lease(Duration::from_millis(30))
        .backoff(Backoff::fixed(Duration::from_secs(3600)))
        .max_attempts(2)
        .build();
    let second = q.clone();
    // The thread names itself once it runs.
    wait_until("the redeliverer thread runs", || redeliverer_threads() == 1);
    for _ in 0..200 {
        q.produce(Tracked::new(&live)).unwrap(); // pending
    }
    q.produce_after(Tracked::new(&live), Duration::from_secs(3600))
        .unwrap(); // delayed
    q.consume().unwrap().ack().unwrap(); // acked: freed at once
    assert_eq!(live.load(Ordering::SeqCst), 200);
    q.consume().unwrap().rollback().unwrap(); // waiting an hour to come back
    q.consume().unwrap().dead_letter().unwrap(); // in the dead letters
    let held = q.consume().unwrap(); // held by a live delivery
    held.extend_lease(Duration::from_secs(3600)).unwrap();
    let stale = q.consume().unwrap(); // will expire while held
    wait_until("the lease expires", || q.stats().expired == 1);
    assert_eq!(live.load(Ordering::SeqCst), 200);

    drop(q);
    assert_eq!(redeliverer_threads(), 1, "a handle is still alive");
    drop(second);
    wait_until("the redeliverer thread is gone", || {
        redeliverer_threads() == 0
    });
    // Everything nobody holds is gone; the two held payloads stay readable.
    assert_eq!(live.load(Ordering::SeqCst), 2);
    assert!(held.0.load(Ordering::SeqCst) == 2 && stale.0.load(Ordering::SeqCst) == 2);
    // Settling after the queue is gone is fine and frees the payload.
    held.ack().unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 1);
    assert!(stale.rollback().is_err());
    assert_eq!(live.load(Ordering::SeqCst), 0);

    // A rollback or a dead-letter after the queue is gone frees the payload too.
    let q: Queue<Tracked> = Queue::new();
    q.produce(Tracked::new(&live)).unwrap();
    q.produce(Tracked::new(&live)).unwrap();
    let a = q.consume().unwrap();
    let b = q.consume().unwrap();
    drop(q);
    a.rollback().unwrap();
    b.dead_letter().unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 0);
    wait_until("the redeliverer thread is gone", || {
        redeliverer_threads() == 0
    });

    // Many queues come and go without leaking threads.
    for _ in 0..20 {
        let q: Queue<Tracked> = Queue::new();
        q.produce(Tracked::new(&live)).unwrap();
    }
    assert_eq!(live.load(Ordering::SeqCst), 0);
    wait_until("every redeliverer thread is gone", || {
        redeliverer_threads() == 0
    });
}
