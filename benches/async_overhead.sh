#!/usr/bin/env bash
# What the `async` feature costs code that does not use it: the sync
# throughput bench's rebound rows (produce -> consume -> ack, no task
# waiting) with the feature off and on, the two builds run alternately in
# one session, ROUNDS times each; prints criterion's median of every run
# and the median of those medians per build.
#
#   benches/async_overhead.sh [ROUNDS] [FILTER]
#   (defaults: 3, 'clean/8B/(1p1c|2p2c)/rebound$')
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
filter="${2:-clean/8B/(1p1c|2p2c)/rebound\$}"
bins=target/async-overhead
mkdir -p "$bins"
build() { # $1: label, rest: cargo flags
    local label="$1"
    shift
    local exe
    exe="$(cargo bench --bench throughput "$@" --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*throughput[^"]*\)".*/\1/p' | tail -n1)"
    cp "$exe" "$bins/throughput-$label"
}
build plain
build async --features async
for ((i = 1; i <= rounds; i++)); do
    for label in plain async; do
        "$bins/throughput-$label" --bench "$filter" 2>/dev/null |
            awk -v label="$label" -v round="$i" '
                /^clean\// { name = $1 }
                /thrpt:/ && /elem\/s/ { gsub(/\[|\]/, ""); print round, label, name, $4, $5 }'
    done
done | tee "$bins/runs.txt"
echo "median of the runs' medians (M msg/s):"
awk '{ key = $3 " " $2; v[key] = v[key] " " $4 } END {
    for (k in v) {
        n = split(substr(v[k], 2), a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        print k, a[int((n + 1) / 2)]
    }
}' "$bins/runs.txt" | sort
