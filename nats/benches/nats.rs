//! Consume-and-ack throughput over JetStream: rebound-nats against the same
//! pull/ack loop written directly with async-nats (both fetching batches of
//! `BATCH` and acking each message with a plain `+ACK`), and in-process
//! rebound for scale. Every contender consumes and acks `N` messages that
//! were produced before the timed part, from one consuming thread.
//!
//! Needs `nats-server` (`apt-get install -y nats-server`); starts its own
//! on a free loopback port with a temporary store. Run:
//! `cargo bench -p rebound-nats --bench nats`.

#[path = "../tests/support/mod.rs"]
mod support;

use async_nats::jetstream::{self, consumer, stream};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Messages per timed run.
const N: usize = 2_000;
/// Messages per pull.
const BATCH: usize = 64;
/// Payload size.
const PAYLOAD: usize = 64;

fn bench(c: &mut Criterion) {
    let server = support::NatsServer::start();
    let url = server.url().to_string();
    let mut group = c.benchmark_group(format!("jetstream/consume-ack/{PAYLOAD}B/batch{BATCH}"));
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    // The raw loop, on its own stream with the same settings as ours.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (js, raw) = runtime.block_on(async {
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: "raw".into(),
                subjects: vec!["raw.work".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .unwrap();
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                "raw-workers",
                consumer::pull::Config {
                    durable_name: Some("raw-workers".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: -1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        (js, consumer)
    });
    group.bench_function("async-nats", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                runtime.block_on(async {
                    let mut acks = Vec::with_capacity(N);
                    for _ in 0..N {
                        acks.push(
                            js.publish("raw.work", vec![7u8; PAYLOAD].into())
                                .await
                                .unwrap(),
                        );
                    }
                    for ack in acks {
                        ack.await.unwrap();
                    }
                    let start = Instant::now();
                    let mut got = 0;
                    while got < N {
                        let mut batch = raw.fetch().max_messages(BATCH).messages().await.unwrap();
                        while let Some(message) = batch.next().await {
                            let message = message.unwrap();
                            black_box(&message.payload);
                            message.ack().await.unwrap();
                            got += 1;
                        }
                    }
                    total += start.elapsed();
                });
            }
            total
        })
    });

    let q: rebound_nats::Queue<Vec<u8>> = rebound_nats::Queue::builder(url.as_str(), "bench")
        .prefetch(BATCH)
        .connect()
        .unwrap();
    group.bench_function("rebound-nats", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                q.produce_batch((0..N).map(|_| vec![7u8; PAYLOAD])).unwrap();
                let start = Instant::now();
                for _ in 0..N {
                    let d = q.consume().unwrap();
                    black_box(&*d);
                    d.ack().unwrap();
                }
                total += start.elapsed();
            }
            total
        })
    });

    let memory: rebound::Queue<Vec<u8>> = rebound::Queue::new();
    group.bench_function("rebound (in-process)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                memory
                    .produce_batch((0..N).map(|_| vec![7u8; PAYLOAD]))
                    .unwrap();
                let start = Instant::now();
                for _ in 0..N {
                    let d = memory.consume().unwrap();
                    black_box(&*d);
                    d.ack().unwrap();
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
    drop(q);
    drop(server);
}

criterion_group!(benches, bench);
criterion_main!(benches);
