#!/usr/bin/python3
"""nii_write checked by an independent reader: `$SEGKIT_BUILD/tests/test_nii --write-dir DIR`
writes volumes (every datatype, scaling, rotated / flipped / permuted / sheared affines,
.nii and .nii.gz) plus a sidecar per file with what it meant to write; nibabel then opens
each file and the header fields, affine, qform, scaling and every data byte must match.
Exits 77 (skip) if nibabel or numpy is missing."""
import glob
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

try:
    import nibabel as nib
    import numpy as np
except ImportError as e:
    print(f'skip: nibabel/numpy not available ({e})')
    sys.exit(77)

DTYPES = {2: 'u1', 4: 'i2', 8: 'i4', 16: 'f4', 64: 'f8', 256: 'i1', 512: 'u2', 768: 'u4'}
fails = 0


def check(cond, msg):
    global fails
    print(('ok   ' if cond else 'FAIL ') + msg)
    if not cond:
        fails += 1


def main():
    build = os.environ.get('SEGKIT_BUILD', 'build')
    exe = os.path.join(build, 'tests', 'test_nii')
    if not os.access(exe, os.X_OK):
        print(f'FAIL {exe} not built (make {exe})')
        return 1
    tmp = tempfile.mkdtemp(prefix='test_nii_write.')
    try:
        r = subprocess.run([exe, '--write-dir', tmp], capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, f'test_nii --write-dir exit {r.returncode}')
        if r.returncode != 0:
            print(r.stdout[-3000:], r.stderr[-3000:])
        sidecars = sorted(glob.glob(os.path.join(tmp, '*.json')))
        check(len(sidecars) >= 10, f'{len(sidecars)} written volumes')
        for sc in sidecars:
            check_one(tmp, json.load(open(sc)))
        left = [f for f in os.listdir(tmp) if '.tmp.' in f]
        check(not left, f'no temp files left ({left})')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f'test_nii_write.py: {fails} failed')
    return 1 if fails else 0


def std_qform(h):
    """qform -> affine as the NIfTI-1 standard (nifti1.h method 2, nifti1_io) defines it."""
    b, c, d = (float(h[k]) for k in ('quatern_b', 'quatern_c', 'quatern_d'))
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:
        r = 1.0 / np.sqrt(b * b + c * c + d * d)
        b, c, d, a = b * r, c * r, d * r, 0.0
    else:
        a = np.sqrt(a)
    pd = [float(x) for x in h['pixdim'][:4]]
    zd = -pd[3] if pd[0] < 0 else pd[3]
    R = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                  [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                  [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    out = np.eye(4)
    out[:3, :3] = R @ np.diag([pd[1], pd[2], zd])
    out[:3, 3] = [float(h['qoffset_x']), float(h['qoffset_y']), float(h['qoffset_z'])]
    return out


def check_one(d, e):
    name = e['file']
    path = os.path.join(d, name)
    raw_file = open(path, 'rb').read()
    check(raw_file[:2] == b'\x1f\x8b' if e['gzip'] else raw_file[:4] == struct.pack('<i', 348),
          f'{name}: {"gzip" if e["gzip"] else "plain little-endian NIfTI-1"}')
    img = nib.load(path)
    h = img.header
    shape = tuple(int(x) for x in e['shape'])
    # a 2D volume is written with dim[0] = 3 and nz = 1
    check(isinstance(img, nib.Nifti1Image) and img.shape == shape, f'{name}: NIfTI-1, shape {img.shape}')
    check(int(h['datatype']) == e['datatype'] and h.get_data_dtype() == np.dtype('<' + DTYPES[e['datatype']]),
          f'{name}: datatype {int(h["datatype"])} {h.get_data_dtype()}')
    hb = gzip.decompress(raw_file) if e['gzip'] else raw_file
    check(h['magic'].item() == b'n+1' and int(h['sizeof_hdr']) == 348 and hb[344:352] == b'n+1\0\0\0\0\0',
          f'{name}: magic n+1, sizeof_hdr 348, no extensions')
    check(struct.unpack('<f', hb[108:112])[0] == 352.0 and len(hb) == 352 + img.dataobj.get_unscaled().nbytes,
          f'{name}: vox_offset 352, file = header + data')
    check(int(h['xyzt_units']) & 7 == 2, f'{name}: spatial units mm (xyzt_units {int(h["xyzt_units"])})')
    check(int(h['sform_code']) == e['sform_code'] and int(h['qform_code']) == e['qform_code'],
          f'{name}: sform_code {int(h["sform_code"])} qform_code {int(h["qform_code"])}')
    A = np.array(e['affine'])
    tol = 1e-5 * (1 + np.abs(A))
    check(np.all(np.abs(img.affine - A) <= tol), f'{name}: affine (sform) max|d| {np.abs(img.affine - A).max():.2g}')
    zooms = np.sqrt((A[:3, :3] ** 2).sum(axis=0))
    check(np.allclose(h.get_zooms()[:3], zooms, rtol=1e-6), f'{name}: pixdim = column norms {zooms}')
    Q = h.get_qform()
    qd = np.abs(Q - A).max()
    if e['orthogonal']:
        # the qform as the NIfTI-1 standard reads it must give back the affine; nibabel's
        # reader agrees to ~1e-3 (it takes sqrt() of the float32 residue 1-|bcd|^2 where the
        # standard renormalises, e.g. for 90-degree swaps whose b = c = 0.7071068)
        S = std_qform(h)
        check(np.all(np.abs(S - A) <= 1e-5 * (1 + np.abs(A))),
              f'{name}: qform (standard formula) = affine, max|d| {np.abs(S - A).max():.2g}; nibabel {qd:.2g}')
        check(qd < 2e-3, f'{name}: nibabel get_qform within its float32 precision ({qd:.2g})')
        # and our quaternion must be what nibabel itself would write for this affine
        h2 = nib.Nifti1Header()
        h2.set_qform(A, 1)
        mine = np.array([float(h[k]) for k in ('quatern_b', 'quatern_c', 'quatern_d')])
        ref = np.array([float(h2[k]) for k in ('quatern_b', 'quatern_c', 'quatern_d')])
        same = np.allclose(mine, ref, atol=1e-6) or (abs(1 - mine @ mine) < 1e-6 and np.allclose(mine, -ref, atol=1e-6))
        check(same and float(h['pixdim'][0]) == float(h2['pixdim'][0]),
              f'{name}: quaternion {mine.round(6)} qfac {float(h["pixdim"][0])} as nibabel set_qform {ref.round(6)}')
    else:
        h2 = nib.Nifti1Header()
        h2.set_qform(A, 1)
        check(np.abs(Q - h2.get_qform()).max() < 1e-4,
              f'{name}: sheared affine: qform is nibabel\'s nearest rotation (differs from the sform by {qd:.2g})')
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    want = (float(np.float32(e['slope'])), float(np.float32(e['inter'])))
    check((slope, inter) == want, f'{name}: scaling {slope} {inter} (wrote {e["slope"]} {e["inter"]})')
    data = np.asanyarray(img.dataobj.get_unscaled())
    le = data.astype(data.dtype.newbyteorder('<')).ravel(order='F').tobytes()
    check(le == bytes.fromhex(e['raw_hex']), f'{name}: all {data.size} voxels byte-exact')
    if (slope, inter) != (1.0, 0.0):
        f = img.get_fdata().ravel(order='F')
        check(np.array_equal(f, data.astype(np.float64).ravel(order='F') * slope + inter), f'{name}: scaled values')


if __name__ == '__main__':
    sys.exit(main())
