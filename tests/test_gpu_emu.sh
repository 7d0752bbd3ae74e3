#!/usr/bin/env bash
# The GPU paths of segtrain and segeval on every machine: the programs linked with the CUDA
# emulator (tests/cuemu; built as $SEGKIT_BUILD/cuemu/bin/*) run the real GPU backend source
# on the CPU. Checks:
#  1. test_gpu_emu again with every first-choice cuDNN algorithm declined at run time
#     (CUEMU_DNN_DECLINE=1) and deterministic algorithms only: the fallback chain works;
#  2. a short GPU run writes the same files as a CPU run, with the same losses; its
#     checkpoint gives the same logits on both devices, resumes on the CPU, and a CPU
#     checkpoint resumes on the GPU; segeval scores it the same on both; bf16 and fp16 runs
#     finish with finite losses; the GPU benchmark runs (one tiny configuration, real loader
#     included) and prints the JSON make bench expects;
#  3. refusals before anything is written: compute capability 7.5, a missing device index, a
#     model that does not fit in device memory (an existing run directory keeps its
#     checkpoints even with --force); --device auto without a device falls back to the CPU.
set -u
cd "$(dirname "$0")/.."
B=${SEGKIT_BUILD:-build}
BIN=${SEGKIT_BIN:-bin}
E=$B/cuemu/bin
PY=${PYTHON:-/usr/bin/python3}
if [ ! -x "$E/segtrain" ] || [ ! -x "$E/segeval" ] || [ ! -x "$E/bench_gpu" ] || [ ! -x "$B/tests/test_gpu_emu" ]; then
    echo "skip: no emulated GPU build in $B/cuemu (it needs the CUDA headers at build time; sanitizer builds leave it out)"
    exit 77
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# ---- 1. the parity test through the algorithm fallbacks ----
if CUEMU_DNN_DECLINE=1 SEGKIT_CUDNN_DETERMINISTIC=1 "$B/tests/test_gpu_emu" >"$T/decline.txt" 2>&1; then
    ok "test_gpu_emu with every first-choice algorithm declined, deterministic only: $(tail -1 "$T/decline.txt")"
else
    bad "test_gpu_emu with declined algorithms: $(grep -m3 -E '^FAIL|cuemu:' "$T/decline.txt")"
fi

# ---- 2. the programs on the emulated GPU ----
"$BIN/synthct" --subjects 3 --seed 5 -q "$T/ds" >/dev/null 2>&1 && "$BIN/segprep" "$T/ds" "$T/cache" --size 32 -q >/dev/null 2>&1 \
    || { echo "FAIL: could not build the phantom cache"; exit 1; }
TR=(--epochs 2 --features 8,16 --limit-slices 16 --batch-size 4 --seed 3 --no-progress)
"$E/segtrain" "$T/cache" --out "$T/gpu" "${TR[@]}" --device cuda >"$T/gpu.txt" 2>&1 || bad "GPU run: $(tail -3 "$T/gpu.txt")"
"$E/segtrain" "$T/cache" --out "$T/cpu" "${TR[@]}" --device cpu >"$T/cpu.txt" 2>&1 || bad "CPU run: $(tail -3 "$T/cpu.txt")"
grep -q "device cuda:0 cuemu" "$T/gpu.txt" && ok "segtrain --device cuda runs on the emulated device: $(grep -m1 'device cuda' "$T/gpu.txt" | cut -c1-110)" \
    || bad "segtrain did not report the emulated device: $(head -5 "$T/gpu.txt")"
missing=""
for f in label_map.json best.safetensors checkpoint_epoch2.safetensors checkpoint_epoch2.state.safetensors \
         training_history.json training_history.png; do [ -s "$T/gpu/$f" ] || missing="$missing $f"; done
[ -z "$missing" ] && ok "the GPU run writes what a CPU run writes" || bad "GPU run is missing:$missing"
"$PY" - "$T/cpu/training_history.json" "$T/gpu/training_history.json" <<'EOF' && ok "GPU and CPU runs: the same losses" || bad "GPU and CPU losses differ"
import json, sys
a, b = (json.load(open(p))["epochs"] for p in sys.argv[1:])
worst = max(abs(x[k] - y[k]) / abs(x[k]) for x, y in zip(a, b) for k in ("train_loss", "val_loss"))
print(f"worst rel diff {worst:.1e} over {len(a)} epochs"); sys.exit(0 if len(a) == len(b) == 2 and worst <= 1e-3 else 1)
EOF
"$PY" tests/forward_io.py input "$T/x.safetensors" 2 32
CK=$T/gpu/best.safetensors
"$E/segtrain" forward "$CK" "$T/x.safetensors" "$T/lc.safetensors" --device cpu >/dev/null 2>&1 \
 && "$E/segtrain" forward "$CK" "$T/x.safetensors" "$T/lg.safetensors" --device cuda >/dev/null 2>&1 \
 && "$PY" tests/forward_io.py compare "$T/lc.safetensors" "$T/lg.safetensors" 1e-4 && ok "the GPU checkpoint: same logits on both devices" || bad "GPU checkpoint: logits differ between devices"
F=tests/fixtures/ckpt   # 2.5D: in_ch 3 on the device (input (N, 3, H, W))
"$E/segtrain" forward "$F/ctx3_model.safetensors" "$F/ctx3_x.safetensors" "$T/c3c.safetensors" --device cpu >/dev/null 2>&1 \
 && "$E/segtrain" forward "$F/ctx3_model.safetensors" "$F/ctx3_x.safetensors" "$T/c3g.safetensors" --device cuda >/dev/null 2>&1 \
 && "$PY" tests/forward_io.py compare "$T/c3c.safetensors" "$T/c3g.safetensors" 1e-4 && ok "in_ch 3 (context) checkpoint: same logits on both devices" || bad "in_ch 3 checkpoint: logits differ between devices"
"$BIN/segtrain" "$T/cache" --resume "$T/gpu/checkpoint_epoch2.safetensors" --epochs 3 --device cpu --no-progress >"$T/r1.txt" 2>&1 \
    && [ -f "$T/gpu/checkpoint_epoch3.safetensors" ] && ok "the GPU run resumes on the CPU" || bad "GPU -> CPU resume: $(tail -3 "$T/r1.txt")"
"$E/segtrain" "$T/cache" --resume "$T/cpu/checkpoint_epoch2.safetensors" --epochs 3 --device cuda --no-progress >"$T/r2.txt" 2>&1 \
    && [ -f "$T/cpu/checkpoint_epoch3.safetensors" ] && ok "the CPU run resumes on the GPU" || bad "CPU -> GPU resume: $(tail -3 "$T/r2.txt")"
# and a context-1 twin of the checkpoint (tools/ckpt_widen.py, noise on the neighbour channels)
"$PY" tools/ckpt_widen.py "$CK" "$T/ctx.safetensors" --context 1 --noise 0.3 || bad "ckpt_widen.py"
for dev in cpu cuda; do
    "$E/segeval" "$CK" "$T/cache" --out "$T/ev_$dev" --split all --device "$dev" --max-3d 0 -q >"$T/ev_$dev.txt" 2>&1 \
        || bad "segeval --device $dev: $(tail -3 "$T/ev_$dev.txt")"
    "$E/segeval" "$T/ctx.safetensors" "$T/cache" --out "$T/evc_$dev" --split all --device "$dev" --max-3d 0 -q >"$T/evc_$dev.txt" 2>&1 \
        || bad "segeval --device $dev, context 1: $(tail -3 "$T/evc_$dev.txt")"
done
"$PY" - "$T/evc_cpu/summary_exp.json" "$T/evc_cuda/summary_exp.json" <<'EOF' && ok "segeval, context 1: the same mean Dice on both devices" || bad "segeval, context 1: mean Dice differs between devices"
import json, sys
a, b = (json.load(open(p))["overall"]["dice_mean_macro"] for p in sys.argv[1:])
print(a, b); sys.exit(0 if abs(a - b) <= 1e-3 else 1)
EOF
"$PY" - "$T/ev_cpu/summary_exp.json" "$T/ev_cuda/summary_exp.json" <<'EOF' && ok "segeval: the same mean Dice on both devices" || bad "segeval: mean Dice differs between devices"
import json, sys
a, b = (json.load(open(p))["overall"]["dice_mean_macro"] for p in sys.argv[1:])
print(a, b); sys.exit(0 if abs(a - b) <= 1e-3 else 1)
EOF
for amp in bf16 fp16; do
    "$E/segtrain" "$T/cache" --out "$T/$amp" --epochs 1 --features 8,16 --limit-slices 16 --batch-size 4 --no-progress \
        --device cuda --amp "$amp" >"$T/$amp.txt" 2>&1 \
        && "$PY" -c "import json,math,sys; e=json.load(open(sys.argv[1]))['epochs'][-1]; sys.exit(0 if math.isfinite(e['train_loss']) and math.isfinite(e['val_loss']) else 1)" \
           "$T/$amp/training_history.json" \
        && ok "--amp $amp: $(grep -m1 '^epoch' "$T/$amp.txt" | cut -c1-80)" || bad "--amp $amp run: $(tail -3 "$T/$amp.txt")"
done

"$E/bench_gpu" --batches 2 --amps bf16 --size 32 --steps 1 --blocks 1 --cache "$T/cache" --loader-threads 1 \
    >"$T/bench.json" 2>"$T/bench.err" \
 && "$PY" - "$T/bench.json" <<'EOF' && ok "bench_gpu runs and reports every figure" || bad "bench_gpu: $(tail -3 "$T/bench.err")"
import json, sys
j = json.load(open(sys.argv[1]))
r = j["runs"]
keys = ("train_slices_per_s", "gpu_idle_ms_per_step", "infer_slices_per_s", "infer_with_download_slices_per_s",
        "gpu_memory_mib", "train_loader_slices_per_s", "loader_gpu_idle_ms_per_step")
bad = [k for k in keys if not (isinstance(r[0].get(k), (int, float)) and r[0][k] >= 0)]
print(j["device"], r[0]["batch"], r[0]["precision"], bad)
sys.exit(0 if len(r) == 1 and r[0]["batch"] == 2 and r[0]["precision"] == "bf16" and not bad and r[0]["train_slices_per_s"] > 0 else 1)
EOF

# ---- 3. refusals, before anything is written ----
refuse() {   # what, expected message, env..., -- args...
    local what="$1" want="$2"; shift 2
    local envs=(); while [ "$1" != -- ]; do envs+=("$1"); shift; done; shift
    env "${envs[@]}" "$@" >"$T/ref.txt" 2>&1
    local rc=$?
    if [ $rc -eq 1 ] && grep -q "$want" "$T/ref.txt"; then ok "$what: exit 1, \"$(grep -m1 -o "$want.*" "$T/ref.txt" | cut -c1-80)\""
    else bad "$what: exit $rc, $(tail -2 "$T/ref.txt")"; fi
}
refuse "compute capability 7.5" "compute capability 7.5" CUEMU_CC=75 -- "$E/segtrain" "$T/cache" --out "$T/cc" "${TR[@]}" --device cuda
refuse "--device cuda:1 on a one-GPU machine" "has 1 CUDA device" -- "$E/segtrain" "$T/cache" --out "$T/cc" "${TR[@]}" --device cuda:1
refuse "segtrain, model too large for device memory" "use a smaller --batch-size" CUEMU_MEM_LIMIT=100000 -- \
    "$E/segtrain" "$T/cache" --out "$T/cc" "${TR[@]}" --device cuda
refuse "segeval, model too large for device memory" "use a smaller --batch-size" CUEMU_MEM_LIMIT=100000 -- \
    "$E/segeval" "$CK" "$T/cache" --out "$T/cc" --split all --device cuda -q
[ -e "$T/cc" ] && bad "a refused run left $T/cc behind: $(ls "$T/cc")" || ok "the refused runs wrote nothing"
refuse "--force into a run directory, model too large" "use a smaller --batch-size" CUEMU_MEM_LIMIT=100000 -- \
    "$E/segtrain" "$T/cache" --out "$T/cpu" "${TR[@]}" --device cuda --force
[ -f "$T/cpu/checkpoint_epoch2.safetensors" ] && [ -f "$T/cpu/best.safetensors" ] && ok "the refused --force run kept the old checkpoints" \
    || bad "the refused --force run deleted checkpoints: $(ls "$T/cpu")"
CUEMU_DEVICE_COUNT=0 "$E/segtrain" "$T/cache" --out "$T/auto" "${TR[@]}" --epochs 1 >"$T/auto.txt" 2>&1 \
    && grep -q "device cpu (no GPU" "$T/auto.txt" && ok "--device auto without a device: $(grep -m1 'device cpu' "$T/auto.txt" | cut -c1-100)" \
    || bad "--device auto without a device: $(tail -3 "$T/auto.txt")"
echo "test_gpu_emu: $fails failed"
[ $fails -eq 0 ]
