#!/usr/bin/python3
"""segkit's GPU throughput over PyTorch's, from the JSON of tests/bench_gpu.c and of
tools/unet_ref.py --bench taken on the same GPU (make bench and gpu-bundle/run.sh use it).

    /usr/bin/python3 tools/gpu_vs_torch.py BENCH_GPU.json BENCH_TORCH.json
prints a JSON list: per batch, precision and PyTorch mode, train and inference speedups
(segkit slices/s / PyTorch slices/s; > 1 means segkit is faster)."""
import json
import sys


def ratios(ours, torch):
    out = []
    for r in ours.get("runs", []):
        for mode in ("eager", "compile"):
            p = [x for x in torch.get("runs", []) if x["mode"] == mode and x["batch"] == r["batch"]
                 and x["precision"] == r["precision"]]
            if p:
                out.append({"batch": r["batch"], "precision": r["precision"], "vs": "torch " + mode,
                            "train_speedup": round(r["train_slices_per_s"] / p[0]["train_slices_per_s"], 2),
                            "infer_speedup": round(r["infer_slices_per_s"] / p[0]["infer_slices_per_s"], 2)})
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1]) as a, open(sys.argv[2]) as b:
        print(json.dumps(ratios(json.load(a), json.load(b)), indent=1))
