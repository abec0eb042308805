//! The redelivery storm, with and without a retry budget: redeliveries per
//! second over time, on the real clock.
//!
//! A producer produces `RATE` messages a second for `RUN`; two consumers
//! handle them, acking, except during the outage (`OUTAGE`), when every
//! handler fails fast (rollback, `BACKOFF`). Once it ends they ack again
//! until everything produced is acked. Run once without a budget and once
//! with `RetryBudget::new(RATIO, MIN_PER_SEC)`, sampling `Stats` every
//! `SAMPLE`. Writes `docs/plots/storm.svg` and the table of
//! docs/benchmarks.md ("Redelivery storm") to `target/bench-data/storm.md`
//! (also printed), which `--bench report` adds to its report.
//!
//! Run: `cargo bench --bench storm` (part of `benches/run-all.sh`).

use plotters::prelude::*;
use rebound::{Backoff, Queue, RetryBudget};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const RATE: u64 = 2_000;
const RUN: Duration = Duration::from_secs(4);
const OUTAGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3));
const BACKOFF: Duration = Duration::from_millis(10);
const RATIO: f64 = 0.2;
const MIN_PER_SEC: u32 = 1_000;
const SAMPLE: Duration = Duration::from_millis(100);
/// Gives up on draining after this long.
const LIMIT: Duration = Duration::from_secs(20);
const CONSUMERS: usize = 2;

/// One run: `(seconds since start, redeliveries/s, acks/s)` per sample,
/// the highest redelivery rate over any one-second window, the throttled
/// count and when the last message was acked.
struct Run {
    samples: Vec<(f64, f64, f64)>,
    max_per_window: u64,
    throttled: u64,
    drained: Option<Duration>,
}

fn run(budget: Option<RetryBudget>) -> Run {
    let mut builder = Queue::builder()
        .backoff(Backoff::fixed(BACKOFF))
        .max_attempts(4095);
    if let Some(budget) = budget {
        builder = builder.retry_budget(budget);
    }
    let q: Queue<u64> = builder.build();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                while let Ok(d) = q.consume() {
                    let at = start.elapsed();
                    if at >= OUTAGE.0 && at < OUTAGE.1 {
                        d.rollback().ok();
                    } else {
                        d.ack().ok();
                    }
                }
            })
        })
        .collect();
    let producer = {
        let q = q.clone();
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut produced = 0;
            while !stop.load(Ordering::Relaxed) {
                let at = start.elapsed();
                if at >= RUN {
                    break;
                }
                let due = (at.as_secs_f64() * RATE as f64) as u64;
                while produced < due {
                    q.produce(produced).unwrap();
                    produced += 1;
                }
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut samples = Vec::new();
    let mut history = vec![(0.0, 0u64)];
    let (mut last_redelivered, mut last_acked) = (0, 0);
    let mut drained = None;
    while start.elapsed() < LIMIT {
        thread::sleep(SAMPLE);
        let s = q.stats();
        let t = start.elapsed().as_secs_f64();
        let per_sec = 1.0 / SAMPLE.as_secs_f64();
        samples.push((
            t,
            (s.redelivered - last_redelivered) as f64 * per_sec,
            (s.acked - last_acked) as f64 * per_sec,
        ));
        history.push((t, s.redelivered));
        last_redelivered = s.redelivered;
        last_acked = s.acked;
        if start.elapsed() > RUN && s.acked == s.produced {
            drained = Some(start.elapsed());
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    q.close();
    let throttled = q.stats().throttled;
    // Whatever is left (a run that did not drain) is dropped with the queue.
    drop(q);
    for c in consumers {
        c.join().unwrap();
    }
    // The most redeliveries per second between samples a second apart
    // (ten sample intervals, each a little over `SAMPLE`: divided by the
    // time they really took).
    let window = (1.0 / SAMPLE.as_secs_f64()).round() as usize;
    let max_per_window = history
        .windows(window + 1)
        .map(|w| ((w[window].1 - w[0].1) as f64 / (w[window].0 - w[0].0)) as u64)
        .max()
        .unwrap_or(0);
    Run {
        samples,
        max_per_window,
        throttled,
        drained,
    }
}

fn plot(path: &PathBuf, without: &Run, with: &Run) -> Result<(), Box<dyn std::error::Error>> {
    let t_max = without
        .samples
        .iter()
        .chain(&with.samples)
        .map(|s| s.0)
        .fold(0.0, f64::max);
    let y_max = without
        .samples
        .iter()
        .chain(&with.samples)
        .map(|s| s.1.max(s.2))
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (1000, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "redelivery storm: {RATE} msg/s, every handler failing from {}s to {}s; budget RetryBudget::new({RATIO}, {MIN_PER_SEC})",
                OUTAGE.0.as_secs(),
                OUTAGE.1.as_secs()
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, (1.0..y_max * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("per second (log)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let series = [
        (
            "redeliveries/s, no budget",
            &without.samples,
            1,
            RGBColor(214, 39, 40),
        ),
        (
            "redeliveries/s, with the budget",
            &with.samples,
            1,
            RGBColor(31, 119, 180),
        ),
        (
            "acks/s, no budget",
            &without.samples,
            2,
            RGBColor(255, 152, 150),
        ),
        (
            "acks/s, with the budget",
            &with.samples,
            2,
            RGBColor(174, 199, 232),
        ),
    ];
    for (name, samples, field, colour) in series {
        let points = samples.iter().map(|s| {
            let v = if field == 1 { s.1 } else { s.2 };
            (s.0, v.max(1.0))
        });
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `target/bench-data`, where the other benches put their data.
fn data_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench-data");
    std::fs::create_dir_all(&dir).expect("create bench-data dir");
    dir
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; nothing to filter.
    let without = run(None);
    let with = run(Some(RetryBudget::new(RATIO, MIN_PER_SEC)));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/plots/storm.svg");
    plot(&path, &without, &with)?;
    let mut table = format!(
        "\n### Redelivery storm (retry budget)\n\n\
         {RATE} msg/s for {}s, every handler failing from {}s to {}s (fixed backoff {BACKOFF:?}), \
         {CONSUMERS} consumers; `benches/storm.rs`, plot `docs/plots/storm.svg`.\n\n\
         | run | peak redeliveries/s (1 s window) | throttled | drained after |\n|---|---|---|---|\n",
        RUN.as_secs(),
        OUTAGE.0.as_secs(),
        OUTAGE.1.as_secs()
    );
    let budgeted = format!("`RetryBudget::new({RATIO}, {MIN_PER_SEC})`");
    for (name, r) in [("no budget", &without), (budgeted.as_str(), &with)] {
        let drained = r.drained.map_or("not within the limit".to_string(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        });
        table += &format!(
            "| {name} | {} | {} | {drained} |\n",
            r.max_per_window, r.throttled
        );
    }
    print!("{table}");
    std::fs::write(data_dir().join("storm.md"), &table)?;
    println!("plot: {}", path.display());
    Ok(())
}
