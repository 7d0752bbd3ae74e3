/* tests/benchutil.h : the timing and statistics helpers the benchmark programs share. */
#ifndef SEG_BENCHUTIL_H
#define SEG_BENCHUTIL_H
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static inline double b_now(void)               /* monotonic seconds */
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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

static inline uint64_t b_rand(uint64_t *s)       /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
#endif
