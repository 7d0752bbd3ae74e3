#!/usr/bin/python3
"""Write the PyTorch reference fixtures for tests/test_nn.c and tests/test_unet.c
(layers.bin, loss.bin: the soft-Dice loss of docs/loss.md; loss_masked.bin: the same with
partly labelled samples; unet_*.bin: whole models).

Needs torch (Debian: apt-get install -y python3-torch); the tests themselves only read the
files. Run from the repository root:

    /usr/bin/python3 tools/make_nn_fixtures.py [--out tests/fixtures/nn]

Format (little-endian), one file per group:
    "SEGNNFX1"  uint32 n_tensors
    n_tensors x { uint32 name_len, name (utf-8), uint32 ndim, int64 shape[ndim], float32 data }
All tensors are NCHW float32 as PyTorch holds them (targets as 0/1 floats; the C tests pack
them into bits themselves). Seeds are fixed, so re-running reproduces the same files.
"""
import argparse
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_ref import UNet  # noqa: E402

MAGIC = b"SEGNNFX1"


class Writer:
    def __init__(self):
        self.items = []

    def add(self, name, t):
        a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        self.items.append((name, np.array(a, dtype=np.float32, copy=True)))  # no views of live tensors

    def save(self, path):
        with open(path, "wb") as f:
            f.write(MAGIC + struct.pack("<I", len(self.items)))
            for name, a in self.items:
                nb = name.encode()
                f.write(struct.pack("<I", len(nb)) + nb + struct.pack("<I", a.ndim))
                f.write(struct.pack(f"<{a.ndim}q", *a.shape))
                f.write(a.astype("<f4").tobytes())
        print(f"{path}: {len(self.items)} tensors, {os.path.getsize(path)} bytes")


def rnd(*shape, scale=1.0, shift=0.0):
    return torch.randn(*shape, dtype=torch.float32) * scale + shift


def grads_of(out, dy, *ts):
    return torch.autograd.grad(out, ts, dy)


def layer_fixtures(w):
    torch.manual_seed(1234)
    # conv3x3: Co = 40 (a full and a partial column panel); Ci = 80 (two K-blocks of taps)
    # convw: rows of 50 pixels take the padded-row-buffer path (W >= 48); conv1: one input
    # channel (the direct path); the others im2col
    for tag, (N, Ci, Co, H, W) in (("conv", (2, 5, 40, 6, 7)), ("convk", (1, 80, 12, 5, 9)),
                                   ("convw", (1, 16, 40, 3, 50)), ("conv1", (2, 1, 40, 5, 9))):
        x = rnd(N, Ci, H, W).requires_grad_()
        wt = rnd(Co, Ci, 3, 3, scale=0.2).requires_grad_()
        y = F.conv2d(x, wt, padding=1)
        dy = rnd(*y.shape)
        dx, dw = grads_of(y, dy, x, wt)
        for k, v in (("x", x), ("w", wt), ("y", y), ("dy", dy), ("dx", dx), ("dw", dw)):
            w.add(f"{tag}.{k}", v)

    # concat(a, b) -> conv3x3: the decoder's first conv reads two tensors
    a = rnd(2, 12, 5, 6).requires_grad_()
    b = rnd(2, 8, 5, 6).requires_grad_()
    wt = rnd(16, 20, 3, 3, scale=0.2).requires_grad_()
    y = F.conv2d(torch.cat((a, b), dim=1), wt, padding=1)
    dy = rnd(*y.shape)
    da, db, dw = grads_of(y, dy, a, b, wt)
    for k, v in (("a", a), ("b", b), ("w", wt), ("y", y), ("dy", dy), ("da", da), ("db", db), ("dw", dw)):
        w.add(f"cat.{k}", v)
    # the same on wide rows with 32-channel halves (row-buffer path, split input gradient)
    a = rnd(1, 32, 2, 48).requires_grad_()
    b = rnd(1, 32, 2, 48).requires_grad_()
    wt = rnd(8, 64, 3, 3, scale=0.1).requires_grad_()
    y = F.conv2d(torch.cat((a, b), dim=1), wt, padding=1)
    dy = rnd(*y.shape)
    da, db, dw = grads_of(y, dy, a, b, wt)
    for k, v in (("a", a), ("b", b), ("w", wt), ("y", y), ("dy", dy), ("da", da), ("db", db), ("dw", dw)):
        w.add(f"catw.{k}", v)

    # BatchNorm2d in train mode (batch stats, running update), alone and followed by ReLU
    for tag, relu in (("bn", False), ("bnrelu", True)):
        C = 20
        bn = nn.BatchNorm2d(C)
        with torch.no_grad():
            bn.weight.copy_(rnd(C, scale=0.7, shift=0.5))
            bn.bias.copy_(rnd(C, scale=0.5))
            bn.running_mean.copy_(rnd(C, scale=0.3))
            bn.running_var.copy_(torch.rand(C) + 0.5)
        w.add(f"{tag}.gamma", bn.weight)
        w.add(f"{tag}.beta", bn.bias)
        w.add(f"{tag}.rm0", bn.running_mean)
        w.add(f"{tag}.rv0", bn.running_var)
        x = (rnd(2, C, 5, 6, scale=2.0, shift=3.0)).requires_grad_()
        bn.train()
        y = bn(x)
        if relu:
            y = F.relu(y)
        dy = rnd(*y.shape)
        dx, dg, dbt = grads_of(y, dy, x, bn.weight, bn.bias)
        for k, v in (("x", x), ("y", y), ("dy", dy), ("dx", dx), ("dgamma", dg), ("dbeta", dbt),
                     ("rm1", bn.running_mean), ("rv1", bn.running_var)):
            w.add(f"{tag}.{k}", v)
        w.add(f"{tag}.nbt1", bn.num_batches_tracked.float().reshape(1))
        bn.eval()
        w.add(f"{tag}.yeval", bn(x))

    # ReLU
    x = rnd(2, 20, 5, 6).requires_grad_()
    y = F.relu(x)
    w.add("relu.x", x)
    w.add("relu.y", y)

    # MaxPool2d(2, 2)
    x = rnd(2, 20, 6, 8).requires_grad_()
    y = F.max_pool2d(x, 2, 2)
    dy = rnd(*y.shape)
    (dx,) = grads_of(y, dy, x)
    for k, v in (("x", x), ("y", y), ("dy", dy), ("dx", dx)):
        w.add(f"pool.{k}", v)

    # ConvTranspose2d(k=2, s=2, bias)
    x = rnd(2, 24, 3, 4).requires_grad_()
    wt = rnd(24, 20, 2, 2, scale=0.3).requires_grad_()
    bt = rnd(20, scale=0.3).requires_grad_()
    y = F.conv_transpose2d(x, wt, bt, stride=2)
    dy = rnd(*y.shape)
    dx, dw, db = grads_of(y, dy, x, wt, bt)
    for k, v in (("x", x), ("w", wt), ("b", bt), ("y", y), ("dy", dy), ("dx", dx), ("dw", dw), ("db", db)):
        w.add(f"convt.{k}", v)

    # Conv2d 1x1 head (bias); HW = 420 spans two head tiles (256 + 164, 16-pixel blocks + 4)
    x = rnd(1, 16, 21, 20).requires_grad_()
    wt = rnd(13, 16, 1, 1, scale=0.3).requires_grad_()
    bt = rnd(13, scale=0.3).requires_grad_()
    y = F.conv2d(x, wt, bt)
    dy = rnd(*y.shape)
    dx, dw, db = grads_of(y, dy, x, wt, bt)
    for k, v in (("x", x), ("w", wt), ("b", bt), ("y", y), ("dy", dy), ("dx", dx), ("dw", dw), ("db", db)):
        w.add(f"head.{k}", v)

    # BCE-with-logits, mean; plane (1, 3) is empty (absent in the presence bitmap);
    # HW = 72 leaves a tail after the 16-pixel vectors; logits reach +-60
    z = (rnd(2, 5, 8, 9, scale=4.0)).requires_grad_()
    with torch.no_grad():
        z[0, 0, 0, :6] = torch.tensor([60.0, -60.0, 30.0, -30.0, 1e-4, -17.5])
    t = (torch.rand(2, 5, 8, 9) < 0.3).float()
    t[1, 3] = 0
    loss = F.binary_cross_entropy_with_logits(z, t)
    (dz,) = torch.autograd.grad(loss, (z,))
    for k, v in (("z", z), ("t", t), ("dz", dz)):
        w.add(f"bce.{k}", v)
    w.add("bce.loss", loss.reshape(1))
    w.add("bce.loss64", torch.tensor([F.binary_cross_entropy_with_logits(z.double(), t.double()).item()]))

    # Adam, three steps on one tensor (lr 1e-2 so the steps are visible)
    p = torch.nn.Parameter(rnd(1000))
    w.add("adam.p0", p)
    opt = torch.optim.Adam([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    for s in range(1, 4):
        g = rnd(1000, scale=10.0 ** (-s))
        p.grad = g.clone()
        opt.step()
        w.add(f"adam.g{s}", g)
        w.add(f"adam.p{s}", p)
    st = opt.state[p]
    w.add("adam.m3", st["exp_avg"])
    w.add("adam.v3", st["exp_avg_sq"])


def soft_dice(z, t):
    """docs/loss.md: 1 - mean over channels with targets in the batch of the soft Dice."""
    p = torch.sigmoid(z)
    inter = (p * t).sum((0, 2, 3))
    den = p.sum((0, 2, 3)) + t.sum((0, 2, 3))
    pres = t.sum((0, 2, 3)) > 0
    return 1 - ((2 * inter[pres] + 1e-5) / (den[pres] + 1e-5)).mean()


def loss_of(kind, z, t):
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(z, t)
    if kind == "dice":
        return soft_dice(z, t)
    return F.binary_cross_entropy_with_logits(z, t) + soft_dice(z, t)


def loss_fixtures(w):
    """Soft Dice and BCE + soft Dice on logits: loss (fp32 and fp64) and d loss / d logits.
    Targets for absent planes are all zero (the C test fills their bits with garbage)."""
    torch.manual_seed(4321)
    # "a": HW = 72 (a tail after the 16-pixel vectors), logits up to +-60; channel 2 has no
    # target anywhere in the batch (left out of the mean); plane (1, 3) is absent while
    # channel 3 has targets in sample 0 (its gradient there is the b_c term alone)
    z = rnd(2, 5, 8, 9, scale=4.0)
    z[0, 0, 0, :6] = torch.tensor([60.0, -60.0, 30.0, -30.0, 1e-4, -17.5])
    t = (torch.rand(2, 5, 8, 9) < 0.3).float()
    t[:, 2] = 0
    t[1, 3] = 0
    cases = [("a", z, t)]
    # "b": a batch of 3 where only channels 0 and 4 have targets (and channel 4 only in one
    # sample, two pixels); HW = 32 (whole vectors only); small logits
    z = rnd(3, 6, 4, 8, scale=1.5)
    t = torch.zeros(3, 6, 4, 8)
    t[:, 0] = (torch.rand(3, 4, 8) < 0.5).float()
    t[1, 4, 2, 3] = 1
    t[1, 4, 0, 0] = 1
    cases.append(("b", z, t))
    for tag, z, t in cases:
        w.add(f"{tag}.z", z)
        w.add(f"{tag}.t", t)
        for kind in ("dice", "bce+dice"):
            zz = z.clone().requires_grad_()
            loss = loss_of(kind, zz, t)
            (dz,) = torch.autograd.grad(loss, (zz,))
            w.add(f"{tag}.{kind}.loss", loss.reshape(1))
            w.add(f"{tag}.{kind}.loss64", torch.tensor([loss_of(kind, z.double(), t.double()).item()]))
            w.add(f"{tag}.{kind}.dz", dz)
        w.add(f"{tag}.dice64", torch.tensor([soft_dice(z.double(), t.double()).item()]))


def masked_loss_of(kind, z, t, lab):
    """docs/loss.md, partly labelled samples: lab (N, C) 0/1; an unlabelled plane has no BCE
    term (the mean is over labelled elements) and adds nothing to its channel's Dice sums."""
    m = lab[:, :, None, None].to(z.dtype).expand_as(z)
    n_lab = m.sum()
    bce = (F.binary_cross_entropy_with_logits(z, t, reduction="none") * m).sum() / n_lab if n_lab > 0 else z.sum() * 0
    p = torch.sigmoid(z) * m
    y = t * m
    inter = (p * y).sum((0, 2, 3))
    den = p.sum((0, 2, 3)) + y.sum((0, 2, 3))
    pres = y.sum((0, 2, 3)) > 0
    dice = 1 - ((2 * inter[pres] + 1e-5) / (den[pres] + 1e-5)).mean() if pres.any() else z.sum() * 0
    return dice if kind == "dice" else bce + dice


def masked_loss_fixtures(w):
    """loss_masked.bin: the loss of loss_fixtures with a per-sample labelled bitmap. "m": N = 3,
    C = 5, HW = 72; sample 0 has channel 1 unlabelled, sample 1 nothing labelled, sample 2 only
    channels 0, 2, 3; channel 1 (never labelled) and channel 4 (targets only in unlabelled planes)
    drop out of the Dice mean although they hold target bits."""
    torch.manual_seed(8765)
    z = rnd(3, 5, 8, 9, scale=4.0)
    z[0, 0, 0, :4] = torch.tensor([40.0, -40.0, 1e-4, -17.5])
    t = (torch.rand(3, 5, 8, 9) < 0.3).float()
    t[0, 4] = 0
    lab = torch.tensor([[1, 0, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 1, 1, 0]], dtype=torch.float32)
    w.add("m.z", z)
    w.add("m.t", t)
    w.add("m.lab", lab)
    for kind in ("dice", "bce+dice"):
        zz = z.clone().requires_grad_()
        loss = masked_loss_of(kind, zz, t, lab)
        (dz,) = torch.autograd.grad(loss, (zz,))
        w.add(f"m.{kind}.loss", loss.reshape(1))
        w.add(f"m.{kind}.loss64", torch.tensor([masked_loss_of(kind, z.double(), t.double(), lab.double()).item()]))
        w.add(f"m.{kind}.dz", dz)


def unet_fixture(w, feats, C, N, H, W, seed, loss_kind="bce"):
    torch.manual_seed(seed)
    m = UNet(C, feats)
    with torch.no_grad():                   # BN not at its 1/0 init, some gammas negative
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(torch.rand(n) * 2.0 - 0.6)
                mod.bias.copy_(rnd(n, scale=0.2))
                mod.running_mean.copy_(rnd(n, scale=0.1))
                mod.running_var.copy_(torch.rand(n) + 0.5)
    w.add("cfg", torch.tensor([float(C), float(N), float(H), float(W)] + [float(f) for f in feats]))
    for k, v in m.state_dict().items():
        w.add(f"sd0.{k}", v.float())
    x = rnd(N, 1, H, W)
    t = (torch.rand(N, C, H, W) < 0.15).float()
    t[N - 1, C - 1] = 0                       # an absent plane
    if loss_kind != "bce":
        t[:, 2] = 0                           # a channel with no target in the batch
    w.add("x", x)
    w.add("t", t)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m.train()
    opt.zero_grad()
    y = m(x)
    loss = loss_of(loss_kind, y, t)
    loss.backward()
    w.add("logits", y)
    w.add("loss", loss.reshape(1))
    if loss_kind != "bce":
        w.add("loss_bce", F.binary_cross_entropy_with_logits(y, t).reshape(1))
        w.add("loss_dice", soft_dice(y, t).reshape(1))
    for k, p in m.named_parameters():
        w.add(f"grad.{k}", p.grad)
    opt.step()
    for k, v in m.state_dict().items():
        w.add(f"sd1.{k}", v.float())
    m.eval()
    with torch.no_grad():
        w.add("logits_eval", m(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/nn")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    w = Writer()
    layer_fixtures(w)
    w.save(os.path.join(a.out, "layers.bin"))
    w = Writer()
    loss_fixtures(w)
    w.save(os.path.join(a.out, "loss.bin"))
    w = Writer()
    masked_loss_fixtures(w)
    w.save(os.path.join(a.out, "loss_masked.bin"))
    w = Writer()
    unet_fixture(w, (8, 16), 5, 2, 8, 64, 77)   # level 0 is wide: row-buffer convs
    w.save(os.path.join(a.out, "unet_l2.bin"))
    w = Writer()
    unet_fixture(w, (4, 8, 8), 5, 2, 16, 16, 78)    # features need not double
    w.save(os.path.join(a.out, "unet_l3.bin"))
    w = Writer()
    unet_fixture(w, (8, 16), 5, 2, 8, 64, 79, "bce+dice")
    w.save(os.path.join(a.out, "unet_dice.bin"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
