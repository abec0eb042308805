//! Produce -> consume -> ack throughput: rebound against crossbeam-channel
//! (the speed ceiling, no ack) and the hand-written `Mutex<BinaryHeap>` +
//! `HashMap` in-flight queue that users write when they need acks and
//! redelivery. Every contender moves the same `u64` payloads through the same
//! producer and consumer thread counts, in the same criterion group.
//!
//! Run: `cargo bench --bench throughput`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Messages per measured iteration batch are `iters`; each producer sends
/// `iters / producers`.
trait Contender: Sync {
    fn name(&self) -> &'static str;
    fn run(&self, producers: usize, consumers: usize, messages: u64) -> Duration;
}

struct Rebound;
impl Contender for Rebound {
    fn name(&self) -> &'static str {
        "rebound"
    }
    fn run(&self, producers: usize, consumers: usize, messages: u64) -> Duration {
        let q: rebound::Queue<u64> = rebound::Queue::new();
        let per = messages / producers as u64;
        let start = Instant::now();
        thread::scope(|s| {
            for _ in 0..consumers {
                let q = q.clone();
                s.spawn(move || {
                    while let Ok(d) = q.consume() {
                        std::hint::black_box(*d);
                        d.ack().unwrap();
                    }
                });
            }
            let ps: Vec<_> = (0..producers)
                .map(|_| {
                    let q = q.clone();
                    s.spawn(move || {
                        for i in 0..per {
                            q.produce(i).unwrap();
                        }
                    })
                })
                .collect();
            for p in ps {
                p.join().unwrap();
            }
            q.close();
        });
        start.elapsed()
    }
}

struct Channel;
impl Contender for Channel {
    fn name(&self) -> &'static str {
        "crossbeam-channel"
    }
    fn run(&self, producers: usize, consumers: usize, messages: u64) -> Duration {
        let (tx, rx) = crossbeam_channel::unbounded::<u64>();
        let per = messages / producers as u64;
        let start = Instant::now();
        thread::scope(|s| {
            for _ in 0..consumers {
                let rx = rx.clone();
                s.spawn(move || {
                    while let Ok(v) = rx.recv() {
                        std::hint::black_box(v);
                    }
                });
            }
            for _ in 0..producers {
                let tx = tx.clone();
                s.spawn(move || {
                    for i in 0..per {
                        tx.send(i).unwrap();
                    }
                });
            }
            drop(tx);
        });
        start.elapsed()
    }
}

/// What users write by hand: a due-time heap and an in-flight map under one
/// lock, with a condvar for blocked consumers, acks and lease deadlines.
struct HandWritten;

#[derive(Default)]
struct HandState {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    payloads: HashMap<u64, u64>,
    in_flight: HashMap<u64, (u64, Instant)>,
    next_id: u64,
    closed: bool,
}

struct HandQueue {
    state: Mutex<HandState>,
    ready: Condvar,
    lease: Duration,
}

impl HandQueue {
    fn produce(&self, v: u64) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        let id = st.next_id;
        st.next_id += 1;
        st.heap.push(Reverse((now, id)));
        st.payloads.insert(id, v);
        drop(st);
        self.ready.notify_one();
    }
    fn consume(&self) -> Option<(u64, u64)> {
        let mut st = self.state.lock().unwrap();
        loop {
            let now = Instant::now();
            if let Some(&Reverse((ts, id))) = st.heap.peek() {
                if ts <= now {
                    st.heap.pop();
                    let v = st.payloads.remove(&id).unwrap();
                    st.in_flight.insert(id, (v, now + self.lease));
                    return Some((id, v));
                }
            }
            if st.closed && st.heap.is_empty() && st.in_flight.is_empty() {
                return None;
            }
            st = self
                .ready
                .wait_timeout(st, Duration::from_millis(1))
                .unwrap()
                .0;
        }
    }
    fn ack(&self, id: u64) {
        let mut st = self.state.lock().unwrap();
        st.in_flight.remove(&id);
        let done = st.closed && st.heap.is_empty() && st.in_flight.is_empty();
        drop(st);
        if done {
            self.ready.notify_all();
        }
    }
    fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.ready.notify_all();
    }
}

impl Contender for HandWritten {
    fn name(&self) -> &'static str {
        "mutex-heap-map"
    }
    fn run(&self, producers: usize, consumers: usize, messages: u64) -> Duration {
        let q = HandQueue {
            state: Mutex::default(),
            ready: Condvar::new(),
            lease: Duration::from_secs(30),
        };
        let per = messages / producers as u64;
        let start = Instant::now();
        thread::scope(|s| {
            for _ in 0..consumers {
                s.spawn(|| {
                    while let Some((id, v)) = q.consume() {
                        std::hint::black_box(v);
                        q.ack(id);
                    }
                });
            }
            let ps: Vec<_> = (0..producers)
                .map(|_| {
                    s.spawn(|| {
                        for i in 0..per {
                            q.produce(i);
                        }
                    })
                })
                .collect();
            for p in ps {
                p.join().unwrap();
            }
            q.close();
        });
        start.elapsed()
    }
}

fn throughput(c: &mut Criterion) {
    let contenders: [&dyn Contender; 3] = [&Rebound, &Channel, &HandWritten];
    for (p, cons) in [(1, 1), (2, 2)] {
        let mut group = c.benchmark_group(format!("produce_consume_ack/{p}p{cons}c"));
        const BATCH: u64 = 200_000;
        group.throughput(Throughput::Elements(BATCH));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_millis(500));
        for contender in contenders {
            group.bench_function(BenchmarkId::from_parameter(contender.name()), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| contender.run(p, cons, BATCH)).sum())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, throughput);
criterion_main!(benches);
