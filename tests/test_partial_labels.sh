#!/usr/bin/env bash
# Partly labelled subjects (issue 13, item 4) through segprep -> segtrain -> segeval, on a small
# synthct phantom set in which two subjects lose mask files (as a CTA with only its vessels):
#  1. segprep refuses such a subject by default, listing every missing name once; with
#     --missing-masks empty it caches it with its labelled channels (segprep stat, and
#     tools/segcache.py's labelled()), in a version-2 cache; a version-1 cache is still read
#     and refuses a partly labelled subject clearly.
#  2. The unlabelled channels are never counted as negatives: the training loss of one batch
#     (lr 1e-12, so the epoch-1 checkpoint is the initial model) equals a numpy reference of
#     the masked BCE + soft Dice over the model's logits (segtrain forward), and differs from
#     the unmasked one; the head prior counts only the subjects where a channel is labelled.
#  3. segeval eval scores only labelled pairs: the unlabelled ones are case "unlabelled" in
#     the CSV and left out of every mean and count.
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
PY=${PYTHON:-/usr/bin/python3}
for p in synthct segprep segtrain segeval; do [ -x "$BIN/$p" ] || { echo "FAIL: $BIN/$p is not built"; exit 1; }; done
"$PY" -c "import numpy, lmdb, zstandard" 2>/dev/null || { echo "skip: numpy/lmdb/zstandard missing for $PY"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

"$BIN/synthct" --subjects 6 --seed 3 --size 64x64x12 -q "$T/ds" >/dev/null || { echo "FAIL: synthct"; exit 1; }
printf 'image_id;split\ns0000;train\ns0001;train\ns0002;train\ns0003;val\ns0004;val\ns0005;test\n' >"$T/ds/meta.csv"
# s0001 (train) keeps only 6 structures; s0004 (val) loses liver and spleen
KEEP="liver spleen kidney_left kidney_right aorta heart"
for f in "$T/ds/s0001/segmentations/"*.nii.gz; do
    n=$(basename "$f" .nii.gz)
    case " $KEEP " in *" $n "*) ;; *) rm "$f";; esac
done
rm "$T/ds/s0004/segmentations/liver.nii.gz" "$T/ds/s0004/segmentations/spleen.nii.gz"

# ---- 1. segprep ----
"$BIN/segprep" "$T/ds" "$T/c0" --size 32 --threads 1 2>"$T/p0.log"
rc=$?
n_list=$(grep -c "mask files missing" "$T/p0.log")
[ $rc -eq 2 ] && [ "$n_list" = 2 ] && grep -q "s0001/segmentations: 111 of 117 mask files missing:.* pancreas" "$T/p0.log" \
    && grep -q "s0004/segmentations: 2 of 117 mask files missing: spleen liver" "$T/p0.log" \
    && ok "default: both subjects fail (exit 2), every missing name listed once per subject" || bad "default refusal: rc $rc: $(cat "$T/p0.log")"
"$BIN/segprep" "$T/ds" "$T/c" --size 32 --threads 1 --missing-masks empty 2>"$T/p1.log" \
    && grep -q "6 written (2 partly labelled)" "$T/p1.log" && ok "--missing-masks empty: $(grep -o '6 written (2 partly labelled)' "$T/p1.log")" \
    || bad "--missing-masks empty: $(cat "$T/p1.log")"
"$BIN/segprep" "$T/ds" "$T/c" --missing-masks maybe 2>/dev/null; [ $? -eq 2 ] && ok "--missing-masks maybe: usage error" || bad "--missing-masks maybe accepted"
"$BIN/segprep" stat "$T/c" >"$T/stat.json" 2>&1
"$PY" - "$T/stat.json" "$T/c" <<'EOF' && ok "stat and segcache.py: version 2, the labelled structures of s0001 and s0004" || bad "stat/segcache: $(cat "$T/stat.json")"
import json, sys
sys.path.insert(0, "tools")
import segcache
st = json.load(open(sys.argv[1]))
assert st["format_version"] == 2, st["format_version"]
pl = st["partly_labelled"]
assert sorted(pl) == ["s0001", "s0004"], pl
assert sorted(pl["s0001"]) == sorted("liver spleen kidney_left kidney_right aorta heart".split()), pl["s0001"]
assert len(pl["s0004"]) == 115 and "liver" not in pl["s0004"] and "spleen" not in pl["s0004"]
c = segcache.SegCache(sys.argv[2])
lab = c.labelled("s0001")
assert lab.sum() == 6 and lab[c.labels.index("aorta")] and not lab[c.labels.index("pancreas")]
assert c.labelled("s0000").all()
EOF
# a version-1 cache (what segkit wrote before) stays readable, and refuses a partly labelled subject
"$PY" - "$T/c" "$T/v1" <<'EOF' || bad "making a version-1 copy"
import json, lmdb, shutil, sys
src, dst = sys.argv[1:]
shutil.copytree(src, dst)
env = lmdb.open(dst, max_dbs=8)
meta, subj = env.open_db(b"meta"), env.open_db(b"subjects")
with env.begin(write=True) as t:
    f = json.loads(t.get(b"format", db=meta)); f["version"] = 1
    t.put(b"format", json.dumps(f).encode(), db=meta)
    for k, v in list(t.cursor(db=subj)):
        s = json.loads(v)
        if "labelled" in s:
            t.delete(k, db=subj)
EOF
"$BIN/segprep" stat "$T/v1" 2>&1 | grep -qE '"format_version":[[:space:]]*1,' && ok "a version-1 cache is read" || bad "version-1 cache not read"
"$BIN/segprep" "$T/ds" "$T/v1" --size 32 --threads 1 --missing-masks empty 2>"$T/p2.log"
grep -q "needs a version-2 cache; this cache is version 1: rebuild it with segprep --force" "$T/p2.log" \
    && ok "a partly labelled subject into a version-1 cache: refused clearly" || bad "version-1 append: $(cat "$T/p2.log")"

# ---- 2. training: the masked loss ----
"$BIN/segtrain" "$T/c" --out "$T/r" --epochs 1 --batch-size 64 --lr 1e-12 --lr-schedule none --sampling uniform \
    --features 4,8 --threads 1 -q 2>"$T/t.log" || bad "segtrain: $(cat "$T/t.log")"
"$PY" - "$T/c" "$T/r" "$BIN/segtrain" "$T" <<'EOF' && ok "train loss = masked BCE + soft Dice reference (numpy), not the unmasked one; prior over labelled subjects" || bad "masked loss check"
import json, os, struct, subprocess, sys
sys.path.insert(0, "tools")
import numpy as np, segcache
cache, run, segtrain, tmp = sys.argv[1:]
c = segcache.SegCache(cache)
xs, ys, labs = [], [], []
for s in c.subjects():
    if s["split"] != "train":
        continue
    lab = c.labelled(s["id"])
    for z in range(s["n_slices"]):
        img, m, _ = c.slice(s["id"], z)
        xs.append(np.clip(img.astype(np.float32), -1000, 1000)[None] / 1000.0)
        ys.append(m.astype(np.float64))
        labs.append(lab)
x, y, L = np.stack(xs).astype(np.float32), np.stack(ys), np.stack(labs)
assert len(x) <= 64, "one batch"
def st_write(path, name, a):
    h = json.dumps({name: {"dtype": "F32", "shape": list(a.shape), "data_offsets": [0, a.nbytes]}}).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + a.astype("<f4").tobytes())
def st_read(path, name):
    b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])[name]
    o = h["data_offsets"]
    return np.frombuffer(b[8 + n + o[0]:8 + n + o[1]], dtype="<f4").reshape(h["shape"]).astype(np.float64)
st_write(os.path.join(tmp, "x.safetensors"), "x", x)
r = subprocess.run([segtrain, "forward", os.path.join(run, "checkpoint_epoch1.safetensors"), os.path.join(tmp, "x.safetensors"),
                    os.path.join(tmp, "lg.safetensors"), "--train-mode", "--threads", "1"], capture_output=True, text=True)
assert r.returncode == 0, r.stderr
z = st_read(os.path.join(tmp, "lg.safetensors"), "logits")
def loss(z, y, L):
    Lm = np.broadcast_to(L[:, :, None, None], z.shape)
    bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    b = bce[Lm].sum() / Lm.sum()
    p = 1 / (1 + np.exp(-z))
    inter = (p * y * Lm).sum((0, 2, 3)); P = (p * Lm).sum((0, 2, 3)); Y = (y * Lm).sum((0, 2, 3))
    S = Y > 0
    return b + (1 - ((2 * inter[S] + 1e-5) / (P[S] + Y[S] + 1e-5)).mean())
h = json.load(open(os.path.join(run, "training_history.json")))
got = h["epochs"][0]["train_loss"]
want, unmasked = loss(z, y, L), loss(z, y, np.ones_like(L))
print(f"train loss {got:.6f}, masked reference {want:.6f}, unmasked {unmasked:.6f}")
assert abs(got - want) < 2e-4 * max(1, abs(want)), (got, want)
assert abs(unmasked - want) > 10 * abs(got - want) + 1e-4, "the test cannot tell masked from unmasked"
# the head prior: pancreas is labelled in s0000 and s0002 only, so its bias is the log prior
# over their slices (s0001's slices, where it is unknown, do not dilute it)
bias = st_read(os.path.join(run, "checkpoint_epoch1.safetensors"), "head.bias")
k = c.labels.index("pancreas")
def logit(fg, n):
    p = min(max(fg / n, 1e-6), 0.5)
    return np.log(p / (1 - p))
px = c.size * c.size
fg = y[L[:, k], k].sum()
want_b, diluted = logit(fg, L[:, k].sum() * px), logit(fg, len(y) * px)
print(f"pancreas head bias {bias[k]:.5f}, prior over labelled slices {want_b:.5f}, over all {diluted:.5f}")
assert fg > 0 and abs(bias[k] - want_b) < 1e-4 and abs(diluted - want_b) > 0.1
EOF

# ---- 3. evaluation: only labelled pairs ----
"$BIN/segeval" "$T/r/checkpoint_epoch1.safetensors" "$T/c" --out "$T/ev" --split val --threads 1 -q >"$T/ev.txt" 2>&1 \
    || bad "segeval: $(cat "$T/ev.txt")"
"$PY" - "$T/ev" <<'EOF' && ok "segeval: s0004's liver and spleen are 'unlabelled', in no mean or count" || bad "segeval unlabelled pairs: $(cat "$T/ev.txt")"
import csv, glob, json, sys
d = sys.argv[1]
rows = list(csv.DictReader(open(glob.glob(d + "/evaluation_results_*.csv")[0])))
key = [k for k in rows[0] if k.lower() in ("case", "kase")][0]
un = sorted((r.get("subject") or r.get("image_id") or "?", r.get("structure") or r.get("label") or "?") for r in rows if r[key] == "unlabelled")
print("unlabelled pairs:", un)
assert len(un) == 2 and all("s0004" in u[0] for u in un), un
s = json.load(open(glob.glob(d + "/summary_*.json")[0]))
txt = json.dumps(s)
assert '"n_unlabelled": 2' in txt, "n_unlabelled missing from the summary"
EOF
grep -q "2 (subject, structure) pair(s) not labelled" "$T/ev.txt" && ok "segeval says how many pairs it left out" || bad "segeval summary line: $(cat "$T/ev.txt")"

echo "$fails failed"
[ $fails -eq 0 ]
