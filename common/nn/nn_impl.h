/* common/nn/nn_impl.h : internals shared by the nn_*.c files (not part of the public API):
 * the two GEMM drivers, tile sizing and small vector helpers. */
#ifndef SEG_NN_IMPL_H
#define SEG_NN_IMPL_H
#include <string.h>
#include "nn_cpu.h"       /* first: renames the functions of the per-ISA copies */
#include "nn.h"
/* Which copy this is (set by the Makefile's per-ISA rules, never by -march: a -march=native
 * build still compiles three copies and dispatches). */
#if defined(NN_ISA_avx512)
#include <immintrin.h>
#define NN_AVX512 1
#define NN_AVX2 0
#elif defined(NN_ISA_avx2)
#include <immintrin.h>
#define NN_AVX512 0
#define NN_AVX2 1
#else
#define NN_AVX512 0
#define NN_AVX2 0
#endif

#define NN_MR 12          /* GEMM micro-tile rows */
#define NN_NR 32          /* GEMM micro-tile columns (two 16-float vectors) */
#define NN_SLACK 16       /* floats readable past the end of every A operand of nn_gemm_w */

/* C[M x N] = (acc ? C : bias-or-0) + A * B. A: M rows of K floats, row stride lda.
 * B: column panels of 32, panel q at B + q*bps, row k of it at + k*ldb (packed weights have
 * bps = K*32, ldb = 32; a row-major K x N matrix has bps = 32, ldb = N). bias: N floats. */
void nn_gemm_f(const NnTeam *t, int M, int N, int K, const float *A, long lda,
               const float *B, long bps, long ldb, float *C, long ldc, int acc, const float *bias);
/* nn_gemm_f over nseg segments of the shared dimension: segment s reads A + s*aseg and
 * B + s*bseg (the three kernel rows of a conv over padded row buffers: implicit im2col). */
void nn_gemm_fs(const NnTeam *t, int M, int N, int K, int nseg, const float *A, long lda,
                long aseg, const float *B, long bps, long ldb, long bseg, float *C, long ldc, int acc,
                const float *bias);
/* C[M x N] = (acc ? C : 0) + A^T * B: C[i][j] += sum_r A[r*lda + i] * B[r*ldb + j] (r < R).
 * A must stay readable for NN_SLACK floats past the last row's element M-1. */
void nn_gemm_w(const NnTeam *t, int M, int N, int R, const float *A, long lda,
               const float *B, long ldb, float *C, long ldc, int acc);
/* nn_gemm_w starting from a per-row bias instead of 0 (when !acc; rbias: M floats);
 * stream = 1: full, aligned tiles of a write-once output use non-temporal stores. */
void nn_gemm_wb(const NnTeam *t, int M, int N, int R, const float *A, long lda,
                const float *B, long ldb, float *C, long ldc, int acc, const float *rbias, int stream);

/* Rows per tile: the largest multiple of 12 (at most cap) with rows*per_row + fixed <=
 * avail floats; at least 12. */
static inline int nn_tile_rows(size_t avail, size_t per_row, size_t fixed, int cap)
{
    long r = avail > fixed ? (long)((avail - fixed) / (per_row ? per_row : 1)) : 0;
    if (r > cap) r = cap;
    r -= r % NN_MR;
    return r < NN_MR ? NN_MR : (int)r;
}

/* Balance P rows over the team: tile count a multiple of the thread count when the tiles
 * are few, so a small layer still keeps every thread busy. */
static inline int nn_tile_balance(long P, int T, int nthreads)
{
    long nt = (P + T - 1) / T;
    if (nt < 8L * nthreads) {
        nt = (nt + nthreads - 1) / nthreads * nthreads;
        long t2 = (P + nt - 1) / nt;
        t2 = (t2 + NN_MR - 1) / NN_MR * NN_MR;
        if (t2 < T) T = (int)t2;
    }
    return T;
}

/* dst[c] = src[c]*s[c] + h[c] (identity when s == NULL), then max(0, .) when relu. */
static inline void nn_v_act(float *dst, const float *src, int n, const float *s, const float *h,
                            int relu)
{
    if (!s && !relu) { memcpy(dst, src, sizeof(float) * (size_t)n); return; }
    int c = 0;
#if NN_AVX512
    const __m512 z = _mm512_setzero_ps();
    for (; c + 16 <= n; c += 16) {
        __m512 v = _mm512_loadu_ps(src + c);
        if (s) v = _mm512_fmadd_ps(v, _mm512_loadu_ps(s + c), _mm512_loadu_ps(h + c));
        _mm512_storeu_ps(dst + c, relu ? _mm512_max_ps(v, z) : v);
    }
    if (c < n) {
        __mmask16 k = (__mmask16)((1u << (n - c)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(k, src + c);
        if (s) v = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(k, s + c), _mm512_maskz_loadu_ps(k, h + c));
        _mm512_mask_storeu_ps(dst + c, k, relu ? _mm512_max_ps(v, z) : v);
    }
#else
#if NN_AVX2
    const __m256 z = _mm256_setzero_ps();
    for (; c + 8 <= n; c += 8) {
        __m256 v = _mm256_loadu_ps(src + c);
        if (s) v = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + c), _mm256_loadu_ps(h + c));
        _mm256_storeu_ps(dst + c, relu ? _mm256_max_ps(v, z) : v);
    }
#endif
    for (; c < n; c++) {
        float v = s ? src[c] * s[c] + h[c] : src[c];
        dst[c] = relu ? (v > 0.f ? v : 0.f) : v;
    }
#endif
}

/* Apply an NnAct's transform to one pixel's channels [c0, c0+n). */
static inline void nn_v_act_view(float *dst, const NnAct *a, long p, int c0, int n)
{
    nn_v_act(dst, a->x + p * a->ld + c0, n, a->scale ? a->scale + c0 : NULL,
             a->shift ? a->shift + c0 : NULL, a->relu);
}

#if NN_AVX512
/* In-register transpose of 16 rows of 16 floats: r[i] lane j -> r[j] lane i. */
static inline void nn_transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
}
#endif

#if NN_AVX2
/* AVX2 lane mask: lanes [0, n) of 8 set (n clamped to 0..8), for maskload/maskstore */
static inline __m256i nn_mask8(int n)
{
    static const int32_t m[16] = { -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0 };
    return _mm256_loadu_si256((const __m256i *)(const void *)(m + 8 - (n < 0 ? 0 : n > 8 ? 8 : n)));
}

/* In-register transpose of 8 rows of 8 floats: r[i] lane j -> r[j] lane i. */
static inline void nn_transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* sum of the 8 lanes (pairwise, fixed order) */
static inline float nn_hsum8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(a, _mm_movehdup_ps(a)));
}
#endif

static inline void nn_v_add(float *dst, const float *src, int n)
{
    int c = 0;
#if NN_AVX512
    for (; c + 16 <= n; c += 16)
        _mm512_storeu_ps(dst + c, _mm512_add_ps(_mm512_loadu_ps(dst + c), _mm512_loadu_ps(src + c)));
#elif NN_AVX2
    for (; c + 8 <= n; c += 8)
        _mm256_storeu_ps(dst + c, _mm256_add_ps(_mm256_loadu_ps(dst + c), _mm256_loadu_ps(src + c)));
#endif
    for (; c < n; c++) dst[c] += src[c];
}

#endif
