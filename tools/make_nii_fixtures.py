#!/usr/bin/python3
"""Write the NIfTI reader fixtures in tests/fixtures/nii/ (run from the repo root with
Debian's /usr/bin/python3; needs nibabel and numpy).

Each good fixture <name>.nii[.gz] gets a sidecar <name>.nii[.gz].json holding what
nibabel reads from it: shape, datatype code, version, the scaling nii_read must report,
sform/qform codes, pixdim, the affine nii_read must return ("affine") next to nibabel's
img.affine ("affine_nibabel"), the raw voxel bytes (little endian, x fastest, hex) and
the scaled values (x fastest; non-finite values as the strings "nan"/"inf"/"-inf").
Where the two affines legitimately differ, "affine_note" says why:
  * sform_code = qform_code = 0: nibabel falls back to a centred, x-flipped "base" affine;
    the NIfTI-1 standard (method 1) and segkit use diag(pixdim) with zero offset.
  * a qform whose quaternion has 1 - (b^2+c^2+d^2) just above zero because of float32
    rounding: the standard renormalises (b,c,d) below 1e-7, nibabel takes sqrt() of the
    tiny residue and returns a rotation that is off by ~1e-4.
Bad inputs are listed in bad.json with the SEG_E* code nii_read must return (and
whether nii_read_header succeeds on them).

    /usr/bin/python3 tools/make_nii_fixtures.py [outdir] [--real DIR]

--real DIR (default ../shared/data/totalseg-example/s0000, if present) also writes
real_example.json: shape/affine/sum/min/max/checksum of DIR/ct.nii.gz and one mask,
as nibabel reads them, so the C test can check the real files without Python.
"""
import gzip
import json
import os
import struct
import sys

import nibabel as nib
import numpy as np

SHAPE = (5, 4, 3)
DT = {  # numpy dtype -> NIfTI code
    'uint8': 2, 'int16': 4, 'int32': 8, 'float32': 16, 'float64': 64,
    'int8': 256, 'uint16': 512, 'uint32': 768,
}

# field offsets (NIfTI-1 / NIfTI-2) and their struct codes
F1 = {'dim': (40, 'h'), 'datatype': (70, 'h'), 'pixdim': (76, 'f'), 'vox_offset': (108, 'f'),
      'scl_slope': (112, 'f'), 'scl_inter': (116, 'f'), 'qform_code': (252, 'h'), 'sform_code': (254, 'h'),
      'magic': (344, None)}
F2 = {'dim': (16, 'q'), 'datatype': (12, 'h'), 'pixdim': (104, 'd'), 'vox_offset': (168, 'q'),
      'scl_slope': (176, 'd'), 'scl_inter': (184, 'd'), 'qform_code': (344, 'i'), 'sform_code': (348, 'i'),
      'magic': (4, None)}


def gz(b):
    return gzip.compress(b, compresslevel=6, mtime=0)


def endian_of(b):
    return '<' if struct.unpack('<i', b[:4])[0] in (348, 540) else '>'


def patch(b, field, value, index=0):
    """Overwrite one header field (element index of an array field) in file image b."""
    b = bytearray(b)
    e = endian_of(b)
    fields = F1 if struct.unpack(e + 'i', b[:4])[0] == 348 else F2
    off, code = fields[field]
    off += index * struct.calcsize(code)
    struct.pack_into(e + code, b, off, value)
    return bytes(b)


def rot(axis, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    R = np.eye(3)
    R[i, i] = R[j, j] = c
    R[i, j], R[j, i] = -s, s
    return R


def affine(R, zooms, offset):
    A = np.eye(4)
    A[:3, :3] = np.asarray(R, float) @ np.diag(zooms)
    A[:3, 3] = offset
    return A


def axcodes_affine(codes, zooms=(1.5, 2.0, 2.5), offset=(-30.0, 12.5, 7.25)):
    """Affine whose voxel axes point along the given RAS letters, e.g. 'LPS', 'PSR'."""
    R = np.zeros((3, 3))
    pos = {'R': (0, 1), 'L': (0, -1), 'A': (1, 1), 'P': (1, -1), 'S': (2, 1), 'I': (2, -1)}
    for col, ch in enumerate(codes):
        row, sign = pos[ch]
        R[row, col] = sign
    return affine(R, zooms, offset)


def std_qform(h, version):
    """The qform affine as the NIfTI-1 standard (nifti1_io's quatern_to_mat44) defines it."""
    b, c, d = (float(h[k]) for k in ('quatern_b', 'quatern_c', 'quatern_d'))
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:
        r = 1.0 / np.sqrt(b * b + c * c + d * d)
        b, c, d, a = b * r, c * r, d * r, 0.0
    else:
        a = np.sqrt(a)
    pd = [float(x) for x in h['pixdim'][:4]]
    for i in (1, 2, 3):
        if pd[i] == 0 or not np.isfinite(pd[i]):
            pd[i] = 1.0
    xd, yd, zd = (p if p > 0 else 1.0 for p in pd[1:4])
    if pd[0] < 0:
        zd = -zd
    R = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                  [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                  [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    A = np.eye(4)
    A[:3, :3] = R @ np.diag([xd, yd, zd])
    A[:3, 3] = [float(h['qoffset_x']), float(h['qoffset_y']), float(h['qoffset_z'])]
    return A


def expected_affine(h):
    if int(h['sform_code']) > 0:
        A = np.eye(4)
        A[:3] = np.stack([h['srow_x'], h['srow_y'], h['srow_z']]).astype(np.float64)
        return A
    if int(h['qform_code']) > 0:
        return std_qform(h, 1)
    pd = [float(x) for x in h['pixdim'][1:4]]
    return np.diag([abs(p) if p != 0 and np.isfinite(p) else 1.0 for p in pd] + [1.0])


def fval(x):
    x = float(x)
    if np.isnan(x):
        return 'nan'
    if np.isinf(x):
        return 'inf' if x > 0 else '-inf'
    return x


def sidecar(path, b):
    """Describe file image b (written to path) as nibabel reads it."""
    raw = gz_or_plain(b)
    version = 1 if struct.unpack(endian_of(raw) + 'i', raw[:4])[0] == 348 else 2
    klass = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    img = klass.from_bytes(raw)
    h = img.header
    shape = (list(img.shape) + [1] * 3)[:3]
    assert all(d == 1 for d in img.shape[3:])
    data = np.asanyarray(img.dataobj.get_unscaled()).reshape(shape, order='F')
    # nibabel moves the scaling into the array proxy on load (1, 0 when the header has none)
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    vals = data.astype(np.float64).ravel(order='F') * slope + inter
    le = data.astype(data.dtype.newbyteorder('<')).ravel(order='F').tobytes()
    A, Anib = expected_affine(h), img.affine
    note = ''
    if np.abs(A - Anib).max() > 1e-5:
        if int(h['sform_code']) == 0 and int(h['qform_code']) == 0:
            note = 'no sform/qform: nibabel uses a centred x-flipped base affine, NIfTI-1 method 1 is diag(pixdim)'
        elif int(h['sform_code']) == 0:
            note = 'qform with 1-(b^2+c^2+d^2) < 1e-7: the NIfTI-1 standard renormalises, nibabel does not'
        else:
            raise SystemExit(f'{path}: expected and nibabel affines differ unexpectedly')
    pd = [float(x) for x in h['pixdim'][1:4]]
    out = {
        'file': os.path.basename(path), 'shape': shape, 'datatype': int(h['datatype']), 'version': version,
        'big_endian': endian_of(raw) == '>', 'gzip': b[:2] == b'\x1f\x8b',
        'slope': slope, 'inter': inter, 'sform_code': int(h['sform_code']), 'qform_code': int(h['qform_code']),
        'pixdim': [abs(p) if p != 0 and np.isfinite(p) else 1.0 for p in pd],
        'affine': A.tolist(), 'affine_nibabel': Anib.tolist(), 'affine_note': note,
        'raw_hex': le.hex(), 'values': [fval(x) for x in vals],
    }
    with open(path + '.json', 'w') as f:
        json.dump(out, f, indent=1)


def gz_or_plain(b):
    return gzip.decompress(b) if b[:2] == b'\x1f\x8b' else b


def make(data, A, version=1, endian='<', sform=1, qform=1, ext=None):
    """NIfTI file image of data (shape as given, x fastest on disk) with both transforms set."""
    if version == 1:
        hdr = nib.Nifti1Header(endianness=endian)
        img = nib.Nifti1Image(data, A, header=hdr)
    else:
        hdr = nib.Nifti2Header(endianness=endian)
        img = nib.Nifti2Image(data, A, header=hdr)
    img.set_data_dtype(data.dtype)
    img.set_sform(A, sform)
    img.set_qform(A, qform)
    img.header.set_slope_inter(1.0, 0.0)
    if ext is not None:
        img.header.extensions.append(nib.nifti1.Nifti1Extension('comment', ext))
    b = img.to_bytes()
    assert endian_of(b) == endian
    return b


def pattern(dtype, shape=SHAPE, seed=0):
    """Deterministic data covering each type's range, including its extremes."""
    rng = np.random.RandomState(seed)
    n = int(np.prod(shape))
    dt = np.dtype(dtype)
    if dt.kind in 'iu':
        info = np.iinfo(dt)
        x = rng.randint(max(info.min, -2**31), min(info.max, 2**31 - 1) + 1, size=n, dtype=np.int64)
        x[:4] = [info.min, info.max, 0, 1]
        return x.astype(dt).reshape(shape, order='F')
    x = rng.standard_normal(n) * 1000
    if dt == np.float32:
        x[:6] = [np.finfo(np.float32).max, -np.finfo(np.float32).tiny / 4, -0.0, np.nan, np.inf, -np.inf]
    else:
        x[:6] = [1e300, -5e-324, -0.0, np.nan, -np.inf, 1.0 / 3.0]
    return x.astype(dt).reshape(shape, order='F')


def main():
    args = sys.argv[1:]
    real = '../shared/data/totalseg-example/s0000'
    if '--real' in args:
        i = args.index('--real')
        real = args[i + 1]
        del args[i:i + 2]
    out = args[0] if args else 'tests/fixtures/nii'
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        if f.endswith(('.nii', '.gz', '.json', '.hdr', '.txt', '.bin')):
            os.remove(os.path.join(out, f))

    def good(name, b):
        p = os.path.join(out, name)
        with open(p, 'wb') as f:
            f.write(b)
        sidecar(p, b)

    A0 = affine(rot(2, 20) @ rot(0, -10), (0.8, 0.9, 2.5), (-100.5, 42.0, 17.75))
    # every datatype, plain and gzip'd
    for i, dt in enumerate(DT):
        b = make(pattern(dt, seed=i), A0)
        good(f'dtype_{dt}.nii', b)
        good(f'dtype_{dt}.nii.gz', gz(b))
    # big endian, both versions
    for i, dt in enumerate(('int16', 'uint32', 'float64', 'uint8')):
        b = make(pattern(dt, seed=10 + i), A0, endian='>')
        good(f'be_{dt}.nii' if i % 2 == 0 else f'be_{dt}.nii.gz', b if i % 2 == 0 else gz(b))
    good('nifti2_float32.nii', make(pattern('float32', seed=20), A0, version=2))
    good('nifti2_int16_be.nii.gz', gz(make(pattern('int16', seed=21), A0, version=2, endian='>')))
    good('nifti2_uint8_qform.nii', make(pattern('uint8', seed=22), axcodes_affine('PSR'), version=2, sform=0))
    # scaling: used when slope is non-zero and finite, else ignored
    base = make(pattern('int16', seed=30), A0)
    good('scaled_int16.nii.gz', gz(patch(patch(base, 'scl_slope', 0.5), 'scl_inter', -1024.0)))
    good('scaled_uint8.nii', patch(patch(make(pattern('uint8', seed=31), A0), 'scl_slope', 2.25), 'scl_inter', 3.0))
    good('scaled_float32_be.nii', patch(patch(make(pattern('float32', seed=32), A0, endian='>'), 'scl_slope', -1.5),
                                        'scl_inter', 0.125))
    good('scaled_nifti2.nii', patch(patch(make(pattern('int32', seed=33), A0, version=2), 'scl_slope', 1e-3),
                                    'scl_inter', 7.0))
    good('slope_one_inter.nii.gz', gz(patch(base, 'scl_inter', -1024.0)))   # the usual CT offset
    good('slope_zero.nii', patch(patch(base, 'scl_slope', 0.0), 'scl_inter', 5.0))
    good('slope_nan.nii', patch(patch(base, 'scl_slope', float('nan')), 'scl_inter', 5.0))
    good('slope_inf.nii', patch(base, 'scl_slope', float('inf')))
    # which transform wins
    Aq = affine(rot(1, 30) @ rot(2, -15), (1.25, 1.25, 3.0), (10.0, -20.0, 30.0))
    good('qform_only.nii', make(pattern('int16', seed=40), Aq, sform=0, qform=1))
    Aflip = Aq @ np.diag([1, 1, -1, 1])  # det < 0: qfac = -1
    good('qform_only_qfac.nii.gz', gz(make(pattern('int16', seed=41), Aflip, sform=0, qform=2)))
    good('qform_swapxy.nii', make(pattern('int16', seed=42), axcodes_affine('ARS'), sform=0, qform=1))
    shear = A0.copy()
    shear[0, 1] += 0.3
    good('sform_only_shear.nii', make(pattern('int16', seed=43), shear, sform=1, qform=0))
    b = make(pattern('int16', seed=44), A0, sform=4, qform=1)   # sform (code 4) wins over a different qform
    b = patch(patch(b, 'pixdim', 3.0, 1), 'pixdim', -1.0, 0)
    good('sform_over_qform.nii', b)
    good('no_transform.nii', patch(make(pattern('int16', seed=45), affine(np.eye(3), (1.5, 2.0, 3.5), (9, 9, 9)),
                                         sform=0, qform=0), 'pixdim', 0.0, 2))
    # permuted / flipped axes
    for i, codes in enumerate(('LPS', 'LAS', 'PSR', 'ASL', 'IRP', 'SLA')):
        b = make(pattern('int16', seed=50 + i), axcodes_affine(codes))
        good(f'orient_{codes}.nii' if i % 2 == 0 else f'orient_{codes}.nii.gz', b if i % 2 == 0 else gz(b))
        good(f'orient_{codes}_qform.nii', make(pattern('int16', seed=60 + i), axcodes_affine(codes), sform=0))
    # 2D, 1D, a 4D header with dim[4] = 1, an extension before the data, a multi-member gzip
    good('slice_2d.nii', make(pattern('int16', (6, 5), seed=70), A0))
    good('line_1d.nii.gz', gz(make(pattern('float32', (7,), seed=71), A0)))
    good('dim4_is_1.nii', make(pattern('uint16', (5, 4, 3, 1), seed=72), A0))
    ext = make(pattern('int16', seed=73), A0, ext=b'segkit extension test ' * 20)
    assert struct.unpack('<f', ext[108:112])[0] > 352
    good('extension.nii', ext)
    good('extension.nii.gz', gz(ext))
    ext2 = make(pattern('float32', seed=74), A0, version=2, ext=b'nifti2 extension ' * 9)
    good('extension_nifti2.nii.gz', gz(ext2))
    mm = make(pattern('int32', seed=75), A0)
    good('multimember.nii.gz', gz(mm[:200]) + gz(mm[200:500]) + gz(mm[500:]))

    # ---- bad inputs ------------------------------------------------------------------
    bad = {}

    def badf(name, b, code, what):
        """header_ok: the defect lies past the header, so nii_read_header succeeds."""
        with open(os.path.join(out, name), 'wb') as f:
            f.write(b)
        header_ok = name.startswith(('trunc_data', 'no_trailer', 'bad_crc', 'corrupt_deflate'))
        bad[name] = {'code': code, 'what': what, 'header_ok': header_ok}

    good_i16 = make(pattern('int16', seed=80), A0)
    z = gz(good_i16)
    badf('trunc_data.nii', good_i16[:-17], 'EIO', 'plain file cut inside the data')
    badf('trunc_header.nii', good_i16[:200], 'EIO', 'plain file cut inside the header')
    badf('trunc_data.nii.gz', z[:len(z) - 40], 'EIO', 'gzip cut inside the data')
    badf('trunc_header.nii.gz', z[:30], 'EIO', 'gzip cut inside the header')
    badf('no_trailer.nii.gz', z[:-8], 'EIO', 'gzip without its CRC/length trailer')
    crc = bytearray(z)
    crc[-6] ^= 0x55
    badf('bad_crc.nii.gz', bytes(crc), 'EIO', 'gzip CRC mismatch')
    corrupt = bytearray(z)
    for i in range(len(z) - 30, len(z) - 20):   # late in the stream: the header still inflates
        corrupt[i] ^= 0xa5
    badf('corrupt_deflate.nii.gz', bytes(corrupt), 'EIO', 'garbage inside the deflate stream')
    wm = bytearray(good_i16)
    wm[344:348] = b'n+3\0'
    badf('bad_magic.nii', bytes(wm), 'EFORMAT', 'magic n+3')
    pair = bytearray(good_i16)
    pair[344:348] = b'ni1\0'
    badf('pair_header.nii', bytes(pair), 'EFORMAT', 'magic ni1 (hdr/img pair)')
    n2 = bytearray(make(pattern('int16', seed=81), A0, version=2))
    n2[8:12] = b'\n\n\n\n'
    badf('nifti2_bad_eol.nii', bytes(n2), 'EFORMAT', 'NIfTI-2 magic with a mangled EOL check')
    badf('not_nifti.txt', b'this is not a NIfTI file\n' * 30, 'EFORMAT', 'a text file')
    badf('not_nifti.nii.gz', gz(b'{"json": true}\n' * 40), 'EFORMAT', 'gzip of a non-NIfTI file')
    badf('empty.nii', b'', 'EFORMAT', 'an empty file')
    badf('empty.nii.gz', gz(b''), 'EFORMAT', 'gzip of nothing')
    badf('neg_dim.nii', patch(good_i16, 'dim', -4, 2), 'EFORMAT', 'dim[2] = -4')
    badf('zero_dim.nii', patch(good_i16, 'dim', 0, 3), 'EFORMAT', 'dim[3] = 0')
    badf('dim0_9.nii', patch(good_i16, 'dim', 9, 0), 'EFORMAT', 'dim[0] = 9')
    badf('dim0_0.nii', patch(good_i16, 'dim', 0, 0), 'EFORMAT', 'dim[0] = 0')
    badf('dim4_is_2.nii', patch(patch(good_i16, 'dim', 4, 0), 'dim', 2, 4), 'EFORMAT', '4D: dim[4] = 2')
    big = good_i16
    for i, d in ((1, 10000), (2, 10000), (3, 10000)):
        big = patch(big, 'dim', d, i)
    badf('huge_1e12.nii', big, 'ENOMEM', '10^12 voxels declared in a tiny file')
    badf('huge_1e12.nii.gz', gz(big), 'ENOMEM', '10^12 voxels declared in a tiny gzip')
    huge2 = make(pattern('uint8', seed=82), A0, version=2)
    for i, d in ((1, 1 << 40), (2, 1 << 40), (3, 1 << 40)):
        huge2 = patch(huge2, 'dim', d, i)
    badf('overflow_nifti2.nii', huge2, 'EFORMAT', 'NIfTI-2 dims whose product overflows int64')
    badf('dtype_int64.nii', patch(good_i16, 'datatype', 1024), 'EFORMAT', 'unknown datatype 1024 (int64)')
    badf('dtype_complex.nii.gz', gz(patch(good_i16, 'datatype', 32)), 'EFORMAT', 'unknown datatype 32 (complex64)')
    badf('vox_offset_0.nii', patch(good_i16, 'vox_offset', 0.0), 'EFORMAT', 'vox_offset 0 in a single file')
    badf('vox_offset_huge.nii.gz', gz(patch(good_i16, 'vox_offset', 1e12)), 'EFORMAT', 'vox_offset 1e12')
    with open(os.path.join(out, 'bad.json'), 'w') as f:
        json.dump(bad, f, indent=1)

    if os.path.isdir(real):
        real_sidecar(real, out)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f'{out}: {len(os.listdir(out))} files, {total} bytes')


def real_sidecar(real, out):
    """Summary of the real example (ct + one mask) as nibabel reads it."""
    res = {}
    for rel in ('ct.nii.gz', 'segmentations/liver.nii.gz'):
        p = os.path.join(real, rel)
        if not os.path.exists(p):
            continue
        img = nib.load(p)
        raw = np.asanyarray(img.dataobj.get_unscaled())
        vals = np.asanyarray(img.dataobj).astype(np.float64).ravel(order='F')
        idx = np.arange(vals.size, dtype=np.float64)
        res[rel] = {'shape': list(img.shape), 'datatype': int(img.header['datatype']), 'affine': img.affine.tolist(),
                    'sum': float(vals.sum()), 'min': float(vals.min()), 'max': float(vals.max()),
                    'index_weighted_sum': float(((idx % 1009) * vals).sum()), 'raw_dtype': str(raw.dtype)}
    with open(os.path.join(out, 'real_example.json'), 'w') as f:
        json.dump(res, f, indent=1)


if __name__ == '__main__':
    main()
