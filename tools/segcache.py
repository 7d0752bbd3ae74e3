#!/usr/bin/python3
"""segcache.py: read a segkit slice cache (made by `segprep`) from Python.

Needs python3-lmdb, python3-zstandard and numpy (Debian packages). The format is
described in docs/cache_format.md; this reader is independent of the C code.

    from segcache import SegCache
    c = SegCache("cache/")
    c.labels                 # channel names; channel c = label c+1 of a multilabel map
    c.subjects()             # list of dicts: id, split, n_slices, res_affine, ...
    img, masks, present = c.slice("s0000", 12)   # int16 [H,W], uint8 [C,H,W], bool [C]

    ds = SegCacheDataset("cache/", split="train")  # a PyTorch-style dataset (no torch needed)
    x, y = ds[0]             # float32 [1,H,W] (HU clipped to [-1000,1000] / 1000), float32 [C,H,W]

Command line: segcache.py CACHE_DIR [SUBJECT [SLICE]] prints a summary.
"""
import json
import struct
import sys
import zlib

import lmdb
import numpy as np
import zstandard

REC_MAGIC = 0x4C534B53
REC_HDR = 32
_HDR = struct.Struct("<IHHHHHHIIII")   # magic, version, header bytes, size, channels, present, flags,
                                      # image bytes, mask bytes, crc32, voxels set


class CacheError(Exception):
    pass


class SegCache:
    def __init__(self, path):
        self.path = path
        try:
            self.env = lmdb.open(path, readonly=True, max_dbs=8, subdir=True, lock=True)
        except lmdb.Error:
            self.env = lmdb.open(path, readonly=True, max_dbs=8, subdir=True, lock=False)
        self.db_meta = self.env.open_db(b"meta", create=False)
        self.db_subj = self.env.open_db(b"subjects", create=False)
        self.db_slices = self.env.open_db(b"slices", create=False)
        with self.env.begin() as txn:
            fmt = txn.get(b"format", db=self.db_meta)
        if fmt is None:
            raise CacheError(f"{path}: no format record")
        self.format = json.loads(fmt)
        if self.format.get("magic") != "segkit-cache" or self.format.get("version") not in (1, 2):
            raise CacheError(f"{path}: not a segkit cache of format version 1 or 2")
        self.size = int(self.format["size"])
        self.labels = list(self.format["labels"])
        self.n_channels = len(self.labels)
        self._dctx = zstandard.ZstdDecompressor()
        self._subjects = None

    def subjects(self):
        if self._subjects is None:
            out = []
            with self.env.begin() as txn:
                for _, v in txn.cursor(db=self.db_subj):
                    s = json.loads(v)
                    for k in ("affine", "canon_affine", "res_affine"):
                        s[k] = np.array(s[k], dtype=np.float64).reshape(4, 4)
                    out.append(s)
            self._subjects = sorted(out, key=lambda s: s["id"])
        return self._subjects

    def subject(self, sid):
        for s in self.subjects():
            if s["id"] == sid:
                return s
        raise KeyError(sid)

    def labelled(self, sid):
        """bool [C]: the channels labelled in subject sid (all True unless it is partly labelled;
        the others are unknown there, not negative)."""
        s = self.subject(sid)
        out = np.ones(self.n_channels, dtype=bool)
        if "labelled" in s:
            out[:] = False
            out[np.asarray(s["labelled"], dtype=np.int64)] = True
        return out

    def raw(self, sid, z):
        s = self.subject(sid)
        if not 0 <= z < s["n_slices"]:
            raise IndexError(z)
        key = struct.pack(">II", s["index"], z)
        with self.env.begin() as txn:
            rec = txn.get(key, db=self.db_slices)
        if rec is None:
            raise CacheError(f"{sid} slice {z}: missing record")
        return bytes(rec)

    def decode(self, rec, what="record"):
        (magic, ver, hdr, size, nch, npres, _flags, zi, zm, crc, nset) = _HDR.unpack_from(rec, 0)
        if magic != REC_MAGIC or ver != 1 or _flags & ~1:
            raise CacheError(f"{what}: bad magic/version")
        if size != self.size or nch != self.n_channels or len(rec) != hdr + zi + zm:
            raise CacheError(f"{what}: header does not match the cache")
        c = zlib.crc32(rec[:24] + b"\0\0\0\0" + rec[28:])
        if c != crc:
            raise CacheError(f"{what}: checksum mismatch")
        pres_bytes = np.frombuffer(rec, dtype=np.uint8, count=(nch + 7) // 8, offset=REC_HDR)
        present = np.unpackbits(pres_bytes, bitorder="little")[:nch].astype(bool)
        if int(present.sum()) != npres:
            raise CacheError(f"{what}: presence bitmap disagrees with header")
        raw = self._dctx.decompress(rec[hdr:hdr + zi], max_output_size=size * size * 2)
        if _flags & 1:   # row-delta, byte-shuffled int16
            b = np.frombuffer(raw, dtype=np.uint8)
            d = (b[:size * size].astype(np.uint16) | (b[size * size:].astype(np.uint16) << 8)).reshape(size, size)
            img = np.cumsum(d, axis=1, dtype=np.uint16).view(np.int16)
        else:
            img = np.frombuffer(raw, dtype="<i2").reshape(size, size)
        masks = np.zeros((nch, size, size), dtype=np.uint8)
        if npres:
            plane = size * size // 8
            raw = self._dctx.decompress(rec[hdr + zi:], max_output_size=npres * plane)
            bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8).reshape(npres, plane), axis=1,
                                 bitorder="little")
            masks[present] = bits.reshape(npres, size, size)
        return img, masks, present

    def slice(self, sid, z):
        """(img int16 [H,W], masks uint8 [C,H,W], present bool [C]) of slice z of subject sid."""
        return self.decode(self.raw(sid, z), f"{sid} slice {z}")

    def volume(self, sid):
        """Whole subject: img int16 [Z,H,W], masks uint8 [Z,C,H,W]."""
        s = self.subject(sid)
        imgs, masks = [], []
        for z in range(s["n_slices"]):
            i, m, _ = self.slice(sid, z)
            imgs.append(i)
            masks.append(m)
        return np.stack(imgs), np.stack(masks)


class SegCacheDataset:
    """Indexable (subject, slice) pairs of one split, PyTorch Dataset style."""

    def __init__(self, path, split="train", hu_window=(-1000.0, 1000.0)):
        self.cache = SegCache(path)
        self.lo, self.hi = hu_window
        self.items = [(s["id"], z) for s in self.cache.subjects()
                      if split in (None, "all", s["split"]) for z in range(s["n_slices"])]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        sid, z = self.items[i]
        img, masks, _ = self.cache.slice(sid, z)
        x = np.clip(img.astype(np.float32), self.lo, self.hi)
        x = (2.0 * (x - self.lo) / (self.hi - self.lo) - 1.0)[None]
        return x.astype(np.float32), masks.astype(np.float32)


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    c = SegCache(argv[1])
    subs = c.subjects()
    print(f"{argv[1]}: {len(subs)} subjects, {sum(s['n_slices'] for s in subs)} slices, "
          f"{c.size}x{c.size}, {c.n_channels} channels")
    if len(argv) >= 3:
        s = c.subject(argv[2])
        z = int(argv[3]) if len(argv) >= 4 else s["n_slices"] // 2
        img, masks, present = c.slice(argv[2], z)
        print(f"{argv[2]} slice {z}: HU {img.min()}..{img.max()}, present: "
              + ", ".join(c.labels[i] for i in np.nonzero(present)[0]))
    else:
        for s in subs:
            print(f"  {s['id']} {s['split']:5s} {s['n_slices']} slices")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
