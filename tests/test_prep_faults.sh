#!/usr/bin/env bash
# segprep on bad input, --strict, kill -9 and resume, readers during appends, map growth.
set -u
BIN=${SEGKIT_BIN:-bin}; PY=${PYTHON:-/usr/bin/python3}
SRC=${SEGKIT_SHARED:-../shared}/data/totalseg-example/s0000
[ -d "$SRC" ] || { echo "skip: $SRC not found"; exit 77; }
$PY -c "import nibabel" 2>/dev/null || { echo "skip: python3-nibabel missing"; exit 77; }
T=$(mktemp -d /tmp/segkit_faults.XXXXXX); trap 'rm -rf "$T"' EXIT
fails=0
ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails+1)); }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

# ---- bad input ----
$PY tests/make_bad_dataset.py "$SRC" "$T/ds" 2 > "$T/bad.txt" || { echo "FAIL fixture"; exit 1; }
$BIN/segprep "$T/ds" "$T/c1" --no-progress 2> "$T/err1.txt"; rc=$?
check "bad subjects: exit status 2 (got $rc)" test $rc -eq 2
while read -r id what; do
    check "failure of $id names it and $what" grep -q "$id.*$what" "$T/err1.txt"
done < "$T/bad.txt"
grep -A30 "subject(s) failed" "$T/err1.txt" | sed 's/^/    /' | head -14
n=$($BIN/segprep stat "$T/c1" | $PY -c "import json,sys; print(json.load(sys.stdin)['n_subjects'])")
check "only the 2 good subjects entered the cache (got $n)" test "$n" = 2
check "the cache verifies" $BIN/segprep verify "$T/c1" -q
$BIN/segprep "$T/ds" "$T/c2" --strict -q 2> "$T/err2.txt"; rc=$?
nfail=$(grep -c "failed:" "$T/err2.txt")
check "--strict: exit 2 and stops at the first failure (exit $rc, $nfail failures reported)" test $rc -eq 2 -a "$nfail" -eq 1
$BIN/segprep "$T/nonexistent" "$T/c3" -q 2>"$T/err3.txt"; rc=$?
check "missing dataset: exit 1 with the path named" test $rc -eq 1 && grep -q nonexistent "$T/err3.txt"
$BIN/segprep --bogus 2>/dev/null; check "unknown flag: exit 2" test $? -eq 2
$BIN/segprep --help >/dev/null; check "--help exits 0" test $? -eq 0
$BIN/segprep --size 100 a b 2>/dev/null; check "--size 100 refused (not a multiple of 8)" test $? -eq 2
echo "not a label" > "$T/lab.txt"; printf 'liver\nliver\n' > "$T/dup.txt"
$BIN/segprep "$T/ds" "$T/c4" --labels "$T/dup.txt" -q 2>"$T/err4.txt"; rc=$?
check "duplicate label file: exit 1 naming it" test $rc -eq 1 && grep -q dup.txt "$T/err4.txt"
$BIN/segprep "$T/ds" "$T/c1" --size 128 -q 2>"$T/err5.txt"; rc=$?
check "appending with another --size is refused and the cache is intact" test $rc -eq 1 && $BIN/segprep verify "$T/c1" -q

# ---- kill -9 at random points, then resume ----
mkdir -p "$T/good"
for i in $(seq -w 0 23); do ln -s "$(cd "$SRC" && pwd)" "$T/good/s00$i"; done
t0=$(date +%s%N)
$BIN/segprep "$T/good" "$T/ref" -q --threads 1 || bad "reference run"
ref_ms=$(( ($(date +%s%N) - t0) / 1000000 ))   # kills land at 5..35% of this, so they hit however loaded the machine is
ref_bytes=$($BIN/segprep stat "$T/ref" | $PY -c "import json,sys; d=json.load(sys.stdin); print(d['n_subjects'], d['record_bytes'])")
killed=0
for seed in 1 2 3 4; do
    rm -rf "$T/k"
    for round in 1 2 3; do
        $BIN/segprep "$T/good" "$T/k" -q --threads 1 2>/dev/null & pid=$!
        ms=$(( ref_ms * ((seed * 37 + round * 53) % 7 + 1) / 20 ))   # rounds resume each other
        sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
        kill -9 $pid 2>/dev/null && killed=$((killed+1)); wait $pid 2>/dev/null
        if [ -f "$T/k/data.mdb" ]; then
            $BIN/segprep verify "$T/k" -q 2>/dev/null || bad "seed $seed round $round: cache does not verify after kill -9"
        fi
    done
    $BIN/segprep "$T/good" "$T/k" -q || bad "seed $seed: resume run failed"
    got=$($BIN/segprep stat "$T/k" | $PY -c "import json,sys; d=json.load(sys.stdin); print(d['n_subjects'], d['record_bytes'])")
    check "kill -9 x3 then resume (seed $seed): same subjects and bytes as an unbroken run ($got vs $ref_bytes)" test "$got" = "$ref_bytes"
done

check "$killed of 12 kills hit a running segprep" test $killed -ge 8

# ---- verify finds a corrupted record and names it ----
cp -r "$T/ref" "$T/corrupt"
$PY - "$T/corrupt/data.mdb" <<'PYEOF'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read())
for i in range(len(b) // 2, len(b) // 2 + 256): b[i] ^= 0x55   # inside the slice records
open(p, "wb").write(bytes(b))
PYEOF
$BIN/segprep verify "$T/corrupt" -q 2>"$T/verr.txt"; rc=$?
check "verify on a corrupted cache: exit 1 naming the record ($(tr '\n' ' ' < "$T/verr.txt" | head -c 160))" \
    test $rc -eq 1 -a -n "$(grep -i 'corrupt' "$T/verr.txt")"

# ---- readers while segprep appends; map growth from a tiny initial map ----
rm -rf "$T/live"
SEGKIT_CACHE_INITIAL_MAP=65536 $BIN/segprep "$T/good" "$T/live" -q --threads 1 & pid=$!
reads=0; rerr=0
while kill -0 $pid 2>/dev/null; do
    if [ -f "$T/live/data.mdb" ]; then
        if $BIN/segprep stat "$T/live" >/dev/null 2>"$T/rerr.txt"; then reads=$((reads+1)); else
            grep -q "no format record\|missing tables" "$T/rerr.txt" || { rerr=$((rerr+1)); cat "$T/rerr.txt"; }; fi
    fi
done
wait $pid; rc=$?
check "segprep with a 64 KiB initial map grows it (exit $rc)" test $rc -eq 0
check "$reads concurrent reads while appending, $rerr errors" test $rerr -eq 0
got=$($BIN/segprep stat "$T/live" | $PY -c "import json,sys; d=json.load(sys.stdin); print(d['n_subjects'], d['record_bytes'])")
check "grown cache equals the reference ($got)" test "$got" = "$ref_bytes"

# ---- read-only cache directory ----
cp -r "$T/ref" "$T/ro"; rm -f "$T/ro/lock.mdb"; chmod -R a-w "$T/ro"
if [ "$(id -u)" -ne 0 ]; then
    check "read-only cache directory can be read" $BIN/segprep verify "$T/ro" -q
else
    echo "note: running as root, read-only permissions are not enforced; reading anyway"
    check "cache without lock file can be read" $BIN/segprep verify "$T/ro" -q
fi
chmod -R u+w "$T/ro"
echo "$fails failed"
[ $fails -eq 0 ]
