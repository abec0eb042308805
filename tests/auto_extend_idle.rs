//! An idle lease extender does not wake: its voluntary context switches
//! stay put while no handler runs. In a test binary of its own, so that no
//! other test's extender thread runs meanwhile. Linux only (reads
//! /proc).
#![cfg(target_os = "linux")]

use rebound::{Pool, Queue};
use std::sync::Arc;
use std::time::Duration;

fn pool(threads: usize) -> Pool {
    Pool::from(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap(),
    )
}

/// Voluntary context switches of the thread named `rebound-extender`.
fn extender_switches() -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.starts_with("rebound-extende") {
            let status = std::fs::read_to_string(path.join("status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches"))
                .unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no extender thread");
}

/// Once no handler runs, the extender does not wake at all.
#[test]
fn an_idle_extender_does_not_wake() {
    let q: Queue<u32> = Queue::builder().lease(Duration::from_millis(50)).build();
    let done = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&done);
    let handle = q
        .processor()
        .auto_extend(Duration::from_secs(60))
        .start(pool(2), move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .unwrap();
    for i in 0..100 {
        q.produce(i).unwrap();
    }
    while done.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Its last timed wake (half a lease after the last handler started)
    // is long past after a few leases.
    std::thread::sleep(Duration::from_millis(250));
    let before = extender_switches();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(extender_switches(), before, "the idle extender woke");
    q.close();
    handle.join();
}
