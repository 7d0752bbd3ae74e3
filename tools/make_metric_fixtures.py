#!/usr/bin/env python3
"""Write tests/fixtures/metrics/cases.json: hand-made segmentation cases with metrics
computed independently with numpy/scipy, for tests/test_metrics.c.

Reference rules (the ones eval/metrics.h states):
  surface  = mask & ~binary_erosion(mask, 6-connected cross, border_value=0)
  directed = distance_transform_edt(~other_surface, sampling=spacing)[surface]
  HD95     = max(percentile(d_ref->pred, 95), percentile(d_pred->ref, 95))  (numpy linear)
  NSD      = (#d_ref->pred <= tol + #d_pred->ref <= tol) / (#ref surf + #pred surf)
  both empty: Dice/IoU/HD95/NSD NaN; ref empty only: Dice = IoU = 0, HD95/NSD NaN;
  pred empty only (miss): Dice = IoU = NSD = 0, HD95 = sqrt(sum((n_i*sp_i)^2)).
Masks are stored run-length encoded over the flat index (x fastest): [start, length, ...].

usage: /usr/bin/python3 tools/make_metric_fixtures.py [OUT_DIR]
"""
import json
import math
import os
import sys

import numpy as np
from scipy import ndimage


def rle(mask):
    flat = mask.transpose(2, 1, 0).reshape(-1).astype(np.int8)   # (x, y, z) array -> x fastest
    d = np.diff(np.concatenate([[0], flat, [0]]))
    starts = np.nonzero(d == 1)[0]
    ends = np.nonzero(d == -1)[0]
    out = []
    for s, e in zip(starts, ends):
        out += [int(s), int(e - s)]
    return out


def surface(m):
    cross = ndimage.generate_binary_structure(3, 1)
    return m & ~ndimage.binary_erosion(m, structure=cross, border_value=0)


def reference_metrics(ref, pred, sp, tol, q=95.0):
    tp = int((ref & pred).sum())
    n_ref, n_pred = int(ref.sum()), int(pred.sum())
    fp, fn = n_pred - tp, n_ref - tp
    vox_ml = sp[0] * sp[1] * sp[2] / 1000.0
    r = dict(tp=tp, fp=fp, fn=fn, n_ref=n_ref, n_pred=n_pred,
             vol_ref_ml=n_ref * vox_ml, vol_pred_ml=n_pred * vox_ml)
    nan = None   # JSON null = NaN
    if n_ref == 0 and n_pred == 0:
        r.update(case="both_empty", dice=nan, iou=nan, hd95=nan, nsd=nan, n_surf_ref=0, n_surf_pred=0)
        return r
    r["dice"] = 2 * tp / (2 * tp + fp + fn)
    r["iou"] = tp / (tp + fp + fn)
    if n_ref == 0:
        r.update(case="fp_absent", hd95=nan, nsd=nan, n_surf_ref=0, n_surf_pred=0)
        return r
    if n_pred == 0:
        diag = math.sqrt(sum((ref.shape[i] * sp[i]) ** 2 for i in range(3)))
        r.update(case="missed", hd95=diag, nsd=0.0, n_surf_ref=0, n_surf_pred=0)
        return r
    sr, spd = surface(ref), surface(pred)
    d_rp = ndimage.distance_transform_edt(~spd, sampling=sp)[sr]
    d_pr = ndimage.distance_transform_edt(~sr, sampling=sp)[spd]
    hd = max(np.percentile(d_rp, q), np.percentile(d_pr, q))
    nsd = ((d_rp <= tol).sum() + (d_pr <= tol).sum()) / (d_rp.size + d_pr.size)
    r.update(case="tp_both", hd95=float(hd), nsd=float(nsd), n_surf_ref=int(sr.sum()), n_surf_pred=int(spd.sum()))
    return r


def ball(shape, c, rad, sp=(1, 1, 1)):
    g = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    d2 = sum(((g[i] - c[i]) * sp[i]) ** 2 for i in range(3))
    return d2 <= rad * rad


def blob(rng, shape, frac=0.5, sigma=2.0):
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise > np.quantile(noise, 1 - frac)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/metrics"
    rng = np.random.default_rng(20240611)
    cases = []

    def add(name, ref, pred, sp, tol=2.0):
        ref, pred = ref.astype(bool), pred.astype(bool)
        cases.append(dict(name=name, dim=list(ref.shape), spacing=list(map(float, sp)), tol=tol,
                          ref=rle(ref), pred=rle(pred), expect=reference_metrics(ref, pred, sp, tol)))

    sh = (20, 18, 10)
    b = blob(rng, sh, 0.3)
    add("perfect", b, b, (1.0, 1.0, 1.0))
    a = np.zeros(sh, bool); a[2:6, 3:8, 2:5] = True
    c = np.zeros(sh, bool); c[12:18, 9:15, 5:9] = True
    add("disjoint", a, c, (1.0, 1.0, 1.0))
    z = np.zeros(sh, bool)
    add("empty_empty", z, z, (1.0, 1.0, 1.0))
    f = np.ones(sh, bool)
    add("empty_ref_full_pred", z, f, (1.0, 1.0, 1.0))
    add("full_ref_empty_pred", f, z, (0.75, 1.25, 2.5))
    add("full_vs_full_minus_corner", f, f & ~ball(sh, (0, 0, 0), 4), (1.0, 1.0, 1.0))
    o1 = np.zeros(sh, bool); o1[5, 6, 4] = True
    add("one_voxel_same", o1, o1, (1.0, 1.0, 1.0))
    o2 = np.zeros(sh, bool); o2[8, 6, 4] = True
    add("one_voxel_shift3", o1, o2, (1.0, 1.0, 1.0))
    o3 = np.zeros(sh, bool); o3[5, 6, 5] = True
    add("one_voxel_shift_z_aniso", o1, o3, (0.75, 0.75, 2.5))
    add("one_voxel_vs_blob", o1, b, (1.0, 1.0, 1.0))
    sp = (0.75, 1.25, 2.5)
    add("aniso_blobs", blob(rng, (30, 24, 12), 0.35), blob(rng, (30, 24, 12), 0.35), sp)
    add("aniso_ball_shift", ball((32, 32, 12), (15, 15, 6), 9, sp), ball((32, 32, 12), (17, 14, 6), 9, sp), sp)
    add("aniso_ball_shift_tol1", ball((32, 32, 12), (15, 15, 6), 9, sp), ball((32, 32, 12), (17, 14, 6), 9, sp), sp, tol=1.0)
    gsp = (0.7, 0.9, 1.7)   # not binary fractions: compared with a tolerance
    add("aniso_general_spacing", blob(rng, (25, 21, 9), 0.4), blob(rng, (25, 21, 9), 0.4), gsp)
    add("odd_plane_size_13x11", blob(rng, (13, 11, 7), 0.4, 1.5), blob(rng, (13, 11, 7), 0.4, 1.5), (1.0, 1.0, 1.0))
    big = ball((40, 40, 16), (20, 20, 8), 12)
    add("ball_vs_eroded", big, ndimage.binary_erosion(big, iterations=2), (1.0, 1.0, 1.0))
    for i in range(4):
        shp = tuple(int(x) for x in rng.integers(6, 24, size=3))
        add(f"random_{i}", blob(rng, shp, float(rng.uniform(0.05, 0.5)), 1.2),
            blob(rng, shp, float(rng.uniform(0.05, 0.5)), 1.2), (1.0, 0.5, 2.0))

    # EDT reference: sparse features, general spacing
    feat = rng.random((15, 12, 9)) < 0.02
    feat[0, 0, 0] = True
    esp = (0.7, 1.1, 2.3)
    edt = ndimage.distance_transform_edt(~feat, sampling=esp)
    edt_case = dict(dim=list(feat.shape), spacing=list(esp), feat=rle(feat),
                    dist=[round(float(v), 12) for v in edt.transpose(2, 1, 0).reshape(-1)])

    # percentile reference
    vals = rng.random(37) * 10
    pct = dict(values=[float(v) for v in vals],
               q=[0, 5, 50, 95, 99.5, 100],
               expect=[float(np.percentile(vals, q)) for q in [0, 5, 50, 95, 99.5, 100]])

    os.makedirs(out_dir, exist_ok=True)
    doc = dict(generator="tools/make_metric_fixtures.py", numpy=np.__version__,
               cases=cases, edt=edt_case, percentile=pct)
    path = os.path.join(out_dir, "cases.json")
    with open(path, "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
    print(f"{path}: {len(cases)} cases, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
