//! `Processor::auto_extend`: a live handler keeps its lease, a hung one
//! loses it after `max` (the idle extender: `tests/auto_extend_idle.rs`).
//!
//! The first three are timed by a `ManualClock` (the extender extends when
//! the clock is advanced), so they are deterministic; one runs on the real
//! clock to exercise the extender thread's own timing, with a margin of
//! half a lease (150 ms) for the thread to be late.

use rebound::{Backoff, ManualClock, Pool, Queue};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(10);
const STEP: Duration = Duration::from_secs(4);

fn pool(threads: usize) -> Pool {
    Pool::from(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap(),
    )
}

/// A handler that signals when it starts and returns when told to.
/// Returns (handler, started, release).
#[allow(clippy::type_complexity)]
fn gated() -> (
    impl Fn(&rebound::Delivery<u32>) + Send + Sync + 'static,
    mpsc::Receiver<u32>,
    mpsc::Sender<()>,
) {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let release_rx = Mutex::new(release_rx);
    let handler = move |d: &rebound::Delivery<u32>| {
        started_tx.lock().unwrap().send(d.attempt()).unwrap();
        if d.attempt() == 1 {
            release_rx.lock().unwrap().recv().unwrap();
        }
    };
    (handler, started, release)
}

fn queue(clock: &ManualClock) -> Queue<u32> {
    Queue::builder()
        .clock(clock.clone())
        .lease(LEASE)
        .backoff(Backoff::fixed(Duration::ZERO))
        .build()
}

#[test]
fn a_live_handler_keeps_its_lease_past_many_leases() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let (handler, started, release) = gated();
    let handle = q
        .processor()
        .auto_extend(Duration::from_secs(3600))
        .start(pool(2), handler)
        .unwrap();
    q.produce(1).unwrap();
    assert_eq!(started.recv().unwrap(), 1);
    // Ten leases go by, in steps shorter than a lease.
    for _ in 0..25 {
        clock.advance(STEP);
    }
    assert_eq!(q.stats().expired, 0);
    release.send(()).unwrap();
    q.close();
    let report = handle.join();
    assert_eq!((report.acked, report.expired), (1, 0));
    // At least one extension per lease that went by (100 s of 10 s leases).
    assert!(report.extended >= 10, "{report:?}");
    assert_eq!(q.stats().delivered, 1);
}

/// The same handler without `auto_extend` loses its lease: what the test
/// above checks is the extender's doing.
#[test]
fn without_auto_extend_the_same_handler_loses_its_lease() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let (handler, started, release) = gated();
    let handle = q.processor().start(pool(2), handler).unwrap();
    q.produce(1).unwrap();
    assert_eq!(started.recv().unwrap(), 1);
    for _ in 0..3 {
        clock.advance(STEP);
    }
    assert_eq!(q.stats().expired, 1);
    // Redelivered under the live handler's feet; the second one acks.
    assert_eq!(started.recv().unwrap(), 2);
    release.send(()).unwrap();
    q.close();
    let report = handle.join();
    assert_eq!((report.acked, report.expired, report.extended), (1, 1, 0));
}

#[test]
fn a_hung_handler_loses_its_lease_after_max() {
    let clock = ManualClock::new();
    let q = queue(&clock);
    let (handler, started, release) = gated();
    let max = Duration::from_secs(20);
    let handle = q
        .processor()
        .auto_extend(max)
        .start(pool(2), handler)
        .unwrap();
    q.produce(1).unwrap();
    assert_eq!(started.recv().unwrap(), 1);
    // Held for a lease and `max` (30 s), no longer.
    for _ in 0..7 {
        clock.advance(STEP);
    }
    assert_eq!(q.stats().expired, 0, "expired before lease + max");
    clock.advance(STEP);
    assert_eq!(q.stats().expired, 1);
    assert_eq!(started.recv().unwrap(), 2);
    release.send(()).unwrap();
    q.close();
    let report = handle.join();
    assert_eq!((report.acked, report.expired), (1, 1));
    assert!(report.extended > 0);
}

/// The extender thread on the real clock: a handler that runs for three
/// leases keeps its lease.
#[test]
fn the_extender_thread_keeps_a_slow_handler_on_the_real_clock() {
    let q: Queue<u32> = Queue::builder()
        .lease(Duration::from_millis(300))
        .backoff(Backoff::fixed(Duration::ZERO))
        .build();
    let handle = q
        .processor()
        .auto_extend(Duration::from_secs(60))
        .start(pool(2), |_| std::thread::sleep(Duration::from_millis(900)))
        .unwrap();
    q.produce(1).unwrap();
    q.close();
    let report = handle.join();
    assert_eq!((report.acked, report.expired), (1, 0));
    assert!(report.extended >= 2, "{report:?}");
}
