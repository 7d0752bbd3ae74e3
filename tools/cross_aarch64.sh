#!/usr/bin/env bash
# Cross build segkit for aarch64 (Linux, glibc) and run the C unit tests under qemu-aarch64.
# Off x86-64 the Makefile builds only the generic kernels (OpenBLAS + C; docs/cpu.md), so this
# checks that path on a second architecture. Prints "N passed, N failed, N skipped"; exits 77
# when the toolchain is missing. One-time setup on Debian 12 (x86-64 host):
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install gcc-aarch64-linux-gnu qemu-user libopenblas-dev:arm64 liblmdb-dev:arm64 \
#       libzstd-dev:arm64 zlib1g-dev:arm64 libcjson-dev:arm64 libpng-dev:arm64
# Tests that re-execute themselves (test_nii's SEGKIT_MAX_VOXELS check) go through
# SEGKIT_TEST_EXEC=qemu-aarch64, so no binfmt_misc entry is needed.
# Env: BUILD (default build-aarch64), BIN (bin-aarch64), JOBS (2), TEST_TIMEOUT (600 s each).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-aarch64}; BIN=${BIN:-bin-aarch64}
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || { echo "skip: aarch64-linux-gnu-gcc not installed (see the header of $0)"; exit 77; }
command -v qemu-aarch64 >/dev/null 2>&1 || { echo "skip: qemu-aarch64 not installed (apt-get install qemu-user)"; exit 77; }
[ -f /usr/include/aarch64-linux-gnu/openblas-pthread/cblas.h ] || { echo "skip: libopenblas-dev:arm64 not installed"; exit 77; }
# the arm64 paths go first: the Makefile's x86_64 ones then only hold libraries the linker skips
CPPFLAGS="-I/usr/include/aarch64-linux-gnu/openblas-pthread" \
LDFLAGS="-L/usr/lib/aarch64-linux-gnu/openblas-pthread" \
    make --no-print-directory -j"${JOBS:-2}" CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ GPU=0 \
    HAVE_CUDA_HEADERS=0 BUILD="$BUILD" BIN="$BIN" check-bins || { echo "FAIL: cross build"; exit 1; }
export SEGKIT_TEST_EXEC=qemu-aarch64 QEMU_LD_PREFIX=/
export SEGKIT_BIN="$BIN" SEGKIT_BUILD="$BUILD" SEGKIT_SHARED="${SEGKIT_SHARED:-../shared}"
pass=0; fail=0; skip=0
for t in "$BUILD"/tests/test_*; do
    case "$t" in *.o|*.d) continue;; esac
    [ -x "$t" ] || continue
    timeout "${TEST_TIMEOUT:-600}" qemu-aarch64 -L / "$t" >"$t.aarch64.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then pass=$((pass+1)); echo "PASS $(basename "$t") (aarch64)"
    elif [ $rc -eq 77 ]; then skip=$((skip+1)); echo "SKIP $(basename "$t"): $(tail -1 "$t.aarch64.log")"
    else fail=$((fail+1)); echo "FAIL $(basename "$t") (exit $rc): $(tail -3 "$t.aarch64.log")"; fi
done
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
