#!/usr/bin/env bash
# Runs the loom models against seeded bugs: for each mutant patch here (or
# those named on the command line, with or without `.patch`), copies the
# repository's files as git sees them (tracked files as they are in the
# working tree, plus new files git does not ignore) to a scratch directory, applies the patch there with `patch -p1`, builds and runs the
# loom models, and prints one line per mutant:
#
#   caught               a model failed; the failing models and loom's first
#                        message follow
#   SURVIVED             every model passed
#   patch does not apply
#   does not build       the patched code does not compile
#   TIMEOUT              the models ran longer than $MUTANT_TIMEOUT seconds
#
# Exits non-zero unless every mutant was caught. See docs/verification.md.
#
# Environment:
#   LOOM_MAX_PREEMPTIONS  loom's bound (default 3, as in CI)
#   MUTANT_TIMEOUT        seconds per mutant for the models (default 1200)
#   MUTANT_ALL=1          run every model test even after one failed
#                         (--no-fail-fast), to list all the models that
#                         catch each mutant; by default cargo stops after the
#                         first test file that fails
#   MUTANT_TEST           only this test file (`--test NAME`), for working
#                         on one model
#
# The build goes to target/loom-mutants (deps are built once, then only
# rebound and the models are rebuilt per mutant); logs to
# target/loom-mutants/logs/NAME.log. Run it niced on a shared machine:
#   nice -n 10 loom-tests/mutants/run.sh
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(git -C "$here" rev-parse --show-toplevel)"
target="$root/target/loom-mutants"
scratch="$target/src"
logs="$target/logs"
mkdir -p "$target" "$logs"

# One run at a time: the scratch copy and the target directory are shared.
exec 9>"$target/lock"
if ! flock -n 9; then
    echo "run.sh: another mutant run holds $target/lock" >&2
    exit 2
fi

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export RUSTFLAGS="--cfg rebound_loom"
export CARGO_TERM_COLOR=never
timeout_s="${MUTANT_TIMEOUT:-1200}"
fail_fast=()
[ "${MUTANT_ALL:-0}" = 1 ] && fail_fast=(--no-fail-fast)
only=()
[ -n "${MUTANT_TEST:-}" ] && only=(--test "$MUTANT_TEST")

patches=()
if [ "$#" -gt 0 ]; then
    for name in "$@"; do
        patches+=("$here/${name%.patch}.patch")
    done
else
    patches=("$here"/*.patch)
fi

# Copies the working tree's files that git tracks or would track (not
# ignored) to the scratch directory: a fixed path, so that cargo keeps one
# build of each of the two path packages there, and with every file's
# modification time set to now (`tar -m`), so that cargo rebuilds both:
# with the times kept, a file a previous mutant had patched would come back
# older than that mutant's build, and cargo would reuse it.
copy_tree() {
    rm -rf "$scratch"
    mkdir -p "$scratch"
    (cd "$root" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) |
        tar -xmf - -C "$scratch"
}

status=0
start_all=$SECONDS
for patch_file in "${patches[@]}"; do
    name="$(basename "$patch_file" .patch)"
    log="$logs/$name.log"
    start=$SECONDS
    if [ ! -f "$patch_file" ]; then
        printf '%-32s patch does not apply (no such file)\n' "$name"
        status=1
        continue
    fi
    copy_tree
    if ! patch -p1 --batch --forward --silent -d "$scratch" <"$patch_file" >"$log" 2>&1; then
        printf '%-32s patch does not apply\n' "$name"
        status=1
        continue
    fi
    if ! (cd "$scratch" && cargo test --release -p rebound-loom-tests \
        --target-dir "$target" --no-run "${only[@]}") >>"$log" 2>&1; then
        printf '%-32s does not build (see %s)\n' "$name" "$log"
        status=1
        continue
    fi
    (cd "$scratch" && timeout "$timeout_s" cargo test --release \
        -p rebound-loom-tests --target-dir "$target" "${fail_fast[@]}" \
        "${only[@]}" -- --nocapture) >>"$log" 2>&1
    rc=$?
    secs=$((SECONDS - start))
    if [ "$rc" = 124 ]; then
        printf '%-32s TIMEOUT after %ss (see %s)\n' "$name" "$secs" "$log"
        status=1
    elif [ "$rc" = 0 ]; then
        printf '%-32s SURVIVED (%ss)\n' "$name" "$secs"
        status=1
    else
        # Which models failed: the test file (`Running tests/FILE.rs`) and
        # the tests that panicked in it or that libtest lists as FAILED (a
        # loom panic during teardown aborts the process before that list),
        # and loom's first panic message.
        failed="$(awk '
            /Running tests\// { file = $2; sub(/^tests\//, "", file); sub(/\.rs$/, "", file) }
            /^thread .* panicked at/ { t = $2; gsub(/\x27/, "", t); if (t != "main") print file "::" t }
            /^test .* FAILED$/ { print file "::" $2 }
        ' "$log" | sort -u | paste -sd, - | sed 's/,/, /g')"
        why="$(grep -m1 -E "panicked at|Causality violation|deadlock|leaked|exceeded maximum" "$log" |
            cut -c1-160)"
        reason="$(grep -m1 -A1 -E "panicked at" "$log" | tail -n1 | cut -c1-160)"
        printf '%-32s caught (%ss) by %s\n' "$name" "$secs" "${failed:-?}"
        printf '%-32s   %s\n' "" "${reason:-$why}"
    fi
done
echo "run.sh: ${#patches[@]} mutants in $((SECONDS - start_all)) s"
exit "$status"
