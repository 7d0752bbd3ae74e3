#!/usr/bin/env bash
# segprep never leaves a cache silently stale or skips silently (issue 13, items 1-3):
#  1. Rerunning over another dataset whose subjects have the same names (other CTs) re-preps
#     every changed subject: the cache then holds dataset B's slices, record for record the
#     same as a fresh cache of B. An unchanged rerun skips everything. A split change in
#     meta.csv is applied without re-prepping. A subject gone from the dataset is reported
#     and kept, and removed with --prune. segprep stat --check says all of this beforehand.
#     Another --size or label list is refused, saying what differs.
#  2. A cache folder that is the dataset, inside it, or a non-empty unrelated folder is refused.
#  3. A folder without ct.nii.gz is reported (even with -q), as is a meta.csv id with no
#     folder; an unknown --labels name is one error up front naming it.
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
PY=${PYTHON:-/usr/bin/python3}
for p in synthct segprep; do [ -x "$BIN/$p" ] || { echo "FAIL: $BIN/$p is not built"; exit 1; }; done
"$PY" -c "import numpy, lmdb, zstandard" 2>/dev/null || { echo "skip: numpy/lmdb/zstandard missing for $PY"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
# same_slices CACHE1 CACHE2: every subject's slices decode to the same image and masks
same_slices() {
    "$PY" - "$1" "$2" <<'EOF'
import sys
sys.path.insert(0, "tools")
import numpy as np, segcache
a, b = segcache.SegCache(sys.argv[1]), segcache.SegCache(sys.argv[2])
ia, ib = sorted(s["id"] for s in a.subjects()), sorted(s["id"] for s in b.subjects())
assert ia == ib, (ia, ib)
for sid in ia:
    va, vb = a.volume(sid), b.volume(sid)
    assert va[0].shape == vb[0].shape and np.array_equal(va[0], vb[0]) and np.array_equal(va[1], vb[1]), sid
print(f"{len(ia)} subjects, identical slices")
EOF
}
split_of() { "$PY" -c "import sys; sys.path.insert(0, 'tools'); import segcache; print(segcache.SegCache('$1').subject('$2')['split'])"; }

"$BIN/synthct" --subjects 4 --seed 1 --size 48x48x10 -q "$T/A" >/dev/null && "$BIN/synthct" --subjects 4 --seed 2 --size 48x48x10 -q "$T/B" >/dev/null \
    || { echo "FAIL: synthct"; exit 1; }
for d in A B; do printf 'image_id;split\ns0000;train\ns0001;train\ns0002;val\ns0003;test\n' >"$T/$d/meta.csv"; done
"$BIN/segprep" "$T/B" "$T/refB" --size 32 -q || bad "reference cache of B"

# ---- 1. stale subjects ----
"$BIN/segprep" "$T/A" "$T/c" --size 32 -q || bad "prep A"
"$BIN/segprep" "$T/A" "$T/c" --size 32 2>"$T/r0.log" && grep -q "0 written, 4 already cached" "$T/r0.log" \
    && ok "unchanged rerun: nothing re-prepped" || bad "unchanged rerun: $(cat "$T/r0.log")"
"$BIN/segprep" stat "$T/c" --check "$T/B" >"$T/check.json" || bad "stat --check"
"$PY" -c "import json,sys; d=json.load(open('$T/check.json')); assert d['n_changed'] == 4 and not d['up_to_date'], d" \
    && ok "stat --check against dataset B: 4 changed, not up to date" || bad "stat --check: $(cat "$T/check.json")"
rm -rf "$T/A2" && cp -r "$T/B" "$T/A2"   # another dataset, same subject names
"$BIN/segprep" "$T/A2" "$T/c" --size 32 2>"$T/r1.log"
grep -q "4 written" "$T/r1.log" && [ "$(grep -c 'its files changed since it was cached' "$T/r1.log")" = 4 ] \
    && ok "changed CTs under the same names: 4 re-prepped, each said" || bad "changed rerun: $(cat "$T/r1.log")"
out=$(same_slices "$T/c" "$T/refB") && ok "the cache now holds the new volumes ($out, against a fresh cache of B)" || bad "stale slices: $out"
printf 'image_id;split\ns0000;train\ns0001;test\ns0002;val\ns0003;test\n' >"$T/A2/meta.csv"
"$BIN/segprep" "$T/A2" "$T/c" --size 32 2>"$T/r2.log"
[ "$(split_of "$T/c" s0001)" = test ] && grep -q "s0001: split train -> test (not re-prepped" "$T/r2.log" && grep -q "0 written" "$T/r2.log" \
    && ok "a split change (train -> test) applied without re-prepping" || bad "split change: $(cat "$T/r2.log")"
"$BIN/segprep" stat "$T/c" --check "$T/A2" | grep -qE '"up_to_date":[[:space:]]*true' && ok "stat --check: up to date after the rerun" || bad "not up to date"
mv "$T/A2/s0003" "$T/s0003.away"
"$BIN/segprep" "$T/A2" "$T/c" --size 32 2>"$T/r3.log"
grep -q "cached subject s0003 is no longer in the dataset: kept; --prune removes it" "$T/r3.log" \
    && [ "$("$BIN/segprep" stat "$T/c" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['n_subjects'])")" = 4 ] \
    && ok "a subject gone from the dataset: reported, kept" || bad "gone subject: $(cat "$T/r3.log")"
"$BIN/segprep" "$T/A2" "$T/c" --size 32 --prune 2>"$T/r4.log"
grep -q "s0003 is no longer in the dataset: removed (--prune)" "$T/r4.log" \
    && [ "$("$BIN/segprep" stat "$T/c" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['n_subjects'])")" = 3 ] \
    && "$BIN/segprep" verify "$T/c" -q && ok "--prune removes it (3 subjects left, the cache verifies)" || bad "--prune: $(cat "$T/r4.log")"

printf 'spleen\nliver\n' >"$T/l2.txt"; printf 'liver\nspleen\n' >"$T/l3.txt"
"$BIN/segprep" "$T/A" "$T/cl" --size 32 --labels "$T/l2.txt" -q 2>/dev/null
"$BIN/segprep" "$T/A" "$T/cl" --size 32 --labels "$T/l3.txt" -q 2>"$T/e.txt"; rc=$?
[ $rc -eq 1 ] && grep -q "different label list (2 channels, now 2; channel 0 is spleen in the cache, liver now)" "$T/e.txt" \
    && ok "another label order refused, saying what differs" || bad "label list: rc $rc $(cat "$T/e.txt")"
"$BIN/segprep" "$T/A" "$T/cl" --size 64 --labels "$T/l2.txt" -q 2>"$T/e.txt"; rc=$?
[ $rc -eq 1 ] && grep -q "holds 32x32 slices, not 64x64" "$T/e.txt" && ok "another --size refused" || bad "size: rc $rc $(cat "$T/e.txt")"

# ---- 2. where the cache may go ----
"$BIN/segprep" "$T/A" "$T/A" --size 32 -q 2>"$T/e.txt"; rc=$?
[ $rc -eq 1 ] && grep -q "is the dataset folder" "$T/e.txt" && ok "cache = dataset refused: $(cat "$T/e.txt")" || bad "cache = dataset: rc $rc $(cat "$T/e.txt")"
"$BIN/segprep" "$T/A" "$T/A/s0000/../cache" --size 32 -q 2>"$T/e.txt"; rc=$?
[ $rc -eq 1 ] && grep -q "inside the dataset" "$T/e.txt" && [ ! -e "$T/A/cache" ] && ok "cache inside the dataset refused" || bad "cache inside: rc $rc $(cat "$T/e.txt")"
mkdir -p "$T/photos" && echo x >"$T/photos/cat.jpg"
"$BIN/segprep" "$T/A" "$T/photos" --size 32 -q 2>"$T/e.txt"; rc=$?
[ $rc -eq 1 ] && grep -q "not empty and not a segkit cache (holds cat.jpg" "$T/e.txt" && [ ! -e "$T/photos/data.mdb" ] \
    && ok "an unrelated non-empty folder refused, left untouched" || bad "unrelated folder: rc $rc $(cat "$T/e.txt")"

# ---- 3. nothing skipped silently ----
mkdir -p "$T/A/s0009/segmentations" "$T/A/notes"
printf 'image_id;split\ns0000;train\ns0001;train\ns0002;val\ns0003;test\ns0042;val\n' >"$T/A/meta.csv"
"$BIN/segprep" "$T/A" "$T/c3" --size 32 -q 2>"$T/s.log"
grep -q "skipping folder $T/A/s0009: no ct.nii.gz or ct.nii in it" "$T/s.log" && grep -q "skipping folder $T/A/notes" "$T/s.log" \
    && ok "folders without a CT reported even with -q" || bad "skip report: $(cat "$T/s.log")"
grep -q "meta.csv names s0042, but .*s0042 is not a subject folder" "$T/s.log" && ok "a meta.csv id without a folder reported" \
    || bad "meta.csv id: $(cat "$T/s.log")"
printf 'liver\nspleen\nlivr\n' >"$T/lab.txt"
"$BIN/segprep" "$T/A" "$T/c4" --size 32 --labels "$T/lab.txt" -q 2>"$T/l.log"; rc=$?
[ $rc -eq 1 ] && grep -q "lab.txt: 1 of its 3 names have no mask file in .*s0000/segmentations (livr)" "$T/l.log" && [ "$(grep -c livr "$T/l.log")" = 1 ] \
    && ok "an unknown --labels name: one error up front: $(cat "$T/l.log")" || bad "--labels check: rc $rc $(cat "$T/l.log")"

echo "$fails failed"
[ $fails -eq 0 ]
