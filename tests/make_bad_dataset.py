#!/usr/bin/python3
"""Build a dataset of broken subjects around the real example (symlinks, so it is cheap):
   make_bad_dataset.py SRC_SUBJECT OUT_DIR N_GOOD
Prints the ids of the bad subjects, one per line, with the problem they carry."""
import gzip
import os
import shutil
import struct
import sys

import numpy as np
import nibabel as nib

src, out, n_good = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(out, exist_ok=True)
segs = sorted(os.listdir(os.path.join(src, "segmentations")))


def subject(name, ct=True, skip=(), replace=None):
    d = os.path.join(out, name)
    os.makedirs(os.path.join(d, "segmentations"), exist_ok=True)
    if ct:
        os.symlink(os.path.abspath(os.path.join(src, "ct.nii.gz")), os.path.join(d, "ct.nii.gz"))
    for f in segs:
        if f in skip or (replace and f == replace):
            continue
        os.symlink(os.path.abspath(os.path.join(src, "segmentations", f)), os.path.join(d, "segmentations", f))
    return d


for i in range(n_good):
    subject(f"g{i:03d}")
ct = nib.load(os.path.join(src, "ct.nii.gz"))
raw_ct = open(os.path.join(src, "ct.nii.gz"), "rb").read()
bad = []

d = subject("b_truncated", ct=False)
open(os.path.join(d, "ct.nii.gz"), "wb").write(raw_ct[: len(raw_ct) // 2])
bad.append(("b_truncated", "truncated"))

d = subject("b_corrupt", ct=False)
b = bytearray(raw_ct)
for k in range(len(b) // 2, len(b) // 2 + 64):
    b[k] ^= 0xFF
open(os.path.join(d, "ct.nii.gz"), "wb").write(bytes(b))
bad.append(("b_corrupt", "corrupt"))

d = subject("b_shape", replace="liver.nii.gz")
nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), ct.affine), os.path.join(d, "segmentations", "liver.nii.gz"))
bad.append(("b_shape", "liver.nii.gz"))

d = subject("b_affine", replace="liver.nii.gz")
aff = ct.affine.copy()
aff[0, 3] += 25.0
nib.save(nib.Nifti1Image(np.zeros(ct.shape, np.uint8), aff), os.path.join(d, "segmentations", "liver.nii.gz"))
bad.append(("b_affine", "liver.nii.gz"))

d = subject("b_missing", skip=("spleen.nii.gz",))
bad.append(("b_missing", "spleen"))

d = subject("b_text", ct=False)
open(os.path.join(d, "ct.nii.gz"), "w").write("this is not a NIfTI file\n" * 20)
bad.append(("b_text", "ct.nii.gz"))


def patched(name, fn):
    d = subject(name, ct=False)
    p = os.path.join(d, "ct.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), ct.affine), p)
    b = bytearray(open(p, "rb").read())
    fn(b)
    open(p, "wb").write(bytes(b))
    bad.append((name, "ct.nii"))


patched("b_huge", lambda b: struct.pack_into("<hhhh", b, 40, 3, 32767, 32767, 32767))
patched("b_negative", lambda b: struct.pack_into("<hhhh", b, 40, 3, -5, 4, 4))
patched("b_dtype", lambda b: struct.pack_into("<h", b, 70, 1234))
patched("b_dim0", lambda b: struct.pack_into("<h", b, 40, 9))
for name, what in bad:
    print(name, what)
