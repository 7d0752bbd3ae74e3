#!/usr/bin/env bash
# Run every test: C unit tests (build/tests/test_*), then shell and Python tests
# (tests/test_*.sh, tests/test_*.py). Each test is one pass or fail by exit code
# (77 = skipped: the reason is its last output line). A C test that passes but could not run
# a section (T_SKIP in testutil.h: a "SKIP reason" line, e.g. ../shared/data missing) adds one
# skip per such line. --quick runs only the C unit tests built from tests/test_*.c (not the
# CUDA ones nor the emulated twins; what make check builds). Ends with
# "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
export SEGKIT_BIN="${SEGKIT_BIN:-bin}" SEGKIT_BUILD="${SEGKIT_BUILD:-build}"
export SEGKIT_SHARED="${SEGKIT_SHARED:-../shared}"
export PYTHON="${PYTHON:-/usr/bin/python3}"
quick=0; [ "${1:-}" = --quick ] && quick=1
pass=0; fail=0; skip=0; failed=()
logdir="$SEGKIT_BUILD/test-logs"; mkdir -p "$logdir"

run_one() {   # name, command...
    local name="$1"; shift
    local t0=$(date +%s%N)
    "$@" >"$logdir/$name.log" 2>&1
    local rc=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    local dt="$((ms / 1000)).$(( (ms % 1000) / 100 ))"
    local parts=0
    [ $rc -eq 0 ] && parts=$(grep -c '^SKIP ' "$logdir/$name.log")
    if [ $rc -eq 0 ] && [ "$parts" -gt 0 ]; then
        pass=$((pass+1)); skip=$((skip+parts)); echo "PASS $name (${dt}s), $parts part(s) skipped:"
        grep '^SKIP ' "$logdir/$name.log" | sed "s/^SKIP /    SKIP $name: /"
    elif [ $rc -eq 0 ]; then pass=$((pass+1)); echo "PASS $name (${dt}s)"
    elif [ $rc -eq 77 ]; then skip=$((skip+1)); echo "SKIP $name: $(tail -1 "$logdir/$name.log")"
    else fail=$((fail+1)); failed+=("$name"); echo "FAIL $name (exit $rc, ${dt}s), last lines of $logdir/$name.log:"
         tail -20 "$logdir/$name.log" | sed 's/^/    /'; fi
}

for t in "$SEGKIT_BUILD"/tests/test_*; do
    case "$t" in *.o|*.d) continue;; esac
    [ -f "$t" ] && [ -x "$t" ] || continue
    [ $quick -eq 1 ] && [ ! -f "tests/$(basename "$t").c" ] && continue
    run_one "$(basename "$t")" "$t"
done
# issue 18: the kernel tests once more per forced kernel path (docs/cpu.md); SKIP where this CPU lacks it
cpu_has() { local f; case $1 in avx512) f="avx512f avx512bw avx512vl avx512dq avx512cd";; avx2) f="avx2 fma bmi1 bmi2 f16c movbe";; *) f="";; esac
            for x in $f; do grep -qw "$x" /proc/cpuinfo 2>/dev/null || return 1; done; }
for p in avx512 avx2 generic; do
    for t in test_nn test_unet; do
        [ -x "$SEGKIT_BUILD/tests/$t" ] || continue
        if cpu_has $p; then run_one "$t.$p" env SEGKIT_CPU=$p "$SEGKIT_BUILD/tests/$t"
        else run_one "$t.$p" sh -c "echo 'this CPU cannot run the $p kernels'; exit 77"; fi
    done
done
if [ $quick -eq 0 ]; then
    for t in tests/test_*.sh; do [ -f "$t" ] && run_one "$(basename "$t")" bash "$t"; done
    for t in tests/test_*.py; do [ -f "$t" ] && run_one "$(basename "$t")" "$PYTHON" "$t"; done
fi
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
