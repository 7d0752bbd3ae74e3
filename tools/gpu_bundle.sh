#!/usr/bin/env bash
# Build what the GPU tests and benchmarks need into gpu-bundle/ (git-ignored), to carry to a
# machine that has a GPU but not segkit's Debian libraries (the device tool's GPU machines):
#   gpu-bundle/bin/     segprep segtrain segeval synthct (portable: -march=x86-64-v3)
#   gpu-bundle/tests/   test_gpu test_gpu_kernels test_gpu_math bench_gpu
#   gpu-bundle/lib/     the shared libraries they link that are not CUDA's or glibc's
#   gpu-bundle/run.sh   on the GPU machine, from the repo root: bash gpu-bundle/run.sh [tests|bench|all] [LOGDIR]
# Needs the CUDA toolkit here (the GPU backend must be built).
set -eu
cd "$(dirname "$0")/.."
B=gpu-bundle
make --no-print-directory -j"$(nproc)" GPU=1 OPT="-O2 -march=x86-64-v3" BUILD=build-bundle BIN=bin-bundle \
    bin-bundle/segprep bin-bundle/segtrain bin-bundle/segeval bin-bundle/synthct \
    build-bundle/tests/test_gpu build-bundle/tests/test_gpu_kernels build-bundle/tests/test_gpu_math build-bundle/tests/bench_gpu >&2
rm -rf "$B"; mkdir -p "$B/bin" "$B/tests" "$B/lib"
for p in segprep segtrain segeval synthct; do cp bin-bundle/$p "$B/bin/"; done
for t in test_gpu test_gpu_kernels test_gpu_math bench_gpu; do cp build-bundle/tests/$t "$B/tests/"; done
strip --strip-debug "$B"/bin/* "$B"/tests/*
# the libraries: everything ldd resolves except glibc, the compiler runtime and CUDA's own
for f in "$B"/bin/* "$B"/tests/*; do ldd "$f"; done | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r so; do
    case "$(basename "$so")" in
        libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
        libcud*|libcublas*|libnv*) ;;
        *) cp -L "$so" "$B/lib/" ;;
    esac
done
cat > "$B/run.sh" <<'EOF'
#!/usr/bin/env bash
# Run segkit's GPU tests and/or benchmarks from the bundle (see tools/gpu_bundle.sh).
#   bash gpu-bundle/run.sh [tests|bench|all] [LOGDIR]
set -u
cd "$(dirname "$0")/.."
B=gpu-bundle; what=${1:-all}; log=${2:-/tmp/segkit-gpu}; mkdir -p "$log"
LD=$PWD/$B/lib
# cuDNN 9 / cuBLAS 13 / cudart 13: the CUDA toolkit's, else PyTorch's NVIDIA wheels
nv=$(python3 -c "import nvidia; print(list(nvidia.__path__)[0])" 2>/dev/null || true)
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib $(
    [ -n "$nv" ] && find "$nv" \( -name 'libcudnn.so.9' -o -name 'libcublas.so.13' -o -name 'libcudart.so.13' \) -printf '%h\n' | sort -u); do
    [ -d "$d" ] && LD=$LD:$d
done
export LD_LIBRARY_PATH=$LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export SEGKIT_BIN=$B/bin SEGKIT_BUILD=$B PYTHON=${PYTHON:-python3}
nvidia-smi -L 2>&1 | head -2
missing=$(ldd $B/bin/segtrain $B/tests/test_gpu | grep "not found" | sort -u)
[ -z "$missing" ] || { echo "missing libraries:"; echo "$missing"; exit 1; }
rc=0
if [ "$what" = tests ] || [ "$what" = all ]; then
    for t in test_gpu_math test_gpu_kernels test_gpu; do
        echo "== $t"; $B/tests/$t 2>&1 | tee "$log/$t.log" | grep -E "^(FAIL|skip)|checks|device:"; [ ${PIPESTATUS[0]} -eq 0 ] || rc=1
    done
    for t in test_device test_gpu_train; do
        echo "== $t"; bash tests/$t.sh 2>&1 | tee "$log/$t.log" | grep -E "^(ok|FAIL|skip)"; [ ${PIPESTATUS[0]} -eq 0 ] || rc=1
    done
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    echo "== bench_gpu"
    g=$(mktemp -d)
    $B/bin/synthct --subjects 16 --seed 11 -q "$g/ds" >/dev/null 2>&1 && $B/bin/segprep "$g/ds" "$g/cache" --size 256 -q >/dev/null 2>&1
    $B/tests/bench_gpu --cache "$g/cache" ${BENCH_GPU_ARGS:-} >"$log/bench_gpu.json" 2>"$log/bench_gpu.err" || rc=1
    cat "$log/bench_gpu.json"
    echo "== PyTorch peer (tools/unet_ref.py --bench)"
    $PYTHON tools/unet_ref.py --bench ${BENCH_TORCH_ARGS:-} >"$log/bench_torch.json" 2>"$log/bench_torch.err" || rc=1
    cat "$log/bench_torch.json"
    echo "== segkit / PyTorch (slices/s ratios)"
    $PYTHON tools/gpu_vs_torch.py "$log/bench_gpu.json" "$log/bench_torch.json" | tee "$log/gpu_vs_torch.json"
fi
exit $rc
EOF
chmod +x "$B/run.sh"
du -sh "$B" >&2
ls -la "$B"/lib >&2
