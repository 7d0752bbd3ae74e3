#!/usr/bin/env bash
# Replay every fuzz target's regression inputs (crashes found by make fuzz) and its
# committed seeds through the gcc-built replay binaries: none may crash.
set -u
BUILD=${SEGKIT_BUILD:-build}
fails=0; n=0
for src in tests/fuzz/fuzz_*.c; do
    tgt=$(basename "$src" .c); tgt=${tgt#fuzz_}
    bin="$BUILD/fuzz/replay_$tgt"
    [ -x "$bin" ] || { echo "FAIL $bin not built"; fails=$((fails+1)); continue; }
    files=$(ls tests/fuzz/regressions/$tgt/* tests/fuzz/seeds/$tgt/* 2>/dev/null)
    [ -n "$files" ] || { echo "ok   $tgt: no regression inputs yet"; continue; }
    if $bin $files; then echo "ok   $tgt: $(echo "$files" | wc -w) inputs"; n=$((n+1)); else echo "FAIL $tgt"; fails=$((fails+1)); fi
done
echo "$fails failed"
[ $fails -eq 0 ]
