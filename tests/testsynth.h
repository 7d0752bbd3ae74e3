/* tests/testsynth.h : a small synthetic cache written with the cache writer (32x32, 5
 * structures, subjects a, b train / c val / d test, slice 1 of d with a bad checksum):
 * every image value and mask bit is a known function of (subject, slice, x, y), so tests of
 * the loader and of segtrain's start-up statistics can compute what they must read.
 * t_put_subject writes any such subject; define TSYNTH_WRITER_ONLY for it alone. */
#ifndef SEG_TESTSYNTH_H
#define SEG_TESTSYNTH_H
#include "cache.h"
#include "maskpack.h"
#include "err.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* Write one subject of n slices (size x size, nch channels, at most 64 slices) with a
 * plausible identity geometry (the reader checks it): pixel (x, y) of slice z is
 * hu(si, z, x, y), channel c's mask bit is mask(c, z, x, y); slice bad_slice (-1: none) gets
 * a broken checksum. */
typedef int16_t (*TSynthHu)(int si, int z, int x, int y);
typedef int (*TSynthMask)(int c, int z, int x, int y);
static inline int t_put_subject(CacheWriter *w, ZSTD_CCtx *zc, const char *id, int split, int si, int n, int size,
                                int nch, TSynthHu hu, TSynthMask mask, int bad_slice)
{
    const size_t pb = (size_t)size * size / 8;
    uint8_t *planes = calloc((size_t)nch, pb);
    const uint8_t **pp = calloc((size_t)nch, sizeof *pp);
    int16_t *img = malloc(sizeof *img * (size_t)size * size);
    CacheRecord recs[64];
    int rc = planes && pp && img && n <= 64 ? SEG_OK : seg_err(SEG_ENOMEM, "t_put_subject");
    int done = 0;
    for (int k = 0; k < n && rc == SEG_OK; k++, done++) {
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) img[y * size + x] = hu(si, k, x, y);
        for (int c = 0; c < nch; c++) {
            uint8_t *pl = planes + (size_t)c * pb;
            memset(pl, 0, pb);
            int any = 0;
            for (int p = 0; p < size * size; p++)
                if (mask(c, k, p % size, p / size)) { maskpack_set(pl, p); any = 1; }
            pp[c] = any ? pl : NULL;
        }
        rc = cache_encode_slice(zc, 3, size, nch, img, pp, &recs[k]);
        if (rc == SEG_OK && k == bad_slice) ((uint8_t *)recs[k].data)[recs[k].size - 1] ^= 0x55;
    }
    CacheSubject s;
    memset(&s, 0, sizeof s);
    snprintf(s.id, sizeof s.id, "%s", id);
    s.split = split;
    s.n_slices = n;
    for (int k = 0; k < 3; k++) {
        s.dim[k] = s.canon_dim[k] = k < 2 ? size : n;
        s.perm[k] = k;
        s.spacing[k] = s.res_spacing[k] = 1;
    }
    for (int k = 0; k < 4; k++) s.affine[k][k] = s.canon_affine[k][k] = s.res_affine[k][k] = 1;
    if (rc == SEG_OK) rc = cache_writer_put_subject(w, &s, recs);
    for (int k = 0; k < done; k++) free(recs[k].data);
    free(planes);
    free(pp);
    free(img);
    return rc;
}

typedef struct TSynthSubject { const char *id; int split, n, bad_slice; } TSynthSubject;

/* A cache at dir of the n_subj subjects (t_put_subject each, subject index si = position). */
static inline int t_write_cache(const char *dir, const char *const *names, int nch, int size, const TSynthSubject *subj,
                                int n_subj, TSynthHu hu, TSynthMask mask)
{
    LabelList labels;
    CacheWriter *w;
    TRY(labels_from_names(names, nch, &labels));
    int rc = cache_writer_open(dir, size, &labels, &w);
    labels_free(&labels);
    if (rc < 0) return rc;
    ZSTD_CCtx *z = ZSTD_createCCtx();
    if (!z) rc = seg_err(SEG_ENOMEM, "zstd context");
    for (int si = 0; si < n_subj && rc == SEG_OK; si++)
        rc = t_put_subject(w, z, subj[si].id, subj[si].split, si, subj[si].n, size, nch, hu, mask, subj[si].bad_slice);
    ZSTD_freeCCtx(z);
    cache_writer_close(w);
    return rc;
}

#ifndef TSYNTH_WRITER_ONLY   /* the loader's five-structure fixture */
#define S 32
#define C 5
static const char *const NAMES[C] = { "kidney_left", "kidney_right", "liver", "rib_left_1", "rib_right_1" };
static const TSynthSubject SUBJ[] = {   /* d slice 1: bad checksum */
    { "a", CACHE_SPLIT_TRAIN, 10, -1 }, { "b", CACHE_SPLIT_TRAIN, 7, -1 }, { "c", CACHE_SPLIT_VAL, 4, -1 }, { "d", CACHE_SPLIT_TEST, 3, 1 },
};

static inline int16_t hu_of(int si, int z, int x, int y) { return (int16_t)(x == 0 && y == 0 ? si * 100 + z : x * 7 - y * 3); }

/* Expected mask bit of channel c at (x, y) in slice z. */
static inline int mask_of(int c, int z, int x, int y)
{
    switch (c) {
    case 0: return x >= 20 && x < 28 && y >= 10 && y < 20;          /* kidney_left: patient left = high columns */
    case 1: return x >= 4 && x < 12 && y >= 10 && y < 20;
    case 2: return z % 2 == 0 && x >= 18 && x < 30 && y >= 2 && y < 8;
    case 4: return z == 3 && x >= 1 && x < 3 && y >= 25 && y < 30;
    default: return 0;                                               /* rib_left_1: absent everywhere */
    }
}

static inline int build_cache(const char *dir)
{
    return t_write_cache(dir, NAMES, C, S, SUBJ, 4, hu_of, mask_of);
}

#endif /* TSYNTH_WRITER_ONLY */
#endif
