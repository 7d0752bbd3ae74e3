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
# issue 18: the other kernel paths of the same binary (bench_unet fails, so no entry, where the CPU lacks one)
for p in avx2 generic; do
    [ -x "$BUILD/tests/bench_unet" ] && emit unet_$p env SEGKIT_CPU=$p "$BUILD/tests/bench_unet" $([ "$q" = 1 ] && echo --steps 2)
done
[ -x "$BUILD/tests/bench_loader" ] && emit loader "$BUILD/tests/bench_loader"
[ -x "$BUILD/tests/bench_eval" ] && emit eval "$BUILD/tests/bench_eval"
[ "${BENCH_NO_PEER:-0}" = 1 ] || emit unet_torch_peer bash tests/bench_torch_peer.sh
# the peer capped to AVX2 (oneDNN, ATen's own kernels and MKL where present), for unet_avx2
[ "${BENCH_NO_PEER:-0}" = 1 ] || emit unet_torch_peer_avx2 env ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 \
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 bash tests/bench_torch_peer.sh
# issue 12: time to a validation Dice and the final Dice, segtrain's defaults vs the PyTorch recipe
[ "${BENCH_NO_RECIPE:-0}" = 1 ] || emit recipe env RECIPE_NO_PEER="${BENCH_NO_PEER:-0}" \
    RECIPE_EPOCHS="${RECIPE_EPOCHS:-$([ "$q" = 1 ] && echo 6 || echo 16)}" bash tests/bench_recipe.sh
# GPU (issue 7): segkit's CUDA backend and PyTorch (tools/unet_ref.py --bench) on the same GPU
if [ "${BENCH_GPU:-1}" = 1 ] && [ -x "$BUILD/tests/bench_gpu" ] && "$BUILD/tests/bench_gpu" --probe 2>/dev/null; then
    gdir=$(mktemp -d); trap 'rm -f "$out"; rm -rf "$gdir"' EXIT
    gsteps=$([ "$q" = 1 ] && echo 4 || echo 10); gblocks=$([ "$q" = 1 ] && echo 3 || echo 5)
    echo "bench: building a 256x256 phantom cache for the GPU loader run ..." >&2
    ${SEGKIT_BIN:-bin}/synthct --subjects 16 --seed 11 -q "$gdir/ds" >/dev/null 2>&1 \
        && ${SEGKIT_BIN:-bin}/segprep "$gdir/ds" "$gdir/cache" --size 256 -q >/dev/null 2>&1 && gcache=(--cache "$gdir/cache") || gcache=()
    emit gpu "$BUILD/tests/bench_gpu" --steps "$gsteps" --blocks "$gblocks" --amps "${BENCH_GPU_AMPS:-off,bf16}" "${gcache[@]}"
    if [ "${BENCH_NO_PEER:-0}" != 1 ] && ${PYTHON:-/usr/bin/python3} -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
        emit gpu_torch_peer ${PYTHON:-/usr/bin/python3} tools/unet_ref.py --bench --steps "$gsteps" --blocks "$gblocks" \
            --precisions "$(echo "${BENCH_GPU_AMPS:-off,bf16}" | sed 's/off/fp32/')" --modes "${BENCH_TORCH_MODES:-eager,compile}"
    else
        echo "bench: no PyTorch with CUDA here: the GPU peer is skipped" >&2
    fi
fi
# the ratios the issues ask for, from the figures of this run
printf '{\n%s\n}\n' "$(cat "$out")" | ${PYTHON:-/usr/bin/python3} -c '
import json, sys
d = json.load(sys.stdin)
u, p = d.get("unet"), d.get("unet_torch_peer")
if u and p and p.get("train_step_s"):
    d["unet_vs_torch_peer"] = {
        "train_step_speedup": round(p["train_step_s"] / (u["train_step_ms"] / 1000), 2),
        "infer_b8_speedup": round(u["infer_b8_slices_per_s"] / p["infer_b8_slices_per_s"], 2),
        "infer_b1_speedup": round(u["infer_b1_slices_per_s"] / p["infer_b1_slices_per_s"], 2),
        "peak_rss_fraction": round(u["peak_rss_mib"] / p["peak_rss_mib"], 3),
    }
a, pa = d.get("unet_avx2"), d.get("unet_torch_peer_avx2")
if a and pa and pa.get("train_step_s"):
    d["unet_avx2_vs_torch_peer_avx2"] = {
        "train_step_speedup": round(pa["train_step_s"] / (a["train_step_ms"] / 1000), 2),
        "infer_b8_speedup": round(a["infer_b8_slices_per_s"] / pa["infer_b8_slices_per_s"], 2),
    }
gn = d.get("unet_generic")
if a and gn:
    d["unet_generic_vs_avx2"] = {
        "train_step_ratio": round(gn["train_step_ms"] / a["train_step_ms"], 2),
        "infer_b8_ratio": round(gn["infer_b8_ms"] / a["infer_b8_ms"], 2),
    }
g, t = d.get("gpu"), d.get("gpu_torch_peer")
if g and t:
    sys.path.insert(0, "tools")
    from gpu_vs_torch import ratios
    d["gpu_vs_torch"] = ratios(g, t)
print(json.dumps(d, indent=1))'

