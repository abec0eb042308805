//! Async throughput, messages per second, on one tokio multi-thread
//! runtime: rebound (`produce` -> `consume_async` -> `ack`) against the
//! channels an async user would pick instead (send -> receive, no ack):
//! flume (`recv_async`), async-channel and tokio's mpsc, all unbounded, in
//! the same criterion groups doing the same work (feature `async`).
//!
//! Groups: `async/8B/1p1c` and `async/8B/2p2c`. Each measured run creates
//! the queue or channel, spawns the producer and consumer tasks on the
//! runtime (2 worker threads, the machine's cores), and ends when every
//! consumer has seen the end: rebound's consumers get `Closed` after the
//! last producer closed the queue and every message was acked, the
//! channels' consumers see the channel closed after the last sender was
//! dropped. Producers yield to the runtime every [`YIELD_EVERY`] messages,
//! all of them alike, so that consumers share the workers with them.
//! tokio's mpsc has one receiver: at 2p2c its two consumers share it
//! behind a `tokio::sync::Mutex`, the usual way.
//!
//! Then, printed after the groups: how late a task waiting in
//! `consume_async` (on `futures::executor::block_on`, no runtime timer)
//! gets a message produced with `produce_after(1 ms)`, against a thread
//! blocked in `consume`, medians of [`LATENESS_SAMPLES`] each, alternating.
//!
//! Run: `cargo bench --features async --bench async_throughput`.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use rebound::Queue;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Messages per measured run.
const MESSAGES: u64 = 100_000;
/// Producers yield to the runtime after this many messages.
const YIELD_EVERY: u64 = 64;
/// Delayed messages per lateness measurement.
const LATENESS_SAMPLES: usize = 200;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .throughput(Throughput::Elements(MESSAGES))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

/// One contender: a run of `producers` and `consumers` tasks moving
/// [`MESSAGES`] `u64`s, spawned on the runtime the caller is in.
trait AsyncContender {
    const NAME: &'static str;
    fn run(producers: u64, consumers: u64) -> impl Future<Output = ()> + Send;
}

/// Each producer's share of [`MESSAGES`].
fn share(producers: u64) -> u64 {
    MESSAGES / producers
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        task.await.expect("a bench task panicked");
    }
}

struct Rebound;

impl AsyncContender for Rebound {
    const NAME: &'static str = "rebound";

    async fn run(producers: u64, consumers: u64) {
        let q: Queue<u64> = Queue::new();
        let left = Arc::new(std::sync::atomic::AtomicU64::new(producers));
        let mut tasks = Vec::new();
        for _ in 0..consumers {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(d) = q.consume_async().await {
                    black_box(*d);
                    d.ack().expect("held");
                }
            }));
        }
        for _ in 0..producers {
            let (q, left) = (q.clone(), Arc::clone(&left));
            tasks.push(tokio::spawn(async move {
                for n in 0..share(producers) {
                    q.produce(n).expect("open");
                    if n % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                }
                if left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                    q.close();
                }
            }));
        }
        join_all(tasks).await;
    }
}

struct Flume;

impl AsyncContender for Flume {
    const NAME: &'static str = "flume";

    async fn run(producers: u64, consumers: u64) {
        let (tx, rx) = flume::unbounded::<u64>();
        let mut tasks = Vec::new();
        for _ in 0..consumers {
            let rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(n) = rx.recv_async().await {
                    black_box(n);
                }
            }));
        }
        drop(rx);
        for _ in 0..producers {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..share(producers) {
                    tx.send(n).expect("open");
                    if n % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        drop(tx);
        join_all(tasks).await;
    }
}

struct AsyncChannel;

impl AsyncContender for AsyncChannel {
    const NAME: &'static str = "async-channel";

    async fn run(producers: u64, consumers: u64) {
        let (tx, rx) = async_channel::unbounded::<u64>();
        let mut tasks = Vec::new();
        for _ in 0..consumers {
            let rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(n) = rx.recv().await {
                    black_box(n);
                }
            }));
        }
        drop(rx);
        for _ in 0..producers {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..share(producers) {
                    tx.try_send(n).expect("unbounded and open");
                    if n % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        drop(tx);
        join_all(tasks).await;
    }
}

struct TokioMpsc;

impl AsyncContender for TokioMpsc {
    const NAME: &'static str = "tokio-mpsc";

    async fn run(producers: u64, consumers: u64) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut tasks = Vec::new();
        for _ in 0..consumers {
            let rx = Arc::clone(&rx);
            tasks.push(tokio::spawn(async move {
                loop {
                    // One consumer: the lock is never contended. Two: they
                    // take turns at the one receiver.
                    let next = rx.lock().await.recv().await;
                    match next {
                        Some(n) => black_box(n),
                        None => break,
                    };
                }
            }));
        }
        for _ in 0..producers {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..share(producers) {
                    tx.send(n).expect("open");
                    if n % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        drop(tx);
        join_all(tasks).await;
    }
}

fn contender<C: AsyncContender>(group: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, pairs: u64) {
    group.bench_function(C::NAME, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    rt.block_on(async {
                        let start = Instant::now();
                        C::run(pairs, pairs).await;
                        start.elapsed()
                    })
                })
                .sum()
        })
    });
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    for pairs in [1, 2] {
        let mut group = c.benchmark_group(format!("async/8B/{pairs}p{pairs}c"));
        configure(&mut group);
        contender::<Rebound>(&mut group, &rt, pairs);
        contender::<Flume>(&mut group, &rt, pairs);
        contender::<AsyncChannel>(&mut group, &rt, pairs);
        contender::<TokioMpsc>(&mut group, &rt, pairs);
        group.finish();
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort_unstable();
    values[values.len() / 2]
}

/// How late a waiting consumer gets a message produced `delay` ahead:
/// a task (`asynchronous`) or a blocked thread. The consumer starts
/// waiting before the message is produced.
fn lateness(asynchronous: bool, delay: Duration) -> Duration {
    let q: Queue<Instant> = Queue::new();
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || {
            let d = if asynchronous {
                futures::executor::block_on(q.consume_async())
            } else {
                q.consume()
            }
            .expect("open");
            let late = d.elapsed();
            d.ack().expect("held");
            late
        })
    };
    std::thread::sleep(Duration::from_millis(2)); // the consumer waits
    q.produce_after(Instant::now() + delay, delay).expect("open");
    consumer.join().expect("the consumer")
}

fn wake_lateness() {
    let delay = Duration::from_millis(1);
    let (mut tasks, mut threads) = (Vec::new(), Vec::new());
    for _ in 0..LATENESS_SAMPLES {
        tasks.push(lateness(true, delay));
        threads.push(lateness(false, delay));
    }
    println!(
        "produce_after(1 ms) claimed late by, median of {LATENESS_SAMPLES}: \
         task in consume_async {:?}, thread in consume {:?}",
        median(&mut tasks),
        median(&mut threads)
    );
}

fn suite(c: &mut Criterion) {
    throughput(c);
    wake_lateness();
}

criterion::criterion_group!(benches, suite);
criterion::criterion_main!(benches);
