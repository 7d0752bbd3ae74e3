#!/usr/bin/env bash
# Issue 18: the default build runs on an older x86-64 CPU. Under qemu-x86_64 -cpu Haswell
# (AVX2, no AVX-512): every program's --version and --help, then a tiny synthct -> segprep
# (64x64) -> one segtrain epoch, whose -v log must name the avx2 kernels (the dispatcher
# picked them from cpuid); SEGKIT_CPU=avx512 must be refused with a message; and one epoch
# under -cpu Nehalem (the x86-64-v2 baseline: generic kernels). A binary with
# an AVX-512 instruction outside the dispatched kernels dies here with SIGILL.
# (A build with OPT=-march=native is not portable and fails here by design.)
# Skips (77) without qemu-x86_64 (tools/install_deps.sh test installs qemu-user) or off x86-64.
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
[ "$(uname -m)" = x86_64 ] || { echo "skip: not an x86-64 host"; exit 77; }
command -v qemu-x86_64 >/dev/null 2>&1 || { echo "skip: qemu-x86_64 not installed (apt-get install qemu-user)"; exit 77; }
case "$BIN" in *asan*) echo "skip: sanitizer binaries do not run under qemu-user"; exit 77;; esac
CPU=${PORTABLE_CPU:-Haswell,-pcid}
Q=(qemu-x86_64 -cpu "$CPU")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# static check first: no AVX (ymm/zmm) instruction in an object outside the per-ISA kernel copies
BUILD=${SEGKIT_BUILD:-build}
if command -v objdump >/dev/null 2>&1 && [ -d "$BUILD/common" ]; then
    n=0; bad_objs=""
    while IFS= read -r o; do
        n=$((n + 1))
        objdump -d "$o" 2>/dev/null | grep -qE '%[yz]mm[0-9]' && bad_objs="$bad_objs $o"
    done < <(find "$BUILD/common" "$BUILD/prep" "$BUILD/train" "$BUILD/eval" "$BUILD/tools" -name '*.o' \
                 ! -name '*.avx512.o' ! -name '*.avx2.o' 2>/dev/null)
    [ -z "$bad_objs" ] && ok "no ymm/zmm instruction in the $n baseline objects" \
        || bad "AVX instructions outside the per-ISA kernels:$bad_objs"
fi

for p in segprep segtrain segeval synthct; do
    [ -x "$BIN/$p" ] || { bad "$BIN/$p is not built"; continue; }
    "${Q[@]}" "$BIN/$p" --version >"$T/v.txt" 2>&1 && grep -q "$p" "$T/v.txt" \
        && ok "$p --version under -cpu $CPU" || bad "$p --version under -cpu $CPU: $(tail -2 "$T/v.txt")"
    "${Q[@]}" "$BIN/$p" --help >"$T/h.txt" 2>&1 && [ -s "$T/h.txt" ] \
        && ok "$p --help" || bad "$p --help under -cpu $CPU: $(tail -2 "$T/h.txt")"
done

if "${Q[@]}" "$BIN/synthct" --subjects 2 --seed 3 --size 48x48x8 --threads 1 -q "$T/ds" >"$T/s.log" 2>&1; then ok "synthct"
else bad "synthct: $(tail -3 "$T/s.log")"; fi
if "${Q[@]}" "$BIN/segprep" "$T/ds" "$T/cache" --size 64 -q >"$T/p.log" 2>&1; then ok "segprep --size 64"
else bad "segprep: $(tail -3 "$T/p.log")"; fi
TR=(--features 4,8 --batch-size 2 --epochs 1 --threads 2 --seed 1 --device cpu)
if "${Q[@]}" "$BIN/segtrain" "$T/cache" --out "$T/run" "${TR[@]}" -v >"$T/t.log" 2>&1; then
    ok "segtrain 1 epoch"
    grep -q "CPU kernels avx2" "$T/t.log" && ok "dispatch picked avx2: $(grep -m1 'CPU kernels' "$T/t.log")" \
        || bad "dispatch: no 'CPU kernels avx2' in the -v log: $(grep -m1 'CPU kernels' "$T/t.log")"
    [ -f "$T/run/best.safetensors" ] && ok "best.safetensors written" || bad "no best.safetensors"
else bad "segtrain: $(tail -5 "$T/t.log")"; fi
if SEGKIT_CPU=avx512 "${Q[@]}" "$BIN/segtrain" "$T/cache" --out "$T/run2" "${TR[@]}" >"$T/r.log" 2>&1; then
    bad "SEGKIT_CPU=avx512 on a Haswell was not refused"
elif grep -q "SEGKIT_CPU=avx512" "$T/r.log"; then ok "SEGKIT_CPU=avx512 refused: $(grep -m1 SEGKIT_CPU "$T/r.log")"
else bad "SEGKIT_CPU=avx512: no message naming it: $(tail -2 "$T/r.log")"; fi

# the x86-64-v2 baseline itself: a Nehalem (SSE4.2, no AVX) gets the generic kernels. OpenBLAS's
# own cpuid check picks its Haswell kernels under qemu's Nehalem model (SIGILL), so name its core.
if OPENBLAS_CORETYPE=Nehalem qemu-x86_64 -cpu Nehalem "$BIN/segtrain" "$T/cache" --out "$T/run3" "${TR[@]}" -v >"$T/n.log" 2>&1; then
    grep -q "CPU kernels generic" "$T/n.log" && ok "Nehalem (x86-64-v2): 1 epoch on the generic kernels" \
        || bad "Nehalem: no 'CPU kernels generic' in the -v log: $(grep -m1 'CPU kernels' "$T/n.log")"
else bad "segtrain under -cpu Nehalem: $(grep -v "TCG doesn't" "$T/n.log" | tail -3)"; fi

[ $fails -eq 0 ] && { echo "test_portable: all ok"; exit 0; }
echo "test_portable: $fails failed"; exit 1
