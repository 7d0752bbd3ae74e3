#!/usr/bin/env bash
# The phantom demo that `make demo` runs after building: synthetic dataset -> slice cache ->
# short training run -> evaluation on the test split. Everything lands under demo/.
# Rerunning regenerates the same data (fixed seed) and redoes the cache, training and report.
# A program that is not built yet ends the demo after the last step that could run.
# Knobs (environment): DEMO_SUBJECTS (20), DEMO_SEED (7), DEMO_SIZE (128x128x48),
# DEMO_CACHE_SIZE (64, the slice side), DEMO_EPOCHS (30), DEMO_BATCH (8),
# DEMO_TRAIN_ARGS (segtrain options; default a half-width U-Net and the last 2 checkpoints
# kept: everything else is segtrain's default recipe), BIN (bin).
# The defaults keep the whole demo under 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${BIN:-bin}"
SUBJECTS="${DEMO_SUBJECTS:-20}"
SEED="${DEMO_SEED:-7}"
SIZE="${DEMO_SIZE:-128x128x48}"
EPOCHS="${DEMO_EPOCHS:-30}"
CACHE_SIZE="${DEMO_CACHE_SIZE:-64}"
BATCH="${DEMO_BATCH:-8}"
read -r -a TRAIN_ARGS <<< "${DEMO_TRAIN_ARGS:---features 16,32,64,128 --keep-last 2}"
DATA=demo/data CACHE=demo/cache RUN=demo/out/run REPORT=demo/out/report
T0=$(date +%s)

step() { printf '\n== demo: %s\n' "$*"; }
elapsed() { echo "demo: $1 took $(( $(date +%s) - $2 )) s"; }
missing() {
    printf '\ndemo: %s is not built (run make); stopping after the last step that could run.\n' "$1"
    where
    exit 0
}
where() {
    echo
    echo "demo: finished in $(( $(date +%s) - T0 )) s. Where to look:"
    [ -d "$DATA" ]   && echo "  $DATA/            phantom CTs + 117 masks per subject, meta.csv (synthct)"
    [ -d "$CACHE" ]  && echo "  $CACHE/           slice cache (bin/segprep stat $CACHE)"
    [ -d "$RUN" ]    && echo "  $RUN/         checkpoints and training history: $(cd "$RUN" && ls | tr '\n' ' ')"
    [ -d "$REPORT" ] && echo "  $REPORT/      metrics and report: $(cd "$REPORT" && ls | tr '\n' ' ')"
    return 0
}

[ -x "$BIN/synthct" ] || missing "$BIN/synthct"
step "1. synthetic phantom dataset: $SUBJECTS subjects of ~$SIZE, seed $SEED -> $DATA"
t=$(date +%s)
"$BIN/synthct" --subjects "$SUBJECTS" --seed "$SEED" --size "$SIZE" "$DATA"
elapsed "synthct" "$t"

[ -x "$BIN/segprep" ] || missing "$BIN/segprep"
step "2. slice cache: $DATA -> $CACHE"
t=$(date +%s)
rm -rf "$CACHE"
"$BIN/segprep" "$DATA" "$CACHE" --size "$CACHE_SIZE"
elapsed "segprep" "$t"

[ -x "$BIN/segtrain" ] || missing "$BIN/segtrain"
step "3. training: $EPOCHS epochs, batch $BATCH -> $RUN"
t=$(date +%s)
rm -rf "$RUN"
mkdir -p demo/out
"$BIN/segtrain" "$CACHE" --out "$RUN" --epochs "$EPOCHS" --batch-size "$BATCH" ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}
elapsed "segtrain" "$t"
# show the learning curve: validation Dice per epoch from the history
python3 - "$RUN/training_history.json" <<'PYEOF' 2>/dev/null || true
import json, sys
h = json.load(open(sys.argv[1]))
eps = h["epochs"] if isinstance(h, dict) and "epochs" in h else h
d = [e.get("val_dice") for e in eps]
if any(x is not None for x in d):
    print("demo: validation Dice by epoch: " + " ".join("-" if x is None else f"{x:.3f}" for x in d))
PYEOF

[ -x "$BIN/segeval" ] || missing "$BIN/segeval"
step "4. evaluation on the test split -> $REPORT"
t=$(date +%s)
rm -rf "$REPORT"
"$BIN/segeval" "$RUN/best.safetensors" "$CACHE" --out "$REPORT" --split test | tee demo/out/segeval.txt
elapsed "segeval" "$t"

where
dice=$(sed -n 's/.*: Dice \([0-9.]*\) (mean over \([0-9]*\) pairs.*/\1 (mean over \2 subject-structure pairs with a reference)/p' demo/out/segeval.txt)
[ -n "$dice" ] && echo "demo: the model's Dice on the held-out test subject(s): $dice (segtrain defaults, $EPOCHS epochs)"
true
