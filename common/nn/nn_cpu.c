/* common/nn/nn_cpu.c : pick the kernel path from cpuid (once) and SEGKIT_CPU, and the public
 * entry points of the dispatched functions (each calls its team's table). Compiled for the
 * baseline: nothing here may use an instruction the oldest supported CPU lacks. */
#define NN_DISPATCH_TU
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "nn_cpu.h"

#define NN_DECL(sfx) NN_KERNELS(NN_DECL_##sfx)
#define NN_ENTRY(sfx) NN_KERNELS(NN_ENTRY_##sfx)

/* the generic copy is always built */
#define NN_DECL_generic(r, f, p, a) r f##_generic p;
#define NN_ENTRY_generic(r, f, p, a) .f = f##_generic,
NN_DECL(generic)
#if defined(__x86_64__) && defined(SEG_NN_X86_PATHS)   /* set by the Makefile's per-ISA block */
#define NN_HAVE_X86 1
#define NN_DECL_avx512(r, f, p, a) r f##_avx512 p;
#define NN_ENTRY_avx512(r, f, p, a) .f = f##_avx512,
#define NN_DECL_avx2(r, f, p, a) r f##_avx2 p;
#define NN_ENTRY_avx2(r, f, p, a) .f = f##_avx2,
NN_DECL(avx512)
NN_DECL(avx2)
#else
#define NN_HAVE_X86 0
#endif

static const NnKernels k_table[NN_CPU_N] = {
#if NN_HAVE_X86
    [NN_CPU_AVX512] = { .name = "avx512", NN_ENTRY(avx512) },
    [NN_CPU_AVX2] = { .name = "avx2", NN_ENTRY(avx2) },
#else
    [NN_CPU_AVX512] = { .name = "avx512" },
    [NN_CPU_AVX2] = { .name = "avx2" },
#endif
    [NN_CPU_GENERIC] = { .name = "generic", NN_ENTRY(generic) },
};

static int g_has[NN_CPU_N];            /* what this CPU (and OS) can run, from cpuid */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void detect(void)
{
    g_has[NN_CPU_GENERIC] = 1;
#if NN_HAVE_X86
    __builtin_cpu_init();
    /* the sets the copies are compiled for: x86-64-v3 and x86-64-v4 (libgcc also checks
     * that the OS saves the ymm/zmm state) */
    g_has[NN_CPU_AVX2] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                         __builtin_cpu_supports("f16c") && __builtin_cpu_supports("movbe");
    g_has[NN_CPU_AVX512] = g_has[NN_CPU_AVX2] && __builtin_cpu_supports("avx512f") &&
                           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd");
#endif
}

static int best(void)
{
    for (int i = 0; i < NN_CPU_N; i++)
        if (g_has[i]) return i;
    return NN_CPU_GENERIC;
}

int nn_cpu_select(void)
{
    pthread_once(&g_once, detect);
    const char *g = getenv("SEGKIT_NN_GENERIC");
    if (g && *g && strcmp(g, "0") != 0) return NN_CPU_GENERIC;
    const char *e = getenv("SEGKIT_CPU");
    if (!e || !*e || !strcmp(e, "auto")) return best();
    for (int i = 0; i < NN_CPU_N; i++) {
        if (strcmp(e, k_table[i].name) != 0) continue;
        if (!g_has[i])
            return seg_err(SEG_EARG, "SEGKIT_CPU=%s: this CPU%s cannot run the %s kernels (it can run: %s%s%s)",
                           e, NN_HAVE_X86 ? "" : " (this build has no x86 kernels)", e, g_has[0] ? "avx512 " : "",
                           g_has[1] ? "avx2 " : "", "generic");
        return i;
    }
    return seg_err(SEG_EARG, "SEGKIT_CPU=%s: unknown kernel path (avx512, avx2, generic or auto)", e);
}

const NnKernels *nn_cpu_kernels(int path)
{
    return path >= 0 && path < NN_CPU_N ? &k_table[path] : NULL;
}

const char *nn_cpu_name(void)
{
    const int p = nn_cpu_select();
    return p >= 0 ? k_table[p].name : "unsupported";
}

/* the public entry points: one call through the team's table */
#define NN_WRAP(r, f, p, a) r f p { return nn_team_kernels(t)->f a; }
NN_KERNELS(NN_WRAP)
