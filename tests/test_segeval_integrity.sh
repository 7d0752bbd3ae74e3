#!/usr/bin/env bash
# segeval results are never silently wrong or lost (issue 13, segeval side):
#  1. compare over mask files present on one side only: left out of every mean and
#     reported (stderr once, summary JSON "one_sided"); --missing-as-empty gives the old
#     numbers; both checked against numpy (nibabel) on the same files.
#  2. --labels names a multilabel file's values while --only chooses what is scored.
#  3. compare with 1, 2 and 3 structures present (of 117): exit 0, every figure written.
#  4. a figure that cannot be written is a warning: exit 0, CSV and JSON written.
#  5. eval refuses a checkpoint trained at another slice size (names it and both sizes);
#     eval with one structure writes every figure.
#  6. predict keeps the input's qform/sform codes (2 and 4) and affine.
#  7. reruns into the same folder leave no stale file of the earlier run (predict, eval),
#     and leave other files alone; every eval output carries the tag.
# Needs bin/segeval, bin/segprep, bin/segtrain, bin/synthct and /usr/bin/python3 with
# nibabel and numpy (exit 77 naming what is missing).
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
PY=${PYTHON:-/usr/bin/python3}
for b in segeval segprep segtrain synthct; do
    [ -x "$BIN/$b" ] || { echo "FAIL: $BIN/$b is not built"; exit 1; }
done
"$PY" -c "import nibabel, numpy" 2>/dev/null || { echo "skip: $PY lacks nibabel/numpy"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# ---- fixtures: small masks on a 40x36x12 grid (spacing 1.5 x 1.2 x 3 mm) ----
"$PY" - "$T" <<'EOF' || { echo "FAIL: fixture generation"; exit 1; }
import os, sys
import nibabel as nib, numpy as np
T = sys.argv[1]
rng = np.random.default_rng(13)
aff = np.diag([1.5, 1.2, 3.0, 1.0]); aff[:3, 3] = [-30, -20, 10]
shape = (40, 36, 12)
def box(x0, x1, y0, y1, z0, z1):
    m = np.zeros(shape, np.uint8); m[x0:x1, y0:y1, z0:z1] = 1; return m
def jitter(m, p):
    flip = rng.random(shape) < p
    return np.where(flip, 1 - m, m).astype(np.uint8) * (rng.random(shape) < 0.97)  # some misses too
def save(m, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = nib.Nifti1Image(m.astype(np.uint8), aff); img.set_qform(aff, 1); img.set_sform(aff, 1)
    nib.save(img, path)
ref = {"liver": box(5, 25, 5, 25, 2, 10), "spleen": box(28, 36, 8, 20, 3, 9), "stomach": box(10, 20, 26, 34, 4, 8)}
pred = {"liver": jitter(ref["liver"], 0.02), "spleen": jitter(ref["spleen"], 0.05), "kidney_right": box(30, 38, 24, 32, 2, 6)}
# 1. one-sided: stomach has a file on the reference side only, kidney_right on the prediction side only
for k, m in ref.items(): save(m, f"{T}/os/ref/s01/segmentations/{k}.nii.gz")
for k, m in pred.items(): save(m.astype(np.uint8), f"{T}/os/pred/s01/segmentations/{k}.nii.gz")
# 3. references with 1, 2 and 3 structures present (files only for those), prediction = jittered copy
for n in (1, 2, 3):
    for k in ["liver", "spleen", "stomach"][:n]:
        save(ref[k], f"{T}/few{n}/ref/s01/segmentations/{k}.nii.gz")
        save(jitter(ref[k], 0.03), f"{T}/few{n}/pred/s01/segmentations/{k}.nii.gz")
# 2. multilabel files with values 1..3 named by a names list
ml_r = np.zeros(shape, np.uint8); ml_p = np.zeros(shape, np.uint8)
for v, k in enumerate(["liver", "spleen", "stomach"], 1):
    ml_r[ref[k] > 0] = v
    ml_p[jitter(ref[k], 0.04) > 0] = v
save(ml_r, f"{T}/ml/ref.nii.gz"); save(ml_p, f"{T}/ml/pred.nii.gz")
open(f"{T}/ml/names.txt", "w").write("liver\nspleen\nstomach\n")
EOF

dice_py() {   # the numpy reference: mode key files...
    "$PY" - "$@" <<'EOF'
import sys, json
import nibabel as nib, numpy as np
mode = sys.argv[1]
def load(p): return np.asarray(nib.load(p).dataobj) > 0
def dice(a, b): return 2.0 * (a & b).sum() / (a.sum() + b.sum())
if mode == "onesided":
    d = sys.argv[2]
    r = {k: load(f"{d}/ref/s01/segmentations/{k}.nii.gz") for k in ["liver", "spleen", "stomach"]}
    p = {k: load(f"{d}/pred/s01/segmentations/{k}.nii.gz") for k in ["liver", "spleen", "kidney_right"]}
    both = [dice(r[k], p[k]) for k in ["liver", "spleen"]]
    # default: only the two-sided structures; --missing-as-empty: stomach missed (0),
    # kidney_right a false positive on an absent structure (0 in the nnU-Net-style mean)
    print(json.dumps({"default": np.mean(both), "empty_ts": np.mean(both + [0.0]), "empty_nn": np.mean(both + [0.0, 0.0])}))
elif mode == "ml":
    r = np.asarray(nib.load(sys.argv[2]).dataobj); p = np.asarray(nib.load(sys.argv[3]).dataobj)
    print(json.dumps({"spleen": dice(r == 2, p == 2), "stomach": dice(r == 3, p == 3)}))
EOF
}
jget() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
close() { "$PY" -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); sys.exit(0 if abs(a-b)<=1e-5 else 1)" "$1" "$2"; }

# ---- 1. one-sided files ----
REF=$(dice_py onesided "$T/os")
O=$T/out_os
if "$BIN/segeval" compare "$T/os/ref/s01" "$T/os/pred/s01" --out "$O" --tag d --max-3d 0 >"$T/os.out" 2>"$T/os.err"; then
    got=$(jget "$O/summary_d.json" "d['overall']['pooled']['dice_mean']")
    want=$(jget /dev/stdin "d['default']" <<<"$REF")
    close "$got" "$want" && ok "one-sided left out: mean Dice $got = numpy's over liver and spleen $want" \
        || bad "one-sided: mean Dice $got, numpy over the two-sided structures $want"
    [ "$(jget "$O/summary_d.json" "d['one_sided']['reference_only']")" = "['stomach']" ] \
        && [ "$(jget "$O/summary_d.json" "d['one_sided']['prediction_only']")" = "['kidney_right']" ] \
        && [ "$(jget "$O/summary_d.json" "d['one_sided']['n_pairs']")" = 2 ] \
        && ok "summary JSON one_sided: reference_only [stomach], prediction_only [kidney_right], 2 pairs" \
        || bad "summary JSON one_sided: $(jget "$O/summary_d.json" "d.get('one_sided')")"
    [ "$(grep -c "one side only" "$T/os.err")" -eq 1 ] && grep "one side only" "$T/os.err" | grep -q "stomach" \
        && grep "one side only" "$T/os.err" | grep -q "kidney_right" \
        && ok "stderr names them once: $(grep "one side only" "$T/os.err" | cut -c1-170)" \
        || bad "stderr does not report the one-sided structures once: $(cat "$T/os.err")"
    grep -q "^s01,stomach,.*one_sided" "$O/evaluation_results_d.csv" && ok "CSV row of stomach has case one_sided" \
        || bad "CSV: $(grep stomach "$O/evaluation_results_d.csv")"
else bad "compare one-sided: exit $?: $(cat "$T/os.err")"; fi
O=$T/out_ose
if "$BIN/segeval" compare "$T/os/ref/s01" "$T/os/pred/s01" --out "$O" --tag e --max-3d 0 --missing-as-empty >"$T/ose.out" 2>"$T/ose.err"; then
    g1=$(jget "$O/summary_e.json" "d['overall']['pooled']['dice_mean']")
    g2=$(jget "$O/summary_e.json" "d['overall']['pooled']['dice_mean_nnunet']")
    w1=$(jget /dev/stdin "d['empty_ts']" <<<"$REF"); w2=$(jget /dev/stdin "d['empty_nn']" <<<"$REF")
    close "$g1" "$w1" && close "$g2" "$w2" && [ "$(jget "$O/summary_e.json" "d['one_sided']['scored_as_empty']")" = True ] \
        && ok "--missing-as-empty: the old numbers (Dice $g1 = $w1, nnU-Net-style $g2 = $w2), still listed" \
        || bad "--missing-as-empty: Dice $g1 vs $w1, nnU-Net-style $g2 vs $w2"
else bad "compare --missing-as-empty: $(cat "$T/ose.err")"; fi

# ---- 2. --labels + --only on a multilabel file ----
REF=$(dice_py ml "$T/ml/ref.nii.gz" "$T/ml/pred.nii.gz")
O=$T/out_ml
if "$BIN/segeval" compare "$T/ml/ref.nii.gz" "$T/ml/pred.nii.gz" --labels "$T/ml/names.txt" --only spleen,stomach \
        --out "$O" --tag m --max-3d 0 >"$T/ml.out" 2>"$T/ml.err"; then
    n=$(jget "$O/summary_m.json" "d['n_structures']")
    gs=$(jget "$O/summary_m.json" "d['per_structure']['spleen']['dice_mean']")
    gt=$(jget "$O/summary_m.json" "d['per_structure']['stomach']['dice_mean']")
    ws=$(jget /dev/stdin "d['spleen']" <<<"$REF"); wt=$(jget /dev/stdin "d['stomach']" <<<"$REF")
    [ "$n" = 2 ] && close "$gs" "$ws" && close "$gt" "$wt" && ! grep -q "no structure" "$T/ml.err" \
        && ok "--labels names the values, --only picks 2: spleen $gs = numpy (value 2), stomach $gt = numpy (value 3)" \
        || bad "--labels + --only: $n structures, spleen $gs vs $ws, stomach $gt vs $wt; $(cat "$T/ml.err")"
else bad "compare --labels --only: exit $?: $(cat "$T/ml.err")"; fi
"$BIN/segeval" compare "$T/ml/ref.nii.gz" "$T/ml/pred.nii.gz" --labels "$T/ml/names.txt" --only spleen,pancreas \
    --out "$T/out_ml2" >/dev/null 2>"$T/ml2.err"
[ $? -eq 1 ] && grep -q "'pancreas'" "$T/ml2.err" && ok "--only with an unknown name: exit 1, $(cut -c1-160 "$T/ml2.err")" \
    || bad "--only unknown name: $(cat "$T/ml2.err")"

# ---- 3. 1, 2, 3 structures present ----
FIGS="metrics_distribution_f.png structure_ranking_f.png segmentation_visualization_f.png 3d_s01_f.html index_f.html"
for n in 1 2 3; do
    O=$T/out_few$n
    if "$BIN/segeval" compare "$T/few$n/ref/s01" "$T/few$n/pred/s01" --out "$O" --tag f >"$T/few.out" 2>"$T/few.err"; then
        miss=""
        for f in evaluation_results_f.csv summary_f.json $FIGS; do [ -s "$O/$f" ] || miss="$miss $f"; done
        [ -z "$miss" ] && ! grep -qi warning "$T/few.err" && ok "compare with $n structure(s) present: exit 0, every figure written" \
            || bad "compare with $n structure(s): missing$miss; $(cat "$T/few.err")"
    else bad "compare with $n structure(s) present: exit $?: $(cat "$T/few.err")"; fi
done

# ---- 4. a figure that cannot be written: a warning, the results written ----
O=$T/out_warn
mkdir -p "$O/structure_ranking_w.png"   # a folder where the figure goes: the rename fails
"$BIN/segeval" compare "$T/few2/ref/s01" "$T/few2/pred/s01" --out "$O" --tag w >"$T/w.out" 2>"$T/w.err"
rc=$?
[ $rc -eq 0 ] && [ -s "$O/evaluation_results_w.csv" ] && [ -s "$O/summary_w.json" ] && [ -s "$O/metrics_distribution_w.png" ] \
    && grep -q "warning: charts not written" "$T/w.err" && [ -d "$O/structure_ranking_w.png" ] \
    && ok "unwritable figure: exit 0, CSV/JSON written, $(grep -m1 warning "$T/w.err" | cut -c1-150)" \
    || bad "unwritable figure: exit $rc, $(cat "$T/w.err")"

# ---- 5-7. a tiny cache and model ----
"$BIN/synthct" --subjects 2 --seed 5 --size 48x48x10 "$T/ds" -q >/dev/null 2>&1 || { bad "synthct"; echo "test_segeval_integrity: $fails failure(s)"; exit 1; }
printf 'liver\n' >"$T/one.txt"
"$BIN/segprep" "$T/ds" "$T/c32" --size 32 --labels "$T/one.txt" --threads 2 -q >/dev/null 2>"$T/prep.err" \
    && "$BIN/segprep" "$T/ds" "$T/c40" --size 40 --labels "$T/one.txt" --threads 2 -q >/dev/null 2>>"$T/prep.err" \
    || bad "segprep: $(cat "$T/prep.err")"
CKPT=$T/run/best.safetensors
"$BIN/segtrain" "$T/c32" --out "$T/run" --epochs 1 --features 4,8 --batch-size 8 --seed 1 --threads 2 --no-progress \
    >"$T/train.log" 2>&1 || bad "segtrain: $(tail -3 "$T/train.log")"
[ -f "$CKPT" ] || CKPT=$(ls "$T"/run/*.safetensors 2>/dev/null | head -1)
if [ -n "$CKPT" ] && [ -f "$CKPT" ]; then
    "$BIN/segeval" "$CKPT" "$T/c40" --split all --out "$T/ev40" >/dev/null 2>"$T/ev40.err"
    rc=$?
    [ $rc -eq 1 ] && grep -q "$CKPT" "$T/ev40.err" && grep -q "32x32" "$T/ev40.err" && grep -q "40x40" "$T/ev40.err" \
        && grep -q "segprep --size 32" "$T/ev40.err" && [ ! -e "$T/ev40/summary_exp.json" ] \
        && ok "eval refuses a checkpoint trained at 32 on a 40 cache: $(cut -c1-220 "$T/ev40.err")" \
        || bad "eval at another size: exit $rc, $(cat "$T/ev40.err")"
    # eval with one structure, twice into one folder: --max-3d 2 then 1; another tag beside it
    E=$T/ev
    "$BIN/segeval" "$CKPT" "$T/c32" --split all --out "$E" --tag t1 --max-3d 2 -q >/dev/null 2>"$T/ev.err" \
        || bad "eval (1 structure): $(cat "$T/ev.err")"
    miss=""
    for f in evaluation_results_t1.csv structure_summary_t1.csv summary_t1.json metrics_distribution_t1.png \
             structure_ranking_t1.png segmentation_visualization_t1.png index_t1.html; do [ -s "$E/$f" ] || miss="$miss $f"; done
    n3d=$(ls "$E" | grep -c '^3d_.*_t1\.html$')
    [ -z "$miss" ] && [ "$n3d" -eq 2 ] && ok "eval with 1 structure: every figure and 2 3D pages written" \
        || bad "eval with 1 structure: missing$miss, $n3d 3D pages; $(cat "$T/ev.err")"
    "$BIN/segeval" "$CKPT" "$T/c32" --split all --out "$E" --tag t2 --max-3d 1 -q >/dev/null 2>&1 || bad "eval tag t2"
    echo keep >"$E/notes.txt"
    "$BIN/segeval" "$CKPT" "$T/c32" --split all --out "$E" --tag t1 --max-3d 1 -q >/dev/null 2>"$T/ev.err" \
        || bad "eval rerun: $(cat "$T/ev.err")"
    n3d=$(ls "$E" | grep -c '^3d_.*_t1\.html$')
    untagged=$(ls "$E" | grep -v -e '_t1\.' -e '_t2\.' -e '^notes.txt$' | tr '\n' ' ')
    [ "$n3d" -eq 1 ] && [ -f "$E/notes.txt" ] && [ -s "$E/summary_t2.json" ] && [ "$(ls "$E" | grep -c '^3d_.*_t2\.html$')" -eq 1 ] \
        && [ -z "$untagged" ] \
        && ok "eval rerun (--max-3d 2 then 1): 1 page of tag t1 left, tag t2 and notes.txt untouched, every file tagged" \
        || bad "eval rerun: $n3d t1 pages, untagged: '$untagged', files: $(ls "$E" | tr '\n' ' ')"

    # ---- 6. predict keeps the codes; 7. predict reruns ----
    "$PY" - "$T/ds/s0000/ct.nii.gz" "$T/ct_codes.nii.gz" <<'EOF' || bad "CT with codes 2/4"
import sys, nibabel as nib, numpy as np
img = nib.load(sys.argv[1])
out = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int16), img.affine)
out.set_qform(img.affine, 2); out.set_sform(img.affine, 4)
nib.save(out, sys.argv[2])
EOF
    P=$T/pred
    if "$BIN/segeval" predict "$CKPT" "$T/ct_codes.nii.gz" "$P" --per-structure --statistics -q >/dev/null 2>"$T/p.err"; then
        "$PY" - "$T/ct_codes.nii.gz" "$P/segmentation.nii.gz" "$P/segmentations/liver.nii.gz" <<'EOF' \
            && ok "predict keeps qform code 2, sform code 4 and the affine (multilabel and per-structure)" || bad "predict codes"
import sys, nibabel as nib, numpy as np
ct = nib.load(sys.argv[1])
good = True
for p in sys.argv[2:]:
    h = nib.load(p).header
    q, s = int(h["qform_code"]), int(h["sform_code"])
    same = np.allclose(h.get_sform(), ct.header.get_sform(), atol=1e-4) and np.allclose(h.get_qform(), ct.header.get_qform(), atol=1e-4)
    print(f"  {p.split('/')[-1]}: qform_code {q}, sform_code {s}, affine as the CT's: {same}")
    good &= q == 2 and s == 4 and same
sys.exit(0 if good else 1)
EOF
        echo keep >"$P/notes.txt"
        cp "$P/segmentations/liver.nii.gz" "$P/segmentations/not_a_model_name.nii.gz"
        if "$BIN/segeval" predict "$CKPT" "$T/ct_codes.nii.gz" "$P" -q >/dev/null 2>"$T/p.err"; then
            [ -s "$P/segmentation.nii.gz" ] && [ ! -e "$P/statistics.json" ] && [ ! -e "$P/segmentations/liver.nii.gz" ] \
                && [ -f "$P/notes.txt" ] && [ -f "$P/segmentations/not_a_model_name.nii.gz" ] \
                && ok "predict rerun without options: earlier statistics.json and masks removed, other files kept" \
                || bad "predict rerun: $(ls -R "$P" | tr '\n' ' ')"
        else bad "predict rerun: $(cat "$T/p.err")"; fi
    else bad "predict: $(cat "$T/p.err")"; fi
else bad "no checkpoint: $(tail -3 "$T/train.log")"; fi

echo "test_segeval_integrity: $fails failure(s)"
[ $fails -eq 0 ]
