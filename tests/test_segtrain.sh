#!/usr/bin/env bash
# segtrain end to end on the real example CT ($SEGKIT_SHARED/data/totalseg-example), cached
# at 64x64 with a small U-Net (features 8,16,32,64), single-threaded:
#  1. CLI: --help/-V exit 0, usage errors exit 2.
#  2. 32 steps on the one training subject with the seed recipe (BCE, uniform batches, constant
#     lr 1e-2): the "no validation" note appears once, the loss falls clearly, every run file
#     is written (history JSON, PNG, checkpoints).
#  3. Exact resume: with the seed recipe 4 epochs straight == 1 epoch + resume to 4 (the
#     recipe options come back from the checkpoint); with the defaults (bce+dice, balanced,
#     poly) 4 epochs straight == killed (-9) after epoch 2 + resume: identical tensors in the
#     weights and the Adam state, bit for bit. The defaults' history has the loss name and the
#     poly lr per epoch, and head.bias starts at the log prior of the train split.
#  4. A second subject as the val split: val loss/Dice and per-structure Dice in the
#     history, best.safetensors follows the val Dice (ties by val loss), the plateau schedule
#     cuts the lr; the zero-Dice warning of an untrained model; early stop.
#  5. Refusals with clear messages: existing run without --resume/--force, corrupt and
#     truncated checkpoints (exit 1 naming the file), a checkpoint whose labels or slice size
#     differ from the cache, a missing state file, a size not divisible by 2^levels, a
#     cache with no training subjects, a corrupt slice record (subject and slice named).
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
SHARED=${SEGKIT_SHARED:-../shared}
PY=${PYTHON:-/usr/bin/python3}
EX=$SHARED/data/totalseg-example
[ -d "$EX/s0000/segmentations" ] || { echo "skip: the example subject is not at $EX"; exit 77; }
for p in segprep segtrain; do [ -x "$BIN/$p" ] || { echo "FAIL: $BIN/$p is not built"; exit 1; }; done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
# expect_fail NAME CODE PATTERN CMD... : exit status CODE and PATTERN (ERE) in stderr
expect_fail() {
    local name=$1 code=$2 pat=$3; shift 3
    "$@" >"$T/out.txt" 2>"$T/err.txt"
    local rc=$?
    if [ $rc -eq "$code" ] && grep -qE -- "$pat" "$T/err.txt"; then ok "$name: exit $rc: $(head -c 240 "$T/err.txt")"
    else bad "$name: exit $rc (want $code), stderr: $(head -c 400 "$T/err.txt")"; fi
}
# same_tensors A B : the two safetensors files hold the same tensor names and bytes
same_tensors() {
    "$PY" - "$1" "$2" <<'EOF'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    d = b[8 + n:]
    return {k: (v["dtype"], v["shape"], d[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in h.items()}
a, b = load(sys.argv[1]), load(sys.argv[2])
diff = [k for k in a if k not in b or a[k] != b[k]] + [k for k in b if k not in a]
print(f"{len(a)} tensors, {len(diff)} differ" + (f": {diff[:5]}" if diff else ""))
sys.exit(1 if diff or not a else 0)
EOF
}

# ---- 1. CLI ----
"$BIN/segtrain" --help >"$T/help.txt" 2>&1 && grep -q "usage:" "$T/help.txt" && grep -q -- "--lr-schedule" "$T/help.txt" \
    && ok "--help: exit 0, usage on stdout" || bad "--help"
"$BIN/segtrain" -V | grep -q "^segtrain " && ok "-V" || bad "-V"
expect_fail "unknown flag" 2 "unknown option '--bogus'" "$BIN/segtrain" "$T/cache" --out "$T/x" --bogus
expect_fail "bad number" 2 "--epochs: 'two'" "$BIN/segtrain" "$T/cache" --out "$T/x" --epochs two
expect_fail "bad features" 2 "--features" "$BIN/segtrain" "$T/cache" --out "$T/x" --features 8,x
expect_fail "no --out" 2 "--out RUN_DIR is required" "$BIN/segtrain" "$T/cache"
expect_fail "no cache" 2 "usage" "$BIN/segtrain"

# ---- caches ----
printf 'image_id;split\ns0000;train\n' >"$T/train.csv"
"$BIN/segprep" "$EX" "$T/cache" --size 64 --split "$T/train.csv" -q || { echo "FAIL: segprep"; exit 1; }
COMMON=(--features 8,16,32,64 --batch-size 4 --seed 5 --threads 1 --aug)
SEEDRECIPE=(--loss bce --sampling uniform --lr-schedule none --lr 1e-2)

# ---- 2. training lowers the loss ----
t0=$(date +%s%N)
"$BIN/segtrain" "$T/cache" --out "$T/a" --epochs 4 "${COMMON[@]}" "${SEEDRECIPE[@]}" 2>"$T/a.log"
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $rc -eq 0 ] && ok "4 epochs x 8 steps in ${ms} ms" || { bad "training run: exit $rc"; cat "$T/a.log"; }
n_note=$(grep -c "no validation subjects" "$T/a.log")
[ "$n_note" = 1 ] && ok "the 'no validation' note once" || bad "'no validation' note appears $n_note times"
[ "$(grep -c '^epoch [0-9]*/4 ' "$T/a.log")" = 4 ] && ok "one line per epoch off a TTY" || bad "epoch lines: $(cat "$T/a.log")"
"$PY" - "$T/a" <<'EOF' && ok "loss falls clearly; history and files complete" || bad "history/loss check"
import json, os, struct, sys
d = sys.argv[1]
h = json.load(open(os.path.join(d, "training_history.json")))
ep = h["epochs"]
loss = [e["train_loss"] for e in ep]
print("train loss per epoch:", ", ".join(f"{x:.4f}" for x in loss))
assert [e["epoch"] for e in ep] == [1, 2, 3, 4], ep
assert all(b < a for a, b in zip(loss, loss[1:])) and loss[-1] < 0.9 * loss[0], "loss did not fall clearly"
assert all(e["val_loss"] is None and e["val_dice"] is None for e in ep)
assert all(e["lr"] == 1e-2 and e["seconds"] > 0 and e["slices_per_s"] > 0 for e in ep)
assert h["monitor"] == "train_loss" and h["best_epoch"] == loss.index(min(loss)) + 1, h
assert h["loss"] == "bce", h["loss"]
need = ["label_map.json", "best.safetensors", "training_history.png"] + \
       [f"checkpoint_epoch{i}{s}.safetensors" for i in range(1, 5) for s in ("", ".state")]
missing = [f for f in need if not os.path.isfile(os.path.join(d, f))]
assert not missing, missing
assert not [f for f in os.listdir(d) if ".tmp." in f], "temp files left"
png = open(os.path.join(d, "training_history.png"), "rb").read(32)
assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1400, 560), png[:24]
lm = json.load(open(os.path.join(d, "label_map.json")))
assert len(lm) == 117 and lm["spleen"] == 0 and lm["costal_cartilages"] == 116
b = open(os.path.join(d, "best.safetensors"), "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
assert int(meta["epoch"]) == h["best_epoch"] and json.loads(meta["config"])["features"] == [8, 16, 32, 64], meta
EOF

# ---- 3. exact resume ----
"$BIN/segtrain" "$T/cache" --out "$T/b" --epochs 1 "${COMMON[@]}" "${SEEDRECIPE[@]}" -q 2>"$T/b.log" &&
"$BIN/segtrain" "$T/cache" --resume "$T/b/checkpoint_epoch1.safetensors" --epochs 4 -q 2>>"$T/b.log"
[ $? -eq 0 ] && ok "1 epoch, then --resume to 4 (options from the checkpoint)" || { bad "resume run"; cat "$T/b.log"; }
for f in checkpoint_epoch4.safetensors checkpoint_epoch4.state.safetensors; do
    same_tensors "$T/a/$f" "$T/b/$f" >"$T/cmp.txt" && ok "1+3 epochs == 4 straight: $f ($(cat "$T/cmp.txt"))" || bad "resume differs: $f: $(cat "$T/cmp.txt")"
done
# the defaults, straight: loss name, poly lr, head bias at the log prior
"$BIN/segtrain" "$T/cache" --out "$T/d" --epochs 4 "${COMMON[@]}" -v 2>"$T/d.log" || { bad "defaults run"; cat "$T/d.log"; }
grep -q "bce+dice loss, balanced batches" "$T/d.log" && grep -q "head bias at the log prior" "$T/d.log" \
    && ok "defaults: bce+dice, balanced batches, head bias at the log prior (stderr says so)" || bad "defaults log: $(cat "$T/d.log")"
"$BIN/segtrain" "$T/cache" --out "$T/d0" --epochs 1 --lr 1e-12 --lr-schedule none "${COMMON[@]}" -q 2>/dev/null || bad "lr 1e-12 run"
"$PY" - "$T/d" "$T/d0" "$T/cache" <<'EOF' && ok "defaults: poly lr from 3e-3 per epoch; head.bias = log prior of the train split" || bad "defaults history/bias"
import json, os, struct, sys
sys.path.insert(0, "tools")
import numpy as np, segcache
d, d0, cache = sys.argv[1:]
h = json.load(open(os.path.join(d, "training_history.json")))
lrs = [e["lr"] for e in h["epochs"]]
want = [3e-3 * (1 - 8 * i / 32) ** 0.9 for i in range(4)]   # 30 slices, batch 4: 8 steps an epoch
print("lr per epoch", lrs, "want", want)
assert h["loss"] == "bce+dice" and all(abs(a - b) < 1e-12 for a, b in zip(lrs, want)), (h["loss"], lrs)
# head.bias of a run whose lr is 1e-12 is its initial value: log(p/(1-p)) of the train split's
# foreground fraction per structure, p clamped to [1e-6, 0.5]
b = open(os.path.join(d0, "checkpoint_epoch1.safetensors"), "rb").read()
n = struct.unpack("<Q", b[:8])[0]
t = json.loads(b[8:8 + n])["head.bias"]
bias = np.frombuffer(b[8 + n + t["data_offsets"][0]:8 + n + t["data_offsets"][1]], dtype=np.float32)
c = segcache.SegCache(cache)
fg = np.zeros(c.n_channels)
ns = 0
for s in c.subjects():
    if s["split"] != "train":
        continue
    for z in range(s["n_slices"]):
        fg += c.slice(s["id"], z)[1].reshape(c.n_channels, -1).sum(1)
        ns += 1
p = np.clip(fg / (ns * c.size * c.size), 1e-6, 0.5)
err = np.abs(bias - np.log(p / (1 - p))).max()
print(f"head.bias vs log prior over {ns} slices: max error {err:.2e}; {int((fg > 0).sum())} structures present")
assert err < 1e-4
EOF
# a killed run: SIGKILL once epoch 2 is on disk, resume from it
"$BIN/segtrain" "$T/cache" --out "$T/c" --epochs 4 "${COMMON[@]}" -q 2>"$T/c.log" &
pid=$!
for _ in $(seq 1 600); do [ -f "$T/c/checkpoint_epoch2.safetensors" ] && break; sleep 0.01; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
rm -f "$T/c/checkpoint_epoch3"* "$T/c/checkpoint_epoch4"*
"$BIN/segtrain" "$T/cache" --resume "$T/c/checkpoint_epoch2.safetensors" --epochs 4 -q 2>>"$T/c.log" \
    && same_tensors "$T/d/checkpoint_epoch4.safetensors" "$T/c/checkpoint_epoch4.safetensors" >"$T/cmp.txt" \
    && same_tensors "$T/d/checkpoint_epoch4.state.safetensors" "$T/c/checkpoint_epoch4.state.safetensors" >>"$T/cmp.txt" \
    && ok "defaults: killed after epoch 2 + resume == unbroken ($(cat "$T/cmp.txt"))" || bad "kill/resume: $(cat "$T/cmp.txt" "$T/c.log")"
expect_fail "nothing left to do" 0 "nothing to do" "$BIN/segtrain" "$T/cache" --resume "$T/a/checkpoint_epoch4.safetensors" --epochs 4

# ---- 4. with a validation split ----
mkdir -p "$T/ds2"
ln -s "$(cd "$EX/s0000" && pwd)" "$T/ds2/s0000"
ln -s "$(cd "$EX/s0000" && pwd)" "$T/ds2/s0001"
printf 'image_id;split\ns0000;train\ns0001;val\n' >"$T/ds2/meta.csv"
"$BIN/segprep" "$T/ds2" "$T/cache2" --size 64 -q || bad "segprep with a val subject"
"$BIN/segtrain" "$T/cache2" --out "$T/v" --epochs 6 --val-every 2 --lr-schedule plateau --plateau-patience 0 \
    --plateau-factor 0.5 --limit-slices 16 --lr 1e-2 "${COMMON[@]}" 2>"$T/v.log" || { bad "training with val"; cat "$T/v.log"; }
grep -q "no validation" "$T/v.log" && bad "no-validation note with a val split" || true
"$PY" - "$T/v" <<'EOF' && ok "val every 2 epochs: val loss and Dice recorded, best follows val Dice, plateau lr cuts" || bad "val history: $(cat "$T/v.log")"
import json, os, struct, sys
d = sys.argv[1]
h = json.load(open(os.path.join(d, "training_history.json")))
ep = h["epochs"]
for e in ep:
    print(e["epoch"], e["train_loss"], e["val_loss"], e["val_dice"], e["val_structures"], e["lr"])
assert h["monitor"] == "val_dice"
assert [e["val_dice"] is not None for e in ep] == [False, True] * 3
v = [e for e in ep if e["val_dice"] is not None]
assert all(0 <= e["val_dice"] <= 1 and e["val_structures"] > 10 and e["val_loss"] > 0 for e in v)
best = max(v, key=lambda e: (e["val_dice"], -e["val_loss"]))   # ties (and all zero): lower val loss
per = [e for e in ep if e.get("val_dice_per_structure")]
assert [e["epoch"] for e in per] == [e["epoch"] for e in v] and len(h["structures"]) == 117, [e["epoch"] for e in per]
for e in per:
    ds = e["val_dice_per_structure"]
    assert len(ds) == e["val_structures"] and all(k in h["structures"] and 0 <= x <= 1 for k, x in ds.items())
    assert abs(sum(ds.values()) / len(ds) - e["val_dice"]) < 1e-5, "mean of the per-structure Dice is the val Dice"
assert h["best_epoch"] == best["epoch"], (h["best_epoch"], best)
b = open(os.path.join(d, "best.safetensors"), "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
assert int(meta["epoch"]) == best["epoch"]
# plateau, patience 0: after each validation that does not beat the best so far the lr
# halves for the next epoch (the last cut shows in the saved state), else it stays
s = open(os.path.join(d, "checkpoint_epoch6.state.safetensors"), "rb").read()
state = json.loads(json.loads(s[8:8 + struct.unpack("<Q", s[:8])[0]])["__metadata__"]["train_state"])
lrs = [e["lr"] for e in ep] + [state["lr"]]
top, cuts = -1.0, 0
for i, e in enumerate(ep):
    want = lrs[i]
    if e["val_dice"] is not None:
        if e["val_dice"] <= top:
            want, cuts = lrs[i] * 0.5, cuts + 1
        top = max(top, e["val_dice"])
    assert lrs[i + 1] == want, (i, lrs)
assert lrs[0] == 1e-2
print("lr per epoch and after:", lrs, "cuts:", cuts)
EOF

# an untrained model (lr 1e-12, head at the priors) predicts nothing: said once, after 3 validations
"$BIN/segtrain" "$T/cache2" --out "$T/z" --epochs 4 --lr 1e-12 --lr-schedule none --limit-slices 8 "${COMMON[@]}" 2>"$T/z.log"
[ "$(grep -c "validation Dice has been 0 for 3 validations" "$T/z.log")" = 1 ] \
    && ok "zero-Dice warning once: $(grep -o "warning: validation Dice.*yet" "$T/z.log")" || bad "zero-Dice warning: $(cat "$T/z.log")"
"$PY" - "$T/z" <<'EOF' && ok "all-zero Dice: best epoch by the lowest val loss" || bad "all-zero Dice best epoch"
import json, os, sys
h = json.load(open(os.path.join(sys.argv[1], "training_history.json")))
ep = h["epochs"]
assert all(e["val_dice"] == 0 for e in ep), [e["val_dice"] for e in ep]
assert h["best_epoch"] == min(ep, key=lambda e: (e["val_loss"], e["epoch"]))["epoch"], h["best_epoch"]
EOF

# early stop: with a vanishing lr the monitored train loss only wobbles, so it stops early
"$BIN/segtrain" "$T/cache" --out "$T/e" --epochs 12 --early-stop 1 --clip-grad 0.5 --features 8,16,32,64 --batch-size 4 \
    --lr 1e-12 --seed 5 --threads 1 --limit-slices 12 2>"$T/e.log"
n_ep=$(grep -c '^epoch ' "$T/e.log")
grep -q "early stop: no improvement of train_loss in 1 epochs" "$T/e.log" && [ "$n_ep" -lt 12 ] && [ -f "$T/e/checkpoint_epoch$n_ep.safetensors" ] \
    && ok "--early-stop 1 stopped after $n_ep epochs (--clip-grad on)" || bad "early stop: $(cat "$T/e.log")"

# ---- 5. refusals ----
expect_fail "existing run" 1 "already holds a run.*--resume.*--force" "$BIN/segtrain" "$T/cache" --out "$T/a" --epochs 1 "${COMMON[@]}"
"$BIN/segtrain" "$T/cache" --out "$T/a" --epochs 1 --force "${COMMON[@]}" -q 2>/dev/null && [ ! -f "$T/a/checkpoint_epoch4.safetensors" ] \
    && ok "--force starts over (old checkpoints removed)" || bad "--force"
cp "$T/b/checkpoint_epoch1.safetensors" "$T/trunc.safetensors"
cp "$T/b/checkpoint_epoch1.state.safetensors" "$T/trunc.state.safetensors"
truncate -s $(( $(stat -c %s "$T/trunc.safetensors") / 2 )) "$T/trunc.safetensors"
expect_fail "truncated checkpoint" 1 "trunc.safetensors.*(truncated|beyond)" "$BIN/segtrain" "$T/cache" --resume "$T/trunc.safetensors" --out "$T/r1"
cp "$T/b/checkpoint_epoch1.safetensors" "$T/garbled.safetensors"
cp "$T/b/checkpoint_epoch1.state.safetensors" "$T/garbled.state.safetensors"
printf '\x00\xff{{{{' | dd of="$T/garbled.safetensors" bs=1 seek=8 conv=notrunc 2>/dev/null
expect_fail "garbled header" 1 "garbled.safetensors" "$BIN/segtrain" "$T/cache" --resume "$T/garbled.safetensors" --out "$T/r2"
printf 'not a checkpoint at all' >"$T/text.safetensors"
expect_fail "not a checkpoint" 1 "text.safetensors" "$BIN/segtrain" "$T/cache" --resume "$T/text.safetensors" --out "$T/r3"
cp "$T/b/checkpoint_epoch1.safetensors" "$T/nostate.safetensors"
expect_fail "missing state file" 1 "nostate.state.safetensors" "$BIN/segtrain" "$T/cache" --resume "$T/nostate.safetensors" --out "$T/r4"
cp "$T/b/checkpoint_epoch1.safetensors" "$T/mixed.safetensors"
cp "$T/b/checkpoint_epoch2.state.safetensors" "$T/mixed.state.safetensors"
expect_fail "state from another save" 1 "another save" "$BIN/segtrain" "$T/cache" --resume "$T/mixed.safetensors" --out "$T/r5"
printf 'liver\nspleen\nkidney_left\nkidney_right\n' >"$T/labels4.txt"
"$BIN/segprep" "$EX" "$T/cache4" --size 64 --split "$T/train.csv" --labels "$T/labels4.txt" -q || bad "segprep --labels"
expect_fail "label mismatch" 1 "labels differ \(117 structures vs 4\)" "$BIN/segtrain" "$T/cache4" --resume "$T/b/checkpoint_epoch1.safetensors" --out "$T/r6"
"$BIN/segprep" "$EX" "$T/cache32" --size 32 --split "$T/train.csv" -q || bad "segprep --size 32"
expect_fail "size mismatch" 1 "trained on 64x64 slices" "$BIN/segtrain" "$T/cache32" --resume "$T/b/checkpoint_epoch1.safetensors" --out "$T/r7"
"$BIN/segprep" "$EX" "$T/cache40" --size 40 --split "$T/train.csv" -q || bad "segprep --size 40"
expect_fail "size not divisible" 1 "size 40 does not divide by 2\^4 = 16" "$BIN/segtrain" "$T/cache40" --out "$T/r8" "${COMMON[@]}" -q
printf 'image_id;split\ns0000;val\n' >"$T/val.csv"
"$BIN/segprep" "$EX" "$T/cachev" --size 32 --split "$T/val.csv" -q
expect_fail "no training subjects" 1 "no training subjects" "$BIN/segtrain" "$T/cachev" --out "$T/r9" "${COMMON[@]}" -q
cp -r "$T/cache" "$T/cachebad"
"$PY" - "$T/cachebad/data.mdb" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
frames = [i for i in range(len(b) - 4) if b[i:i + 4] == b"\x28\xb5\x2f\xfd"]   # zstd frames inside slice records
i = frames[len(frames) // 2] + 40
b[i:i + 4] = bytes(x ^ 0xFF for x in b[i:i + 4])
open(p, "wb").write(b)
EOF
expect_fail "corrupt cache record" 1 "cachebad.*subject s0000 slice [0-9]+: checksum" "$BIN/segtrain" "$T/cachebad" --out "$T/r11" "${COMMON[@]}" -q
expect_fail "missing cache" 1 "no such cache directory" "$BIN/segtrain" "$T/nope" --out "$T/r10"

echo "$fails failed"
[ $fails -eq 0 ]
