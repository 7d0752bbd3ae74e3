"""Reference (numpy + nibabel) implementation of segprep's slice rules, used by the tests.
Independent of the C code: nibabel decides orientation, numpy does the resampling."""
import numpy as np
import nibabel as nib


def canonical(path):
    img = nib.as_closest_canonical(nib.load(path))
    return img, np.asarray(img.dataobj)


def slice_view(vol, k):
    """slice[r][c] = vol[ni-1-c][nj-1-r][k]"""
    return vol[::-1, ::-1, k].T


def axis_tables(n, size):
    d = np.arange(size, dtype=np.float64)
    near = np.minimum(np.floor((d + 0.5) * n / size).astype(np.int64), n - 1)
    s = np.clip((d + 0.5) * n / size - 0.5, 0, n - 1)
    lo = np.floor(s).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    return near, lo, hi, s - lo


def bilinear(sl, size):
    sl = sl.astype(np.float64)
    _, rlo, rhi, wy = axis_tables(sl.shape[0], size)
    _, clo, chi, wx = axis_tables(sl.shape[1], size)
    wx = wx[None, :]
    top = (1 - wx) * sl[rlo][:, clo] + wx * sl[rlo][:, chi]
    bot = (1 - wx) * sl[rhi][:, clo] + wx * sl[rhi][:, chi]
    v = (1 - wy[:, None]) * top + wy[:, None] * bot
    return np.clip(np.floor(v + 0.5), -32768, 32767).astype(np.int16)


def nearest(sl, size):
    rn = axis_tables(sl.shape[0], size)[0]
    cn = axis_tables(sl.shape[1], size)[0]
    return (sl[rn][:, cn] != 0).astype(np.uint8)


def resampled_affine(canon_affine, ni, nj, size):
    t = np.array([[-ni / size, 0, 0, ni - 0.5 - 0.5 * ni / size],
                  [0, -nj / size, 0, nj - 0.5 - 0.5 * nj / size],
                  [0, 0, 1, 0], [0, 0, 0, 1]])
    return canon_affine @ t
