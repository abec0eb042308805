//! Produce -> claim latency under a paced load, and redelivery punctuality.
//!
//! 1. For each contender, one producer and one consumer: first the peak
//!    rate of this very harness (unpaced), then runs paced at 50% and 90% of
//!    that peak. The producer stamps each message with the time just before
//!    `produce` (the clock read that ended its wait for the message's
//!    turn); the consumer records `claim time - stamp` in an HDR
//!    histogram. Each measurement is repeated; reported: the median over
//!    the runs of the rate, p50, p99 and p99.9, the worst run's p99 and
//!    the largest latency seen in any run.
//! 2. Redelivery punctuality (contenders with delayed delivery): one message
//!    at a time is claimed and rolled back with `rollback_after(d)`; how much
//!    later than `d` it is claimed again.
//!
//! 3. The machine's own stalls, with no queue at all: two threads spin on
//!    the clock (as the paced producer and a busy consumer do) for windows
//!    as long as a paced run; per window and thread, the longest gap
//!    between two clock reads and how long the gaps over 20 us add up to.
//!    A consumer stalled for a millisecond delays every message produced
//!    meanwhile, whatever the queue: this is the floor under every tail.
//!
//! Prints tables and writes `target/bench-data/latency.json` for
//! `benches/report.rs`. Run: `cargo bench --bench latency`

mod common;

use common::{BTree, Contender, CrossbeamChannel, Flume, HeapMap, Rebound, StdMpsc};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::thread;
use std::time::{Duration, Instant};

/// Messages for the unpaced peak run.
const PEAK_MESSAGES: u64 = 300_000;
/// Length of each paced run.
const PACED_FOR: Duration = Duration::from_millis(200);
/// Runs per measurement; percentiles are the median over the runs (the
/// machine is shared: one preempted run should not decide the figure).
const REPEATS: usize = 5;
/// Messages at the start of a paced run left out of the histogram (warm-up).
const WARM_UP: u64 = 2_000;
/// Rollbacks per punctuality delay.
const ROLLBACKS: [(Duration, u32); 2] = [
    (Duration::from_millis(1), 500),
    (Duration::from_millis(10), 100),
];

/// Windows of the stall measurement (each `PACED_FOR` long).
const NOISE_WINDOWS: usize = 10;
/// A gap between two clock reads of a spinning thread counted as a stall.
const STALL: Duration = Duration::from_micros(20);

/// One run's latencies (ns) and achieved rate (msg/s).
type Run = (Histogram<u64>, f64);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// Runs `messages` messages through a fresh queue, the producer sending one
/// every `interval` (none: as fast as it can). Returns the histogram of
/// produce -> claim latencies (ns) and the achieved rate (msg/s).
fn run<Q: Contender<u64>>(messages: u64, interval: Option<Duration>) -> Run {
    let q = Q::new();
    let base = Instant::now();
    let stamp = move || base.elapsed().as_nanos() as u64;
    thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut hist = histogram();
            for i in 0..messages {
                let claim = q.consume();
                let latency = stamp().saturating_sub(*Q::payload(&claim));
                q.ack(claim);
                if i >= WARM_UP {
                    hist.saturating_record(latency.max(1));
                }
            }
            (hist, stamp())
        });
        let start = stamp();
        let step = interval.map_or(0, |i| i.as_nanos() as u64);
        for i in 0..messages {
            // One clock read per message: the read that ends the wait is
            // the stamp (a second read cost the paced producer about 30 ns
            // a message, which capped it near 7 M msg/s).
            let mut now = stamp();
            let due = start + i * step;
            while now < due {
                std::hint::spin_loop();
                now = stamp();
            }
            q.produce(now);
        }
        let (hist, end) = consumer.join().expect("consumer");
        let rate = messages as f64 / ((end - start) as f64 / 1e9);
        (hist, rate)
    })
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn latency<Q: Contender<u64>>(rows: &mut Vec<Value>) {
    let mut peaks: Vec<f64> = (0..REPEATS)
        .map(|_| run::<Q>(PEAK_MESSAGES, None).1)
        .collect();
    let peak = median(&mut peaks);
    println!(
        "  {:<18}  peak {:>8.2} M msg/s (unpaced, median of {REPEATS})",
        Q::NAME,
        peak / 1e6
    );
    rows.push(json!({ "contender": Q::NAME, "load": "peak", "rate": peak }));
    for (load, fraction) in [("50%", 0.5), ("90%", 0.9)] {
        let rate = peak * fraction;
        let messages = (rate * PACED_FOR.as_secs_f64()) as u64 + WARM_UP;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let runs: Vec<Run> = (0..REPEATS)
            .map(|_| run::<Q>(messages, Some(interval)))
            .collect();
        let us = |ns: u64| ns as f64 / 1000.0;
        let per_run = |f: &dyn Fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let achieved = per_run(&|r| r.1);
        let p50 = per_run(&|r| us(r.0.value_at_quantile(0.5)));
        let p99_runs: Vec<f64> = runs
            .iter()
            .map(|r| us(r.0.value_at_quantile(0.99)))
            .collect();
        let p99 = median(&mut p99_runs.clone());
        let p999 = per_run(&|r| us(r.0.value_at_quantile(0.999)));
        let worst_p99 = p99_runs.iter().copied().fold(0.0, f64::max);
        let max = runs.iter().map(|r| us(r.0.max())).fold(0.0, f64::max);
        println!(
            "  {:<18} {load:>5} {:>8.2} M msg/s  p50 {p50:>9.2} us  p99 {p99:>9.2} us  p99.9 {p999:>9.2} us  (worst run p99 {worst_p99:>9.2} us, max {max:>9.1} us)",
            Q::NAME,
            achieved / 1e6,
        );
        rows.push(json!({
            "contender": Q::NAME,
            "load": load,
            "rate": achieved,
            "p50_us": p50,
            "p99_us": p99,
            "p999_us": p999,
            "worst_p99_us": worst_p99,
            "max_us": max,
            "p99_runs_us": p99_runs,
            "runs": REPEATS,
        }));
    }
}

/// How late a message rolled back with `delay` is claimed again, one
/// message at a time on an otherwise idle queue.
fn punctuality<Q: Contender<u64>>(rows: &mut Vec<Value>) {
    let q = Q::new();
    for (delay, rounds) in ROLLBACKS {
        let mut hist = histogram();
        for round in 0..rounds {
            // A fresh message each round: attempts are bounded (rebound
            // dead-letters after 16).
            q.produce(u64::from(round));
            let claim = q.consume();
            let rolled_back = Instant::now();
            q.rollback(claim, delay);
            let claim = q.consume();
            let late = rolled_back.elapsed().saturating_sub(delay);
            q.ack(claim);
            hist.saturating_record((late.as_nanos() as u64).max(1));
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        println!(
            "  {:<18} {:>3} ms  late p50 {:>8.1} us  p99 {:>8.1} us  max {:>8.1} us  ({rounds} rollbacks)",
            Q::NAME,
            delay.as_millis(),
            us(hist.value_at_quantile(0.5)),
            us(hist.value_at_quantile(0.99)),
            us(hist.max()),
        );
        rows.push(json!({
            "contender": Q::NAME,
            "delay_ms": delay.as_millis() as u64,
            "p50_us": us(hist.value_at_quantile(0.5)),
            "p99_us": us(hist.value_at_quantile(0.99)),
            "max_us": us(hist.max()),
            "samples": hist.len(),
        }));
    }
}

/// One spinning thread's window: the longest gap between two clock reads
/// and the sum of the gaps over [`STALL`].
fn spin_window() -> (Duration, Duration) {
    let start = Instant::now();
    let mut last = start;
    let (mut longest, mut stalled) = (Duration::ZERO, Duration::ZERO);
    while last - start < PACED_FOR {
        let now = Instant::now();
        let gap = now - last;
        if gap > STALL {
            stalled += gap;
        }
        longest = longest.max(gap);
        last = now;
    }
    (longest, stalled)
}

/// The machine's stalls of two spinning threads, per window and thread.
fn noise() -> Value {
    let mut windows = Vec::new();
    for _ in 0..NOISE_WINDOWS {
        let pair: Vec<(Duration, Duration)> = thread::scope(|s| {
            let threads: Vec<_> = (0..2).map(|_| s.spawn(spin_window)).collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("spinner"))
                .collect()
        });
        windows.extend(pair);
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut stalled: Vec<f64> = windows.iter().map(|w| us(w.1)).collect();
    let longest = windows.iter().map(|w| us(w.0)).fold(0.0, f64::max);
    let over_1ms = windows
        .iter()
        .filter(|w| w.0 >= Duration::from_millis(1))
        .count();
    let over_100us = windows
        .iter()
        .filter(|w| w.0 >= Duration::from_micros(100))
        .count();
    let median_stalled = median(&mut stalled);
    println!(
        "  {} thread-windows of {} ms: stalled a median {median_stalled:.0} us per window (gaps over {} us), a gap of 100 us or more in {over_100us}, of 1 ms or more in {over_1ms}, longest {longest:.0} us",
        windows.len(),
        PACED_FOR.as_millis(),
        STALL.as_micros(),
    );
    json!({
        "thread_windows": windows.len(),
        "window_ms": PACED_FOR.as_millis() as u64,
        "stall_us": STALL.as_micros() as u64,
        "median_stalled_us": median_stalled,
        "windows_gap_100us": over_100us,
        "windows_gap_1ms": over_1ms,
        "longest_gap_us": longest,
    })
}

fn main() {
    // `cargo bench` passes `--bench`; a filter is not supported here.
    println!("produce -> claim latency, 1 producer 1 consumer, u64 payload");
    let mut rows = Vec::new();
    latency::<Rebound<u64>>(&mut rows);
    latency::<CrossbeamChannel<u64>>(&mut rows);
    latency::<Flume<u64>>(&mut rows);
    latency::<StdMpsc<u64>>(&mut rows);
    latency::<HeapMap<u64>>(&mut rows);
    latency::<BTree<u64>>(&mut rows);

    println!("redelivery punctuality: claimed again how long after rollback_after(d) + d");
    let mut late = Vec::new();
    punctuality::<Rebound<u64>>(&mut late);
    punctuality::<HeapMap<u64>>(&mut late);
    punctuality::<BTree<u64>>(&mut late);

    println!("the machine's own stalls: two threads spinning on the clock, no queue");
    let noise = noise();

    let path = common::data_dir().join("latency.json");
    let doc = json!({ "latency": rows, "punctuality": late, "noise": noise });
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json"))
        .expect("write latency.json");
    println!("wrote {}", path.display());
}
