#!/usr/bin/env bash
# segtrain learns with its defaults, on a phantom set it was not tuned on: synthct seed
# LEARN_SEED (5; the defaults were chosen on seed 11 and checked on 21 and 33, the demo uses 7),
# 16 subjects of ~128x128x48, cached at 64x64, a small U-Net (8,16,32,64), 2 threads (~90 s).
#  1. The defaults (bce+dice, balanced batches, head bias at the prior, lr 3e-3 poly) reach a
#     best validation Dice of at least LEARN_BOUND (0.30) within LEARN_EPOCHS (20) epochs, and
#     best.safetensors is the epoch with that Dice.
#  2. The seed pipeline's lr (--lr 1e-3, everything else default) still learns: best
#     validation Dice at least LEARN_BOUND_1E3 (0.15) in the same epochs.
#  3. LEARN_CONTRAST=1 also prints (not asserted) the old recipe: BCE, uniform batches,
#     constant lr 1e-3 (the head still starts at the prior).
# Skipped (exit 77) under the sanitizer build, where these few minutes of training become an
# hour; the loss and sampler are covered there by test_nn, test_unet and test_loader.
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
PY=${PYTHON:-/usr/bin/python3}
SEED=${LEARN_SEED:-5} EPOCHS=${LEARN_EPOCHS:-20} BOUND=${LEARN_BOUND:-0.30} BOUND3=${LEARN_BOUND_1E3:-0.15}
case "$BIN" in *asan*) echo "skip: learning runs take too long under the sanitizers ($BIN)"; exit 77;; esac
for p in synthct segprep segtrain; do [ -x "$BIN/$p" ] || { echo "FAIL: $BIN/$p is not built"; exit 1; }; done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

"$BIN/synthct" --subjects 16 --seed "$SEED" --size 128x128x48 -q "$T/ds" >/dev/null || { echo "FAIL: synthct"; exit 1; }
"$BIN/segprep" "$T/ds" "$T/cache" --size 64 -q || { echo "FAIL: segprep"; exit 1; }
ARGS=(--epochs "$EPOCHS" --features 8,16,32,64 --threads 2 --no-progress -q)

# curve RUN: prints the val Dice per epoch; exits 0 when the best is >= BOUND and is best_epoch
curve() {
    "$PY" - "$1" "$2" <<'EOF'
import json, os, struct, sys
d, bound = sys.argv[1], float(sys.argv[2])
h = json.load(open(os.path.join(d, "training_history.json")))
dice = [e["val_dice"] for e in h["epochs"]]
best = max(range(len(dice)), key=lambda i: dice[i])
print(f"val Dice by epoch: {' '.join(f'{x:.3f}' for x in dice)}; best {dice[best]:.3f} (epoch {best + 1}, "
      f"{h['epochs'][0]['val_structures']} structures), {sum(e['seconds'] for e in h['epochs']):.1f} s")
b = open(os.path.join(d, "best.safetensors"), "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
assert int(meta["epoch"]) == h["best_epoch"] == best + 1, (meta["epoch"], h["best_epoch"], best + 1)
sys.exit(0 if dice[best] >= bound else 1)
EOF
}

"$BIN/segtrain" "$T/cache" --out "$T/def" "${ARGS[@]}" 2>"$T/def.log" || { bad "defaults run: $(cat "$T/def.log")"; }
msg=$(curve "$T/def" "$BOUND") && ok "defaults learn (bound $BOUND): $msg" || bad "defaults, best val Dice below $BOUND: $msg"

"$BIN/segtrain" "$T/cache" --out "$T/lr3" --lr 1e-3 "${ARGS[@]}" 2>"$T/lr3.log" || { bad "--lr 1e-3 run: $(cat "$T/lr3.log")"; }
msg=$(curve "$T/lr3" "$BOUND3") && ok "--lr 1e-3 with the other defaults learns (bound $BOUND3): $msg" \
    || bad "--lr 1e-3, best val Dice below $BOUND3: $msg"

if [ "${LEARN_CONTRAST:-0}" = 1 ]; then
    "$BIN/segtrain" "$T/cache" --out "$T/old" --lr 1e-3 --loss bce --sampling uniform --lr-schedule none "${ARGS[@]}" 2>"$T/old.log" \
        && echo "note: the old recipe (BCE, uniform, constant 1e-3), not asserted: $(curve "$T/old" 0)"
fi
echo "$fails failed"
[ $fails -eq 0 ]
