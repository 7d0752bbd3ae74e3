#!/usr/bin/env bash
# Faults around training: kill -9 segtrain at random points (several seeds) and resume to
# the same weights as an unbroken run; a full disk (small tmpfs) for the run directory and
# for the cache gives a clear error and leaves the last checkpoint and the cache usable; a
# read-only cache (read-only bind mount) trains; segprep appending while segtrain reads.
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}; PY=${PYTHON:-/usr/bin/python3}
EX=${SEGKIT_SHARED:-../shared}/data/totalseg-example
[ -d "$EX/s0000" ] || { echo "skip: $EX not found"; exit 77; }
T=$(mktemp -d /tmp/segkit_tfaults.XXXXXX)
MOUNTS=()
cleanup() { for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails+1)); }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
same() {   # same tensor bytes in two safetensors files
    "$PY" - "$1" "$2" <<'PYEOF'
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None); d = b[8 + n:]
    return {k: d[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
sys.exit(0 if a and a == b else 1)
PYEOF
}
try_mount() {   # try_mount DIR ARGS... : 0 if mounted
    mkdir -p "$1"
    local d=$1; shift
    mount "$@" "$d" 2>/dev/null || return 1
    MOUNTS=("$d" "${MOUNTS[@]}")
}
TR=(--features 8,16,32,64 --batch-size 8 --threads 1 --seed 5 --no-progress -q)

$BIN/segprep "$EX" "$T/cache" --size 64 -q || { echo "FAIL cache"; exit 1; }
$BIN/segtrain "$T/cache" --out "$T/ref" --epochs 3 "${TR[@]}" || bad "reference run"

# ---- kill -9 at random points, resume until done ----
for seed in 1 2 3; do
    run="$T/k$seed"; kills=0; rounds=0
    while [ $rounds -lt 12 ]; do
        rounds=$((rounds+1))
        last=$(ls "$run"/checkpoint_epoch*.safetensors 2>/dev/null | grep -v state | sort -V | tail -1)
        if [ -n "$last" ]; then args=(--resume "$last"); else args=(--out "$run" --force); fi
        $BIN/segtrain "$T/cache" "${args[@]}" --epochs 3 "${TR[@]}" 2>/dev/null & pid=$!
        if [ $rounds -le 3 ]; then   # three kills at seeded points, then let it finish
            sleep "0.$(( (seed * 31 + rounds * 17) % 9 ))"
            if kill -9 $pid 2>/dev/null; then kills=$((kills+1)); wait $pid 2>/dev/null; continue; fi
        fi
        wait $pid && break
    done
    if [ -f "$run/checkpoint_epoch3.safetensors" ]; then
        check "seed $seed: $kills kill(s), resumed to the same epoch-3 weights as an unbroken run" same "$run/checkpoint_epoch3.safetensors" "$T/ref/checkpoint_epoch3.safetensors"
        check "seed $seed: same Adam state" same "$run/checkpoint_epoch3.state.safetensors" "$T/ref/checkpoint_epoch3.state.safetensors"
    else
        bad "seed $seed: never finished in $rounds rounds"
    fi
done

# ---- full disk ----
one=$(( $(stat -c %s "$T/ref/checkpoint_epoch1.safetensors") + $(stat -c %s "$T/ref/checkpoint_epoch1.state.safetensors") ))
if try_mount "$T/small" -t tmpfs -o size=$(( one * 3 / 2 + 65536 )) tmpfs; then
    $BIN/segtrain "$T/cache" --out "$T/small/run" --epochs 3 "${TR[@]}" 2>"$T/full.txt"; rc=$?
    check "segtrain on a full disk: exit 1 (got $rc) with a clear message: $(head -c 200 "$T/full.txt")" \
        test $rc -eq 1 -a -n "$(grep -i 'space' "$T/full.txt")"
    check "no temp files left behind" test -z "$(ls "$T/small/run" | grep tmp)"
    cp -r "$T/small/run" "$T/rescued"
    $BIN/segtrain "$T/cache" --resume "$T/rescued/checkpoint_epoch1.safetensors" --epochs 3 "${TR[@]}"; rc=$?
    check "the checkpoint written before the disk filled resumes to the same weights (exit $rc)" \
        same "$T/rescued/checkpoint_epoch3.safetensors" "$T/ref/checkpoint_epoch3.safetensors"
    cbytes=$(stat -c %s "$T/cache/data.mdb")
    if try_mount "$T/small2" -t tmpfs -o size=$(( cbytes * 2 )) tmpfs; then
        mkdir -p "$T/many"; for i in 0 1 2 3 4 5; do ln -s "$(cd "$EX/s0000" && pwd)" "$T/many/s000$i"; done
        $BIN/segprep "$T/many" "$T/small2/cache" --size 64 -q 2>"$T/full2.txt"; rc=$?
        check "segprep on a full disk: exit 1 (got $rc): $(head -c 200 "$T/full2.txt")" test $rc -eq 1 -a -n "$(grep -i 'space' "$T/full2.txt")"
        check "the cache it leaves verifies" $BIN/segprep verify "$T/small2/cache" -q
        n=$($BIN/segprep stat "$T/small2/cache" | $PY -c "import json,sys; print(json.load(sys.stdin)['n_subjects'])")
        check "and keeps the $n subject(s) committed before the disk filled" test "$n" -ge 1
    fi
else
    echo "note: cannot mount a tmpfs here; full-disk checks skipped"
fi

# ---- read-only cache ----
if try_mount "$T/ro" --bind "$T/cache" && mount -o remount,ro,bind "$T/ro" 2>/dev/null; then
    touch "$T/ro/x" 2>/dev/null && bad "bind mount is not read-only"
    $BIN/segtrain "$T/ro" --out "$T/ro_run" --epochs 1 "${TR[@]}" 2>"$T/ro.txt"; rc=$?
    check "training from a read-only cache directory works (exit $rc $(head -c 200 "$T/ro.txt"))" test $rc -eq 0
    check "segprep verify on the read-only cache" $BIN/segprep verify "$T/ro" -q
    $BIN/segprep "$EX" "$T/ro" --size 64 --force -q 2>"$T/ro2.txt"; rc=$?
    check "segprep into a read-only cache: exit 1 with a clear message: $(head -c 160 "$T/ro2.txt")" test $rc -eq 1
else
    echo "note: cannot make a read-only bind mount here; read-only checks skipped"
fi

# ---- segprep appends while segtrain reads ----
if [ -x "$BIN/synthct" ]; then
    $BIN/synthct --subjects 8 --seed 4 --size 48x40x12 "$T/syn" -q
    $BIN/segprep "$T/syn" "$T/live" --size 64 --limit 3 -q
    $BIN/segtrain "$T/live" --out "$T/live_run" --epochs 4 "${TR[@]}" 2>"$T/live.txt" & tpid=$!
    $BIN/segprep "$T/syn" "$T/live" --size 64 --threads 1 -q; prc=$?
    wait $tpid; trc=$?
    check "segprep appended while segtrain trained (segprep exit $prc, segtrain exit $trc $(head -c 200 "$T/live.txt"))" test $prc -eq 0 -a $trc -eq 0
    check "the appended cache verifies" $BIN/segprep verify "$T/live" -q
fi
echo "$fails failed"
[ $fails -eq 0 ]
