/* common/resample.c : per-axis tables and the 2D bilinear / nearest resamplers. */
#include "resample.h"
#include "maskpack.h"
#include "err.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int resample_axis_init(ResampleAxis *a, int n_src, int size)
{
    memset(a, 0, sizeof *a);
    if (n_src < 1 || size < 1) return seg_err(SEG_EARG, "resample: bad sizes %d -> %d", n_src, size);
    a->n_src = n_src; a->size = size;
    a->nearest = malloc(sizeof(int32_t) * (size_t)size);
    a->lo = malloc(sizeof(int32_t) * (size_t)size);
    a->hi = malloc(sizeof(int32_t) * (size_t)size);
    a->w = malloc(sizeof(double) * (size_t)size);
    if (!a->nearest || !a->lo || !a->hi || !a->w) {
        resample_axis_free(a);
        return seg_err(SEG_ENOMEM, "resample: tables for %d -> %d", n_src, size);
    }
    for (int d = 0; d < size; d++) {
        /* exact integer form of floor((d + 0.5) * n / size) */
        int64_t nn = ((int64_t)(2 * d + 1) * n_src) / (2 * (int64_t)size);
        a->nearest[d] = (int32_t)(nn < n_src - 1 ? nn : n_src - 1);
        double s = (d + 0.5) * n_src / size - 0.5;
        if (s < 0) s = 0;
        if (s > n_src - 1) s = n_src - 1;
        int lo = (int)floor(s);
        a->lo[d] = lo;
        a->hi[d] = lo + 1 < n_src ? lo + 1 : n_src - 1;
        a->w[d] = s - lo;
    }
    return SEG_OK;
}

void resample_axis_free(ResampleAxis *a)
{
    free(a->nearest); free(a->lo); free(a->hi); free(a->w);
    a->nearest = a->lo = a->hi = NULL; a->w = NULL;
}

/* Separable: blend the two source rows once per dst row, then interpolate along it. */
static void bilinear_rows(const float *src, const ResampleAxis *rows, const ResampleAxis *cols,
                          int16_t *dst_i16, float *dst_f32)
{
    const int sw = cols->n_src, size = cols->size;
    double tmp[sw > 0 ? sw : 1];
    for (int r = 0; r < rows->size; r++) {
        const float *p0 = src + (size_t)rows->lo[r] * sw, *p1 = src + (size_t)rows->hi[r] * sw;
        const double wy = rows->w[r];
        for (int x = 0; x < sw; x++) tmp[x] = (1 - wy) * p0[x] + wy * p1[x];
        for (int c = 0; c < size; c++) {
            const double wx = cols->w[c], v = (1 - wx) * tmp[cols->lo[c]] + wx * tmp[cols->hi[c]];
            if (dst_f32) { dst_f32[(size_t)r * size + c] = (float)v; continue; }
            double q = floor(v + 0.5);
            q = q < -32768 ? -32768 : q > 32767 ? 32767 : q;
            dst_i16[(size_t)r * size + c] = (int16_t)q;
        }
    }
}

void resample_bilinear_i16(int16_t *dst, const float *src, const ResampleAxis *rows, const ResampleAxis *cols)
{
    bilinear_rows(src, rows, cols, dst, NULL);
}

void resample_bilinear_f32(float *dst, const float *src, const ResampleAxis *rows, const ResampleAxis *cols)
{
    bilinear_rows(src, rows, cols, NULL, dst);
}

int resample_nearest_span(const ResampleAxis *a, int s0, int s1, int *d0, int *d1)
{
    /* nearest[] is non-decreasing: find the first and last dst mapping into [s0, s1] */
    int lo = 0, hi = a->size;
    while (lo < hi) { int mid = (lo + hi) / 2; if (a->nearest[mid] < s0) lo = mid + 1; else hi = mid; }
    int first = lo;
    lo = first; hi = a->size;
    while (lo < hi) { int mid = (lo + hi) / 2; if (a->nearest[mid] <= s1) lo = mid + 1; else hi = mid; }
    int last = lo - 1;
    if (first > last) return 0;
    *d0 = first; *d1 = last;
    return 1;
}

void resample_nearest_bits(uint8_t *dst, const uint8_t *src, const ResampleAxis *rows, const ResampleAxis *cols,
                           int r0, int r1, int c0, int c1)
{
    const int size = cols->size, sw = cols->n_src;
    memset(dst, 0, maskpack_plane_bytes((size_t)rows->size * size));
    int dr0, dr1, dc0, dc1;
    if (!resample_nearest_span(rows, r0, r1, &dr0, &dr1) || !resample_nearest_span(cols, c0, c1, &dc0, &dc1)) return;
    for (int r = dr0; r <= dr1; r++) {
        const uint8_t *row = src + (size_t)rows->nearest[r] * sw;
        size_t base = (size_t)r * size;
        for (int c = dc0; c <= dc1; c++)
            if (row[cols->nearest[c]]) {
                size_t p = base + (size_t)c;
                maskpack_set(dst, p);
            }
    }
}
