/* common/resample.h : 2D slice resampling to size x size with half-pixel centres.
 * Image: bilinear, src = (dst + 0.5) * n / size - 0.5 clamped to [0, n-1], rounded to
 * nearest (floor(v + 0.5)) and clamped to int16. Mask: nearest neighbour,
 * src = min(floor((dst + 0.5) * n / size), n - 1). Tables are per axis, computed once
 * per (n, size) and shared read-only between threads. */
#ifndef SEG_RESAMPLE_H
#define SEG_RESAMPLE_H
#include <stdint.h>

typedef struct ResampleAxis {
    int      n_src, size;
    int32_t *nearest;   /* [size] nearest source index */
    int32_t *lo, *hi;   /* [size] bilinear source pair */
    double  *w;         /* [size] weight of hi */
} ResampleAxis;

/* Build the tables for n_src -> size (both >= 1). Caller frees with resample_axis_free. */
int  resample_axis_init(ResampleAxis *a, int n_src, int size);
void resample_axis_free(ResampleAxis *a);          /* NULL-safe on a zeroed struct */

/* Bilinear: src (rows->n_src x cols->n_src, row-major float) -> dst int16 (size x size). */
void resample_bilinear_i16(int16_t *dst, const float *src, const ResampleAxis *rows, const ResampleAxis *cols);
/* Bilinear to float (no rounding), same geometry. */
void resample_bilinear_f32(float *dst, const float *src, const ResampleAxis *rows, const ResampleAxis *cols);
/* Nearest: src bytes (0 = off) -> packed bit plane dst (size*size pixels, maskpack.h). Only source rows [r0, r1] and columns [c0, c1] may be non-zero (a bounding
 * box; pass the full range if unknown): dst outside their image stays 0. dst is cleared first. */
void resample_nearest_bits(uint8_t *dst, const uint8_t *src, const ResampleAxis *rows, const ResampleAxis *cols,
                           int r0, int r1, int c0, int c1);
/* First and last dst index whose nearest source lies in [s0, s1]; returns 0 if none. */
int  resample_nearest_span(const ResampleAxis *a, int s0, int s1, int *d0, int *d1);

#endif
