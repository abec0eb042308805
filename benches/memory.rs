//! Resident bytes per queued `u64` message with 1M messages queued, for
//! rebound and every contender of the throughput suite. Each contender runs
//! in a fresh child process so that one's freed memory does not flatter the
//! next. Prints a table and writes `target/bench-data/memory.json` for
//! `benches/report.rs`.
//!
//! Run: `cargo bench --bench memory`

mod common;

use common::{BTree, Contender, CrossbeamChannel, Flume, HeapMap, Rebound, StdMpsc, rss};
use serde_json::json;

const MESSAGES: u64 = 1_000_000;

const CONTENDERS: [&str; 6] = [
    "rebound",
    "crossbeam-channel",
    "flume",
    "std-mpsc",
    "mutex-heap-map",
    "mutex-btree",
];

/// RSS growth with `MESSAGES` messages queued (and the queue still alive).
fn measure<Q: Contender<u64>>() -> u64 {
    let before = rss();
    let q = Q::new();
    for i in 0..MESSAGES {
        q.produce(i);
    }
    let after = rss();
    // Everything is still there: the first message comes out first.
    let first = q.consume();
    assert_eq!(*Q::payload(&first), 0);
    q.ack(first);
    after.saturating_sub(before)
}

fn main() {
    if let Some(contender) = std::env::args().nth(1).filter(|a| !a.starts_with('-')) {
        let bytes = match contender.as_str() {
            "rebound" => measure::<Rebound<u64>>(),
            "crossbeam-channel" => measure::<CrossbeamChannel<u64>>(),
            "flume" => measure::<Flume<u64>>(),
            "std-mpsc" => measure::<StdMpsc<u64>>(),
            "mutex-heap-map" => measure::<HeapMap<u64>>(),
            "mutex-btree" => measure::<BTree<u64>>(),
            other => panic!("unknown contender {other}"),
        };
        println!("{bytes}");
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    println!("resident bytes per queued u64 message, {MESSAGES} queued");
    let mut rows = Vec::new();
    for contender in CONTENDERS {
        let out = std::process::Command::new(&exe)
            .arg(contender)
            .output()
            .expect("run child");
        assert!(out.status.success(), "{contender}: {out:?}");
        let bytes: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("child prints bytes");
        let per = bytes as f64 / MESSAGES as f64;
        println!("  {contender:<20} {per:>7.1} B/msg");
        rows.push(json!({ "contender": contender, "bytes_per_message": per }));
    }
    let path = common::data_dir().join("memory.json");
    let doc = json!({ "messages": MESSAGES, "memory": rows });
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json"))
        .expect("write memory.json");
    println!("wrote {}", path.display());
}
