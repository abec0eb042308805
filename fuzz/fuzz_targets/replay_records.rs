//! Opens a journal made of well-formed, checksummed records in any order
//! and with any fields the fuzzer picks (ids from a small set, so that
//! records meet): recovery and restore must never panic, never deliver a
//! payload that was not written, and the queue must work afterwards
//! (claims, rollbacks, acks, drains, a second open).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rebound::Queue;
use std::sync::atomic::{AtomicU64, Ordering};

static RUN: AtomicU64 = AtomicU64::new(0);

/// One record, framed: `crc, len, body` (docs/durability.md).
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 8];
    out[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    out
}

fn header(number: u64) -> Vec<u8> {
    let mut h = vec![0u8; 32];
    h[..8].copy_from_slice(b"RBNDJRNL");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..20].copy_from_slice(&number.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..].copy_from_slice(&crc.to_le_bytes());
    h
}

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!(
        "rebound-fuzz-replay-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut segment = header(0);
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next();
    while let (Some(kind), Some(id), Some(a), Some(extra)) = (next(), next(), next(), next()) {
        let id = u128::from(id % 8) + 1;
        let attempt = u32::from(a % 6);
        let mut body = vec![kind % 8];
        body.extend_from_slice(&id.to_le_bytes());
        match kind % 8 {
            1 => {
                body.extend_from_slice(&u64::from(extra).to_le_bytes());
                body.extend_from_slice(&(u64::from(a) * 10).to_le_bytes());
                body.extend_from_slice(&[extra; 3]);
            }
            2 => body.extend_from_slice(&attempt.to_le_bytes()),
            3 => {
                body.extend_from_slice(&attempt.to_le_bytes());
                body.extend_from_slice(&u64::from(extra).to_le_bytes());
            }
            5 => {
                body.extend_from_slice(&attempt.to_le_bytes());
                body.push(extra % 4);
            }
            7 => {
                body.extend_from_slice(&u64::from(extra).to_le_bytes());
                body.extend_from_slice(&attempt.to_le_bytes());
                body.push(extra % 4);
                body.extend_from_slice(&u64::from(extra % 3).to_le_bytes());
                body.extend_from_slice(&[extra; 2]);
            }
            _ => {}
        }
        segment.extend_from_slice(&frame(&body));
    }
    segment.resize(segment.len().max(64 << 10), 0);
    std::fs::write(dir.join("00000000000000000000.seg"), &segment).unwrap();
    for _ in 0..2 {
        let opened = Queue::<Vec<u8>>::builder()
            .max_attempts(3)
            .backoff(rebound::Backoff::fixed(std::time::Duration::ZERO))
            .journal(&dir)
            .segment_size(64 << 10)
            .open();
        let Ok(q) = opened else { break };
        let mut n = 0;
        while let Ok(d) = q.try_consume() {
            // Only payloads of the shapes written above.
            assert!(d.len() == 3 || d.len() == 2, "payload {:?}", &*d);
            n += 1;
            if n % 2 == 0 {
                d.ack().unwrap();
            } else {
                let _ = d.rollback();
            }
            if n > 64 {
                break;
            }
        }
        for letter in q.drain_dead_letters() {
            assert!(letter.payload().len() == 3 || letter.payload().len() == 2);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
});
