#!/usr/bin/env bash
# The PyTorch peer (../shared/peers/unet_peer.py) on this machine, as JSON, so make bench
# compares us with it in the same run. Skipped (exit 77) without python3-torch or the peer.
set -u
PEER=${SEGKIT_SHARED:-../shared}/peers/unet_peer.py
PY=${PYTHON:-/usr/bin/python3}
[ -f "$PEER" ] || { echo "skip: $PEER not found" >&2; exit 77; }
$PY -c "import torch" 2>/dev/null || { echo "skip: python3-torch not installed (apt-get install python3-torch)" >&2; exit 77; }
STEPS=${PEER_STEPS:-3}
log=$(mktemp); trap 'rm -f "$log"' EXIT
/usr/bin/time -v $PY "$PEER" --mode all --steps "$STEPS" --warmup 1 >"$log" 2>&1 || { tail -5 "$log" >&2; exit 1; }
$PY - "$log" "$STEPS" <<'PYEOF'
import json, re, sys
t = open(sys.argv[1]).read()
def num(pat):
    m = re.search(pat, t)
    return float(m.group(1)) if m else None
out = {
    "peer": "shared/peers/unet_peer.py (PyTorch, NCHW, 2 threads)",
    "steps": int(sys.argv[2]),
    "train_step_s": num(r"TRAIN step batch \d+: median ([\d.]+)s"),
    "train_gflops": num(r"~([\d.]+) GFLOP/s \(3x fwd\)"),
    "infer_b8_slices_per_s": num(r"INFER batch 8 no_grad eval: median [\d.]+s min [\d.]+s -> ([\d.]+) slices/s"),
    "infer_b1_slices_per_s": num(r"INFER batch 1 no_grad eval: .*?-> ([\d.]+) slices/s"),
    "peak_rss_mib": (num(r"Maximum resident set size \(kbytes\): (\d+)") or 0) / 1024,
}
print(json.dumps(out))
PYEOF
