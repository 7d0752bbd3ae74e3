#!/usr/bin/env bash
# --device / --amp on segtrain and segeval, on any machine:
#  1. usage errors (exit 2, the bad value named): --device foo, --device cuda:x, --amp fp8.
#  2. where no GPU can be used (no CUDA in this build, or no driver/device): --device cuda
#     fails with exit 1 and says why, before anything is written (no run directory);
#     --device auto trains on the CPU and says so; --amp with the CPU is a note, not an error.
#     segeval --device cuda fails the same way.
#  3. where a GPU is usable: --device auto picks it (the log names cuda:0).
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
for p in synthct segprep segtrain segeval; do [ -x "$BIN/$p" ] || { echo "FAIL: $BIN/$p is not built"; exit 1; }; done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
expect_fail() {   # NAME CODE PATTERN CMD...
    local name=$1 code=$2 pat=$3; shift 3
    "$@" >"$T/out.txt" 2>"$T/err.txt"
    local rc=$?
    if [ $rc -eq "$code" ] && grep -qE -- "$pat" "$T/err.txt"; then ok "$name: exit $rc: $(head -c 240 "$T/err.txt")"
    else bad "$name: exit $rc (want $code), stderr: $(head -c 400 "$T/err.txt")"; fi
}

"$BIN/synthct" --subjects 3 --seed 5 -q "$T/ds" >/dev/null 2>&1 && "$BIN/segprep" "$T/ds" "$T/cache" --size 32 -q >/dev/null 2>&1 \
    || { echo "FAIL: could not build the phantom cache"; exit 1; }
TR=(--epochs 1 --features 4,8 --limit-slices 4 --batch-size 2 --no-progress)

# ---- 1. usage errors ----
expect_fail "segtrain --device foo" 2 "--device: 'foo' is not auto, cpu, cuda or cuda:N" "$BIN/segtrain" "$T/cache" --out "$T/r" --device foo
expect_fail "segtrain --device cuda:x" 2 "'cuda:x'" "$BIN/segtrain" "$T/cache" --out "$T/r" --device cuda:x
expect_fail "segtrain --amp fp8" 2 "--amp: 'fp8' is not off, bf16, fp16 or tf32" "$BIN/segtrain" "$T/cache" --out "$T/r" --amp fp8
expect_fail "segeval --device" 2 "--device: 'tpu'" "$BIN/segeval" x.safetensors "$T/cache" --device tpu
[ ! -e "$T/r" ] && ok "usage errors wrote nothing" || bad "a usage error created $T/r"

# ---- 2./3. with or without a GPU ----
"$BIN/segtrain" "$T/cache" --out "$T/auto" "${TR[@]}" --device auto --amp bf16 >"$T/auto.txt" 2>&1
rc=$?
[ $rc -eq 0 ] && [ -f "$T/auto/best.safetensors" ] && ok "--device auto trains (exit 0)" || bad "--device auto: exit $rc: $(tail -3 "$T/auto.txt")"
if grep -q "segtrain: device cuda:" "$T/auto.txt"; then
    ok "a GPU is usable here: auto chose it ($(grep 'device cuda' "$T/auto.txt" | head -1))"
    "$BIN/segtrain" "$T/cache" --out "$T/cpu" "${TR[@]}" --device cpu >"$T/cpu.txt" 2>&1 && grep -q "segtrain: device cpu" "$T/cpu.txt" \
        && ok "--device cpu still uses the CPU" || bad "--device cpu: $(tail -3 "$T/cpu.txt")"
else
    grep -q "segtrain: device cpu" "$T/auto.txt" && ok "no usable GPU: auto fell back to the CPU ($(grep 'device cpu' "$T/auto.txt"))" \
        || bad "auto: no device line: $(cat "$T/auto.txt")"
    grep -q "amp applies to the GPU only" "$T/auto.txt" && ok "--amp on the CPU is a note" || bad "no --amp note"
    expect_fail "segtrain --device cuda without a GPU" 1 "--device cuda:0 is not available: .+" \
        "$BIN/segtrain" "$T/cache" --out "$T/gpu" "${TR[@]}" --device cuda
    [ ! -e "$T/gpu" ] && ok "nothing written by the refused run" || bad "$T/gpu was created"
    expect_fail "segeval --device cuda without a GPU" 1 "--device cuda:0 is not available" \
        "$BIN/segeval" "$T/auto/best.safetensors" "$T/cache" --out "$T/ev" --split all --device cuda
    [ ! -e "$T/ev" ] && ok "segeval wrote nothing" || bad "segeval created $T/ev"
fi
"$BIN/segeval" "$T/auto/best.safetensors" "$T/cache" --out "$T/ev2" --split all --device auto --max-3d 0 -q >"$T/ev2.txt" 2>&1 \
    && [ -f "$T/ev2/summary_exp.json" ] && ok "segeval --device auto evaluates" || bad "segeval auto: $(tail -3 "$T/ev2.txt")"
echo "test_device: $fails failed"
[ $fails -eq 0 ]
