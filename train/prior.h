/* train/prior.h : how often each structure is foreground in a split of the cache, and the
 * head bias that makes the untrained network predict exactly that (segtrain's init). */
#ifndef SEG_PRIOR_H
#define SEG_PRIOR_H
#include <stdint.h>
#include "cache.h"
#include "unet.h"

/* Foreground fraction of every channel over the slices of split: frac[c] = set pixels of
 * channel c / (slices x size^2), counting only the slices of subjects where c is labelled
 * (a partly labelled subject's unknown channels are left out; none: 0). Counts the masks of at most max_slices slices, evenly
 * spaced over the split (0: every slice), so a huge cache costs a bounded start-up; the
 * images are not decoded. *used (may be NULL) gets the slices counted (0 for an empty
 * split: frac is then all 0). Deterministic. Cache errors name the subject and slice. */
int prior_foreground(CacheReader *r, int split, int64_t max_slices, double *frac, int64_t *used);

/* Set the head's bias (the state dict's "head.bias", one per channel) to log(p/(1-p)) with
 * p = frac[c] clamped to [PRIOR_MIN, PRIOR_MAX]: sigmoid of an all-zero head input is then
 * each structure's prior. The caller initialised m (unet_init); the device copy follows at
 * the next forward. SEG_EARG when the model has no such tensor of n channels. */
#define PRIOR_MIN 1e-6
#define PRIOR_MAX 0.5
int prior_init_head_bias(Unet *m, const double *frac, int n);

#endif
