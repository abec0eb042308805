#!/usr/bin/env bash
# Runs the whole benchmark suite in one go and regenerates docs/plots/*.svg
# and target/bench-data/report.md (the tables of docs/benchmarks.md).
#
#   benches/run-all.sh           # full run, about 9 minutes on 2 cores
#   benches/run-all.sh --quick   # criterion's --quick and a short durable run, for a smoke test
#
# Earlier results are removed first, so that every figure comes from this run.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
data="$target/bench-data"
criterion_args=()
durable_args=()
if [[ "${1:-}" == "--quick" ]]; then
    criterion_args=(--quick)
    durable_args=(--runs 1 --seconds 0.2 --messages 20000 --open-sizes 10000,100000 --open-runs 1)
fi

cargo bench --no-run --bench throughput --bench latency --bench memory --bench durable --bench storm --bench report
rm -rf "$target/criterion" "$data"
mkdir -p "$data"
{
    echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu:     $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "memory:  $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "rustc:   $(rustc --version)"
    echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$data/machine.txt"

start=$SECONDS
cargo bench --bench throughput -- "${criterion_args[@]}"
cargo bench --bench latency
cargo bench --bench memory
cargo bench --bench durable -- "${durable_args[@]}"
cargo bench --bench storm
{
    echo "load at end:   $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "suite time:    $((SECONDS - start)) s"
} >> "$data/machine.txt"
cargo bench --bench report
