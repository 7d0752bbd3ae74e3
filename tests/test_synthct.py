#!/usr/bin/python3
"""bin/synthct: the phantom dataset read back independently with nibabel + numpy.
Determinism (same seed -> same bytes, also with another thread count), the TotalSegmentator
layout (117 masks named as in the real example dataset), declared geometry, orientation and
scaling variety, non-overlapping 0/1 masks, anatomy on the correct side in world RAS+ (checked
against the real example's convention when it is there), HU ranges, meta.csv, the CLI."""
import filecmp
import gzip
import os
import re
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import nibabel as nib
except ImportError as e:
    print(f"skip: missing Python module: {e}")
    sys.exit(77)

BIN = os.environ.get("SEGKIT_BIN", "bin")
SYNTH = os.path.join(BIN, "synthct")
REAL = os.path.join(os.environ.get("SEGKIT_SHARED", "../shared"), "data", "totalseg-example", "s0000")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
if not os.access(SYNTH, os.X_OK):
    print(f"skip: {SYNTH} not built")
    sys.exit(77)

fails = 0


def check(cond, what):
    global fails
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails += 1
    return cond


def run(*args):
    return subprocess.run([SYNTH, *args], capture_output=True, text=True)


def names_reference():
    """The 117 names: from the real dataset when present, else from common/labels_ts.c."""
    seg = os.path.join(REAL, "segmentations")
    if os.path.isdir(seg):
        return sorted(f[:-7] for f in os.listdir(seg) if f.endswith(".nii.gz")), "the real example"
    src = open(os.path.join(ROOT, "common", "labels_ts.c")).read()
    body = src[src.index("{") + 1:src.index("};")]
    return sorted(re.findall(r'"([A-Za-z0-9_]+)"', body)), "common/labels_ts.c"


def world_centroid(mask, affine):
    idx = np.argwhere(mask)
    return affine[:3, :3] @ idx.mean(0) + affine[:3, 3]


def all_files(d):
    out = []
    for root, _, files in os.walk(d):
        out += [os.path.relpath(os.path.join(root, f), d) for f in files]
    return sorted(out)


# ---- CLI ----------------------------------------------------------------------------------
r = run("--help")
check(r.returncode == 0 and "usage" in r.stdout and r.stderr == "", "--help: exit 0, usage on stdout")
r = run("-V")
check(r.returncode == 0 and r.stdout.startswith("synthct "), f"-V prints the version ({r.stdout.strip()})")
for bad in (["--bogus", "x"], ["--size", "64x64", "x"], ["--subjects", "0", "x"], ["--spacing", "-1", "x"], []):
    r = run(*bad)
    check(r.returncode == 2 and r.stderr != "", f"usage error {bad}: exit 2 with a message on stderr")

N, SIZE = 4, (64, 64, 16)
with tempfile.TemporaryDirectory() as tmp:
    A, B, C = (os.path.join(tmp, x) for x in "ABC")
    common = ["--subjects", str(N), "--size", "x".join(map(str, SIZE)), "-q"]
    rs = [run(*common, "--seed", "3", A), run(*common, "--seed", "3", "--threads", "1", B), run(*common, "--seed", "4", C)]
    if not check(all(r.returncode == 0 for r in rs), "three runs exit 0: " + " | ".join(r.stderr.strip() for r in rs)):
        sys.exit(1)

    # ---- determinism ------------------------------------------------------------------------
    fa, fb = all_files(A), all_files(B)
    same = fa == fb and all(filecmp.cmp(os.path.join(A, f), os.path.join(B, f), shallow=False) for f in fa)
    check(same, f"same seed (2 threads vs 1) -> identical files ({len(fa)} files)")
    diff = [s for s in range(N) if not filecmp.cmp(os.path.join(A, f"s{s:04d}", "ct.nii.gz"),
                                                   os.path.join(C, f"s{s:04d}", "ct.nii.gz"), shallow=False)]
    check(len(diff) == N, f"another seed -> every ct.nii.gz differs ({len(diff)}/{N})")

    # ---- layout and meta.csv -------------------------------------------------------------------
    ref_names, src = names_reference()
    check(len(ref_names) == 117, f"117 reference names from {src}")
    lines = open(os.path.join(A, "meta.csv")).read().splitlines()
    rows = [l.split(";") for l in lines[1:]]
    check(lines[0] == "image_id;split" and [r[0] for r in rows] == [f"s{i:04d}" for i in range(N)]
          and all(len(r) == 2 and r[1] in ("train", "val", "test") for r in rows),
          f"meta.csv: image_id;split header and one row per subject ({lines[1:]})")
    splits = [r[1] for r in rows]
    check(splits.count("val") >= 1 and splits.count("test") >= 1 and splits.count("train") >= 1,
          "meta.csv: at least one train, val and test subject")

    codes, scaled, unscaled = set(), 0, 0
    real_conv = None
    if os.path.isdir(REAL):   # the real data's convention: sign of (liver x - spleen x) in world RAS+
        ra = nib.load(os.path.join(REAL, "ct.nii.gz")).affine
        cl = world_centroid(np.asarray(nib.load(os.path.join(REAL, "segmentations", "liver.nii.gz")).dataobj) > 0, ra)
        cs = world_centroid(np.asarray(nib.load(os.path.join(REAL, "segmentations", "spleen.nii.gz")).dataobj) > 0, ra)
        real_conv = np.sign(cl[0] - cs[0])
        print(f"     real example: liver x {cl[0]:.1f}, spleen x {cs[0]:.1f} (world RAS+ mm)")
    else:
        print(f"SKIP left/right convention against the real example: {REAL} not found")   # counted by run_tests.sh

    for s in range(N):
        sid = f"s{s:04d}"
        d = os.path.join(A, sid)
        seg = os.path.join(d, "segmentations")
        got = sorted(f[:-7] for f in os.listdir(seg))
        check(os.path.isfile(os.path.join(d, "ct.nii.gz")) and got == ref_names and
              all(f.endswith(".nii.gz") for f in os.listdir(seg)), f"{sid}: ct.nii.gz and exactly the 117 masks")
        ct = nib.load(os.path.join(d, "ct.nii.gz"))
        hu = ct.get_fdata(dtype=np.float32)
        aff = ct.affine
        code = "".join(nib.aff2axcodes(aff))
        codes.add(code)
        zooms = np.array(ct.header.get_zooms()[:3])
        col = np.linalg.norm(aff[:3, :3], axis=0)
        slc = [i for i in range(3) if code[i] in "SI"]
        inpl = [i for i in range(3) if code[i] not in "SI"]
        check(ct.get_data_dtype() == np.int16 and len(ct.shape) == 3, f"{sid}: int16 3D CT {ct.shape} {code}")
        check(np.allclose(zooms, col, atol=1e-4) and np.allclose(ct.header.get_sform(), ct.header.get_qform(), atol=1e-4),
              f"{sid}: pixdim {zooms.round(3)} = affine column norms, sform = qform")
        check(len(slc) == 1 and all(0.7 - 1e-6 <= zooms[i] <= 1.5 + 1e-6 for i in inpl) and 1.5 - 1e-6 <= zooms[slc[0]] <= 5 + 1e-6,
              f"{sid}: spacing in-plane {zooms[inpl].round(2)} in 0.7-1.5, slice {zooms[slc].round(2)} in 1.5-5")
        check(all(0.9 * SIZE[i] - 1 <= ct.shape[i] <= 1.1 * SIZE[i] + 1 for i in range(3)), f"{sid}: dims {ct.shape} within 10% of {SIZE}")
        with gzip.open(os.path.join(d, "ct.nii.gz"), "rb") as f:   # the stored fields (nibabel resets its copy)
            raw = nib.Nifti1Header.from_fileobj(f)
        slope, inter = float(raw["scl_slope"]), float(raw["scl_inter"])
        if slope in (0, 1) and inter == 0 or not np.isfinite(slope):
            unscaled += 1
        else:
            scaled += 1
        air = np.percentile(hu, 1)
        check(-1030 <= hu.min() and air < -950 and hu.max() <= 3071, f"{sid}: scl {slope}/{inter}: HU range {hu.min():.0f}..{hu.max():.0f}, 1st pct {air:.0f} (air)")

        masks, total, nonempty, bad_dtype = {}, np.zeros(ct.shape, np.int32), 0, []
        for name in ref_names:
            m = nib.load(os.path.join(seg, name + ".nii.gz"))
            a = np.asarray(m.dataobj)
            if m.shape != ct.shape or not np.allclose(m.affine, aff, atol=1e-5) or a.dtype != np.uint8:
                bad_dtype.append(name)
            if not np.isin(a, (0, 1)).all():
                bad_dtype.append(name + "(values)")
            total += a
            if a.any():
                nonempty += 1
                masks[name] = a > 0
        check(not bad_dtype, f"{sid}: masks are uint8 0/1 with the CT's shape and affine {bad_dtype[:5]}")
        check(total.max() <= 1, f"{sid}: masks do not overlap (max sum {total.max()})")
        check(nonempty >= 30, f"{sid}: {nonempty} non-empty structures (>= 30)")

        def cen(n):
            return world_centroid(masks[n], aff) if n in masks else None
        body = world_centroid(hu > -500, aff)
        need = ["liver", "spleen", "kidney_left", "kidney_right", "aorta", "urinary_bladder", "heart",
                "autochthon_left", "autochthon_right", "stomach", "spinal_cord"]
        missing = [n for n in need if n not in masks]
        if not check(not missing, f"{sid}: key structures present (missing {missing})"):
            continue
        # world RAS+: +x = patient right, +y = anterior, +z = superior
        lv, sp, kl, kr = cen("liver"), cen("spleen"), cen("kidney_left"), cen("kidney_right")
        check(lv[0] > body[0] and sp[0] < body[0] and kr[0] > kl[0] and cen("autochthon_right")[0] > cen("autochthon_left")[0]
              and cen("stomach")[0] < body[0],
              f"{sid}: liver x {lv[0] - body[0]:+.0f}, spleen {sp[0] - body[0]:+.0f}, kidney R {kr[0] - body[0]:+.0f} / L "
              f"{kl[0] - body[0]:+.0f} mm from the body centre (patient right = +x)")
        if real_conv is not None:
            check(np.sign(lv[0] - sp[0]) == real_conv, f"{sid}: liver/spleen sides follow the real example's convention")
        ribs_l = [cen(n) for n in masks if n.startswith("rib_left_")]
        ribs_r = [cen(n) for n in masks if n.startswith("rib_right_")]
        check(len(ribs_l) >= 3 and len(ribs_r) >= 3 and max(c[0] for c in ribs_l) < body[0] < min(c[0] for c in ribs_r),
              f"{sid}: {len(ribs_l)} left ribs at -x, {len(ribs_r)} right ribs at +x")
        check(cen("heart")[1] > cen("spinal_cord")[1] and cen("urinary_bladder")[1] > cen("spinal_cord")[1],
              f"{sid}: heart and bladder anterior of the spinal cord (+y)")
        check(cen("heart")[2] > lv[2] > kl[2] > cen("urinary_bladder")[2],
              f"{sid}: heart above liver above kidneys above bladder (+z)")
        verts = [n for n in ["vertebrae_S1", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1",
                             "vertebrae_T12", "vertebrae_T11", "vertebrae_T10", "vertebrae_T9", "vertebrae_T8"] if n in masks]
        vz = [cen(n)[2] for n in verts]
        check(len(verts) >= 6 and all(a < b for a, b in zip(vz, vz[1:])), f"{sid}: {len(verts)} vertebrae stacked S1 -> T upwards")
        # HU
        lung = np.zeros(ct.shape, bool)
        for n in masks:
            if n.startswith("lung_"):
                lung |= masks[n]
        bone = np.zeros(ct.shape, bool)
        for n in verts:
            bone |= masks[n]
        ao = hu[masks["aorta"]].mean()
        check(lung.any() and hu[lung].mean() < -700, f"{sid}: lung mean {hu[lung].mean():.0f} HU < -700")
        check(hu[bone].mean() > 300, f"{sid}: vertebrae mean {hu[bone].mean():.0f} HU > 300")
        check(30 <= hu[masks['liver']].mean() <= 80, f"{sid}: liver mean {hu[masks['liver']].mean():.0f} HU in 30-80")
        check(150 <= ao <= 260, f"{sid}: aorta (contrast) mean {ao:.0f} HU in 150-260")
        out = hu[total == 0]
        check(np.median(out[out < -500]) < -950, "%s: air outside the body ~ -1000 HU" % sid)

    check(len(codes) >= 3, f"orientations vary: {sorted(codes)}")
    check(any(c[0] in "AP" for c in codes), "one subject's first voxel axis runs A-P (axis permutation)")
    check(scaled >= 1 and unscaled >= 1, f"int16 stored with ({scaled}) and without ({unscaled}) scl_slope/scl_inter")

    # ---- output directory rules -------------------------------------------------------------
    other = os.path.join(tmp, "other")
    os.makedirs(other)
    open(os.path.join(other, "keep.txt"), "w").write("mine\n")
    r = run("--subjects", "1", "--size", "16x16x4", "-q", other)
    check(r.returncode == 1 and other in r.stderr and os.listdir(other) == ["keep.txt"],
          f"refuses a non-empty foreign OUT_DIR (exit {r.returncode}: {r.stderr.strip()})")
    r = run("--subjects", "1", "--size", "16x16x4", "-q", "--force", other)
    check(r.returncode == 0 and os.path.isfile(os.path.join(other, "s0000", "ct.nii.gz")) and
          os.path.isfile(os.path.join(other, "keep.txt")), "--force writes into it and keeps foreign files")
    r = run("--subjects", "2", "--size", "64x64x16", "--seed", "3", "-q", A)
    check(r.returncode == 0 and sorted(x for x in os.listdir(A) if re.fullmatch(r"s\d{4}", x)) == ["s0000", "s0001"] and
          filecmp.cmp(os.path.join(A, "s0001", "ct.nii.gz"), os.path.join(B, "s0001", "ct.nii.gz"), shallow=False),
          "rerun over its own output: stale subjects removed, the others regenerated identically")
    fixed = os.path.join(tmp, "fixed")
    r = run("--subjects", "3", "--size", "20x24x6", "--spacing", "0.8x2.5", fixed)
    lines = [l for l in r.stderr.splitlines() if re.match(r"synthct: \[\d/3\] s000\d ", l)]
    check(r.returncode == 0 and len(lines) == 3, f"one progress line per subject on stderr ({len(lines)})")
    ok = True
    for s in range(3):
        im = nib.load(os.path.join(fixed, f"s{s:04d}", "ct.nii.gz"))
        code = "".join(nib.aff2axcodes(im.affine))
        z = im.header.get_zooms()
        ok &= all(abs(z[i] - (2.5 if code[i] in "SI" else 0.8)) < 1e-5 for i in range(3))
    check(ok, "--spacing 0.8x2.5 fixes in-plane 0.8 mm and slices 2.5 mm")
    r = run("--subjects", "1", "--size", "16x16x4", "-q", fixed)
    check(r.returncode == 0 and r.stderr == "" and r.stdout == "", "-q prints nothing")
    bad = os.path.join(tmp, "afile")
    open(bad, "w").close()
    r = run("--subjects", "1", "-q", os.path.join(bad, "sub"))
    check(r.returncode == 1 and "afile" in r.stderr, f"unwritable OUT_DIR: exit 1 naming it ({r.stderr.strip()})")

print(f"test_synthct: {fails} failed")
sys.exit(1 if fails else 0)
