#!/usr/bin/python3
"""PyTorch compatibility of segtrain checkpoints, without torch at test time.

The fixture (tests/fixtures/ckpt, made by tools/make_ckpt_fixture.py with torch) holds a
checkpoint trained by our segtrain, an input x, and the logits PyTorch's twin of our model
(tools/unet_ref.py) computed after load_state_dict(strict=True) on that checkpoint, plus the
state_dict's keys, shapes and dtypes. This test:
  1. checks the checkpoint's tensors against the torch state_dict: same keys in the same
     order, same shapes, F32 parameters/buffers and an I64 scalar num_batches_tracked;
  2. runs our side again (segtrain forward) on x in eval and train mode and compares the
     logits with torch's;
  3. when the example subject is available, trains a fresh checkpoint of the same config with
     the current segtrain and checks that it still writes exactly those keys, shapes, dtypes
     and the metadata segeval and PyTorch users read;
  4. the 2.5D context fixture (ctx3_*: in_ch 3, tools/make_ckpt_fixture.py --context 1):
     same key/shape check, segtrain forward on a (N, 3, H, W) input against torch's logits in
     both modes, and a 1-channel input refused naming the checkpoint's in_ch.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SEGKIT_BIN", "bin")
SHARED = os.environ.get("SEGKIT_SHARED", "../shared")
FIX = os.path.join(ROOT, "tests", "fixtures", "ckpt")
fails = 0


def check(ok, msg):
    global fails
    print(("ok   " if ok else "FAIL ") + msg)
    if not ok:
        fails += 1


def read_st(path):
    """{name: (dtype, shape, numpy array)} in header order, and the metadata."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    hdr = json.loads(blob[8:8 + n])
    meta = hdr.pop("__metadata__", {})
    dts = {"F32": "<f4", "I64": "<i8", "F64": "<f8", "F16": "<f2"}
    out = {}
    for k, v in hdr.items():
        b, e = v["data_offsets"]
        out[k] = (v["dtype"], v["shape"], np.frombuffer(blob[8 + n + b:8 + n + e], dtype=dts[v["dtype"]]).reshape(v["shape"]))
    return out, meta


def compare(tag, got, ref, atol=1e-4, rtol=1e-4):
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    bad = d > atol + rtol * np.abs(ref)
    worst = np.unravel_index(np.argmax(d), d.shape)
    check(got.shape == ref.shape and not bad.any(),
          f"{tag}: shape {got.shape}, max |diff| {d.max():.3g} at {tuple(int(i) for i in worst)} "
          f"(ours {got[worst]:.6g}, torch {ref[worst]:.6g}), {int(bad.sum())} over tolerance")


def keys_match(tag, tensors, ref_keys):
    names = list(tensors)
    check(names == [k for k, _, _ in ref_keys], f"{tag}: {len(names)} tensors named and ordered as torch's state_dict")
    wrong = []
    for k, shape, dt in ref_keys:
        if k not in tensors:
            continue
        dtype, shp, _ = tensors[k]
        want = "I64" if dt == "int64" else "F32"
        if shp != shape or dtype != want:
            wrong.append(f"{k}: {dtype}{shp} vs torch {dt}{shape}")
    check(not wrong, f"{tag}: shapes and dtypes as torch's" + (f": {wrong[:4]}" if wrong else ""))


def main():
    segtrain = os.path.join(BIN, "segtrain")
    if not os.access(segtrain, os.X_OK):
        print(f"FAIL {segtrain} is not built")
        return 1
    model, xin = os.path.join(FIX, "model.safetensors"), os.path.join(FIX, "x.safetensors")
    ref, ref_meta = read_st(os.path.join(FIX, "torch_out.safetensors"))
    ref_keys = json.loads(ref_meta["state_dict"])
    tensors, meta = read_st(model)
    keys_match("fixture checkpoint", tensors, ref_keys)
    nbt = [v for k, v in tensors.items() if k.endswith("num_batches_tracked")]
    check(nbt and all(v[2].shape == () and int(v[2]) > 0 for v in nbt), f"{len(nbt)} BatchNorm counters are I64 scalars > 0")

    with tempfile.TemporaryDirectory() as tmp:
        def forward_both_modes(ckpt, x, reference, what, tag):
            """segtrain forward in eval and train mode against the PyTorch logits."""
            for mode, flag in (("eval", []), ("train", ["--train-mode"])):
                out = os.path.join(tmp, f"{tag}{mode}.safetensors")
                r = subprocess.run([segtrain, "forward", ckpt, x, out, "--threads", "1"] + flag, capture_output=True, text=True)
                if r.returncode != 0:
                    check(False, f"segtrain forward, {what} ({mode}): exit {r.returncode}: {r.stderr.strip()}")
                    continue
                got, _ = read_st(out)
                compare(f"{what} logits, {mode} mode (BatchNorm {'running' if mode == 'eval' else 'batch'} statistics)",
                        got["logits"][2], reference[f"logits_{mode}"][2])

        forward_both_modes(model, xin, ref, "in_ch 1", "")
        r = subprocess.run([segtrain, "forward", os.path.join(FIX, "torch_out.safetensors"), xin, os.path.join(tmp, "o")],
                           capture_output=True, text=True)
        check(r.returncode == 1 and "not a segkit U-Net checkpoint" in r.stderr,
              f"a non-checkpoint is refused: {r.stderr.strip()[:160]}")

        # 2.5D context: in_ch 3
        cmodel, cxin = os.path.join(FIX, "ctx3_model.safetensors"), os.path.join(FIX, "ctx3_x.safetensors")
        cref, cref_meta = read_st(os.path.join(FIX, "ctx3_torch_out.safetensors"))
        ctens, cmeta = read_st(cmodel)
        keys_match("context checkpoint (in_ch 3)", ctens, json.loads(cref_meta["state_dict"]))
        check(json.loads(cmeta["config"]).get("in_ch") == 3 and ctens["downs.0.net.0.weight"][1] == [4, 3, 3, 3],
              f"context checkpoint: config in_ch 3, first convolution {ctens['downs.0.net.0.weight'][1]}")
        forward_both_modes(cmodel, cxin, cref, "in_ch 3", "ctx_")
        r = subprocess.run([segtrain, "forward", cmodel, xin, os.path.join(tmp, "o")], capture_output=True, text=True)
        check(r.returncode == 1 and "(N, 3, H, W)" in r.stderr,
              f"a 1-channel input for an in_ch 3 checkpoint is refused: {r.stderr.strip()[:200]}")
        r = subprocess.run([segtrain, "forward", model, cxin, os.path.join(tmp, "o")], capture_output=True, text=True)
        check(r.returncode == 1 and "(N, 1, H, W)" in r.stderr,
              f"a 3-channel input for an in_ch 1 checkpoint is refused: {r.stderr.strip()[:200]}")

        # the current writer: same keys for a fresh checkpoint of the fixture's config
        ex = os.path.join(SHARED, "data", "totalseg-example")
        if not os.path.isdir(os.path.join(ex, "s0000")):
            print(f"SKIP fresh-checkpoint check: {ex} not found")   # counted by run_tests.sh
        else:
            open(os.path.join(tmp, "split.csv"), "w").write("image_id;split\ns0000;train\n")
            open(os.path.join(tmp, "labels.txt"), "w").write("liver\nspleen\nkidney_left\nkidney_right\nstomach\naorta\n")
            cache, run = os.path.join(tmp, "cache"), os.path.join(tmp, "run")
            r = subprocess.run([os.path.join(BIN, "segprep"), ex, cache, "--size", "32", "--split", os.path.join(tmp, "split.csv"),
                                "--labels", os.path.join(tmp, "labels.txt"), "-q"], capture_output=True, text=True)
            if r.returncode == 0:
                r = subprocess.run([segtrain, cache, "--out", run, "--epochs", "1", "--features", "4,8", "--batch-size", "8",
                                    "--limit-slices", "8", "--threads", "1", "-q"], capture_output=True, text=True)
            if r.returncode != 0:
                check(False, f"fresh checkpoint: exit {r.returncode}: {r.stderr.strip()}")
            else:
                fresh, fmeta = read_st(os.path.join(run, "checkpoint_epoch1.safetensors"))
                keys_match("fresh checkpoint", fresh, ref_keys)
                cfg = json.loads(fmeta.get("config", "{}"))
                check(fmeta.get("segkit") == "unet" and fmeta.get("format") == "pt" and cfg.get("features") == [4, 8]
                      and cfg.get("n_classes") == 6 and json.loads(fmeta["labels"])[0] == "liver" and fmeta.get("size") == "32"
                      and fmeta.get("epoch") == "1" and json.loads(fmeta.get("hu_window")) == [-1000, 1000],
                      f"metadata: {json.dumps({k: fmeta[k] for k in ('segkit', 'config', 'size', 'epoch', 'hu_window') if k in fmeta})}")
    print(f"{fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
