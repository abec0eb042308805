//! `produce_batch`, `try_consume_batch` and `consume_batch`.

use rebound::{Backoff, Queue, TryConsumeError};
use std::collections::HashSet;
use std::thread;
use std::time::Duration;

/// Batches that span several blocks, mixed with single produces, come out
/// in order with the ids `produce_batch` returned.
#[test]
fn batches_keep_fifo_order_and_ids_across_blocks() {
    let q = Queue::new();
    let mut expected = Vec::new();
    let mut next = 0u64;
    for size in [1usize, 63, 64, 65, 200, 0, 3] {
        let values: Vec<u64> = (next..next + size as u64).collect();
        next += size as u64;
        let ids = q.produce_batch(values.clone()).unwrap();
        assert_eq!(ids.len(), size);
        expected.extend(values.into_iter().zip(ids));
        let id = q.produce(next).unwrap();
        expected.push((next, id));
        next += 1;
    }
    let mut got = Vec::new();
    while let Ok(batch) = q.try_consume_batch(50) {
        assert!(!batch.is_empty() && batch.len() <= 50);
        for d in batch {
            got.push((*d, d.id()));
            d.ack().unwrap();
        }
    }
    assert_eq!(got, expected);
    let ids: HashSet<_> = got.iter().map(|&(_, id)| id).collect();
    assert_eq!(ids.len(), got.len());
    let s = q.stats();
    assert_eq!((s.produced, s.acked, s.delivered), (next, next, next));
}

/// A closed queue refuses the whole batch and hands every value back.
#[test]
fn closed_queue_returns_the_whole_batch() {
    let q: Queue<String> = Queue::new();
    q.close();
    let err = q
        .produce_batch(vec!["a".to_string(), "b".to_string()])
        .unwrap_err();
    assert!(err.to_string().contains("closed"));
    assert_eq!(err.into_inner(), ["a", "b"]);
    assert_eq!(q.stats().produced, 0);
    assert_eq!(q.try_consume_batch(8).unwrap_err(), TryConsumeError::Closed);
}

/// Each delivery of a batch is settled on its own.
#[test]
fn deliveries_of_a_batch_settle_independently() {
    let q: Queue<u32> = Queue::builder()
        .backoff(Backoff::fixed(Duration::ZERO))
        .build();
    q.produce_batch([1, 2, 3]).unwrap();
    assert!(q.try_consume_batch(0).unwrap().is_empty());
    let mut batch = q.consume_batch(8).unwrap();
    assert_eq!(batch.len(), 3);
    let last = batch.pop().unwrap();
    last.rollback().unwrap();
    for d in batch {
        d.ack().unwrap();
    }
    let again = q.consume_batch(8).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((*again[0], again[0].attempt()), (3, 2));
    drop(again); // an unsettled drop is a rollback
    let d = q.consume().unwrap();
    assert_eq!((*d, d.attempt()), (3, 3));
    d.ack().unwrap();
    let s = q.stats();
    assert_eq!((s.acked, s.rolled_back, s.in_flight), (3, 2, 0));
}

/// Delayed messages are not claimed by a batch before they are due, and a
/// blocked `consume_batch` wakes when they are.
#[test]
fn batch_claims_never_take_messages_early() {
    let q = Queue::new();
    q.produce_after(100u8, Duration::from_millis(30)).unwrap();
    q.produce_batch([1, 2]).unwrap();
    let batch = q.try_consume_batch(10).unwrap();
    assert_eq!(batch.iter().map(|d| **d).collect::<Vec<_>>(), [1, 2]);
    batch.into_iter().for_each(|d| d.ack().unwrap());
    let later = q.consume_batch(10).unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(*later[0], 100);
    assert!(later[0].timestamp() <= std::time::Instant::now());
}

/// Several producers of batches of every size and several batch consumers:
/// every message delivered once, acked once, and each producer's messages
/// seen in the order it produced them.
#[test]
fn concurrent_batches_deliver_every_message_once_in_producer_order() {
    const PRODUCERS: u64 = 3;
    const BATCHES: u64 = 200;
    let q: Queue<(u64, u64)> = Queue::new();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                while let Ok(batch) = q.consume_batch(17) {
                    for d in batch {
                        seen.push(*d);
                        d.ack().unwrap();
                    }
                }
                seen
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || {
                let mut n = 0;
                for b in 0..BATCHES {
                    let size = (b * 7 + p) % 70; // 0..70: within, at and past a block
                    q.produce_batch((n..n + size).map(|i| (p, i))).unwrap();
                    n += size;
                }
                n
            })
        })
        .collect();
    let produced: Vec<u64> = producers.into_iter().map(|h| h.join().unwrap()).collect();
    q.close();
    let mut all = HashSet::new();
    for c in consumers {
        let seen = c.join().unwrap();
        // Per consumer, a producer's messages arrive in increasing order.
        for p in 0..PRODUCERS {
            let mine: Vec<u64> = seen.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "producer {p} out of order"
            );
        }
        for m in seen {
            assert!(all.insert(m), "{m:?} delivered twice");
        }
    }
    let total: u64 = produced.iter().sum();
    assert_eq!(all.len() as u64, total);
    let s = q.stats();
    assert_eq!(
        (s.produced, s.acked, s.in_flight, s.ready),
        (total, total, 0, 0)
    );
}
