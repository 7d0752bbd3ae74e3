#!/usr/bin/python3
"""Write tests/fixtures/ckpt/: a small checkpoint trained by our segtrain, an input, and what
PyTorch (tools/unet_ref.py) computes from that checkpoint, for tests/test_ckpt_torch.py.

Needs torch (Debian: apt-get install -y python3-torch), built bin/segprep and bin/segtrain,
and the example subject. Run from the repository root:

    /usr/bin/python3 tools/make_ckpt_fixture.py [--bin bin] [--shared ../shared] [--out tests/fixtures/ckpt]

Steps: cache the example at 32x32 with 6 structures (segprep --labels), train 2 epochs of
a 2-level U-Net (features 4,8) with segtrain so the BatchNorm running statistics and
counters are non-trivial, keep checkpoint_epoch2.safetensors as model.safetensors; draw a
seeded input x (3,1,32,32); load the checkpoint into unet_ref.UNet with
load_state_dict(strict=True) and store its logits in eval mode (running statistics) and
in train mode (batch statistics) with the state_dict's keys and shapes in torch_out.safetensors.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_ref import UNet, load_safetensors  # noqa: E402

LABELS = ["liver", "spleen", "kidney_left", "kidney_right", "stomach", "aorta"]


def save_safetensors(path, tensors, meta):
    """Minimal safetensors writer: F32 tensors in the order given, string metadata."""
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name, a in tensors:
        a = np.ascontiguousarray(a, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-(8 + len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="bin")
    ap.add_argument("--shared", default=os.environ.get("SEGKIT_SHARED", "../shared"))
    ap.add_argument("--out", default="tests/fixtures/ckpt")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ckpt_fixture.")
    try:
        with open(os.path.join(tmp, "split.csv"), "w") as f:
            f.write("image_id;split\ns0000;train\n")
        with open(os.path.join(tmp, "labels.txt"), "w") as f:
            f.write("\n".join(LABELS) + "\n")
        cache, run = os.path.join(tmp, "cache"), os.path.join(tmp, "run")
        subprocess.run([f"{a.bin}/segprep", f"{a.shared}/data/totalseg-example", cache, "--size", "32",
                        "--split", os.path.join(tmp, "split.csv"), "--labels", os.path.join(tmp, "labels.txt"), "-q"],
                       check=True)
        subprocess.run([f"{a.bin}/segtrain", cache, "--out", run, "--epochs", "2", "--features", "4,8",
                        "--batch-size", "4", "--lr", "1e-2", "--seed", "3", "--threads", "1", "-q"], check=True)
        model = os.path.join(a.out, "model.safetensors")
        shutil.copyfile(os.path.join(run, "checkpoint_epoch2.safetensors"), model)
        print(f"{model}: {os.path.getsize(model)} bytes")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    x = np.random.default_rng(2024).standard_normal((3, 1, 32, 32)).astype(np.float32)
    save_safetensors(os.path.join(a.out, "x.safetensors"), [("x", x)], {"what": "input for model.safetensors"})

    state, meta = load_safetensors(model)
    m = UNet.from_state(state)            # load_state_dict(strict=True) inside
    sd = m.state_dict()
    keys = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    xt = torch.from_numpy(x)
    with torch.no_grad():
        y_eval = m.eval()(xt).numpy()
        y_train = m.train()(xt).numpy()   # batch statistics (updates running stats: discarded)
    save_safetensors(os.path.join(a.out, "torch_out.safetensors"),
                     [("logits_eval", y_eval), ("logits_train", y_train)],
                     {"state_dict": json.dumps(keys), "torch_version": torch.__version__,
                      "checkpoint_config": meta.get("config", ""), "made_by": "tools/make_ckpt_fixture.py"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
