/* common/maskpack.c : packed bit planes and presence bitmaps (layout in maskpack.h). */
#include "maskpack.h"
#include <string.h>

size_t maskpack_pack(uint8_t *plane, const uint8_t *src, size_t npx)
{
    size_t set = 0;
    memset(plane, 0, maskpack_plane_bytes(npx));
    for (size_t p = 0; p < npx; p++)
        if (src[p]) { maskpack_set(plane, p); set++; }
    return set;
}

int maskpack_pack_above(uint8_t *plane, const float *v, size_t npx, float t)
{
    unsigned any = 0;
    size_t b = 0;
    for (; 8 * b + 8 <= npx; b++) {   /* a byte at a time: 8 compares, no branches */
        const float *p = v + 8 * b;
        const unsigned x = (unsigned)(p[0] > t) | (unsigned)(p[1] > t) << 1 | (unsigned)(p[2] > t) << 2 |
                           (unsigned)(p[3] > t) << 3 | (unsigned)(p[4] > t) << 4 | (unsigned)(p[5] > t) << 5 |
                           (unsigned)(p[6] > t) << 6 | (unsigned)(p[7] > t) << 7;
        plane[b] = (uint8_t)x;
        any |= x;
    }
    if (8 * b < npx) {
        unsigned x = 0;
        for (size_t p = 8 * b; p < npx; p++) x |= (unsigned)(v[p] > t) << (p & 7);
        plane[b] = (uint8_t)x;
        any |= x;
    }
    return any != 0;
}

void maskpack_unpack(uint8_t *dst, const uint8_t *plane, size_t npx)
{
    for (size_t p = 0; p < npx; p++) dst[p] = (uint8_t)maskpack_get(plane, p);
}

int64_t maskpack_count(const uint8_t *a, size_t n)
{
    int64_t c = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { uint64_t w; memcpy(&w, a + i, 8); c += __builtin_popcountll(w); }
    for (; i < n; i++) c += __builtin_popcount(a[i]);
    return c;
}

int64_t maskpack_count_and(const uint8_t *a, const uint8_t *b, size_t n)
{
    int64_t c = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8); memcpy(&y, b + i, 8);
        c += __builtin_popcountll(x & y);
    }
    for (; i < n; i++) c += __builtin_popcount((unsigned)(a[i] & b[i]));
    return c;
}

int maskpack_any(const uint8_t *a, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { uint64_t w; memcpy(&w, a + i, 8); if (w) return 1; }
    for (; i < n; i++) if (a[i]) return 1;
    return 0;
}

void maskpack_presence(uint8_t *presence, const uint8_t *planes, int C, size_t plane_bytes)
{
    memset(presence, 0, maskpack_bitmap_bytes(C));
    for (int c = 0; c < C; c++)
        if (maskpack_any(planes + (size_t)c * plane_bytes, plane_bytes)) maskpack_set(presence, (size_t)c);
}
