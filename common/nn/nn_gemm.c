/* common/nn/nn_gemm.c : the two register-blocked GEMM shapes every layer reduces to.
 * "f": C = A * B with A's rows broadcast one float at a time and B read as two 16-float
 * vectors (a 12 x 32 tile of C in 24 zmm accumulators); "w": C = A^T * B, the same tile
 * but walking the shared dimension down the rows of both (weight gradients, where the
 * reduction runs over pixels). On Zen4 both run at ~115 GFLOP/s per core from L2.
 * The portable versions are plain loops, used without AVX-512 or with SEGKIT_NN_GENERIC=1. */
#include <stdint.h>
#include "nn_impl.h"

static inline int imin(int a, int b) { return a < b ? a : b; }

/* ---- portable kernels ------------------------------------------------------------------ */
static void kf_generic(int K, const float *A, long lda, const float *B, long ldb, float *C,
                       long ldc, int m, int n, int acc, const float *bias, int nseg, long aseg, long bseg)
{
    float c[NN_MR][NN_NR];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) c[i][j] = acc ? C[i * ldc + j] : bias ? bias[j] : 0.f;
    for (int sg = 0; sg < nseg; sg++, A += aseg, B += bseg)
        for (int k = 0; k < K; k++) {
            const float *b = B + k * ldb;
            for (int i = 0; i < m; i++) {
                float a = A[i * lda + k];
                for (int j = 0; j < n; j++) c[i][j] += a * b[j];
            }
        }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) C[i * ldc + j] = c[i][j];
}

static void kw_generic(int R, const float *A, long lda, const float *B, long ldb, float *C,
                       long ldc, int m, int n, int acc, const float *rbias)
{
    float c[NN_MR][NN_NR];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) c[i][j] = acc ? C[i * ldc + j] : rbias ? rbias[i] : 0.f;
    for (int r = 0; r < R; r++) {
        const float *a = A + r * lda, *b = B + r * ldb;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) c[i][j] += a[i] * b[j];
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) C[i * ldc + j] = c[i][j];
}

#if NN_AVX512
static inline __mmask16 mask_lo(int n) { return n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1); }
static inline __mmask16 mask_hi(int n) { return n <= 16 ? 0 : mask_lo(n - 16); }

/* The tile loops are fully unrolled so c[][] stays in registers (a loop with a runtime
 * index would make GCC keep a memory copy and store all 24 accumulators every k step).
 * When accumulating into C, the old C is not loaded up front (the first FMAs would wait on
 * it: C is often a weight-gradient partial far out in L3) but prefetched, and added at the
 * end, by which time it is in L1. */
#define INIT_TILE(MR)                                                                        \
    __m512 c[MR][2];                                                                         \
    _Pragma("GCC unroll 12")                                                                 \
    for (int i = 0; i < MR; i++) {                                                           \
        c[i][0] = bv0;                                                                       \
        c[i][1] = bv1;                                                                       \
        if (acc && i < m) {                                                                  \
            _mm_prefetch((const char *)(C + i * ldc), _MM_HINT_T0);                          \
            _mm_prefetch((const char *)(C + i * ldc + 16), _MM_HINT_T0);                     \
        }                                                                                    \
    }

#define STORE_TILE(MR)                                                                       \
    _Pragma("GCC unroll 12")                                                                 \
    for (int i = 0; i < MR; i++) {                                                           \
        if (i < m) {                                                                         \
            if (acc) {                                                                       \
                c[i][0] = _mm512_add_ps(c[i][0], _mm512_maskz_loadu_ps(k0, C + i * ldc));    \
                c[i][1] = _mm512_add_ps(c[i][1], _mm512_maskz_loadu_ps(k1, C + i * ldc + 16)); \
            }                                                                                \
            _mm512_mask_storeu_ps(C + i * ldc, k0, c[i][0]);                                 \
            if (k1) _mm512_mask_storeu_ps(C + i * ldc + 16, k1, c[i][1]);                    \
        }                                                                                    \
    }

#define FMA_ROW(i, aval)                                                                     \
    { __m512 a_ = _mm512_set1_ps(aval);                                                      \
      c[i][0] = _mm512_fmadd_ps(a_, b0, c[i][0]); c[i][1] = _mm512_fmadd_ps(a_, b1, c[i][1]); }

/* F kernel for MR = 12 or 8 rows (8: rows of 16, 32, 64 pixels split into 12s and 8s) */
#define KF_BODY(MR, FMAS)                                                                    \
    const __mmask16 k0 = mask_lo(n), k1 = mask_hi(n);                                        \
    const __m512 bv0 = (!acc && bias) ? _mm512_maskz_loadu_ps(k0, bias) : _mm512_setzero_ps(); \
    const __m512 bv1 = (!acc && bias) ? _mm512_maskz_loadu_ps(k1, bias + 16) : _mm512_setzero_ps(); \
    INIT_TILE(MR)                                                                            \
    const float *ap[MR];                                                                     \
    _Pragma("GCC unroll 12")                                                                 \
    for (int i = 0; i < MR; i++) ap[i] = A + (i < m ? i : m - 1) * lda;  /* spare rows repeat */ \
    for (int sg = 0; sg < nseg; sg++) {                                                      \
        for (int k = 0; k < K; k++) {                                                        \
            const __m512 b0 = _mm512_maskz_loadu_ps(k0, B + k * ldb);                        \
            const __m512 b1 = _mm512_maskz_loadu_ps(k1, B + k * ldb + 16);                   \
            FMAS                                                                             \
        }                                                                                    \
        _Pragma("GCC unroll 12")                                                             \
        for (int i = 0; i < MR; i++) ap[i] += aseg;                                          \
        B += bseg;                                                                           \
    }                                                                                        \
    STORE_TILE(MR)

static void kf_avx512(int K, const float *A, long lda, const float *B, long ldb, float *C,
                      long ldc, int m, int n, int acc, const float *bias, int nseg, long aseg, long bseg)
{
    KF_BODY(12, FMA_ROW(0, ap[0][k]) FMA_ROW(1, ap[1][k]) FMA_ROW(2, ap[2][k]) FMA_ROW(3, ap[3][k])
                FMA_ROW(4, ap[4][k]) FMA_ROW(5, ap[5][k]) FMA_ROW(6, ap[6][k]) FMA_ROW(7, ap[7][k])
                FMA_ROW(8, ap[8][k]) FMA_ROW(9, ap[9][k]) FMA_ROW(10, ap[10][k]) FMA_ROW(11, ap[11][k]))
}

static void kf8_avx512(int K, const float *A, long lda, const float *B, long ldb, float *C,
                       long ldc, int m, int n, int acc, const float *bias, int nseg, long aseg, long bseg)
{
    KF_BODY(8, FMA_ROW(0, ap[0][k]) FMA_ROW(1, ap[1][k]) FMA_ROW(2, ap[2][k]) FMA_ROW(3, ap[3][k])
               FMA_ROW(4, ap[4][k]) FMA_ROW(5, ap[5][k]) FMA_ROW(6, ap[6][k]) FMA_ROW(7, ap[7][k]))
}

static void kw_avx512(int R, const float *A, long lda, const float *B, long ldb, float *C,
                      long ldc, int m, int n, int acc, const float *rbias, int stream)
{
    const __mmask16 k0 = mask_lo(n), k1 = mask_hi(n);
    const __m512 bv0 = _mm512_setzero_ps(), bv1 = _mm512_setzero_ps();
    INIT_TILE(NN_MR)
    if (rbias) {
        _Pragma("GCC unroll 12")
        for (int i = 0; i < NN_MR; i++) c[i][0] = c[i][1] = _mm512_set1_ps(rbias[i < m ? i : 0]);
    }
    for (int r = 0; r < R; r++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(k0, B);
        const __m512 b1 = _mm512_maskz_loadu_ps(k1, B + 16);
        FMA_ROW(0, A[0]) FMA_ROW(1, A[1]) FMA_ROW(2, A[2]) FMA_ROW(3, A[3])
        FMA_ROW(4, A[4]) FMA_ROW(5, A[5]) FMA_ROW(6, A[6]) FMA_ROW(7, A[7])
        FMA_ROW(8, A[8]) FMA_ROW(9, A[9]) FMA_ROW(10, A[10]) FMA_ROW(11, A[11])
        A += lda;
        B += ldb;
    }
    if (stream && n == NN_NR && !acc && ((uintptr_t)C & 63) == 0 && ((ldc * 4) & 63) == 0) {
        /* write-once output (the logits): non-temporal, no read-for-ownership of C */
        _Pragma("GCC unroll 12")
        for (int i = 0; i < NN_MR; i++)
            if (i < m) { _mm512_stream_ps(C + i * ldc, c[i][0]); _mm512_stream_ps(C + i * ldc + 16, c[i][1]); }
        return;
    }
    STORE_TILE(NN_MR)
}
#endif

/* Row blocks for M: 12s and 8s covering M exactly when M % 4 == 0 (a 64-pixel row is
 * 4x12 + 2x8, not 5x12 + a third-used 12), else 12s and one partial block. */
static int row_blocks(int M, int *mb)
{
    int a = M / 12, nb = 0;
    if (M % 4 == 0)
        while (a > 0 && (M - 12 * a) % 8) a--;
    for (int i = 0; i < a; i++) mb[nb++] = 12;
    int r = M - 12 * a;
    if (M % 4 == 0) for (; r > 0; r -= 8) mb[nb++] = 8;
    else if (r > 0) mb[nb++] = r > 8 ? 12 : 8;
    return nb;
}

void nn_gemm_fs(const NnTeam *t, int M, int N, int K, int nseg, const float *A, long lda,
                long aseg, const float *B, long bps, long ldb, long bseg, float *C, long ldc, int acc,
                const float *bias)
{
    const int gen = nn_team_generic(t);
    int mbs[4096 / 8 + 8], nmb = 0;
    const int plan = !gen && M <= 4096;
    if (plan) nmb = row_blocks(M, mbs);
    for (int q = 0; q * NN_NR < N; q++) {
        const int n = imin(NN_NR, N - q * NN_NR);
        const float *Bq = B + q * bps;
        const float *bq = bias ? bias + q * NN_NR : NULL;
#if NN_AVX512
        if (plan) {
            for (int b = 0, i = 0; b < nmb; i += mbs[b++]) {
                const int m = imin(mbs[b], M - i);
                float *Ci = C + (long)i * ldc + q * NN_NR;
                if (mbs[b] <= 8) kf8_avx512(K, A + (long)i * lda, lda, Bq, ldb, Ci, ldc, m, n, acc, bq, nseg, aseg, bseg);
                else kf_avx512(K, A + (long)i * lda, lda, Bq, ldb, Ci, ldc, m, n, acc, bq, nseg, aseg, bseg);
            }
            continue;
        }
#endif
        for (int i = 0; i < M; i += NN_MR) {
            const int m = imin(NN_MR, M - i);
            float *Ci = C + (long)i * ldc + q * NN_NR;
#if NN_AVX512
            if (!gen) { kf_avx512(K, A + (long)i * lda, lda, Bq, ldb, Ci, ldc, m, n, acc, bq, nseg, aseg, bseg); continue; }
#endif
            kf_generic(K, A + (long)i * lda, lda, Bq, ldb, Ci, ldc, m, n, acc, bq, nseg, aseg, bseg);
        }
    }
    (void)gen; (void)plan; (void)nmb;
}

void nn_gemm_f(const NnTeam *t, int M, int N, int K, const float *A, long lda,
               const float *B, long bps, long ldb, float *C, long ldc, int acc, const float *bias)
{
    nn_gemm_fs(t, M, N, K, 1, A, lda, 0, B, bps, ldb, 0, C, ldc, acc, bias);
}

void nn_gemm_wb(const NnTeam *t, int M, int N, int R, const float *A, long lda,
                const float *B, long ldb, float *C, long ldc, int acc, const float *rbias, int stream)
{
    const int gen = nn_team_generic(t);
    for (int q = 0; q * NN_NR < N; q++) {
        const int n = imin(NN_NR, N - q * NN_NR);
        for (int i = 0; i < M; i += NN_MR) {
            const int m = imin(NN_MR, M - i);
            float *Ci = C + (long)i * ldc + q * NN_NR;
            const float *rb = rbias ? rbias + i : NULL;
#if NN_AVX512
            if (!gen) { kw_avx512(R, A + i, lda, B + q * NN_NR, ldb, Ci, ldc, m, n, acc, rb, stream); continue; }
#endif
            kw_generic(R, A + i, lda, B + q * NN_NR, ldb, Ci, ldc, m, n, acc, rb);
        }
    }
    (void)gen;
}

void nn_gemm_w(const NnTeam *t, int M, int N, int R, const float *A, long lda,
               const float *B, long ldb, float *C, long ldc, int acc)
{
    nn_gemm_wb(t, M, N, R, A, lda, B, ldb, C, ldc, acc, NULL, 0);
}
