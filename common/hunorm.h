/* common/hunorm.h : the model input's intensity contract, shared by segtrain (loader) and
 * segeval (predict): CT values in HU clipped to a window [lo, hi] and scaled linearly to
 * [-1, 1]. The window is a training option stored in the checkpoint ("hu_window"), so
 * training and inference can never normalise differently. */
#ifndef SEG_HUNORM_H
#define SEG_HUNORM_H
#include <stddef.h>
#include <stdint.h>

/* The window used when none is given (segtrain's default; a checkpoint without one). */
#define HUNORM_DEFAULT_LO (-1000.f)
#define HUNORM_DEFAULT_HI 1000.f

/* dst[i] = 2 * (clamp(hu[i], lo, hi) - lo) / (hi - lo) - 1 for n values; needs hi > lo. */
void hunorm_apply(const int16_t *hu, float *dst, size_t n, float lo, float hi);

#endif
