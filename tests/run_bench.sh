#!/usr/bin/env bash
# make bench: run every benchmark and print one JSON object {"name": {...}, ...} on stdout.
# Progress and notes go to stderr. BENCH_QUICK=1 uses fewer repetitions.
set -u
cd "$(dirname "$0")/.."
BUILD=${SEGKIT_BUILD:-build}
q=${BENCH_QUICK:-0}
out=$(mktemp); trap 'rm -f "$out"' EXIT
first=1
emit() {   # name, command...
    local name="$1"; shift
    echo "bench: $name ..." >&2
    local j
    if j=$("$@" 2>/dev/null) && [ -n "$j" ]; then
        [ $first -eq 1 ] || printf ',\n' >>"$out"; first=0
        printf '"%s": %s' "$name" "$j" >>"$out"
    else
        echo "bench: $name failed or was skipped" >&2
    fi
}
[ -x "$BUILD/tests/bench_prep" ] && emit prep "$BUILD/tests/bench_prep" --reps $([ "$q" = 1 ] && echo 3 || echo 7)
[ -x "$BUILD/tests/bench_unet" ] && emit unet "$BUILD/tests/bench_unet" $([ "$q" = 1 ] && echo --steps 2)
[ -x "$BUILD/tests/bench_loader" ] && emit loader "$BUILD/tests/bench_loader"
[ -x "$BUILD/tests/bench_eval" ] && emit eval "$BUILD/tests/bench_eval"
printf '{\n' ; cat "$out"; printf '\n}\n'
