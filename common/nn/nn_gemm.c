/* common/nn/nn_gemm.c : the two register-blocked GEMM shapes every layer reduces to.
 * "f": C = A * B with A's rows broadcast one float at a time and B read as two 16-float
 * vectors (a 12 x 32 tile of C in 24 zmm accumulators); "w": C = A^T * B, the same tile
 * but walking the shared dimension down the rows of both (weight gradients, where the
 * reduction runs over pixels). On the development VM's Zen 4 core, from L2: AVX-512
 * ~230 GFLOP/s, AVX2 ~120 (its two-256-bit-FMA peak), OpenBLAS ~100 (docs/cpu.md).
 * This file is compiled once per kernel path (nn_cpu.h): the AVX-512 copy runs the 12 x 32
 * tiles above; the AVX2 copy covers the same tiles with 6 x 16 sub-tiles (12 ymm
 * accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers, BLIS's Haswell shape);
 * the generic copy hands whole panels to OpenBLAS (cblas_sgemm, one OpenBLAS thread: the
 * callers already run on every thread of the team). */
#include <stdint.h>
#include "nn_impl.h"
#if !NN_AVX512 && !NN_AVX2
#include <pthread.h>
#include <stdlib.h>
#include <cblas.h>
#endif

static inline int imin(int a, int b) { return a < b ? a : b; }

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

#if NN_AVX2
#define mask8 nn_mask8

#define FMA6(i, aval)                                                                        \
    { __m256 a_ = _mm256_broadcast_ss(aval);                                                 \
      c[i][0] = _mm256_fmadd_ps(a_, b0, c[i][0]); c[i][1] = _mm256_fmadd_ps(a_, b1, c[i][1]); }

/* C rows [0, m) (m <= 6), columns [0, n) (n <= 16): (acc ? C : init) + the sum. The old C
 * is added at the end, as in the AVX-512 kernels. */
#define STORE6                                                                               \
    _Pragma("GCC unroll 6")                                                                  \
    for (int i = 0; i < 6; i++) {                                                            \
        if (i < m) {                                                                         \
            float *ci = C + i * ldc;                                                         \
            if (n == 16) {                                                                   \
                if (acc) {                                                                   \
                    c[i][0] = _mm256_add_ps(c[i][0], _mm256_loadu_ps(ci));                   \
                    c[i][1] = _mm256_add_ps(c[i][1], _mm256_loadu_ps(ci + 8));               \
                }                                                                            \
                _mm256_storeu_ps(ci, c[i][0]);                                               \
                _mm256_storeu_ps(ci + 8, c[i][1]);                                           \
            } else {                                                                         \
                if (acc) {                                                                   \
                    c[i][0] = _mm256_add_ps(c[i][0], _mm256_maskload_ps(ci, k0));            \
                    c[i][1] = _mm256_add_ps(c[i][1], _mm256_maskload_ps(ci + 8, k1));        \
                }                                                                            \
                _mm256_maskstore_ps(ci, k0, c[i][0]);                                        \
                _mm256_maskstore_ps(ci + 8, k1, c[i][1]);                                    \
            }                                                                                \
        }                                                                                    \
    }

/* F kernel: a 6 x 16 tile of C = A * B over nseg segments of K. */
static void kf_avx2(int K, const float *A, long lda, const float *B, long ldb, float *C,
                    long ldc, int m, int n, int acc, const float *bias, int nseg, long aseg, long bseg)
{
    const __m256i k0 = mask8(n), k1 = mask8(n - 8);
    const __m256 z = _mm256_setzero_ps();
    const __m256 bv0 = (!acc && bias) ? _mm256_maskload_ps(bias, k0) : z;
    const __m256 bv1 = (!acc && bias) ? _mm256_maskload_ps(bias + 8, k1) : z;
    __m256 c[6][2];
    _Pragma("GCC unroll 6")
    for (int i = 0; i < 6; i++) { c[i][0] = bv0; c[i][1] = bv1; }
    const float *ap[6];
    _Pragma("GCC unroll 6")
    for (int i = 0; i < 6; i++) ap[i] = A + (i < m ? i : m - 1) * lda;   /* spare rows repeat */
    for (int sg = 0; sg < nseg; sg++) {
        if (n == 16) {
            for (int k = 0; k < K; k++) {
                const __m256 b0 = _mm256_loadu_ps(B + k * ldb), b1 = _mm256_loadu_ps(B + k * ldb + 8);
                FMA6(0, ap[0] + k) FMA6(1, ap[1] + k) FMA6(2, ap[2] + k)
                FMA6(3, ap[3] + k) FMA6(4, ap[4] + k) FMA6(5, ap[5] + k)
            }
        } else {
            for (int k = 0; k < K; k++) {
                const __m256 b0 = _mm256_maskload_ps(B + k * ldb, k0), b1 = _mm256_maskload_ps(B + k * ldb + 8, k1);
                FMA6(0, ap[0] + k) FMA6(1, ap[1] + k) FMA6(2, ap[2] + k)
                FMA6(3, ap[3] + k) FMA6(4, ap[4] + k) FMA6(5, ap[5] + k)
            }
        }
        _Pragma("GCC unroll 6")
        for (int i = 0; i < 6; i++) ap[i] += aseg;
        B += bseg;
    }
    STORE6
}

/* W kernel: a 6 x 16 tile of C = A^T * B (rows of A and B walk the shared dimension). */
static void kw_avx2(int R, const float *A, long lda, const float *B, long ldb, float *C,
                    long ldc, int m, int n, int acc, const float *rbias)
{
    const __m256i k0 = mask8(n), k1 = mask8(n - 8);
    __m256 c[6][2];
    _Pragma("GCC unroll 6")
    for (int i = 0; i < 6; i++)
        c[i][0] = c[i][1] = rbias && !acc ? _mm256_set1_ps(rbias[i < m ? i : 0]) : _mm256_setzero_ps();
    if (n == 16) {
        for (int r = 0; r < R; r++, A += lda, B += ldb) {
            const __m256 b0 = _mm256_loadu_ps(B), b1 = _mm256_loadu_ps(B + 8);
            FMA6(0, A + 0) FMA6(1, A + 1) FMA6(2, A + 2) FMA6(3, A + 3) FMA6(4, A + 4) FMA6(5, A + 5)
        }
    } else {
        for (int r = 0; r < R; r++, A += lda, B += ldb) {
            const __m256 b0 = _mm256_maskload_ps(B, k0), b1 = _mm256_maskload_ps(B + 8, k1);
            FMA6(0, A + 0) FMA6(1, A + 1) FMA6(2, A + 2) FMA6(3, A + 3) FMA6(4, A + 4) FMA6(5, A + 5)
        }
    }
    STORE6
}
#endif

#if !NN_AVX512 && !NN_AVX2
/* OpenBLAS runs single-threaded inside our team (its own pool would fight the team's
 * threads for the same cores; measured in docs/cpu.md). */
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static void blas_init(void)
{
    const char *e = getenv("SEGKIT_BLAS_THREADS");     /* for measuring the alternative */
    const int n = e ? atoi(e) : 1;
    openblas_set_num_threads(n > 0 ? n : 1);
}

/* C[M x n] = bias (broadcast down the rows) or 0: the start of a non-accumulating GEMM */
static void c_init(float *C, long ldc, int M, int n, const float *bias)
{
    for (int i = 0; i < M; i++) {
        if (bias) memcpy(C + (long)i * ldc, bias, sizeof(float) * (size_t)n);
        else memset(C + (long)i * ldc, 0, sizeof(float) * (size_t)n);
    }
}
#endif

#if NN_AVX512
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

#endif

void nn_gemm_fs(const NnTeam *t, int M, int N, int K, int nseg, const float *A, long lda,
                long aseg, const float *B, long bps, long ldb, long bseg, float *C, long ldc, int acc,
                const float *bias)
{
#if NN_AVX512
    int mbs[4096 / 8 + 8], nmb = 0;
    const int plan = M <= 4096;
    if (plan) nmb = row_blocks(M, mbs);
    for (int q = 0; q * NN_NR < N; q++) {
        const int n = imin(NN_NR, N - q * NN_NR);
        const float *Bq = B + q * bps;
        const float *bq = bias ? bias + q * NN_NR : NULL;
        if (plan) {
            for (int b = 0, i = 0; b < nmb; i += mbs[b++]) {
                const int m = imin(mbs[b], M - i);
                float *Ci = C + (long)i * ldc + q * NN_NR;
                if (mbs[b] <= 8) kf8_avx512(K, A + (long)i * lda, lda, Bq, ldb, Ci, ldc, m, n, acc, bq, nseg, aseg, bseg);
                else kf_avx512(K, A + (long)i * lda, lda, Bq, ldb, Ci, ldc, m, n, acc, bq, nseg, aseg, bseg);
            }
            continue;
        }
        for (int i = 0; i < M; i += NN_MR) {
            const int m = imin(NN_MR, M - i);
            float *Ci = C + (long)i * ldc + q * NN_NR;
            kf_avx512(K, A + (long)i * lda, lda, Bq, ldb, Ci, ldc, m, n, acc, bq, nseg, aseg, bseg);
        }
    }
#elif NN_AVX2
    /* each 32-column panel as two 16-column halves: a half's B (K x 16) stays in L1/L2
     * while 6-row blocks of A stream past it */
    for (int q = 0; q * NN_NR < N; q++)
        for (int h = 0; h < NN_NR && q * NN_NR + h < N; h += 16) {
            const int n = imin(16, N - q * NN_NR - h);
            const float *Bq = B + q * bps + h;
            const float *bq = bias ? bias + q * NN_NR + h : NULL;
            for (int i = 0; i < M; i += 6)
                kf_avx2(K, A + (long)i * lda, lda, Bq, ldb, C + (long)i * ldc + q * NN_NR + h, ldc,
                        imin(6, M - i), n, acc, bq, nseg, aseg, bseg);
        }
#else
    pthread_once(&blas_once, blas_init);
    if (M <= 0 || N <= 0) return;
    /* row-major B (bps == 32): one call over all N columns; packed panels: one per panel */
    const int whole = bps == NN_NR && ldb >= N;
    for (int q = 0; q * NN_NR < N; q++) {
        const int n = whole ? N : imin(NN_NR, N - q * NN_NR);
        float *Cq = C + q * NN_NR;
        float beta = 1.f;
        if (!acc) {
            if (bias) c_init(Cq, ldc, M, n, bias + q * NN_NR);
            else beta = 0.f;
        }
        /* BLAS wants lda >= K, but the implicit im2col reads overlapping rows (lda = Ci,
         * K = 3*Ci): split K into chunks of at most lda */
        const int kc = lda < K ? (int)lda : K;
        for (int sg = 0; sg < nseg; sg++)
            for (int k0 = 0; k0 < K; k0 += kc, beta = 1.f)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, n, imin(kc, K - k0), 1.f,
                            A + sg * aseg + k0, (int)lda, B + q * bps + sg * bseg + (long)k0 * ldb, (int)ldb,
                            beta, Cq, (int)ldc);
        if (!acc && !bias && nseg == 0) c_init(Cq, ldc, M, n, NULL);
        if (whole) break;
    }
#endif
    (void)t;
}

void nn_gemm_f(const NnTeam *t, int M, int N, int K, const float *A, long lda,
               const float *B, long bps, long ldb, float *C, long ldc, int acc, const float *bias)
{
    nn_gemm_fs(t, M, N, K, 1, A, lda, 0, B, bps, ldb, 0, C, ldc, acc, bias);
}

void nn_gemm_wb(const NnTeam *t, int M, int N, int R, const float *A, long lda,
                const float *B, long ldb, float *C, long ldc, int acc, const float *rbias, int stream)
{
#if NN_AVX512
    for (int q = 0; q * NN_NR < N; q++) {
        const int n = imin(NN_NR, N - q * NN_NR);
        for (int i = 0; i < M; i += NN_MR) {
            const int m = imin(NN_MR, M - i);
            float *Ci = C + (long)i * ldc + q * NN_NR;
            const float *rb = rbias ? rbias + i : NULL;
            kw_avx512(R, A + i, lda, B + q * NN_NR, ldb, Ci, ldc, m, n, acc, rb, stream);
        }
    }
#elif NN_AVX2
    for (int q = 0; q < N; q += 16) {
        const int n = imin(16, N - q);
        for (int i = 0; i < M; i += 6)
            kw_avx2(R, A + i, lda, B + q, ldb, C + (long)i * ldc + q, ldc, imin(6, M - i), n, acc,
                    rbias ? rbias + i : NULL);
    }
    (void)stream;
#else
    pthread_once(&blas_once, blas_init);
    if (M <= 0 || N <= 0) return;
    float beta = 1.f;
    if (!acc) {
        if (rbias)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) C[(long)i * ldc + j] = rbias[i];
        else beta = 0.f;
    }
    if (R <= 0) {
        if (beta == 0.f) c_init(C, ldc, M, N, NULL);
        return;
    }
    /* BLAS wants lda >= M and ldb >= N: overlapping operands go in blocks */
    const int mc = lda < M ? (int)lda : M, nc = ldb < N ? (int)ldb : N;
    for (int i0 = 0; i0 < M; i0 += mc)
        for (int j0 = 0; j0 < N; j0 += nc)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, imin(mc, M - i0), imin(nc, N - j0), R, 1.f,
                        A + i0, (int)lda, B + j0, (int)ldb, beta, C + (long)i0 * ldc + j0, (int)ldc);
    (void)stream;
#endif
    (void)t;
}

void nn_gemm_w(const NnTeam *t, int M, int N, int R, const float *A, long lda,
               const float *B, long ldb, float *C, long ldc, int acc)
{
    nn_gemm_wb(t, M, N, R, A, lda, B, ldb, C, ldc, acc, NULL, 0);
}
