#!/usr/bin/env bash
# segtrain/segeval on the GPU against the CPU reference, end to end (skips without a GPU):
#  1. the same short run (phantom cache, 64x64, features 16..128, lr 1e-2, 12 epochs, same
#     seed) on the CPU, the GPU in fp32 and the GPU in bf16 reaches the same validation Dice
#     within noise (|diff| <= 0.05 fp32, 0.08 bf16; the CPU's must exceed 0.02) and val loss
#     (5%, 10%), with a falling training loss on each;
#  2. the GPU checkpoint is an ordinary checkpoint: `segtrain forward` gives the same logits
#     on --device cpu and --device cuda (rel 1e-4), the run resumes on the CPU, and segeval
#     scores it the same on both devices (mean Dice within 1e-3).
# SEGKIT_TEST_GPU_DEVICE=cpu runs the script's logic with the CPU standing in for the GPU.
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
GDEV=${SEGKIT_TEST_GPU_DEVICE:-cuda}
PY=${PYTHON:-/usr/bin/python3}
for p in synthct segprep segtrain segeval; do [ -x "$BIN/$p" ] || { echo "FAIL: $BIN/$p is not built"; exit 1; }; done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# probe: segtrain checks the device before it opens the cache
"$BIN/segtrain" "$T/no-cache" --out "$T/probe" --device "$GDEV" >"$T/probe.txt" 2>&1
if grep -q "is not available" "$T/probe.txt"; then echo "skip: no usable GPU: $(grep -m1 'not available' "$T/probe.txt")"; exit 77; fi
"$BIN/synthct" --subjects 10 --seed 3 -q "$T/ds" >/dev/null 2>&1 && "$BIN/segprep" "$T/ds" "$T/cache" --size 64 -q >/dev/null 2>&1 \
    || { echo "FAIL: could not build the phantom cache"; exit 1; }
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
TR=(--epochs 12 --features 16,32,64,128 --lr 1e-2 --batch-size 8 --seed 7 --no-progress)
val_dice() { "$PY" -c "import json,sys; h=json.load(open(sys.argv[1])); e=h['epochs']; print(e[-1]['val_dice'], e[-1]['val_loss'], e[0]['train_loss'], e[-1]['train_loss'])" "$1/training_history.json"; }

# ---- 1. the same run on three back ends ----
for run in cpu:cpu:off gpu:$GDEV:off bf16:$GDEV:bf16; do
    IFS=: read -r name dev amp <<<"$run"
    if "$BIN/segtrain" "$T/cache" --out "$T/$name" "${TR[@]}" --device "$dev" --amp "$amp" >"$T/$name.txt" 2>&1; then
        read -r d vl l0 l1 <<<"$(val_dice "$T/$name")"
        eval "dice_$name=$d vloss_$name=$vl"
        "$PY" -c "import sys; sys.exit(0 if float(sys.argv[2]) < 0.8 * float(sys.argv[1]) else 1)" "$l0" "$l1" \
            && ok "$name: train loss $l0 -> $l1, val Dice $d ($(grep -m1 'slices/s' "$T/$name.txt" | grep -o '[0-9.]* slices/s'))" \
            || bad "$name: the training loss did not fall ($l0 -> $l1)"
    else
        bad "$name run failed: $(tail -3 "$T/$name.txt")"; eval "dice_$name=nan vloss_$name=nan"
    fi
done
"$PY" - "$dice_cpu" "$dice_gpu" "$dice_bf16" "$vloss_cpu" "$vloss_gpu" "$vloss_bf16" <<'EOF' \
    && ok "same result within noise: val Dice cpu $dice_cpu, gpu fp32 $dice_gpu, gpu bf16 $dice_bf16; val loss $vloss_cpu, $vloss_gpu, $vloss_bf16" \
    || bad "runs differ: val Dice cpu $dice_cpu gpu $dice_gpu bf16 $dice_bf16; val loss $vloss_cpu $vloss_gpu $vloss_bf16"
import sys
c, g, b, lc, lg, lb = map(float, sys.argv[1:])
# the CPU run must have learned something for the comparison to mean anything
if not c > 0.02: print(f"the CPU reference reached only val Dice {c}"); sys.exit(1)
sys.exit(0 if abs(g - c) <= 0.05 and abs(b - c) <= 0.08 and abs(lg - lc) <= 0.05 * lc and abs(lb - lc) <= 0.10 * lc else 1)
EOF

# ---- 2. the GPU checkpoint everywhere ----
"$PY" tests/forward_io.py input "$T/x.safetensors" 3 64
CK=$T/gpu/best.safetensors
"$BIN/segtrain" forward "$CK" "$T/x.safetensors" "$T/lc.safetensors" --device cpu >/dev/null 2>&1 \
 && "$BIN/segtrain" forward "$CK" "$T/x.safetensors" "$T/lg.safetensors" --device "$GDEV" >/dev/null 2>&1 \
 && "$PY" tests/forward_io.py compare "$T/lc.safetensors" "$T/lg.safetensors" 1e-4 && ok "GPU checkpoint: CPU and GPU logits agree" || bad "GPU checkpoint: logits differ between devices"
"$BIN/segtrain" "$T/cache" --resume "$T/gpu/checkpoint_epoch12.safetensors" --epochs 13 --device cpu --no-progress >"$T/res.txt" 2>&1 \
    && [ -f "$T/gpu/checkpoint_epoch13.safetensors" ] && ok "the GPU run resumes on the CPU" || bad "resume on CPU: $(tail -3 "$T/res.txt")"
for dev in cpu $GDEV; do
    "$BIN/segeval" "$CK" "$T/cache" --out "$T/ev_$dev" --split all --device "$dev" --max-3d 0 -q >"$T/ev_$dev.txt" 2>&1 \
        || bad "segeval --device $dev: $(tail -3 "$T/ev_$dev.txt")"
done
"$PY" - "$T/ev_cpu/summary_exp.json" "$T/ev_$GDEV/summary_exp.json" <<'EOF' && ok "segeval: same mean Dice on CPU and GPU" || bad "segeval: mean Dice differs between devices"
import json, sys
def dice(p):
    return json.load(open(p))["overall"]["dice_mean_macro"]
a, b = dice(sys.argv[1]), dice(sys.argv[2])
print(a, b); sys.exit(0 if abs(a - b) <= 1e-3 else 1)
EOF
echo "test_gpu_train: $fails failed"
[ $fails -eq 0 ]
