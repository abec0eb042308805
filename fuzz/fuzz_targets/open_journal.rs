//! Opens a journal whose only segment is the fuzzer's bytes: whatever they
//! are, `open` returns a queue or an `OpenError`, never panics, and a queue
//! it returns delivers only whole payloads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rebound::Queue;
use std::sync::atomic::{AtomicU64, Ordering};

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!(
        "rebound-fuzz-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // A valid header most of the time, so that the fuzzer reaches the
    // records: a fresh journal's first segment supplies it.
    let mut bytes = data.to_vec();
    if data.first().is_some_and(|b| b & 1 == 0) {
        let q: Queue<Vec<u8>> = Queue::builder()
            .journal(&dir)
            .segment_size(64 << 10)
            .open()
            .unwrap();
        drop(q);
        let seg = dir.join("00000000000000000000.seg");
        let header = std::fs::read(&seg).unwrap()[..32].to_vec();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "seg") {
                std::fs::remove_file(path).unwrap();
            }
        }
        bytes.splice(0..0, header);
    }
    std::fs::write(dir.join("00000000000000000000.seg"), &bytes).unwrap();
    for repair in [false, true] {
        let opened = Queue::<Vec<u8>>::builder()
            .journal(&dir)
            .segment_size(64 << 10)
            .repair(repair)
            .open();
        if let Ok(q) = opened {
            while let Ok(d) = q.try_consume() {
                d.ack().unwrap();
            }
            let _ = q.drain_dead_letters();
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
});
