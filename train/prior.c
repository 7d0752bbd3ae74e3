/* train/prior.c : per-channel foreground fractions from the packed masks, head bias init. */
#include "prior.h"
#include "maskpack.h"
#include "err.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int prior_foreground(CacheReader *r, int split, int64_t max_slices, double *frac, int64_t *used)
{
    const int C = cache_n_channels(r), ns = cache_n_subjects(r);
    const size_t pb = cache_plane_bytes(r), prb = cache_presence_bytes(r);
    int64_t total = 0;
    for (int i = 0; i < ns; i++)
        if (cache_subject(r, i)->split == split) total += cache_subject(r, i)->n_slices;
    memset(frac, 0, sizeof *frac * (size_t)C);
    if (used) *used = 0;
    if (!total) return SEG_OK;
    const int64_t take = max_slices > 0 && max_slices < total ? max_slices : total;
    int64_t *cnt = calloc((size_t)C, sizeof *cnt), *den = calloc((size_t)C, sizeof *den);
    uint8_t *bits = malloc(pb * (size_t)C), *pres = malloc(prb);
    CacheCursor *cur = NULL;
    int rc = cnt && den && bits && pres ? cache_cursor_open(r, &cur) : seg_err(SEG_ENOMEM, "prior: %d planes", C);
    /* slice k of the split (in cache order) is counted when it is the first at or after
     * j * total / take for some j: take slices, evenly spaced */
    int64_t k = 0, next = 0, j = 0;
    for (int i = 0; rc == SEG_OK && i < ns && j < take; i++) {
        const CacheSubject *s = cache_subject(r, i);
        if (s->split != split) continue;
        for (int z = 0; rc == SEG_OK && z < s->n_slices && j < take; z++, k++) {
            if (k < next) continue;
            rc = cache_read_slice(cur, s, z, NULL, bits, pres, 0);
            const uint8_t *lab = cache_subject_labelled(s);
            for (int c = 0; rc == SEG_OK && c < C; c++) {
                if (lab && (c >= CACHE_LABELLED_MAX || !maskpack_get(lab, c))) continue;   /* unknown here */
                den[c]++;
                if (!maskpack_get(pres, c)) continue;
                const uint8_t *p = bits + (size_t)c * pb;
                cnt[c] += maskpack_count(p, pb);
            }
            j++;
            next = j * total / take;
        }
    }
    if (rc == SEG_OK) {
        const double px = (double)pb * 8.0;
        for (int c = 0; c < C; c++) frac[c] = den[c] ? cnt[c] / (px * (double)den[c]) : 0;
        if (used) *used = j;
    }
    cache_cursor_close(cur);
    free(cnt);
    free(den);
    free(bits);
    free(pres);
    return rc;
}

int prior_init_head_bias(Unet *m, const double *frac, int n)
{
    for (int i = 0; i < unet_n_tensors(m); i++) {
        const UnetTensor *t = unet_tensor(m, i);
        if (strcmp(t->name, "head.bias")) continue;
        if ((int)t->count != n) return seg_err(SEG_EARG, "prior: head.bias has %zu channels, not %d", t->count, n);
        for (int c = 0; c < n; c++) {
            const double p = fmin(fmax(frac[c], PRIOR_MIN), PRIOR_MAX);
            t->data[c] = (float)log(p / (1.0 - p));
        }
        return SEG_OK;
    }
    return seg_err(SEG_EARG, "prior: the model has no head.bias");
}
