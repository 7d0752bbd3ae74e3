/* tests/testutil.h : the few helpers every C test uses. A test prints one line per check
 * and returns t_report(): 0 if all passed, 1 otherwise. */
#ifndef SEG_TESTUTIL_H
#define SEG_TESTUTIL_H
#include <stdint.h>
#include <stdio.h>

static int t_fails, t_checks;
__attribute__((constructor)) static void t_unbuffered(void) { setvbuf(stdout, NULL, _IONBF, 0); }
#define CHECK(cond, ...) do { t_checks++; if (!(cond)) { t_fails++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); } else { printf("ok   "); printf(__VA_ARGS__); printf("\n"); } } while (0)

static inline int t_report(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, t_checks, t_fails);
    return t_fails ? 1 : 0;
}

/* splitmix64: seeded test data */
static inline uint64_t t_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
#endif
