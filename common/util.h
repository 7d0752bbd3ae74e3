/* common/util.h : the small numeric helpers several modules need, defined once (header-only,
 * so C tests and the C++ of the CUDA emulator can use them without linking anything). */
#ifndef SEG_UTIL_H
#define SEG_UTIL_H
#include <stdint.h>
#include <time.h>

/* Monotonic clock in seconds (CLOCK_MONOTONIC), for durations and rates. */
static inline double util_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* splitmix64 (Steele, Lea, Flood 2014): advances *s by the golden gamma and returns the
 * mixed value. Seeded test data, per-draw seeds, seeding other generators. */
static inline uint64_t util_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Determinant of a 3x3 matrix (first-row cofactor expansion). */
static inline double util_det3(const double m[3][3])
{
    return m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
         - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
         + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
}

#endif
