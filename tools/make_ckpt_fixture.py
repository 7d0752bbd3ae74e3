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

    /usr/bin/python3 tools/make_ckpt_fixture.py --context 1 [--out tests/fixtures/ckpt]

writes only the 2.5D fixture from the existing model.safetensors (segtrain and the example
are not needed): ctx3_model.safetensors, model.safetensors widened to in_ch 3 by
tools/ckpt_widen.py (the trained weights on the centre channel, seeded noise on the two
neighbour channels, so each channel matters); ctx3_x.safetensors, a seeded input
(2,3,32,32); ctx3_torch_out.safetensors, unet_ref's logits and state_dict keys as above.
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
from ckpt_widen import widen  # noqa: E402
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


def torch_outputs(model, x, out_path):
    """unet_ref's eval- and train-mode logits for x and the state_dict's keys into out_path."""
    state, meta = load_safetensors(model)
    m = UNet.from_state(state)            # load_state_dict(strict=True) inside
    sd = m.state_dict()
    keys = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in sd.items()]
    xt = torch.from_numpy(x)
    with torch.no_grad():
        y_eval = m.eval()(xt).numpy()
        y_train = m.train()(xt).numpy()   # batch statistics (updates running stats: discarded)
    save_safetensors(out_path, [("logits_eval", y_eval), ("logits_train", y_train)],
                     {"state_dict": json.dumps(keys), "torch_version": torch.__version__,
                      "checkpoint_config": meta.get("config", ""), "made_by": "tools/make_ckpt_fixture.py"})


def context_fixture(out, k):
    ch = 2 * k + 1
    model = os.path.join(out, f"ctx{ch}_model.safetensors")
    widen(os.path.join(out, "model.safetensors"), model, k, noise=0.5, seed=ch)
    print(f"{model}: {os.path.getsize(model)} bytes")
    x = np.random.default_rng(2025).standard_normal((2, ch, 32, 32)).astype(np.float32)
    save_safetensors(os.path.join(out, f"ctx{ch}_x.safetensors"), [("x", x)], {"what": f"input for ctx{ch}_model.safetensors"})
    torch_outputs(model, x, os.path.join(out, f"ctx{ch}_torch_out.safetensors"))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="bin")
    ap.add_argument("--shared", default=os.environ.get("SEGKIT_SHARED", "../shared"))
    ap.add_argument("--out", default="tests/fixtures/ckpt")
    ap.add_argument("--context", type=int, default=0, help="K >= 1: write only the 2.5D fixture (see above)")
    a = ap.parse_args()
    if a.context > 0:
        return context_fixture(a.out, a.context)
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

    torch_outputs(model, x, os.path.join(a.out, "torch_out.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
