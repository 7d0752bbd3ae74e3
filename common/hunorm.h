/* common/hunorm.h : the model input's contract, shared by segtrain (loader) and segeval
 * (evaluate, predict), so training and inference can never prepare it differently:
 *   intensity  CT values in HU clipped to a window [lo, hi] and scaled linearly to [-1, 1];
 *              the window is a training option stored in the checkpoint ("hu_window").
 *   context    a model with in_ch = 2K+1 sees, for slice z of an n-slice volume, the slices
 *              z-K .. z+K as channels 0 .. 2K, each index clamped to [0, n-1] (the ends
 *              repeat): channel ch is slice hunorm_context_z(z - K + ch, n). */
#ifndef SEG_HUNORM_H
#define SEG_HUNORM_H
#include <stddef.h>
#include <stdint.h>

/* The window used when none is given (segtrain's default; a checkpoint without one). */
#define HUNORM_DEFAULT_LO (-1000.f)
#define HUNORM_DEFAULT_HI 1000.f

/* dst[i] = 2 * (clamp(hu[i], lo, hi) - lo) / (hi - lo) - 1 for n values; needs hi > lo. */
void hunorm_apply(const int16_t *hu, float *dst, size_t n, float lo, float hi);

/* Slice index z clamped to a volume of n slices (the 2.5D context's edge rule). */
static inline int hunorm_context_z(int z, int n) { return z < 0 ? 0 : z >= n ? n - 1 : z; }

#endif
