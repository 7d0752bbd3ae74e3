#!/usr/bin/env bash
# segeval end to end on the real example subject ($SEGKIT_SHARED/data/totalseg-example/s0000):
#  1. compare: perturbed predictions in TotalSegmentator / nnU-Net layouts, every metric
#     checked against numpy/scipy (tests/segeval_ref.py); the report files are complete;
#     layout and grid errors are clear.
#  2. predict + eval with a model trained a few steps on the subject (bin/segtrain):
#     the output has the CT's shape and affine, the liver lands in the liver; eval writes
#     its reports; an unreadable checkpoint, a label-count mismatch and a missing split
#     fail with clear messages.
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
SHARED=${SEGKIT_SHARED:-../shared}
PY=${PYTHON:-/usr/bin/python3}
S=$SHARED/data/totalseg-example/s0000
[ -d "$S/segmentations" ] || { echo "skip: the example subject is not at $S"; exit 77; }
[ -x "$BIN/segeval" ] || { echo "FAIL: $BIN/segeval is not built"; exit 1; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails + 1)); }
# expect_fail NAME PATTERN CMD... : exit status 1 and PATTERN in stderr
expect_fail() {
    local name=$1 pat=$2; shift 2
    "$@" >"$T/out.txt" 2>"$T/err.txt"
    local rc=$?
    if [ $rc -eq 1 ] && grep -qiE "$pat" "$T/err.txt"; then ok "$name: exit 1, $(head -c 200 "$T/err.txt")"
    else bad "$name: exit $rc, stderr: $(head -c 400 "$T/err.txt")"; fi
}

# ---- 1. compare ----
"$PY" tests/segeval_ref.py make-compare "$S" "$T/fx" || { echo "FAIL: fixture generation"; exit 1; }
run_compare() {   # key tag ref pred
    local key=$1 tag=$2
    if "$BIN/segeval" compare "$3" "$4" --out "$T/cmp_$key" --tag "$tag" --max-3d 1 -q >"$T/cmp_$key.log" 2>&1; then
        ok "compare $key ran: $(head -1 "$T/cmp_$key.log" | cut -c1-160)"
        if "$PY" tests/segeval_ref.py check-compare "$T/cmp_$key" "$tag" "$T/fx/expected.json" "$key"; then ok "compare $key metrics = numpy/scipy"
        else bad "compare $key metrics differ from numpy/scipy"; fi
    else bad "compare $key: $(cat "$T/cmp_$key.log")"; fi
}
run_compare single one "$S" "$T/fx/pred0.nii.gz"
run_compare dataset ds "$T/fx/ds_ref" "$T/fx/ds_pred"
run_compare nnunet nn "$T/fx/nn/labelsTr" "$T/fx/nn/pred"

# report files of the single-subject run
D=$T/cmp_single
for f in evaluation_results_one.csv structure_summary_one.csv summary_one.json metrics_distribution_one.png \
         structure_ranking_one.png segmentation_visualization_one.png 3d_s0000_one.html index_one.html; do
    [ -s "$D/$f" ] || bad "compare output $f missing"
done
for f in "$D"/*.png; do
    head -c 8 "$f" | od -An -tx1 | grep -q "89 50 4e 47 0d 0a 1a 0a" || bad "$(basename "$f") is not a PNG"
done
if grep -qiE '<script[^>]+src=|https?://' "$D/3d_s0000_one.html"; then bad "3d page loads something from the network"
else ok "3d page is self-contained ($(stat -c %s "$D/3d_s0000_one.html") bytes)"; fi
grep -q "3d_s0000_one.html" "$D/index_one.html" && grep -q "segmentation_visualization_one.png" "$D/index_one.html" \
    && ok "index_one.html links the 3D page and the figures" || bad "index_one.html does not link everything"
grep -q "nnU-Net" "$D/index_one.html" && grep -q "TotalSegmentator" "$D/index_one.html" \
    && ok "index_one.html names both mean conventions" || bad "index_one.html does not label the mean conventions"

expect_fail "compare one subject vs a set" "set of subjects" "$BIN/segeval" compare "$S" "$T/fx/ds_pred" --out "$T/e1"
expect_fail "compare on different grids" "grid" "$BIN/segeval" compare "$S" "$T/fx/cropped.nii.gz" --out "$T/e2"
mkdir -p "$T/fx/ds_pred_missing/a" && cp "$T/fx/ds_pred/a/segmentation.nii.gz" "$T/fx/ds_pred_missing/a/"
expect_fail "compare with a missing prediction" "no prediction.*b" "$BIN/segeval" compare "$T/fx/ds_ref" "$T/fx/ds_pred_missing" --out "$T/e3"
expect_fail "compare a missing path" "no such file" "$BIN/segeval" compare "$S" "$T/nothing.nii.gz" --out "$T/e4"
"$BIN/segeval" compare "$S" >/dev/null 2>&1; [ $? -eq 2 ] && ok "usage error exits 2" || bad "usage error does not exit 2"

# ---- 2. predict and eval with a briefly trained model ----
if [ ! -x "$BIN/segtrain" ] || [ ! -x "$BIN/segprep" ]; then
    echo "note: $BIN/segtrain or $BIN/segprep missing: predict/eval part not run"
    bad "predict/eval part needs bin/segprep and bin/segtrain"
else
    # a 64x64 cache of three structures keeps the training short; s0000 is the only (train) subject
    mkdir -p "$T/ds" && ln -s "$(cd "$S" && pwd)" "$T/ds/s0000"
    printf 'image_id;split\ns0000;train\n' >"$T/ds/meta.csv"
    printf 'liver\nspleen\nkidney_left\n' >"$T/three.txt"
    "$BIN/segprep" "$T/ds" "$T/cache" --size 64 --labels "$T/three.txt" -q >"$T/prep.log" 2>&1 || bad "segprep: $(tail -3 "$T/prep.log")"
    CKPT=
    if "$BIN/segtrain" "$T/cache" --out "$T/run" --epochs ${SEGEVAL_TEST_EPOCHS:-25} --features 8,16,32,64 --lr 5e-3 \
            --batch-size 6 --seed 1 --keep-last 1 --no-progress >"$T/train.log" 2>&1; then
        CKPT=$T/run/best.safetensors
        ok "segtrain: a small U-Net trained on s0000 ($(tail -1 "$T/train.log" | cut -c1-100))"
    else CKPT_WHY="segtrain failed: $(tail -3 "$T/train.log")"; fi
    if [ -n "${CKPT:-}" ] && [ -f "$CKPT" ]; then
        if "$BIN/segeval" predict "$CKPT" "$S/ct.nii.gz" "$T/pred" --per-structure --statistics -q >"$T/pred.log" 2>&1; then
            ok "predict: $(cat "$T/pred.log" | head -1 | cut -c1-200)"
            "$PY" tests/segeval_ref.py check-predict "$S" "$T/pred" 1 && ok "predict: shape, affine and liver location" \
                || bad "predict output check"
            [ -s "$T/pred/statistics.json" ] && "$PY" -c "import json,sys; d=json.load(open('$T/pred/statistics.json')); \
                assert d['liver']['volume_ml'] > 0 and d['liver']['mean_hu'] is not None, d['liver']" \
                && ok "statistics.json: liver $("$PY" -c "import json; print(json.load(open('$T/pred/statistics.json'))['liver'])")" \
                || bad "statistics.json"
            [ "$(ls "$T/pred/segmentations" | wc -l)" -eq 3 ] && ok "--per-structure wrote one mask per structure" || bad "--per-structure masks"
            # predict's output folder is itself a valid compare input (TotalSegmentator names)
            if "$BIN/segeval" compare "$S" "$T/pred" --out "$T/cmp_pred" --max-3d 0 >"$T/cmp_pred.log" 2>&1; then
                ok "compare accepts predict's output folder: $(head -1 "$T/cmp_pred.log" | cut -c1-150)"
            else bad "compare on predict's output: $(cat "$T/cmp_pred.log")"; fi
        else bad "predict: $(cat "$T/pred.log")"; fi
        if "$BIN/segeval" "$CKPT" "$T/cache" --split train --out "$T/ev" --tag exp1 --max-3d 1 -q >"$T/ev.log" 2>&1; then
            ok "eval: $(head -1 "$T/ev.log" | cut -c1-200)"
            for f in evaluation_results_exp1.csv summary_exp1.json metrics_distribution_exp1.png structure_ranking_exp1.png \
                     segmentation_visualization_exp1.png 3d_s0000_exp1.html index_exp1.html; do
                [ -s "$T/ev/$f" ] || bad "eval output $f missing"
            done
        else bad "eval: $(cat "$T/ev.log")"; fi
        # 2.5D: the checkpoint widened to context 1 (tools/ckpt_widen.py: its weights on the centre
        # channel, zeros on the neighbours) computes the same thing from a 3-slice input
        if "$PY" tools/ckpt_widen.py "$CKPT" "$T/ctx1.safetensors" --context 1 \
           && "$BIN/segeval" "$T/ctx1.safetensors" "$T/cache" --split train --out "$T/evc" --tag exp1 --max-3d 0 >"$T/evc.log" 2>&1 \
           && "$BIN/segeval" predict "$T/ctx1.safetensors" "$S/ct.nii.gz" "$T/predc" -q >"$T/predc.log" 2>&1; then
            grep -q "context 1 (3 slices)" "$T/evc.log" && ok "eval with an in_ch 3 checkpoint runs: $(grep -m1 "context 1" "$T/evc.log" | cut -c1-160)" \
                || bad "eval log does not name the context: $(head -3 "$T/evc.log")"
            "$PY" - "$T/ev/evaluation_results_exp1.csv" "$T/evc/evaluation_results_exp1.csv" "$T/pred/segmentation.nii.gz" "$T/predc/segmentation.nii.gz" <<'EOF2' \
                && ok "context 1 with centre-only weights: eval metrics and predict labels as the 2D checkpoint's" || bad "context checkpoint results differ from the 2D ones"
import csv, sys
import nibabel as nib, numpy as np
def rows(p):
    return [r for r in csv.reader(open(p))]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
worst = 0.0
ok = len(a) == len(b) and a[0] == b[0]
for ra, rb in zip(a[1:], b[1:]):
    for x, y in zip(ra, rb):
        try: worst = max(worst, abs(float(x) - float(y)))
        except ValueError: ok &= x == y
va, vb = nib.load(sys.argv[3]).get_fdata(), nib.load(sys.argv[4]).get_fdata()
nd = int((va != vb).sum())
print(f"  {len(a) - 1} metric rows, max |diff| {worst:.3g}; predict: {nd} of {va.size} voxels differ")
sys.exit(0 if ok and worst <= 1e-3 and nd <= va.size * 1e-5 else 1)
EOF2
        else bad "context checkpoint: $(cat "$T/evc.log" "$T/predc.log" 2>/dev/null | tail -3)"; fi
        expect_fail "eval: missing split" "no test subjects" "$BIN/segeval" "$CKPT" "$T/cache" --out "$T/e5"
        head -c 3000 /dev/urandom >"$T/garbage.safetensors"
        expect_fail "eval: unreadable checkpoint" "garbage.safetensors" "$BIN/segeval" "$T/garbage.safetensors" "$T/cache" --out "$T/e6"
        expect_fail "predict: unreadable checkpoint" "garbage.safetensors" "$BIN/segeval" predict "$T/garbage.safetensors" "$S/ct.nii.gz" "$T/e7"
        "$BIN/segprep" "$T/ds" "$T/cache117" --size 64 -q >/dev/null 2>&1
        expect_fail "eval: label-count mismatch" "predicts 3 structures but cache .* has 117" "$BIN/segeval" "$CKPT" "$T/cache117" --split train --out "$T/e8"
        printf 'spleen\nliver\nkidney_left\n' >"$T/three_swapped.txt"
        "$BIN/segprep" "$T/ds" "$T/cache_sw" --size 64 --labels "$T/three_swapped.txt" -q >/dev/null 2>&1
        expect_fail "eval: label-order mismatch" "label order differs" "$BIN/segeval" "$CKPT" "$T/cache_sw" --split train --out "$T/e9"
    else bad "no checkpoint: ${CKPT_WHY:-training failed}"; fi
fi
echo "test_segeval: $fails failure(s)"
[ $fails -eq 0 ]
