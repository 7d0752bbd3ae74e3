/* tests/testutil.h : the few helpers every C test uses. A test prints one line per check
 * and returns t_report(): 0 if all passed, 1 otherwise. A section that cannot run here (its
 * ../shared data set is missing) says so with T_SKIP: one "SKIP reason" line, which
 * tests/run_tests.sh counts in its skipped total, so it is never a silent pass. */
#ifndef SEG_TESTUTIL_H
#define SEG_TESTUTIL_H
#include "maskpack.h"
#include "util.h"
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int t_fails, t_checks, t_skips;
__attribute__((constructor)) static void t_unbuffered(void) { setvbuf(stdout, NULL, _IONBF, 0); }
#define CHECK(cond, ...) do { t_checks++; if (!(cond)) { t_fails++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } else { printf("ok   "); printf(__VA_ARGS__); printf("\n"); } } while (0)

#define T_SKIP(...) do { t_skips++; printf("SKIP "); printf(__VA_ARGS__); printf("\n"); } while (0)

static inline int t_report(const char *name)
{
    if (t_skips) printf("%s: %d checks, %d failed, %d section(s) skipped\n", name, t_checks, t_fails, t_skips);
    else printf("%s: %d checks, %d failed\n", name, t_checks, t_fails);
    return t_fails ? 1 : 0;
}

/* seeded test data (splitmix64) */
static inline uint64_t t_rand(uint64_t *s) { return util_splitmix64(s); }
/* Bit-pack 0/1 float targets (n, nch, hw) the way the cache stores masks: bits (n*nch planes of
 * hw/8 bytes) and the presence bitmap ((nch+7)/8 bytes per sample). A plane without a set pixel
 * is marked absent and its bytes filled with 0x5A, garbage the loss must ignore. */
static inline void t_pack_targets(const float *t, int n, int nch, int hw, uint8_t *bits, uint8_t *pres)
{
    const size_t pb = maskpack_plane_bytes((size_t)hw), cb = maskpack_bitmap_bytes(nch);
    memset(bits, 0, (size_t)n * nch * pb);
    memset(pres, 0, (size_t)n * cb);
    for (int pl = 0; pl < n * nch; pl++) {
        uint8_t *plane = bits + (size_t)pl * pb;
        int any = 0;
        for (int q = 0; q < hw; q++)
            if (t[(size_t)pl * hw + q] > 0.5f) { maskpack_set(plane, (size_t)q); any = 1; }
        if (any) maskpack_set(maskpack_bitmap(pres, pl / nch, nch), (size_t)(pl % nch));
        else memset(plane, 0x5A, pb);
    }
}
#endif
