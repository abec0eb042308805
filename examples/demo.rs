//! A realistic run of the processing runtime: several producers publish a
//! million orders, a rayon pool of handlers processes them through
//! `Queue::process`, and some handlers fail, panic, reject a malformed order,
//! hit a poison order that never succeeds, or are so slow they outlive their
//! lease. A live progress bar shows the rates; at the end a table says what
//! happened and an SVG plot is written (throughput and in-flight over time,
//! deliveries by attempt).
//!
//! Run: `cargo run --release --example demo -- --help` for the flags.
//!
//! The handlers' panics are intentional: a panic hook drops the default
//! "thread panicked" message for them (and only them) so the output stays
//! readable; any other panic is printed as usual.

use clap::Parser;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use rebound::{Backoff, Delivery, Outcome, Queue};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The payload of the handlers' intentional panics.
const INTENTIONAL: &str = "simulated handler crash";

#[derive(Parser, Debug)]
#[command(about = "rebound demo: a queue processed by a rayon pool, with failures of every kind")]
struct Args {
    /// Orders to produce.
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Producer threads.
    #[arg(long, default_value_t = 3)]
    producers: u64,
    /// Handler threads in the rayon pool (also the processor's concurrency).
    /// More than the cores: slow handlers sleep, as if waiting on a remote service.
    #[arg(long, default_value_t = 8)]
    threads: usize,
    /// CPU work per handler, in microseconds (pricing the order).
    #[arg(long, default_value_t = 4)]
    work_us: u64,
    /// Share of deliveries whose handler returns an error (retried with backoff).
    #[arg(long, default_value_t = 0.05)]
    error_rate: f64,
    /// Share of deliveries whose handler panics (caught, rolled back).
    #[arg(long, default_value_t = 0.002)]
    panic_rate: f64,
    /// Share of deliveries whose handler outlives its lease (redelivered; the late ack is refused).
    #[arg(long, default_value_t = 0.00002)]
    slow_rate: f64,
    /// Share of orders that are poison: every delivery fails, dead-lettered after max attempts.
    #[arg(long, default_value_t = 0.0001)]
    poison_rate: f64,
    /// Share of orders that are malformed: the handler dead-letters them at once.
    #[arg(long, default_value_t = 0.0001)]
    reject_rate: f64,
    /// Lease (visibility timeout) in milliseconds; slow handlers take twice as long.
    #[arg(long, default_value_t = 50)]
    lease_ms: u64,
    /// Deliveries per order before it is dead-lettered.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Producers pause while this many orders are produced but not yet settled (0: never).
    #[arg(long, default_value_t = 50_000)]
    backlog: u64,
    /// Where to write the SVG plot.
    #[arg(long, default_value = "target/rebound-demo.svg")]
    plot: PathBuf,
    /// Journal the queue in this directory (crash-safe; a second run picks
    /// up what the first left).
    #[arg(long)]
    journal: Option<PathBuf>,
}

/// One order, stamped when produced so the handler can measure latency.
struct Order {
    number: u64,
    produced: Instant,
}

/// How an order is journaled (`--journal`): its number. An order read back
/// after a restart is stamped with the time it was read.
impl rebound::Payload for Order {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.number.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, rebound::DecodeError> {
        let number = bytes
            .try_into()
            .map_err(|_| rebound::DecodeError::new("an order is 8 bytes"))?;
        Ok(Order {
            number: u64::from_le_bytes(number),
            produced: Instant::now(),
        })
    }
}

/// A uniform draw in [0, 1) from (order, attempt, salt): deterministic per
/// delivery, independent across deliveries.
fn draw(number: u64, attempt: u32, salt: u64) -> f64 {
    let mut x = number
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(attempt) << 48 ^ salt);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Shared bookkeeping of the handlers.
struct Tracker {
    /// Produce -> handler-done latency of orders acked, in microseconds, one
    /// histogram per pool thread (uncontended locks).
    latency: Vec<Mutex<Histogram<u64>>>,
    /// Deliveries by attempt number (index 0 unused).
    by_attempt: Vec<AtomicU64>,
    slow: AtomicU64,
    panics: AtomicU64,
    errors: AtomicU64,
}

impl Tracker {
    fn record_latency(&self, since: Instant) {
        let stripe = rayon::current_thread_index().unwrap_or(0) % self.latency.len();
        let micros = since.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        if let Ok(mut h) = self.latency[stripe].lock() {
            h.saturating_record(micros.max(1));
        }
    }
}

/// One sample of the run, taken every `SAMPLE`.
struct Sample {
    t: f64,
    acked_per_s: f64,
    produced_per_s: f64,
    handlers: u64,
}

const SAMPLE: Duration = Duration::from_millis(50);

fn main() {
    let args = Args::parse();
    let threads = args.threads.max(1);
    let builder = Queue::builder()
        .lease(Duration::from_millis(args.lease_ms))
        .backoff(
            Backoff::exponential(Duration::from_millis(1), Duration::from_millis(50))
                .with_jitter(0.2),
        )
        .max_attempts(args.max_attempts);
    let queue: Queue<Order> = match &args.journal {
        None => builder.build(),
        Some(dir) => {
            let queue = builder.journal(dir).open().unwrap_or_else(|e| {
                eprintln!("cannot open the journal: {e}");
                std::process::exit(1)
            });
            if let Some(r) = queue.recovery() {
                println!(
                    "journal {}: {} records replayed, {} pending, {} delayed, {} in flight at a crash, {} dead letters, in {:?}",
                    dir.display(),
                    r.records,
                    r.pending,
                    r.delayed,
                    r.in_flight_at_crash,
                    r.dead_letters,
                    r.elapsed
                );
            }
            queue
        }
    };
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("handler-{i}"))
            .build()
            .expect("rayon pool"),
    );
    let tracker = Arc::new(Tracker {
        latency: (0..threads)
            .map(|_| {
                Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram"))
            })
            .collect(),
        by_attempt: (0..=args.max_attempts).map(|_| AtomicU64::new(0)).collect(),
        slow: AtomicU64::new(0),
        panics: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });

    let bar = ProgressBar::new(args.messages);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:32}] {percent:>3}% settled  {msg}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    // Intentional panics are caught by the runtime; their default message
    // would only garble the progress bar. Anything else is printed (with the
    // bar out of the way).
    {
        let default = std::panic::take_hook();
        let bar = bar.clone();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&INTENTIONAL) {
                bar.suspend(|| default(info));
            }
        }));
    }

    let handler = {
        let tracker = Arc::clone(&tracker);
        let lease = Duration::from_millis(args.lease_ms);
        let work = Duration::from_micros(args.work_us);
        let (error_rate, panic_rate, slow_rate) =
            (args.error_rate, args.panic_rate, args.slow_rate);
        let (poison_rate, reject_rate) = (args.poison_rate, args.reject_rate);
        move |order: &Delivery<Order>| -> Result<Outcome, &'static str> {
            let (n, attempt) = (order.number, order.attempt());
            if let Some(count) = tracker.by_attempt.get(attempt as usize) {
                count.fetch_add(1, Ordering::Relaxed);
            }
            // Some real work: price the order.
            let begun = Instant::now();
            let mut price = n;
            while begun.elapsed() < work {
                for _ in 0..64 {
                    price = std::hint::black_box(price.wrapping_mul(6_364_136_223_846_793_005) | 1);
                }
            }
            if draw(n, 0, 1) < reject_rate {
                return Ok(Outcome::DeadLetter); // malformed: no retry helps
            }
            if draw(n, 0, 2) < poison_rate {
                tracker.errors.fetch_add(1, Ordering::Relaxed);
                return Err("poison order"); // fails every time
            }
            let roll = draw(n, attempt, 3);
            if roll < error_rate {
                tracker.errors.fetch_add(1, Ordering::Relaxed);
                return Err("payment service unavailable");
            }
            if roll < error_rate + panic_rate {
                tracker.panics.fetch_add(1, Ordering::Relaxed);
                std::panic::panic_any(INTENTIONAL);
            }
            if roll < error_rate + panic_rate + slow_rate {
                // Hung on a slow dependency, well past the lease: the queue
                // redelivers the order meanwhile and this ack is refused.
                tracker.slow.fetch_add(1, Ordering::Relaxed);
                thread::sleep(lease * 2);
                return Ok(Outcome::Ack);
            }
            tracker.record_latency(order.produced);
            Ok(Outcome::Ack)
        }
    };

    let start = Instant::now();
    let handle = queue
        .processor()
        .concurrency(threads)
        .start(&pool, handler)
        .expect("start the processor");
    let produced = AtomicU64::new(0);
    let mut samples = Vec::new();

    thread::scope(|s| {
        // The sampler: progress bar and plot data, until the queue is closed
        // and every order settled.
        s.spawn(|| {
            let (mut last_acked, mut last_produced, mut last_t) = (0, 0, 0.0);
            loop {
                thread::sleep(SAMPLE);
                let stats = queue.stats();
                let report = handle.report();
                let t = start.elapsed().as_secs_f64();
                let dt = (t - last_t).max(1e-9);
                let sample = Sample {
                    t,
                    acked_per_s: (stats.acked - last_acked) as f64 / dt,
                    produced_per_s: (stats.produced - last_produced) as f64 / dt,
                    handlers: report.in_flight,
                };
                (last_acked, last_produced, last_t) = (stats.acked, stats.produced, t);
                let settled = stats.acked + stats.dead_lettered;
                bar.set_position(settled);
                bar.set_message(format!(
                    "{:>4.0}k acked/s  {:>2} handlers  {:>6} redelivered  {:>3} dead",
                    sample.acked_per_s / 1e3,
                    sample.handlers,
                    stats.redelivered,
                    stats.dead_lettered,
                ));
                samples.push(sample);
                if queue.is_closed() && settled == stats.produced {
                    break;
                }
            }
        });

        let producer_count = args.producers.max(1);
        let producers: Vec<_> = (0..producer_count)
            .map(|p| {
                let (queue, handle, produced) = (&queue, &handle, &produced);
                let (messages, backlog) = (args.messages, args.backlog);
                s.spawn(move || {
                    let numbers = (p..messages).step_by(producer_count as usize);
                    for (i, number) in numbers.enumerate() {
                        if i % 256 == 0 && i > 0 {
                            // Relaxed: a rough gauge for the backpressure below.
                            produced.fetch_add(256, Ordering::Relaxed);
                            // Backpressure: pause while too much is unsettled.
                            let unsettled = || {
                                let r = handle.report();
                                produced
                                    .load(Ordering::Relaxed)
                                    .saturating_sub(r.acked + r.dead_lettered)
                            };
                            while backlog > 0 && unsettled() > backlog {
                                thread::sleep(Duration::from_micros(200));
                            }
                        }
                        let order = Order {
                            number,
                            produced: Instant::now(),
                        };
                        queue.produce(order).expect("the queue is open");
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().expect("producer");
        }
        // Everything is produced: close, and let the processor drain the
        // queue, retries included.
        queue.close();
    });
    let report = handle.join();
    let elapsed = start.elapsed();
    bar.finish_and_clear();

    let stats = queue.stats();
    let dead = queue.drain_dead_letters();
    let rejected = dead
        .iter()
        .filter(|d| d.reason() == rebound::DeadLetterReason::Rejected)
        .count();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram");
    for h in &tracker.latency {
        if let Ok(h) = h.lock() {
            latency.add(&*h).expect("same bounds");
        }
    }
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1e3;
    let by_attempt: Vec<u64> = tracker
        .by_attempt
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();

    let rows: Vec<(&str, String, String)> = vec![
        (
            "produced",
            stats.produced.to_string(),
            format!("by {} producers", args.producers.max(1)),
        ),
        (
            "acked",
            stats.acked.to_string(),
            format!("by {threads} rayon handler threads"),
        ),
        (
            "rolled back",
            stats.rolled_back.to_string(),
            format!(
                "{} errors, {} panics caught",
                tracker.errors.load(Ordering::Relaxed),
                tracker.panics.load(Ordering::Relaxed)
            ),
        ),
        (
            "redelivered",
            stats.redelivered.to_string(),
            "after backoff or lease expiry".into(),
        ),
        (
            "expired",
            stats.expired.to_string(),
            format!(
                "{} slow handlers, {} late acks refused",
                tracker.slow.load(Ordering::Relaxed),
                report.expired
            ),
        ),
        (
            "dead-lettered",
            stats.dead_lettered.to_string(),
            format!(
                "{} poison after {} attempts, {rejected} malformed",
                dead.len() - rejected,
                args.max_attempts
            ),
        ),
        (
            "throughput",
            format!("{:.0}/s", stats.produced as f64 / elapsed.as_secs_f64()),
            format!("{:.2} s end to end", elapsed.as_secs_f64()),
        ),
        (
            "latency p99",
            format!("{:.1} ms", ms(0.99)),
            format!(
                "produce -> handled, p50 {:.1} ms, max {:.1} ms",
                ms(0.5),
                latency.max() as f64 / 1e3
            ),
        ),
    ];
    println!(
        "rebound demo: {} orders, lease {} ms, max {} attempts, {:.1}% errors, {:.1}% panics",
        args.messages,
        args.lease_ms,
        args.max_attempts,
        args.error_rate * 100.0,
        args.panic_rate * 100.0
    );
    let line = format!("+{:-<16}+{:-<14}+{:-<52}+", "", "", "");
    println!("{line}");
    for (name, value, note) in rows {
        println!("| {name:<14} | {value:>12} | {note:<50} |");
    }
    println!("{line}");
    match plot(&args.plot, &samples, threads, &by_attempt) {
        Ok(()) => println!("plot: {}", args.plot.display()),
        Err(e) => eprintln!("could not write the plot to {}: {e}", args.plot.display()),
    }
    assert_eq!(
        stats.produced,
        stats.acked + stats.dead_lettered,
        "every order is acked or dead-lettered"
    );
}

/// Writes the SVG: throughput and in-flight over time, deliveries by attempt.
fn plot(
    path: &std::path::Path,
    samples: &[Sample],
    limit: usize,
    by_attempt: &[u64],
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1000, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((3, 1));
    let t_max = samples.last().map_or(1.0, |s| s.t).max(0.1);

    let rate_max = samples
        .iter()
        .map(|s| s.acked_per_s.max(s.produced_per_s))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("throughput (messages/s)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..rate_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_label_formatter(&|y| format!("{:.0}k", y / 1e3))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t, s.produced_per_s)),
            &BLUE,
        ))?
        .label("produced/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t, s.acked_per_s)),
            &RED,
        ))?
        .label("acked/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let mut chart = ChartBuilder::on(&panels[1])
        .caption(
            format!("in flight: handlers running (limit {limit})"),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..limit as f64 * 1.25)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t, s.handlers as f64)),
            &GREEN,
        ))?
        .label("handlers running")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    chart
        .draw_series(LineSeries::new(
            [(0.0, limit as f64), (t_max, limit as f64)],
            BLACK.mix(0.5),
        ))?
        .label("concurrency limit")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let attempts = by_attempt.len().saturating_sub(1).max(1);
    let top = by_attempt.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(
            "deliveries by attempt (2 and up are redeliveries; log scale)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5..attempts as f64 + 0.5, (0.5..top * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(attempts)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("attempt")
        .draw()?;
    chart.draw_series(
        by_attempt
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, c)| **c > 0)
            .map(|(attempt, &count)| {
                let x = attempt as f64;
                Rectangle::new([(x - 0.3, 0.5), (x + 0.3, count as f64)], BLUE.filled())
            }),
    )?;
    root.present()?;
    Ok(())
}
