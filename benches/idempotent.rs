//! `produce_with_id` against `produce`, same run: one thread produces a
//! batch of messages (each with an id of its own, or minted), then
//! consumes and acks them all. The own-id path pays the dedup map twice per
//! message (taken on produce, freed on ack); the bar is within 2x of
//! `produce`.
//!
//! Run: `cargo bench --bench idempotent`.

use criterion::{Criterion, Throughput};
use rebound::{MessageId, Queue};
use std::time::Duration;

const MESSAGES: u64 = 10_000;

fn suite(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce-consume-ack/8B/1t");
    group
        .throughput(Throughput::Elements(MESSAGES))
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let q: Queue<u64> = Queue::new();
    group.bench_function("produce", |b| {
        b.iter(|| {
            for i in 0..MESSAGES {
                q.produce(i).unwrap();
            }
            for _ in 0..MESSAGES {
                q.try_consume().unwrap().ack().unwrap();
            }
        })
    });
    let mut next = 0u128;
    group.bench_function("produce_with_id", |b| {
        b.iter(|| {
            for i in 0..MESSAGES {
                next += 1;
                let id = MessageId::from_uuid(uuid::Uuid::from_u128(next));
                q.produce_with_id(id, i).unwrap();
            }
            for _ in 0..MESSAGES {
                q.try_consume().unwrap().ack().unwrap();
            }
        })
    });
    group.finish();
}

criterion::criterion_group!(benches, suite);
criterion::criterion_main!(benches);
