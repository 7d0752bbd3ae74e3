#!/usr/bin/python3
"""segprep end to end on the real TotalSegmentator example: cache contents (read with the
independent tools/segcache.py) and the exported NIfTI both match nibabel + numpy."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
sys.path.insert(0, os.path.dirname(__file__))
try:
    import numpy as np
    import nibabel as nib
    import segcache
    import prep_ref as ref
except ImportError as e:
    print(f"skip: missing Python module: {e}")
    sys.exit(77)

BIN = os.environ.get("SEGKIT_BIN", "bin")
DATA = os.path.join(os.environ.get("SEGKIT_SHARED", "../shared"), "data", "totalseg-example")
if not os.path.isdir(DATA):
    print(f"skip: {DATA} not found")
    sys.exit(77)
SUBJ = os.path.join(DATA, "s0000")
fails = 0


def check(cond, what):
    global fails
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails += 1


def check_subject(c, subj_dir, sid, tag):
    """Cached slices of sid against the nibabel + numpy reference, every CT pixel and mask bit."""
    s = c.subject(sid)
    ct_img, _ = ref.canonical(os.path.join(subj_dir, "ct.nii.gz"))
    ni, nj, nk = ct_img.shape
    check(s["n_slices"] == nk, f"{tag}: slices run along the canonical S axis ({nk})")
    check(np.allclose(s["canon_affine"], ct_img.affine, atol=1e-4), f"{tag}: canonical affine equals nibabel's as_closest_canonical")
    check(np.allclose(s["res_affine"], ref.resampled_affine(ct_img.affine, ni, nj, c.size), atol=1e-4),
          f"{tag}: resampled affine places cached voxels at the source positions")
    ct_scaled = np.asarray(ct_img.get_fdata())
    cached = [c.slice(sid, k) for k in range(nk)]
    worst, nbad = 0, 0
    for k in range(nk):
        want = ref.bilinear(ref.slice_view(ct_scaled, k), c.size)
        d = np.abs(cached[k][0].astype(np.int32) - want.astype(np.int32))
        worst = max(worst, int(d.max()))
        nbad += int((d > 0).sum())
    check(worst <= 1 and nbad <= 0.0001 * nk * c.size * c.size,
          f"{tag}: CT slices match the bilinear reference (max |d| {worst}, {nbad} px differ by 1)")
    mism, present_ref = 0, 0
    for ch, name in enumerate(c.labels):
        _, m = ref.canonical(os.path.join(subj_dir, "segmentations", name + ".nii.gz"))
        for k in range(nk):
            want = ref.nearest(ref.slice_view(m, k), c.size)
            _, masks, present = cached[k]
            mism += int((masks[ch] != want).sum())
            present_ref += int(want.any())
            if bool(present[ch]) != bool(want.any()):
                mism += 1
    check(mism == 0, f"{tag}: all {len(c.labels)} x {nk} mask planes match the nearest-neighbour reference "
                     f"({mism} mismatches, {present_ref} present planes)")
    return s


with tempfile.TemporaryDirectory() as tmp:
    cache = os.path.join(tmp, "cache")
    r = subprocess.run([f"{BIN}/segprep", DATA, cache, "-q"], capture_output=True, text=True)
    check(r.returncode == 0, f"segprep exit 0 (got {r.returncode}: {r.stderr.strip()})")
    st = json.loads(subprocess.run([f"{BIN}/segprep", "stat", cache], capture_output=True, text=True, check=True).stdout)
    check(st["n_slices"] == 30 and st["n_channels"] == 117 and st["n_subjects"] == 1, "stat: 1 subject, 30 slices, 117 channels")
    lm = json.load(open(os.path.join(cache, "label_map.json")))
    check(lm["spleen"] == 0 and lm["liver"] == 4 and lm["costal_cartilages"] == 116, "label_map.json in TotalSegmentator order")
    r = subprocess.run([f"{BIN}/segprep", "verify", cache, "-q"])
    check(r.returncode == 0, "verify passes")

    c = segcache.SegCache(cache)
    s = check_subject(c, SUBJ, "s0000", "example")
    nk = s["n_slices"]
    # export back to NIfTI and read it with nibabel
    out = os.path.join(tmp, "export")
    r = subprocess.run([f"{BIN}/segprep", "export", cache, "s0000", out, "-q"])
    check(r.returncode == 0, "export exit 0")
    e = nib.load(os.path.join(out, "ct.nii.gz"))
    check(e.shape == (c.size, c.size, nk) and e.get_data_dtype() == np.int16, f"exported CT shape {e.shape} int16")
    check(nib.aff2axcodes(e.affine) == ("L", "P", "S"), f"exported axes {nib.aff2axcodes(e.affine)} are L,P,S")
    check(np.allclose(e.affine, s["res_affine"], atol=1e-3), "exported affine is the cache's resampled affine")
    vol = np.asarray(e.dataobj)
    img5, _, _ = c.slice("s0000", 5)
    check(np.array_equal(vol[:, :, 5].T, img5), "exported voxel (c, r, k) = cached slice k pixel (r, c)")
    liver = np.asarray(nib.load(os.path.join(out, "segmentations", "liver.nii.gz")).dataobj)
    _, m = ref.canonical(os.path.join(SUBJ, "segmentations", "liver.nii.gz"))
    # world-space check: liver centroid of the export vs of the original
    def centroid(mask, aff):
        idx = np.argwhere(mask > 0).mean(axis=0)
        return (aff @ np.r_[idx, 1])[:3]
    src = nib.load(os.path.join(SUBJ, "segmentations", "liver.nii.gz"))
    d = np.linalg.norm(centroid(liver, e.affine) - centroid(np.asarray(src.dataobj), src.affine))
    check(d < 2.0, f"liver centroid in world space moves {d:.2f} mm through cache + export")
    check(len(os.listdir(os.path.join(out, "segmentations"))) == 117, "117 exported masks")

# synthetic phantoms: other orientations (LPS, permuted axes...), scaling, spacings
if os.path.exists(f"{BIN}/synthct"):
    with tempfile.TemporaryDirectory() as tmp:
        ds, cache = os.path.join(tmp, "ds"), os.path.join(tmp, "cache")
        subprocess.run([f"{BIN}/synthct", "--subjects", "5", "--seed", "11", "--size", "48x40x12", ds, "-q"], check=True)
        r = subprocess.run([f"{BIN}/segprep", ds, cache, "--size", "64", "-q"], capture_output=True, text=True)
        check(r.returncode == 0, f"segprep on phantoms exit 0 ({r.stderr.strip()})")
        c = segcache.SegCache(cache)
        codes = set()
        meta = dict(l.strip().split(";") for l in open(os.path.join(ds, "meta.csv")).readlines()[1:])
        for sub in c.subjects():
            d = os.path.join(ds, sub["id"])
            codes.add("".join(nib.aff2axcodes(nib.load(os.path.join(d, "ct.nii.gz")).affine)))
            check_subject(c, d, sub["id"], f"phantom {sub['id']}")
            check(sub["split"] == meta[sub["id"]], f"phantom {sub['id']}: split {sub['split']} from meta.csv")
        check(len(codes) >= 3, f"phantoms cover several orientations: {sorted(codes)}")
else:
    print("SKIP phantom part: bin/synthct not built")   # counted by run_tests.sh

print(f"{fails} failed")
sys.exit(1 if fails else 0)
