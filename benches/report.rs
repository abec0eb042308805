//! Turns the measured data into the tables, the bar verdicts and the SVG
//! plots of docs/benchmarks.md. Nothing here is typed in by hand:
//! - throughput: criterion's `target/criterion/**/new/{benchmark,estimates}.json`
//!   (median time per run, and the messages per run);
//! - latency and punctuality: `target/bench-data/latency.json` (`--bench latency`);
//! - memory: `target/bench-data/memory.json` (`--bench memory`);
//! - durable queues: `target/bench-data/durable.md` (`--bench durable`,
//!   which writes its tables and bars itself), added as it is;
//! - the redelivery storm: `target/bench-data/storm.md` (`--bench storm`,
//!   which writes its table and plot itself), added as it is.
//!
//! Writes `docs/plots/*.svg` and `target/bench-data/report.md` (also printed),
//! and puts the report between the `report:start` / `report:end` markers of
//! docs/benchmarks.md.
//! Run after the other benches: `cargo bench --bench report`, or everything
//! at once with `benches/run-all.sh`.

mod common;

use plotters::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Contenders in table and legend order, with their plot colours.
const CONTENDERS: [(&str, RGBColor); 6] = [
    ("rebound", RGBColor(214, 39, 40)),
    ("crossbeam-channel", RGBColor(31, 119, 180)),
    ("flume", RGBColor(44, 160, 44)),
    ("std-mpsc", RGBColor(148, 103, 189)),
    ("mutex-heap-map", RGBColor(255, 127, 14)),
    ("mutex-btree", RGBColor(140, 86, 75)),
];
const CEILING: &str = "crossbeam-channel";
const BASELINE: &str = "mutex-heap-map";
/// Streaming scenarios (`<scenario>/<payload>`), each at 1, 2 and 4 pairs.
const STREAMING: [(&str, &str); 6] = [
    ("clean/8B", "no rollback, 8 B payload"),
    ("clean/1KiB", "no rollback, 1 KiB payload"),
    ("rollback10-0ms/8B", "10% rolled back once, no backoff"),
    ("rollback10-1ms/8B", "10% rolled back once, 1 ms backoff"),
    ("delayed10/8B", "10% produced 1 ms delayed"),
    (
        "batch64/8B",
        "batches of 64 (channels have none: per message)",
    ),
];
const PAIRS: [u32; 3] = [1, 2, 4];

/// group id -> contender -> messages per second (criterion median).
type Rates = BTreeMap<String, BTreeMap<String, f64>>;

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn criterion_rates(dir: &Path, rates: &mut Rates) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let (Some(bench), Some(estimates)) = (
                read_json(&path.join("benchmark.json")),
                read_json(&path.join("estimates.json")),
            ) else {
                continue;
            };
            let group = bench["group_id"].as_str();
            let function = bench["function_id"].as_str();
            let elements = bench["throughput"]["Elements"].as_f64();
            let median_ns = estimates["median"]["point_estimate"].as_f64();
            if let (Some(g), Some(f), Some(n), Some(ns)) = (group, function, elements, median_ns) {
                rates
                    .entry(g.to_string())
                    .or_default()
                    .insert(f.to_string(), n / (ns / 1e9));
            }
        } else {
            criterion_rates(&path, rates);
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn mps(rate: f64) -> String {
    format!("{:.2}", rate / 1e6)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**not met**" }
}

fn throughput_tables(out: &mut String, rates: &Rates) {
    let groups = STREAMING
        .iter()
        .flat_map(|(s, d)| PAIRS.map(|p| (format!("{s}/{p}p{p}c"), *d)))
        .chain([
            ("backlog/8B/10k".to_string(), "10 000 queued, 2 consumers"),
            ("backlog/8B/1M".to_string(), "1 000 000 queued, 2 consumers"),
        ]);
    let groups: Vec<(String, &str)> = groups.collect();
    let _ = writeln!(
        out,
        "\nSummary, rebound in every group:\n\n| group | rebound M msg/s | vs crossbeam-channel | vs mutex-heap-map |\n|---|---:|---:|---:|"
    );
    for (group, _) in &groups {
        if let Some(r) = rate(rates, group, "rebound") {
            let _ = writeln!(
                out,
                "| `{group}` | {} | {} | {} |",
                mps(r),
                ratio(Some(r), rate(rates, group, CEILING)),
                ratio(Some(r), rate(rates, group, BASELINE)),
            );
        }
    }
    for (group, what) in groups {
        let Some(row) = rates.get(&group) else {
            continue;
        };
        let _ = writeln!(out, "\n#### `{group}`: {what}\n");
        let _ = writeln!(
            out,
            "| contender | M msg/s | vs crossbeam-channel | vs mutex-heap-map |\n|---|---:|---:|---:|"
        );
        for (name, _) in CONTENDERS {
            if let Some(&rate) = row.get(name) {
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} |",
                    mps(rate),
                    ratio(Some(rate), row.get(CEILING).copied()),
                    ratio(Some(rate), row.get(BASELINE).copied()),
                );
            }
        }
    }
}

fn rate(rates: &Rates, group: &str, contender: &str) -> Option<f64> {
    rates.get(group)?.get(contender).copied()
}

fn bars(out: &mut String, rates: &Rates, latency: Option<&Value>) {
    let _ = writeln!(out, "\n### Bars\n");
    let _ = writeln!(
        out,
        "| bar | scenario | figure | verdict |\n|---|---|---|---|"
    );
    // Core bars in every scenario without rollback.
    let no_rollback = ["clean/8B", "clean/1KiB", "delayed10/8B", "batch64/8B"]
        .iter()
        .flat_map(|s| PAIRS.map(|p| format!("{s}/{p}p{p}c")))
        .chain(["backlog/8B/10k".into(), "backlog/8B/1M".into()]);
    for group in no_rollback {
        let r = rate(rates, &group, "rebound");
        if let (Some(r), Some(b)) = (r, rate(rates, &group, BASELINE)) {
            let x = r / b;
            let _ = writeln!(
                out,
                "| >= 2x mutex-heap-map | `{group}` | {x:.2}x | {} |",
                verdict(x >= 2.0)
            );
        }
        if group.ends_with("1p1c") && !group.starts_with("delayed") {
            if let (Some(r), Some(c)) = (r, rate(rates, &group, CEILING)) {
                let x = r / c;
                let _ = writeln!(
                    out,
                    "| >= 0.5x crossbeam-channel at 1p1c | `{group}` | {x:.2}x | {} |",
                    verdict(x >= 0.5)
                );
            }
        }
    }
    for backoff in ["0ms", "1ms"] {
        for p in PAIRS {
            let clean = rate(rates, &format!("clean/8B/{p}p{p}c"), "rebound");
            let rolled = rate(
                rates,
                &format!("rollback10-{backoff}/8B/{p}p{p}c"),
                "rebound",
            );
            if let (Some(c), Some(r)) = (clean, rolled) {
                let cost = 1.0 - r / c;
                let _ = writeln!(
                    out,
                    "| 10% rollback costs <= 30% | `rollback10-{backoff}/8B/{p}p{p}c` vs `clean/8B/{p}p{p}c` | {} vs {} M msg/s: costs {:.0}% | {} |",
                    mps(r),
                    mps(c),
                    cost * 100.0,
                    verdict(cost <= 0.30)
                );
            }
        }
    }
    let drain = rate(rates, "backlog/8B/1M", "rebound");
    for (empty, what) in [
        (
            "clean/8B/2p2c",
            "2 producers + 2 consumers, queue near empty",
        ),
        ("backlog/8B/10k", "2 consumers draining 10k"),
    ] {
        if let (Some(d), Some(e)) = (drain, rate(rates, empty, "rebound")) {
            let x = d / e;
            let _ = writeln!(
                out,
                "| 1M backlog drain >= 0.5x empty-queue rate | `backlog/8B/1M` vs `{empty}` ({what}) | {} vs {} M msg/s = {x:.2}x | {} |",
                mps(d),
                mps(e),
                verdict(x >= 0.5)
            );
        }
    }
    let rebound_50 = latency.and_then(|l| {
        l["latency"]
            .as_array()?
            .iter()
            .find(|row| row["contender"] == "rebound" && row["load"] == "50%")
    });
    let p99 = rebound_50.and_then(|row| row["p99_us"].as_f64());
    if let (Some(row), Some(p99)) = (rebound_50, p99) {
        let runs = row["p99_runs_us"]
            .as_array()
            .map(|runs| {
                let runs: Vec<String> = runs
                    .iter()
                    .filter_map(Value::as_f64)
                    .map(|v| format!("{v:.0}"))
                    .collect();
                format!(" (runs: {} us)", runs.join(", "))
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| p99 produce -> claim at 50% load < 50 us | latency, 1p1c, median of the runs | {p99:.1} us{runs} | {} |",
            verdict(p99 < 50.0)
        );
    }
}

fn latency_tables(out: &mut String, latency: &Value) {
    let _ = writeln!(
        out,
        "\n### Produce -> claim latency (1 producer, 1 consumer, u64; median of {} runs)\n\n| contender | load | M msg/s | p50 us | p99 us | p99.9 us | worst-run p99 us | max us |\n|---|---|---:|---:|---:|---:|---:|---:|",
        latency["latency"][1]["runs"]
    );
    for row in latency["latency"].as_array().into_iter().flatten() {
        let f = |k: &str| match row[k].as_f64() {
            Some(v) => format!("{v:.2}"),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row["contender"].as_str().unwrap_or("?"),
            row["load"].as_str().unwrap_or("?"),
            mps(row["rate"].as_f64().unwrap_or(f64::NAN)),
            f("p50_us"),
            f("p99_us"),
            f("p999_us"),
            f("worst_p99_us"),
            f("max_us"),
        );
    }
    let _ = writeln!(
        out,
        "\n### Redelivery punctuality (claimed again how long after the requested delay)\n\n| contender | delay | late p50 us | late p99 us | late max us | rollbacks |\n|---|---:|---:|---:|---:|---:|"
    );
    for row in latency["punctuality"].as_array().into_iter().flatten() {
        let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "| {} | {} ms | {:.1} | {:.1} | {:.1} | {} |",
            row["contender"].as_str().unwrap_or("?"),
            f("delay_ms"),
            f("p50_us"),
            f("p99_us"),
            f("max_us"),
            f("samples"),
        );
    }
}

fn noise_table(out: &mut String, latency: &Value) {
    let noise = &latency["noise"];
    if noise.is_null() {
        return;
    }
    let f = |k: &str| noise[k].as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        out,
        "\n### The machine's own stalls (no queue: two threads spinning on the clock)\n\n| thread-windows of {} ms | median time stalled per window (gaps over {} us) | windows with a gap of 100 us or more | of 1 ms or more | longest gap |\n|---:|---:|---:|---:|---:|\n| {} | {:.0} us | {} | {} | {:.0} us |",
        f("window_ms"),
        f("stall_us"),
        f("thread_windows"),
        f("median_stalled_us"),
        f("windows_gap_100us"),
        f("windows_gap_1ms"),
        f("longest_gap_us"),
    );
}

fn memory_table(out: &mut String, memory: &Value) {
    let _ = writeln!(
        out,
        "\n### Resident bytes per queued u64 message, {} queued\n\n| contender | bytes/msg |\n|---|---:|",
        memory["messages"]
    );
    for row in memory["memory"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {:.1} |",
            row["contender"].as_str().unwrap_or("?"),
            row["bytes_per_message"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;
/// A contender's name, colour and (pairs, M msg/s) points.
type Series = (&'static str, RGBColor, Vec<(u32, f64)>);

/// Messages per second against producer/consumer pairs, one line per contender.
fn plot_throughput(path: &Path, scenario: &str, title: &str, rates: &Rates) -> PlotResult {
    let series: Vec<Series> = CONTENDERS
        .iter()
        .map(|&(name, colour)| {
            let points = PAIRS
                .iter()
                .filter_map(|p| {
                    let r = rate(rates, &format!("{scenario}/{p}p{p}c"), name)?;
                    Some((*p, r / 1e6))
                })
                .collect();
            (name, colour, points)
        })
        .filter(|(_, _, points): &(_, _, Vec<_>)| !points.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let values = series.iter().flat_map(|s| s.2.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{scenario}: {title}"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0u32..7u32, // room on the right for the legend
            (lo / 1.5..hi * 1.5).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("producers = consumers (threads = 2x; 2 cores)")
        .y_desc("M msg/s (log)")
        .x_labels(8)
        .y_labels(12)
        .x_label_formatter(&|x| match x {
            1 | 2 | 4 => format!("{x}p{x}c"),
            _ => String::new(),
        })
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    for (name, colour, points) in series {
        draw_line(&mut chart, name, colour, points)?;
    }
    draw_legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// Both plots: a `u32` x axis, a logarithmic `f64` y axis.
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordu32, LogCoord<f64>>,
>;

/// One contender's line, with a dot per point, labelled for the legend.
fn draw_line<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    name: &'static str,
    colour: RGBColor,
    points: Vec<(u32, f64)>,
) -> PlotResult {
    chart
        .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
    chart.draw_series(
        points
            .into_iter()
            .map(|p| Circle::new(p, 3, colour.filled())),
    )?;
    Ok(())
}

/// The legend, top right.
fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> PlotResult {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// p50 / p99 / p99.9 produce -> claim latency, one panel per load.
fn plot_latency(path: &Path, latency: &Value) -> PlotResult {
    let rows: Vec<&Value> = latency["latency"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let quantiles = ["p50_us", "p99_us", "p999_us"];
    let all = rows
        .iter()
        .filter(|r| r["load"] != "peak")
        .flat_map(|r| quantiles.map(|q| r[q].as_f64().unwrap_or(1.0)));
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return Ok(());
    }
    let root = SVGBackend::new(path, (1000, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    for (panel, load) in panels.iter().zip(["50%", "90%"]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("produce -> claim latency at {load} of peak, 1p1c"),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0u32..6u32, // room on the right for the legend
                (lo.max(0.01) / 1.5..hi * 1.5).log_scale(),
            )?;
        chart
            .configure_mesh()
            .y_desc("microseconds (log)")
            .x_labels(7)
            .y_labels(12)
            .x_label_formatter(&|x| match x {
                1 => "p50".into(),
                2 => "p99".into(),
                3 => "p99.9".into(),
                _ => String::new(),
            })
            .y_label_formatter(&|y| format!("{y:.1}"))
            .draw()?;
        for &(name, colour) in &CONTENDERS {
            let Some(row) = rows
                .iter()
                .find(|r| r["contender"] == name && r["load"] == load)
            else {
                continue;
            };
            let points: Vec<(u32, f64)> = (1u32..)
                .zip(quantiles)
                .filter_map(|(i, q)| Some((i, row[q].as_f64()?)))
                .collect();
            draw_line(&mut chart, name, colour, points)?;
        }
        draw_legend(&mut chart)?;
    }
    root.present()?;
    Ok(())
}

const START: &str = "<!-- report:start -->";
const END: &str = "<!-- report:end -->";

/// Replaces what stands between the report markers of docs/benchmarks.md
/// with `report`, so that the figures there are the measured ones.
fn splice_into_docs(report: &str) -> std::io::Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
    let doc = std::fs::read_to_string(&path)?;
    let (Some(start), Some(end)) = (doc.find(START), doc.find(END)) else {
        println!("{} has no report markers: left alone", path.display());
        return Ok(());
    };
    if end < start {
        return Ok(());
    }
    let spliced = format!("{}{START}\n{report}\n{}", &doc[..start], &doc[end..]);
    std::fs::write(&path, spliced)
}

fn main() -> PlotResult {
    let target = target_dir();
    let mut rates = Rates::new();
    criterion_rates(&target.join("criterion"), &mut rates);
    let data = common::data_dir();
    let latency = read_json(&data.join("latency.json"));
    let memory = read_json(&data.join("memory.json"));

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- generated by `cargo bench --bench report` from target/criterion and target/bench-data -->"
    );
    if let Ok(machine) = std::fs::read_to_string(data.join("machine.txt")) {
        let _ = writeln!(
            out,
            "\n### Machine and load during the run\n\n```\n{}```",
            machine
        );
    }
    let _ = writeln!(
        out,
        "\n### Throughput (criterion medians, messages per second)"
    );
    throughput_tables(&mut out, &rates);
    if let Some(latency) = &latency {
        latency_tables(&mut out, latency);
        noise_table(&mut out, latency);
    }
    if let Some(memory) = &memory {
        memory_table(&mut out, memory);
    }
    bars(&mut out, &rates, latency.as_ref());
    if let Ok(durable) = std::fs::read_to_string(data.join("durable.md")) {
        // Without its own "generated by" line: this report has one.
        let body: Vec<&str> = durable
            .lines()
            .skip_while(|l| l.starts_with("<!--") || l.is_empty())
            .collect();
        let _ = writeln!(out, "\n{}", body.join("\n"));
    }
    if let Ok(storm) = std::fs::read_to_string(data.join("storm.md")) {
        out.push_str(&storm);
    }

    let plots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/plots");
    std::fs::create_dir_all(&plots)?;
    for (scenario, title) in STREAMING {
        let file = format!("throughput-{}.svg", scenario.replace('/', "-"));
        plot_throughput(&plots.join(&file), scenario, title, &rates)?;
    }
    if let Some(latency) = &latency {
        plot_latency(&plots.join("latency.svg"), latency)?;
    }
    std::fs::write(data.join("report.md"), &out)?;
    splice_into_docs(&out)?;
    println!("{out}");
    println!(
        "wrote {} and {}",
        plots.display(),
        data.join("report.md").display()
    );
    Ok(())
}
