//! Throughput, messages per second, of rebound against the queues a user
//! would pick instead, in the same criterion groups doing the same work:
//! rebound (produce -> consume -> ack), crossbeam-channel, flume and
//! `std::sync::mpsc` unbounded (send -> recv, no ack), and two hand-written
//! lock-based queues with acks and delayed redelivery (`Mutex<BinaryHeap>` +
//! `HashMap`, `Mutex<BTreeMap>`). Producer and consumer threads are started
//! once per contender and scenario; a measured run releases them on a
//! barrier and ends when every message was acked.
//!
//! Groups (`<scenario>/<payload>/<threads>`):
//! - `clean/{8B,1KiB}/{1p1c,2p2c,4p4c}`: no rollback, no delay;
//! - `rollback10-0ms/8B/..`: every 10th message rolled back once, redelivered
//!   at once (channels re-send it);
//! - `rollback10-1ms/8B/..`: the same with a 1 ms backoff (channels left out);
//! - `delayed10/8B/..`: every 10th message produced 1 ms in the future
//!   (channels left out);
//! - `batch64/8B/..`: produce and consume in batches of 64 (rebound's
//!   `produce_batch` / `consume_batch`; the hand-written queues take their
//!   lock once per batch; channels have no batch API and run per message);
//! - `backlog/8B/{10k,1M}`: a backlog queued beforehand (not timed), drained
//!   by 2 consumers.
//!
//! Run: `cargo bench --bench throughput` (add `-- clean/8B` to filter).

mod common;

use common::{
    BTree, Contender, CrossbeamChannel, Flume, HeapMap, Job, Kib, Payload, Rebound, Rig, StdMpsc,
};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use std::time::Duration;

/// Messages per measured run in the streaming scenarios.
const MESSAGES: u64 = 100_000;
/// Larger runs with a 1 ms backoff, so that the last redelivery's wait is a
/// small part of the run.
const MESSAGES_BACKOFF: u64 = 200_000;
const THREADS: [usize; 3] = [1, 2, 4];

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, messages: u64) {
    group
        .throughput(Throughput::Elements(messages))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

/// Benchmarks one contender in `group`, unless the job needs delayed
/// delivery and the contender has none.
fn streaming<T: Payload, Q: Contender<T>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    pairs: usize,
    job: Job,
) {
    let needs_delay = job.delay.is_some() || job.rollback.is_some_and(|d| !d.is_zero());
    if needs_delay && !Q::DELAYS {
        return;
    }
    let rig = Rig::<T, Q>::new(pairs, pairs);
    group.bench_function(Q::NAME, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.run(job)).sum())
    });
}

fn all_streaming<T: Payload>(c: &mut Criterion, scenario: &str, job: Job) {
    for pairs in THREADS {
        let mut group = c.benchmark_group(format!("{scenario}/{}/{pairs}p{pairs}c", T::NAME));
        configure(&mut group, job.messages);
        streaming::<T, Rebound<T>>(&mut group, pairs, job);
        streaming::<T, CrossbeamChannel<T>>(&mut group, pairs, job);
        streaming::<T, Flume<T>>(&mut group, pairs, job);
        streaming::<T, StdMpsc<T>>(&mut group, pairs, job);
        streaming::<T, HeapMap<T>>(&mut group, pairs, job);
        streaming::<T, BTree<T>>(&mut group, pairs, job);
        group.finish();
    }
}

/// Drains a backlog of `messages`, queued before the timer starts, with two
/// consumers.
fn backlog<Q: Contender<u64>>(group: &mut BenchmarkGroup<'_, WallTime>, messages: u64) {
    let rig = Rig::<u64, Q>::new(0, 2);
    let job = Job {
        messages,
        rollback: None,
        delay: None,
        batch: 1,
    };
    group.bench_function(Q::NAME, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    rig.prefill(messages);
                    rig.run(job)
                })
                .sum()
        })
    });
}

fn all_backlog(c: &mut Criterion) {
    for (label, messages) in [("10k", 10_000), ("1M", 1_000_000)] {
        let mut group = c.benchmark_group(format!("backlog/8B/{label}"));
        configure(&mut group, messages);
        backlog::<Rebound<u64>>(&mut group, messages);
        backlog::<CrossbeamChannel<u64>>(&mut group, messages);
        backlog::<Flume<u64>>(&mut group, messages);
        backlog::<StdMpsc<u64>>(&mut group, messages);
        backlog::<HeapMap<u64>>(&mut group, messages);
        backlog::<BTree<u64>>(&mut group, messages);
        group.finish();
    }
}

fn suite(c: &mut Criterion) {
    let clean = Job {
        messages: MESSAGES,
        rollback: None,
        delay: None,
        batch: 1,
    };
    all_streaming::<u64>(c, "clean", clean);
    all_streaming::<Kib>(c, "clean", clean);
    all_streaming::<u64>(
        c,
        "rollback10-0ms",
        Job {
            rollback: Some(Duration::ZERO),
            ..clean
        },
    );
    all_streaming::<u64>(
        c,
        "rollback10-1ms",
        Job {
            messages: MESSAGES_BACKOFF,
            rollback: Some(Duration::from_millis(1)),
            delay: None,
            batch: 1,
        },
    );
    all_streaming::<u64>(
        c,
        "delayed10",
        Job {
            messages: MESSAGES_BACKOFF,
            rollback: None,
            delay: Some(Duration::from_millis(1)),
            batch: 1,
        },
    );
    all_streaming::<u64>(c, "batch64", Job { batch: 64, ..clean });
    all_backlog(c);
}

criterion::criterion_group!(benches, suite);
criterion::criterion_main!(benches);
