#!/usr/bin/env python3
"""Helpers for tests/test_segeval.sh (numpy / scipy / nibabel only, no torch).

  segeval_ref.py make-compare S OUT      perturbed predictions of the example subject S in
                                         several layouts (multilabel, subject folders,
                                         nnU-Net case files + dataset.json), and
                                         OUT/expected.json: metrics computed here, with
                                         the reference rules of tools/make_metric_fixtures.py
  segeval_ref.py check-compare OUT_DIR TAG EXPECTED.json KEY
                                         compare segeval's CSV / JSON with the expectation
  segeval_ref.py check-predict S PRED_DIR LIVER_LABEL
                                         segmentation.nii.gz and segmentations/liver.nii.gz have
                                         the CT's shape and affine; liver voxels (LIVER_LABEL in
                                         the multilabel) lie inside the real liver
"""
import csv
import json
import math
import os
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from make_metric_fixtures import reference_metrics  # noqa: E402

TS = None


def ts_names():
    """TotalSegmentator v2 'total' order, read from common/labels_ts.c (the list is data, not logic)."""
    global TS
    if TS is None:
        src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common", "labels_ts.c")).read()
        body = src[src.index("{", src.index("labels_ts_total")) + 1:src.index("};")]
        TS = [t.strip().strip('"') for t in body.replace("\n", " ").split(",") if t.strip()]
    return TS


def load_masks(seg_dir, names):
    out = {}
    for n in names:
        p = os.path.join(seg_dir, n + ".nii.gz")
        if os.path.exists(p):
            out[n] = np.asarray(nib.load(p).dataobj) != 0
    return out


def perturb(masks, shape, variant):
    """A prediction with known kinds of errors: shifted, eroded, missing, false positive."""
    pred = {k: v.copy() for k, v in masks.items()}
    if variant == 0:
        pred["liver"] = np.roll(masks["liver"], 2, axis=0)
        pred["spleen"] = np.zeros(shape, bool)                                    # missed
        pred["kidney_left"] = ndimage.binary_erosion(masks["kidney_left"], iterations=1)
        b = np.zeros(shape, bool); b[5:12, 5:12, 3:8] = True
        pred["brain"] = b                                                         # false positive on an absent structure
        pred["stomach"] = ndimage.binary_dilation(masks["stomach"], iterations=2)
    else:
        pred["aorta"] = np.roll(masks["aorta"], -3, axis=1)
        pred["pancreas"] = np.zeros(shape, bool)
        pred["liver"] = ndimage.binary_erosion(masks["liver"], iterations=2)
    return pred


def to_multilabel(pred, names, shape):
    ml = np.zeros(shape, np.uint8)
    for i, n in enumerate(names):
        if n in pred:
            ml[pred[n]] = i + 1
    return ml


def metrics_from(ref, ml_pred, names, sp, tol=2.0):
    """Expected metrics: reference masks vs. the masks the multilabel file decodes to."""
    exp = {}
    shape = ml_pred.shape
    for i, n in enumerate(names):
        r = ref.get(n, np.zeros(shape, bool))
        exp[n] = reference_metrics(r, ml_pred == i + 1, sp, tol)
    return exp


def make_compare(S, out):
    names = ts_names()
    ct = nib.load(os.path.join(S, "ct.nii.gz"))
    aff, shape = ct.affine, ct.shape
    sp = tuple(float(z) for z in ct.header.get_zooms()[:3])
    ref = load_masks(os.path.join(S, "segmentations"), names)
    expected = {}
    os.makedirs(out, exist_ok=True)
    # (1) one subject: multilabel prediction file
    ml0 = to_multilabel(perturb(ref, shape, 0), names, shape)
    nib.save(nib.Nifti1Image(ml0, aff), os.path.join(out, "pred0.nii.gz"))
    expected["single"] = {"s0000": metrics_from(ref, ml0, names, sp)}
    # (2) dataset of subject folders (reference) vs. folder of subject folders with segmentation.nii.gz
    ml1 = to_multilabel(perturb(ref, shape, 1), names, shape)
    for sid, ml in (("a", ml0), ("b", ml1)):
        d = os.path.join(out, "ds_ref", sid)
        os.makedirs(d, exist_ok=True)
        if not os.path.exists(os.path.join(d, "segmentations")):
            os.symlink(os.path.abspath(os.path.join(S, "segmentations")), os.path.join(d, "segmentations"))
            os.symlink(os.path.abspath(os.path.join(S, "ct.nii.gz")), os.path.join(d, "ct.nii.gz"))
        p = os.path.join(out, "ds_pred", sid)
        os.makedirs(p, exist_ok=True)
        nib.save(nib.Nifti1Image(ml, aff), os.path.join(p, "segmentation.nii.gz"))
    os.makedirs(os.path.join(out, "ds_pred", "extra"), exist_ok=True)    # prediction without reference: ignored
    nib.save(nib.Nifti1Image(ml1, aff), os.path.join(out, "ds_pred", "extra", "segmentation.nii.gz"))
    expected["dataset"] = {"a": expected["single"]["s0000"], "b": metrics_from(ref, ml1, names, sp)}
    # (3) nnU-Net: labelsTr/<case>.nii.gz vs. predictions/<case>.nii.gz + dataset.json, own label values
    sub = ["liver", "spleen", "kidney_left", "aorta", "stomach"]
    lab = {"background": 0, **{n: i + 1 for i, n in enumerate(sub)}}
    os.makedirs(os.path.join(out, "nn", "labelsTr"), exist_ok=True)
    os.makedirs(os.path.join(out, "nn", "pred"), exist_ok=True)
    gt = to_multilabel(ref, sub, shape)
    pr = to_multilabel(perturb(ref, shape, 0), sub, shape)
    for case in ("case_001", "case_002"):
        nib.save(nib.Nifti1Image(gt, aff), os.path.join(out, "nn", "labelsTr", case + ".nii.gz"))
        nib.save(nib.Nifti1Image(pr, aff), os.path.join(out, "nn", "pred", case + ".nii.gz"))
    with open(os.path.join(out, "nn", "pred", "dataset.json"), "w") as f:
        json.dump({"channel_names": {"0": "CT"}, "labels": lab, "file_ending": ".nii.gz"}, f)
    gtm = {n: gt == i + 1 for i, n in enumerate(sub)}
    e = metrics_from(gtm, pr, sub, sp)
    expected["nnunet"] = {"case_001": e, "case_002": e}
    # (4) a prediction on another grid
    nib.save(nib.Nifti1Image(ml0[:, :, :-2], aff), os.path.join(out, "cropped.nii.gz"))
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"fixtures in {out}: spacing {sp}, shape {shape}")


def close(a, b, tol):
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        an = a is None or (isinstance(a, float) and math.isnan(a))
        bn = b is None or (isinstance(b, float) and math.isnan(b))
        return an and bn
    return abs(a - b) <= tol * (1 + abs(b))


def check_compare(out_dir, tag, expected_path, key):
    exp = json.load(open(expected_path))[key]
    rows = list(csv.DictReader(open(os.path.join(out_dir, f"evaluation_results_{tag}.csv"))))
    got = {(r["subject"], r["structure"]): r for r in rows}
    bad, n = 0, 0
    worst = []
    for sid, per in exp.items():
        for name, e in per.items():
            r = got.get((sid, name))
            n += 1
            if r is None:
                bad += 1
                worst.append(f"missing row {sid}/{name}")
                continue
            f = lambda k: float(r[k])
            checks = [("case", r["case"] == e["case"]), ("tp", int(r["tp"]) == e["tp"]), ("fp", int(r["fp"]) == e["fp"]),
                      ("fn", int(r["fn"]) == e["fn"]), ("dice", close(f("dice"), e["dice"], 1e-5)),
                      ("iou", close(f("iou"), e["iou"], 1e-5)), ("hd95", close(f("hd95_mm"), e["hd95"], 1e-5)),
                      ("nsd", close(f("nsd"), e["nsd"], 1e-5)), ("vol", close(f("vol_ref_ml"), e["vol_ref_ml"], 1e-5))]
            for k, ok in checks:
                if not ok:
                    bad += 1
                    worst.append(f"{sid}/{name} {k}: segeval {r} vs numpy {e}")
                    break
    if len(rows) != sum(len(v) for v in exp.values()):
        bad += 1
        worst.append(f"{len(rows)} CSV rows, expected {sum(len(v) for v in exp.values())}")
    # summary json: our keys and nnU-Net's
    js = json.load(open(os.path.join(out_dir, f"summary_{tag}.json")))
    for k in ("metric_per_case", "mean", "foreground_mean", "per_structure", "overall", "detection", "rules"):
        if k not in js:
            bad += 1
            worst.append(f"summary json lacks '{k}'")
    names = list(next(iter(exp.values())).keys())
    for i, name in enumerate(names):
        ds = [e[name]["dice"] for e in exp.values() if e[name]["dice"] is not None]
        m = js["mean"][str(i + 1)]["Dice"]
        want = float(np.mean(ds)) if ds else None
        if not close(m, want, 1e-6):
            bad += 1
            worst.append(f"nnU-Net mean['{i + 1}'].Dice {m} vs {want} ({name})")
        present = [e[name]["dice"] for e in exp.values() if e[name]["case"] in ("tp_both", "missed")]
        pm = js["per_structure"][name]["dice_mean"]
        if not close(pm, float(np.mean(present)) if present else None, 1e-6):
            bad += 1
            worst.append(f"per_structure {name} dice_mean {pm} vs {present}")
    pooled = js["overall"]["pooled"]
    cases = [e["case"] for per in exp.values() for e in per.values()]
    for k, c in (("n_missed", "missed"), ("n_fp_absent", "fp_absent"), ("n_both_empty", "both_empty")):
        if pooled[k] != cases.count(c):
            bad += 1
            worst.append(f"overall.pooled.{k} = {pooled[k]}, expected {cases.count(c)}")
    for w in worst[:8]:
        print("  mismatch:", w)
    print(f"{key}: {n} (subject, structure) pairs checked against numpy/scipy, {bad} mismatches")
    return 0 if bad == 0 else 1


def check_predict(S, pred_dir, liver_label):
    ct = nib.load(os.path.join(S, "ct.nii.gz"))
    ok = True
    for name in ("segmentation.nii.gz", os.path.join("segmentations", "liver.nii.gz")):
        seg = nib.load(os.path.join(pred_dir, name))
        if seg.shape != ct.shape:
            print(f"FAIL {name}: shape {seg.shape} vs CT {ct.shape}"); ok = False
        if not np.array_equal(seg.affine, ct.affine):
            print(f"FAIL {name}: affine differs:\n{seg.affine}\nvs\n{ct.affine}"); ok = False
        if seg.get_data_dtype() not in (np.uint8, np.uint16):
            print(f"FAIL {name}: dtype {seg.get_data_dtype()}"); ok = False
    print(f"shape {ct.shape} and affine equal to the CT's (nibabel), dtype {seg.get_data_dtype()}")
    lab = np.asarray(nib.load(os.path.join(pred_dir, "segmentation.nii.gz")).dataobj)
    mask = np.asarray(nib.load(os.path.join(pred_dir, "segmentations", "liver.nii.gz")).dataobj) != 0
    pl = lab == int(liver_label)
    if (pl & ~mask).any():
        print("FAIL multilabel liver voxels outside the per-structure liver mask"); ok = False
    real = np.asarray(nib.load(os.path.join(S, "segmentations", "liver.nii.gz")).dataobj) != 0
    inside = (pl & real).sum() / max(pl.sum(), 1)
    dice = 2 * (pl & real).sum() / max(pl.sum() + real.sum(), 1)
    print(f"predicted liver: {pl.sum()} voxels, {100 * inside:.1f}% inside the real liver ({real.sum()} voxels), Dice {dice:.3f}")
    if pl.sum() < 0.2 * real.sum() or inside < 0.6:
        print("FAIL the predicted liver is not (mostly) inside the real liver"); ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make-compare":
        make_compare(sys.argv[2], sys.argv[3])
    elif cmd == "check-compare":
        sys.exit(check_compare(*sys.argv[2:6]))
    elif cmd == "check-predict":
        sys.exit(check_predict(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        sys.exit(f"unknown command {cmd}")
