#!/usr/bin/env bash
# make bench, "recipe": how fast segtrain's defaults learn, side by side with the same recipe in
# PyTorch ($SEGKIT_SHARED/peers/train_peer.py --recipe strong: tools/unet_ref.py trained over
# tools/segcache.py with BCE + soft Dice, foreground-first batches, prior head bias, poly lr).
# One held-out phantom set (synthct seed RECIPE_SEED, not a seed the defaults were tuned on),
# cached at 64x64 with the 47 structures of tests/fixtures/recipe_labels.txt (what the phantoms
# draw, less the vertebrae and ribs that no 2D recipe tells apart; RECIPE_LABELS=all keeps the
# 117), U-Net 16,32,64,128, batch 8, the same epochs and threads for both.
# Prints one JSON object: per side the validation Dice per epoch, the final and best Dice, the
# seconds to reach RECIPE_TARGET (training + validation time, loading excluded), and the ratios.
# Knobs: RECIPE_EPOCHS (16), RECIPE_SEED (21), RECIPE_SUBJECTS (12), RECIPE_TARGET (0.7),
# RECIPE_THREADS (2), RECIPE_LABELS (the fixture, or all), RECIPE_NO_PEER=1 skips PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
PY=${PYTHON:-/usr/bin/python3}
PEER=${SEGKIT_SHARED:-../shared}/peers/train_peer.py
EPOCHS=${RECIPE_EPOCHS:-16} SEED=${RECIPE_SEED:-21} SUBJ=${RECIPE_SUBJECTS:-12}
TARGET=${RECIPE_TARGET:-0.7} THREADS=${RECIPE_THREADS:-2}
FEATURES=16,32,64,128
LABELS=${RECIPE_LABELS:-tests/fixtures/recipe_labels.txt}
LABEL_ARGS=(); [ "$LABELS" = all ] || LABEL_ARGS=(--labels "$LABELS")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
echo "bench recipe: phantom set seed $SEED, $SUBJ subjects -> 64x64 cache" >&2
"$BIN/synthct" --subjects "$SUBJ" --seed "$SEED" --size 128x128x48 -q "$T/ds" >/dev/null
"$BIN/segprep" "$T/ds" "$T/cache" --size 64 "${LABEL_ARGS[@]}" -q
echo "bench recipe: segtrain defaults, $EPOCHS epochs ..." >&2
t0=$(date +%s%N)
"$BIN/segtrain" "$T/cache" --out "$T/run" --epochs "$EPOCHS" --features "$FEATURES" --threads "$THREADS" -q 2>"$T/seg.log" \
    || { cat "$T/seg.log" >&2; exit 1; }
seg_wall=$(( ($(date +%s%N) - t0) / 1000000 ))
have_peer=0
if [ "${RECIPE_NO_PEER:-0}" != 1 ] && [ -f "$PEER" ] && "$PY" -c "import torch" 2>/dev/null; then
    LR=$("$PY" -c "import json; print(json.load(open('$T/run/training_history.json'))['epochs'][0]['lr'])")
    echo "bench recipe: PyTorch peer (strong recipe, lr $LR), $EPOCHS epochs ..." >&2
    "$PY" "$PEER" "$T/cache" --project . --recipe strong --epochs "$EPOCHS" --batch 8 --lr "$LR" --features "$FEATURES" \
        --threads "$THREADS" --target "$TARGET" >"$T/peer.jsonl" 2>"$T/peer.log" && have_peer=1 || cat "$T/peer.log" >&2
else
    echo "bench recipe: the PyTorch peer ($PEER) or torch is missing: segtrain alone" >&2
fi
"$PY" - "$T/run/training_history.json" "$T/peer.jsonl" "$have_peer" "$TARGET" "$seg_wall" "$SEED" "$EPOCHS" "$LABELS" <<'PYEOF'
import json, sys
hist, peer, have_peer, target, seg_wall, seed, epochs, labels = sys.argv[1:]
target = float(target)
h = json.load(open(hist))
t, seg_curve, seg_t = 0.0, [], None
for e in h["epochs"]:
    t += e["seconds"]
    d = e["val_dice"]
    seg_curve.append(None if d is None else round(d, 4))
    if seg_t is None and d is not None and d >= target:
        seg_t = round(t, 2)
dices = [d for d in seg_curve if d is not None]
out = {"data": {"synthct_seed": int(seed), "size": 64, "features": [16, 32, 64, 128], "epochs": int(epochs),
                "target": target, "structures": len(h["structures"]), "labels": labels},
       "segtrain": {"val_dice": seg_curve, "final_val_dice": dices[-1] if dices else None,
                    "best_val_dice": max(dices) if dices else None, "seconds_to_target": seg_t,
                    "train_val_s": round(t, 2), "wall_s": round(int(seg_wall) / 1000, 2)}}
if have_peer == "1":
    lines = [json.loads(l) for l in open(peer) if l.strip()]
    ep = [l for l in lines if "epoch" in l]
    summ = [l for l in lines if "seconds_to_target" in l][-1]
    pc = [round(l["val_dice"], 4) for l in ep]
    out["torch_peer"] = {"val_dice": pc, "final_val_dice": pc[-1], "best_val_dice": max(pc),
                         "seconds_to_target": summ["seconds_to_target"], "train_val_s": summ["train_s"]}
    s, p = out["segtrain"], out["torch_peer"]
    out["ratios"] = {
        "time_to_target_speedup": round(p["seconds_to_target"] / s["seconds_to_target"], 2)
        if s["seconds_to_target"] and p["seconds_to_target"] else None,
        "time_to_target_note": None if s["seconds_to_target"] else "segtrain did not reach the target",
        "epoch_time_speedup": round(p["train_val_s"] / s["train_val_s"], 2),
        "final_dice_delta": round(s["final_val_dice"] - p["final_val_dice"], 4),
    }
    if s["seconds_to_target"] and not p["seconds_to_target"]:
        out["ratios"]["time_to_target_note"] = "PyTorch did not reach the target in %s epochs (%.0f s)" % (epochs, p["train_val_s"])
        out["ratios"]["time_to_target_speedup_at_least"] = round(p["train_val_s"] / s["seconds_to_target"], 2)
print(json.dumps(out))
PYEOF
