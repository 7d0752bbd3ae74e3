#!/usr/bin/python3
"""PyTorch twin of segkit's C U-Net (common/unet.c), with the same state_dict names.

    DoubleConv(cin, cout) = [Conv2d 3x3 pad 1 (no bias) -> BatchNorm2d -> ReLU] x 2
    encoder: DoubleConv per level (features f[0..L-1]), each followed by MaxPool2d(2)
    bottleneck: DoubleConv(f[L-1] -> 2 f[L-1])
    decoder, deepest first: ConvTranspose2d(k=2, s=2, bias) -> cat(skip, up) -> DoubleConv(2f -> f)
    head: Conv2d 1x1 (bias) to n_classes
Keys: downs.{i}.net.{0,1,3,4}.*, ups.{2j}.{weight,bias}, ups.{2j+1}.net.*, bottleneck.net.*,
head.{weight,bias} -- in that order (downs and ups are registered before the bottleneck).

Also reads segkit safetensors checkpoints (load_safetensors / UNet.from_safetensors) so that
a model trained by segtrain can be run or inspected here. Only numpy is needed for reading;
torch is needed for the module itself.

    /usr/bin/python3 tools/unet_ref.py --keys [--features 32,64,128,256 --classes 117 --in-ch 1]
    /usr/bin/python3 tools/unet_ref.py --check CKPT.safetensors   # load it and run one forward

in_ch = 2K+1 is a 2.5D model (segtrain --context K): input channels are slices z-K..z+K.
A checkpoint's in_ch comes from its first convolution (config_from_state).
    /usr/bin/python3 tools/unet_ref.py --bench [--device cuda] [--batches 8,32,64]
            [--precisions fp32,bf16] [--modes eager,compile] [--steps 10 --blocks 5]

--bench is the PyTorch side of make bench's GPU comparison (tests/bench_gpu.c measures segkit
the same way): per mode, precision and batch, the median over `blocks` of `steps` training
steps (zero_grad, forward, BCEWithLogits, backward, Adam) in slices/s, the image uploaded
from pinned host memory every step (the targets stay on the device, which favours PyTorch),
and inference (eval, no_grad) likewise. fp32 turns TF32 off (true fp32, as segkit's --amp
off); tf32 turns it on; bf16/fp16 use torch.autocast (fp16 with a GradScaler). One JSON
object on stdout.
"""
import argparse
import json
import struct
import sys

import numpy as np

try:
    import torch
    import torch.nn as nn
except ImportError:  # reading checkpoints works without torch
    torch = None
    nn = None

DEFAULT_FEATURES = (32, 64, 128, 256)

_ST_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "U8": np.uint8}


def load_safetensors(path):
    """Read a .safetensors file into {name: numpy array} (plus the __metadata__ dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for safetensors")
    (hlen,) = struct.unpack("<Q", blob[:8])
    if hlen > len(blob) - 8:
        raise ValueError(f"{path}: header length {hlen} past end of file")
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        dt = _ST_DTYPES.get(info["dtype"])
        if dt is None:
            raise ValueError(f"{path}: {name}: unsupported dtype {info['dtype']}")
        b, e = info["data_offsets"]
        arr = np.frombuffer(blob[base + b:base + e], dtype=dt)
        out[name] = arr.reshape(info["shape"]).copy()
    return out, meta


if nn is not None:
    class DoubleConv(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            layers = []
            for c in (cin, cout):
                layers += [nn.Conv2d(c, cout, kernel_size=3, padding=1, bias=False),
                           nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            return self.net(x)

    class UNet(nn.Module):
        def __init__(self, n_classes=117, features=DEFAULT_FEATURES, in_ch=1):
            super().__init__()
            feats = list(features)
            self.features = feats
            self.n_classes = n_classes
            self.in_ch = in_ch
            self.downs = nn.ModuleList()
            self.ups = nn.ModuleList()
            self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
            c = in_ch
            for f in feats:
                self.downs.append(DoubleConv(c, f))
                c = f
            self.bottleneck = DoubleConv(feats[-1], 2 * feats[-1])
            c = 2 * feats[-1]
            for f in reversed(feats):
                self.ups.append(nn.ConvTranspose2d(c, f, kernel_size=2, stride=2))
                self.ups.append(DoubleConv(2 * f, f))
                c = f
            self.head = nn.Conv2d(feats[0], n_classes, kernel_size=1)

        def forward(self, x):
            skips = []
            for down in self.downs:
                x = down(x)
                skips.append(x)
                x = self.pool(x)
            x = self.bottleneck(x)
            for j in range(0, len(self.ups), 2):
                x = self.ups[j](x)
                x = torch.cat((skips[-1 - j // 2], x), dim=1)
                x = self.ups[j + 1](x)
            return self.head(x)

        @staticmethod
        def config_from_state(state):
            """(n_classes, features, in_ch) implied by a state dict's shapes."""
            feats = []
            i = 0
            while f"downs.{i}.net.0.weight" in state:
                feats.append(int(state[f"downs.{i}.net.0.weight"].shape[0]))
                i += 1
            if not feats:
                raise ValueError("no downs.0.net.0.weight in state dict")
            in_ch = int(state["downs.0.net.0.weight"].shape[1])
            return int(state["head.weight"].shape[0]), feats, in_ch

        @classmethod
        def from_state(cls, state):
            """Build a model from {name: array} (e.g. load_safetensors) and load it strictly."""
            n_classes, feats, in_ch = cls.config_from_state(state)
            m = cls(n_classes, feats, in_ch)
            own = m.state_dict()
            sd = {}
            for k, ref in own.items():
                if k not in state:
                    raise KeyError(f"checkpoint lacks {k}")
                a = np.asarray(state[k])
                if tuple(a.shape) != tuple(ref.shape) and not (ref.dim() == 0 and a.size == 1):
                    raise ValueError(f"{k}: shape {a.shape} != {tuple(ref.shape)}")
                sd[k] = torch.from_numpy(np.array(a).reshape(tuple(ref.shape))).to(ref.dtype)
            m.load_state_dict(sd, strict=True)
            return m

        @classmethod
        def from_safetensors(cls, path):
            """Build and load a model from a segkit checkpoint; its metadata's in_ch (if any)
            must agree with the first convolution's input channels."""
            state, meta = load_safetensors(path)
            m = cls.from_state(state)
            cfg = json.loads(meta["config"]) if "config" in meta else {}
            if "in_ch" in cfg and int(cfg["in_ch"]) != m.in_ch:
                raise ValueError(f"{path}: metadata in_ch {cfg['in_ch']} but the first convolution takes {m.in_ch} channels")
            return m


def bench(a):
    """Throughput of this model in PyTorch on a.device; returns the JSON-able dict."""
    import statistics
    import time
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    feats = [int(s) for s in a.features.split(",")]
    out = {"peer": f"tools/unet_ref.py (PyTorch {torch.__version__}, cudnn.benchmark={a.cudnn_benchmark})",
           "device": torch.cuda.get_device_name(dev) if cuda else "cpu", "size": a.size, "classes": a.classes,
           "steps_per_block": a.steps, "blocks": a.blocks, "runs": []}
    if cuda:
        torch.backends.cudnn.benchmark = a.cudnn_benchmark

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    for mode in a.modes.split(","):
        if mode == "compile" and not hasattr(torch, "compile"):
            print(f"unet_ref bench: torch {torch.__version__} has no torch.compile: compile mode skipped", file=sys.stderr)
            out["compile_skipped"] = f"torch {torch.__version__} has no torch.compile"
            continue
        for prec in a.precisions.split(","):
            tf32 = prec == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            adt = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
            for nb in [int(s) for s in a.batches.split(",")]:
                torch.manual_seed(0)
                model = UNet(a.classes, feats, a.in_ch).to(dev)
                opt = torch.optim.Adam(model.parameters(), lr=1e-4)
                scaler = None
                if prec == "fp16":
                    scaler = torch.amp.GradScaler("cuda") if hasattr(torch.amp, "GradScaler") else torch.cuda.amp.GradScaler()
                lossf = nn.BCEWithLogitsLoss()
                run = torch.compile(model) if mode == "compile" else model
                xh = torch.rand(nb, a.in_ch, a.size, a.size) * 2 - 1
                if cuda:
                    xh = xh.pin_memory()
                t = (torch.rand(nb, a.classes, a.size, a.size, device=dev) < 0.125).float()

                def step():
                    x = xh.to(dev, non_blocking=True)
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast(dev.type, dtype=adt, enabled=adt is not None):
                        loss = lossf(run(x).float(), t)
                    if scaler:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()

                def infer():
                    with torch.no_grad(), torch.autocast(dev.type, dtype=adt, enabled=adt is not None):
                        return run(xh.to(dev, non_blocking=True))

                def timed(fn):
                    v = []
                    for k in range(-1, a.blocks):            # block -1: warm-up (and compilation)
                        sync()
                        t0 = time.perf_counter()
                        for _ in range(a.steps if k >= 0 else max(3, a.steps // 2)):
                            fn()
                        sync()
                        if k >= 0:
                            v.append(a.steps * nb / (time.perf_counter() - t0))
                    return statistics.median(v)

                if cuda:
                    torch.cuda.reset_peak_memory_stats(dev)
                model.train()
                tr = timed(step)
                model.eval()
                inf = timed(infer)
                r = {"mode": mode, "precision": prec, "batch": nb, "train_slices_per_s": round(tr, 1),
                     "infer_slices_per_s": round(inf, 1)}
                if cuda:
                    r["gpu_peak_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 1048576)
                print(f"unet_ref bench: {r}", file=sys.stderr)
                out["runs"].append(r)
                del model, opt, run, t
                if cuda:
                    torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", action="store_true", help="print state_dict keys and shapes")
    ap.add_argument("--features", default="32,64,128,256")
    ap.add_argument("--classes", type=int, default=117)
    ap.add_argument("--in-ch", type=int, default=1, help="input channels, 2K+1 for context K (--keys, --bench)")
    ap.add_argument("--check", metavar="CKPT", help="load a safetensors checkpoint and run a forward")
    ap.add_argument("--bench", action="store_true", help="training/inference throughput as JSON")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="8,32,64")
    ap.add_argument("--precisions", default="fp32,bf16", help="fp32, tf32, bf16, fp16")
    ap.add_argument("--modes", default="eager,compile", help="eager, compile (torch.compile)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--cudnn-benchmark", type=int, default=1, help="torch.backends.cudnn.benchmark (default 1)")
    a = ap.parse_args()
    if torch is None:
        print("unet_ref.py: torch is not installed", file=sys.stderr)
        return 1
    if a.bench:
        if a.device.startswith("cuda") and not torch.cuda.is_available():
            print("skip: torch sees no CUDA device", file=sys.stderr)
            return 77
        print(json.dumps(bench(a), indent=1))
        return 0
    if a.check:
        m = UNet.from_safetensors(a.check).eval()
        L = len(m.features)
        with torch.no_grad():
            y = m(torch.zeros(1, m.in_ch, 2 ** L * 4, 2 ** L * 4))
        print(f"{a.check}: in_ch {m.in_ch} features {m.features} classes {m.n_classes} -> logits {tuple(y.shape)}")
        return 0
    m = UNet(a.classes, [int(s) for s in a.features.split(",")], a.in_ch)
    if a.keys:
        for k, v in m.state_dict().items():
            print(k, tuple(v.shape))
    print("params", sum(p.numel() for p in m.parameters()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
