#!/usr/bin/env bash
# Install the Debian packages segkit needs, only those missing.
#   tools/install_deps.sh          build + runtime packages
#   tools/install_deps.sh test     also the Python oracles and headless Chromium used by the tests
#   tools/install_deps.sh fuzz     the test packages and clang (libFuzzer)
set -euo pipefail
pkgs=(build-essential pkg-config zlib1g-dev libzstd-dev liblmdb-dev libopenblas-dev libcjson-dev libpng-dev)
if [ "${1:-}" = test ] || [ "${1:-}" = fuzz ]; then
    pkgs+=(python3 python3-numpy python3-nibabel python3-lmdb python3-zstandard python3-scipy chromium)
    [ "$(uname -m)" = x86_64 ] && pkgs+=(qemu-user)   # tests/test_portable.sh: the binaries on an AVX2-only CPU
fi
[ "${1:-}" = fuzz ] && pkgs+=(clang)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "segkit: installing missing packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
