/* tests/testsynth.h : a small synthetic cache written with the cache writer (32x32, 5
 * structures, subjects a, b train / c val / d test, slice 1 of d with a bad checksum):
 * every image value and mask bit is a known function of (subject, slice, x, y), so tests of
 * the loader and of segtrain's start-up statistics can compute what they must read. */
#ifndef SEG_TESTSYNTH_H
#define SEG_TESTSYNTH_H
#include "cache.h"
#include "err.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define S 32
#define C 5
static const char *const NAMES[C] = { "kidney_left", "kidney_right", "liver", "rib_left_1", "rib_right_1" };
static const struct { const char *id; int split, n; } SUBJ[] = {
    { "a", CACHE_SPLIT_TRAIN, 10 }, { "b", CACHE_SPLIT_TRAIN, 7 }, { "c", CACHE_SPLIT_VAL, 4 }, { "d", CACHE_SPLIT_TEST, 3 },
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
    LabelList labels;
    CacheWriter *w;
    TRY(labels_from_names(NAMES, C, &labels));
    int rc = cache_writer_open(dir, S, &labels, &w);
    labels_free(&labels);
    if (rc < 0) return rc;
    ZSTD_CCtx *z = ZSTD_createCCtx();
    static uint8_t planes[C][S * S / 8];
    int16_t img[S * S];
    for (int si = 0; si < 4 && rc == SEG_OK; si++) {
        CacheRecord recs[16];
        for (int k = 0; k < SUBJ[si].n && rc == SEG_OK; k++) {
            const uint8_t *pp[C];
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) img[y * S + x] = hu_of(si, k, x, y);
            for (int c = 0; c < C; c++) {
                memset(planes[c], 0, sizeof planes[c]);
                int any = 0;
                for (int p = 0; p < S * S; p++)
                    if (mask_of(c, k, p % S, p / S)) { planes[c][p >> 3] |= (uint8_t)(1u << (p & 7)); any = 1; }
                pp[c] = any ? planes[c] : NULL;
            }
            rc = cache_encode_slice(z, 3, S, C, img, pp, &recs[k]);
        }
        if (si == 3 && rc == SEG_OK) ((uint8_t *)recs[1].data)[recs[1].size - 1] ^= 0x55;   /* d slice 1: bad checksum */
        CacheSubject s;
        memset(&s, 0, sizeof s);
        snprintf(s.id, sizeof s.id, "%s", SUBJ[si].id);
        s.split = SUBJ[si].split;
        s.n_slices = SUBJ[si].n;
        for (int k = 0; k < 3; k++) {   /* a plausible identity geometry: the reader checks it */
            s.dim[k] = s.canon_dim[k] = k < 2 ? S : SUBJ[si].n;
            s.perm[k] = k;
            s.spacing[k] = s.res_spacing[k] = 1;
        }
        for (int k = 0; k < 4; k++) s.affine[k][k] = s.canon_affine[k][k] = s.res_affine[k][k] = 1;
        if (rc == SEG_OK) rc = cache_writer_put_subject(w, &s, recs);
        for (int k = 0; k < SUBJ[si].n; k++) free(recs[k].data);
    }
    ZSTD_freeCCtx(z);
    cache_writer_close(w);
    return rc;
}

#endif
