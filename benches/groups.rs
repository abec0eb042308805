//! Ordered groups, same run: 2 producers and 2 consumers (produce, then
//! consume + ack) over ungrouped messages, over 1 000 groups, and over one
//! group (serial by design); then the memory of an idle group and of a
//! grouped message, each measured in a fresh child process.
//!
//! The bar: 1 000 groups at 2p2c run at 0.5x or more of ungrouped rebound.
//!
//! Run: `cargo bench --bench groups` (add `-- --runs N` for more rounds).

mod common;

use common::rss;
use rebound::Queue;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MESSAGES: u64 = 400_000;
const PRODUCERS: u64 = 2;
const CONSUMERS: u64 = 2;

/// How messages are produced: ungrouped, or into `n` groups.
#[derive(Clone, Copy)]
enum Mode {
    Ungrouped,
    Groups(u64),
}

/// Messages per second for `MESSAGES` messages through 2p2c in `mode`.
fn run(mode: Mode) -> f64 {
    let q: Queue<u64> = Queue::new();
    let settled = Arc::new(AtomicU64::new(0));
    let start = Arc::new(std::sync::Barrier::new(
        (PRODUCERS + CONSUMERS + 1) as usize,
    ));
    let mut threads = Vec::new();
    for p in 0..PRODUCERS {
        let (q, start) = (q.clone(), Arc::clone(&start));
        threads.push(std::thread::spawn(move || {
            start.wait();
            for i in 0..MESSAGES / PRODUCERS {
                match mode {
                    Mode::Ungrouped => q.produce(i).map(|_| ()),
                    // Producer `p` spreads its messages over all groups.
                    Mode::Groups(n) => q.produce_in_group((i * PRODUCERS + p) % n, i).map(|_| ()),
                }
                .unwrap();
            }
        }));
    }
    for _ in 0..CONSUMERS {
        let (q, start, settled) = (q.clone(), Arc::clone(&start), Arc::clone(&settled));
        threads.push(std::thread::spawn(move || {
            start.wait();
            while settled.load(Ordering::Relaxed) < MESSAGES {
                if let Ok(d) = q.consume_timeout(Duration::from_millis(10)) {
                    d.ack().unwrap();
                    settled.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    start.wait();
    let began = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    MESSAGES as f64 / began.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// In a child process: resident bytes for the shape `what`.
fn measure(what: &str) -> f64 {
    const N: u64 = 1_000_000;
    let q: Queue<u64> = Queue::new();
    // SAFETY: as below.
    unsafe { libc::malloc_trim(0) };
    let before = rss();
    match what {
        // 1M groups that each had a message, all acked: idle groups.
        "idle-group" => {
            for g in 0..N {
                q.produce_in_group(g, g).unwrap();
            }
            while let Ok(d) = q.try_consume() {
                d.ack().unwrap();
            }
            assert_eq!(q.stats().groups, 0);
            // The redeliverer lets go of the drained blocks on its next
            // passes: what is left after them is what idle groups hold.
            std::thread::sleep(Duration::from_secs(2));
        }
        // One group: a head and 1M messages waiting behind it.
        "grouped-message" => {
            for i in 0..=N {
                q.produce_in_group(7u64, i).unwrap();
            }
            assert_eq!(q.stats().grouped_waiting, N);
        }
        // 1M groups, each with a head and one message waiting: per group,
        // both messages and the group's own entry.
        "active-group" => {
            for round in 0..2 {
                for g in 0..N {
                    q.produce_in_group(g, round).unwrap();
                }
            }
            assert_eq!(q.stats().groups, N);
        }
        // Ungrouped, for scale: 1M messages queued.
        "ungrouped-message" => {
            for i in 0..N {
                q.produce(i).unwrap();
            }
        }
        other => panic!("unknown shape {other}"),
    }
    // Freed memory back to the system first (glibc keeps small freed
    // chunks in its arenas), so that what is counted is what is held.
    // SAFETY: `malloc_trim` only releases memory malloc holds free.
    unsafe { libc::malloc_trim(0) };
    let grown = rss().saturating_sub(before);
    drop(q);
    grown as f64 / N as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(shape) = args
        .iter()
        .position(|a| a == "--measure")
        .map(|i| &args[i + 1])
    {
        println!("{}", measure(shape));
        return;
    }
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5);
    println!("2p2c produce + consume + ack, {MESSAGES} u64 messages, {runs} rounds (medians)");
    let modes = [
        ("ungrouped", Mode::Ungrouped),
        ("1000 groups", Mode::Groups(1000)),
        ("1 group", Mode::Groups(1)),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    run(Mode::Groups(1000)); // warm-up
    for _ in 0..runs {
        // Interleaved, so that a noisy moment hurts every contender alike.
        for (i, (_, mode)) in modes.iter().enumerate() {
            results[i].push(run(*mode));
        }
    }
    let base = median(results[0].clone());
    for ((name, _), r) in modes.iter().zip(&results) {
        let m = median(r.clone());
        let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.iter().copied().fold(0.0, f64::max);
        println!(
            "  {name:<12} {:>7.2} M msg/s  ({:.2}-{:.2})  {:.2}x ungrouped",
            m / 1e6,
            lo / 1e6,
            hi / 1e6,
            m / base
        );
    }
    println!("resident bytes, 1M of each, fresh process each");
    let exe = std::env::current_exe().expect("own path");
    for shape in [
        "idle-group",
        "grouped-message",
        "active-group",
        "ungrouped-message",
    ] {
        let out = std::process::Command::new(&exe)
            .args(["--measure", shape])
            .output()
            .expect("run child");
        assert!(out.status.success(), "{shape}: {out:?}");
        let per: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("child prints bytes");
        println!("  {shape:<18} {per:>7.1} B each");
    }
}
