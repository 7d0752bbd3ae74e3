#!/usr/bin/python3
"""Widen a segkit checkpoint to 2.5D context K (in_ch = 2K+1), numpy only.

    /usr/bin/python3 tools/ckpt_widen.py IN.safetensors OUT.safetensors --context K
            [--channel J] [--noise A] [--seed S]

The first convolution's weights (downs.0.net.0.weight, (f0, in_ch, 3, 3)) go to input
channel J of the wider one (default K: the centre slice); the other channels get zeros,
or with --noise A seeded uniform values in [-A, A] * max|w|. Every other tensor is copied
byte for byte, in the same order and dtype; the metadata is kept except "config" (in_ch)
and "id" (a fresh one). With zeros the widened model computes what the 2D model computes on
slice z+J-K (J = K: the same output), which makes it a warm start for segtrain --context and
a known answer for tests. Exit 0, 1 on a bad checkpoint, 2 on usage errors.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

FIRST = "downs.0.net.0.weight"


def read_raw(path):
    """(header dict in file order without __metadata__, metadata dict, data bytes)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    hdr = json.loads(blob[8:8 + n])
    meta = hdr.pop("__metadata__", {}) or {}
    return hdr, meta, blob[8 + n:]


def widen(src, dst, context, channel=None, noise=0.0, seed=0):
    """Write dst: src with a first convolution of 2*context+1 input channels (see above)."""
    hdr, meta, data = read_raw(src)
    if meta.get("segkit") != "unet" or FIRST not in hdr:
        raise ValueError(f"{src}: not a segkit U-Net checkpoint")
    info = hdr[FIRST]
    if info["dtype"] != "F32" or len(info["shape"]) != 4 or info["shape"][1] != 1:
        raise ValueError(f"{src}: {FIRST} is {info['dtype']}{info['shape']}, not a 1-channel F32 convolution")
    ch = 2 * context + 1
    j = context if channel is None else channel
    if not 0 <= j < ch:
        raise ValueError(f"--channel {j} is not in 0..{ch - 1}")
    b, e = info["data_offsets"]
    w = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"])
    rng = np.random.default_rng(seed)
    wide = np.zeros((w.shape[0], ch, w.shape[2], w.shape[3]), dtype="<f4")
    if noise > 0:
        wide[:] = rng.uniform(-noise, noise, wide.shape) * float(np.abs(w).max())
    wide[:, j] = w[:, 0]
    header, blobs, off = {}, [], 0
    for name, t in hdr.items():
        if name == FIRST:
            raw = wide.tobytes()
            header[name] = {"dtype": "F32", "shape": list(wide.shape), "data_offsets": [off, off + len(raw)]}
        else:
            raw = data[t["data_offsets"][0]:t["data_offsets"][1]]
            header[name] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    cfg = json.loads(meta.get("config", "{}"))
    cfg["in_ch"] = ch
    meta = dict(meta, config=json.dumps(cfg, separators=(",", ":")), id=os.urandom(16).hex())
    h = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
    h += b" " * (-(8 + len(h)) % 8)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(tmp, dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--context", type=int, required=True, help="K: the result sees 2K+1 slices")
    ap.add_argument("--channel", type=int, help="input channel of the original weights (default K)")
    ap.add_argument("--noise", type=float, default=0.0, help="other channels uniform in +-A * max|w| (default 0)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.context < 1:
        print("ckpt_widen.py: --context must be >= 1", file=sys.stderr)
        return 2
    try:
        widen(a.src, a.dst, a.context, a.channel, a.noise, a.seed)
    except (OSError, ValueError, KeyError) as ex:
        print(f"ckpt_widen.py: {ex}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
