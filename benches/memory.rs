//! Resident bytes per queued `u64` message with 1M messages queued, for
//! rebound and the peers. Each contender runs in a fresh child process so
//! that one's freed memory does not flatter the next.
//!
//! Run: `cargo bench --bench memory`

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

const MESSAGES: u64 = 1_000_000;

/// Resident set size of this process, in bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn measure(contender: &str) -> u64 {
    let before = rss();
    let after = match contender {
        "rebound" => {
            let q: rebound::Queue<u64> = rebound::Queue::new();
            for i in 0..MESSAGES {
                q.produce(i).unwrap();
            }
            let after = rss();
            assert_eq!(q.stats().ready, MESSAGES);
            after
        }
        "crossbeam-channel" => {
            let (tx, rx) = crossbeam_channel::unbounded::<u64>();
            for i in 0..MESSAGES {
                tx.send(i).unwrap();
            }
            let after = rss();
            assert_eq!(rx.len() as u64, MESSAGES);
            after
        }
        "mutex-heap-map" => {
            let mut heap = BinaryHeap::new();
            let mut payloads = HashMap::new();
            let now = Instant::now();
            for i in 0..MESSAGES {
                heap.push(Reverse((now, i)));
                payloads.insert(i, i);
            }
            let after = rss();
            assert_eq!(payloads.len() as u64, MESSAGES);
            after
        }
        other => panic!("unknown contender {other}"),
    };
    after.saturating_sub(before)
}

fn main() {
    if let Some(contender) = std::env::args().nth(1).filter(|a| !a.starts_with('-')) {
        println!("{}", measure(&contender));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    println!("resident bytes per queued u64 message, {MESSAGES} queued");
    for contender in ["rebound", "crossbeam-channel", "mutex-heap-map"] {
        let out = std::process::Command::new(&exe)
            .arg(contender)
            .output()
            .unwrap();
        let bytes: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        println!(
            "  {contender:<20} {:>7.1} B/msg",
            bytes as f64 / MESSAGES as f64
        );
    }
}
