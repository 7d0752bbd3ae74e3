/* common/hunorm.c : HU window normalisation (see hunorm.h). */
#include "hunorm.h"

void hunorm_apply(const int16_t *hu, float *dst, size_t n, float lo, float hi)
{
    const float sc = 2.0f / (hi - lo);
    for (size_t i = 0; i < n; i++) {
        float v = hu[i];
        v = v < lo ? lo : v > hi ? hi : v;
        dst[i] = (v - lo) * sc - 1.0f;
    }
}
