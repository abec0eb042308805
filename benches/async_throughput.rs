//! Async throughput, messages per second, on one tokio multi-thread
//! runtime: rebound (`produce` -> `consume_async` -> `ack`) against the
//! channels an async user would pick instead (send -> receive, no ack):
//! flume (`recv_async`), async-channel and tokio's mpsc, all unbounded, in
//! the same criterion groups doing the same work (feature `async`).
//!
//! Groups: `async/8B/{1p1c,2p2c}`, producers are tasks on the runtime
//! beside the consumers, and yield to it every [`YIELD_EVERY`] messages,
//! all of them alike, so that consumers share the workers with them (tokio
//! then mostly runs a producer and the consumer it wakes on one worker, one
//! after the other); `async-thread-producers/8B/{1p1c,2p2c}`, producers are
//! threads of their own (sync code feeding async consumers: both run at
//! once, as in the sync benches). The queue or channel is made once per
//! group; each measured run spawns the consumer tasks on the runtime (2
//! worker threads, the machine's cores) and the producers, and ends when
//! every consumer has received its stop word, sent after the last message.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// One contender: a queue or channel, made once per group and reused by
/// every measured run, and a run of `producers` and `consumers` tasks
/// moving [`MESSAGES`] `u64`s through it, spawned on the runtime the caller
/// is in. The last producer to finish sends one [`STOP`] per consumer; a
/// consumer leaves when it receives one.
trait AsyncContender: Send + Sync + Sized + 'static {
    const NAME: &'static str;
    fn new() -> Self;
    fn send(&self, n: u64);
    fn recv(&self) -> impl Future<Output = u64> + Send;
}

/// The word that tells a consumer to leave the run.
const STOP: u64 = u64::MAX;

/// Where the producers run: tasks on the runtime, beside the consumers, or
/// threads of their own (sync code feeding async consumers).
#[derive(Clone, Copy)]
enum Producers {
    Tasks,
    Threads,
}

/// A producer is done: the last one (AcqRel: it sees every other
/// producer's sends) tells every consumer to stop.
fn last_out<C: AsyncContender>(c: &C, left: &AtomicU64, consumers: u64) {
    if left.fetch_sub(1, Ordering::AcqRel) == 1 {
        for _ in 0..consumers {
            c.send(STOP);
        }
    }
}

async fn run<C: AsyncContender>(c: &Arc<C>, producers: Producers, pairs: u64) {
    let left = Arc::new(AtomicU64::new(pairs));
    let mut tasks = Vec::new();
    for _ in 0..pairs {
        let c = Arc::clone(c);
        tasks.push(tokio::spawn(async move { while c.recv().await != STOP {} }));
    }
    let mut threads = Vec::new();
    for _ in 0..pairs {
        let (c, left) = (Arc::clone(c), Arc::clone(&left));
        match producers {
            Producers::Tasks => tasks.push(tokio::spawn(async move {
                for n in 0..MESSAGES / pairs {
                    c.send(n);
                    if n % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                }
                last_out(&*c, &left, pairs);
            })),
            Producers::Threads => threads.push(std::thread::spawn(move || {
                for n in 0..MESSAGES / pairs {
                    c.send(n);
                }
                last_out(&*c, &left, pairs);
            })),
        }
    }
    for task in tasks {
        task.await.expect("a bench task panicked");
    }
    for thread in threads {
        thread.join().expect("a bench thread panicked");
    }
}

/// rebound: `produce`, then `consume_async` and `ack`.
struct Rebound(Queue<u64>);

impl AsyncContender for Rebound {
    const NAME: &'static str = "rebound";

    fn new() -> Self {
        Self(Queue::new())
    }

    fn send(&self, n: u64) {
        self.0.produce(n).expect("open");
    }

    async fn recv(&self) -> u64 {
        let d = self.0.consume_async().await.expect("open");
        let n = *d;
        d.ack().expect("held");
        n
    }
}

/// flume, unbounded: `send`, `recv_async`.
struct Flume(flume::Sender<u64>, flume::Receiver<u64>);

impl AsyncContender for Flume {
    const NAME: &'static str = "flume";

    fn new() -> Self {
        let (tx, rx) = flume::unbounded();
        Self(tx, rx)
    }

    fn send(&self, n: u64) {
        self.0.send(n).expect("open");
    }

    async fn recv(&self) -> u64 {
        self.1.recv_async().await.expect("open")
    }
}

/// async-channel, unbounded: `try_send` (never full), `recv`.
struct AsyncChannel(async_channel::Sender<u64>, async_channel::Receiver<u64>);

impl AsyncContender for AsyncChannel {
    const NAME: &'static str = "async-channel";

    fn new() -> Self {
        let (tx, rx) = async_channel::unbounded();
        Self(tx, rx)
    }

    fn send(&self, n: u64) {
        self.0.try_send(n).expect("unbounded and open");
    }

    async fn recv(&self) -> u64 {
        self.1.recv().await.expect("open")
    }
}

/// tokio's mpsc, unbounded. One receiver: consumers take turns at it
/// behind a `tokio::sync::Mutex` (never contended at 1p1c).
struct TokioMpsc(
    tokio::sync::mpsc::UnboundedSender<u64>,
    tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<u64>>,
);

impl AsyncContender for TokioMpsc {
    const NAME: &'static str = "tokio-mpsc";

    fn new() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Self(tx, tokio::sync::Mutex::new(rx))
    }

    fn send(&self, n: u64) {
        self.0.send(n).expect("open");
    }

    async fn recv(&self) -> u64 {
        self.1.lock().await.recv().await.expect("open")
    }
}

fn contender<C: AsyncContender>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    producers: Producers,
    pairs: u64,
) {
    let c = Arc::new(C::new());
    group.bench_function(C::NAME, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    rt.block_on(async {
                        let start = Instant::now();
                        run(&c, producers, pairs).await;
                        start.elapsed()
                    })
                })
                .sum()
        })
    });
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    for (scenario, producers) in [
        ("async", Producers::Tasks),
        ("async-thread-producers", Producers::Threads),
    ] {
        for pairs in [1, 2] {
            let mut group = c.benchmark_group(format!("{scenario}/8B/{pairs}p{pairs}c"));
            configure(&mut group);
            contender::<Rebound>(&mut group, &rt, producers, pairs);
            contender::<Flume>(&mut group, &rt, producers, pairs);
            contender::<AsyncChannel>(&mut group, &rt, producers, pairs);
            contender::<TokioMpsc>(&mut group, &rt, producers, pairs);
            group.finish();
        }
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
    q.produce_after(Instant::now() + delay, delay)
        .expect("open");
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
