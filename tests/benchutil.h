/* tests/benchutil.h : the timing and statistics helpers the benchmark programs share. */
#ifndef SEG_BENCHUTIL_H
#define SEG_BENCHUTIL_H
#include "util.h"
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static inline double b_now(void) { return util_now_s(); }            /* monotonic seconds */

static inline int b_cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static inline double b_median(double *v, int n)  /* sorts v */
{
    qsort(v, (size_t)n, sizeof *v, b_cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static inline uint64_t b_rand(uint64_t *s) { return util_splitmix64(s); }
#endif
