/* tests/cuemu/cuemu_blas.cpp : the cuBLAS subset that common/gpu/gpu_net.cu calls, for the
 * CUDA emulator (see cuemu_internal.h), and the SGEMM behind it and behind the emulated
 * cuDNN convolutions (OpenBLAS, one thread). As in the real library, host scalars are read
 * when the call is made, the work runs later on the handle's stream, invalid arguments get
 * CUBLAS_STATUS_INVALID_VALUE and every operand must lie in device memory over its full
 * extent. CUBLAS_TF32_TENSOR_OP_MATH reads A and B as TF32; the other modes are plain float. */
#include <cblas.h>
#include <cublas_v2.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "cuemu_internal.h"

struct cublasContext { cudaStream_t stream; int math; };

namespace cuemu {

/* Float data on tensor cores (sm_80+) is read as TF32: 10 mantissa bits, rounded to nearest. */
void tf32_round(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &p[i], 4);
        if ((b & 0x7f800000u) == 0x7f800000u) continue;      /* inf, NaN */
        b = (b + 0x1000u) & ~0x1fffu;
        memcpy(&p[i], &b, 4);
    }
}

/* C = alpha * A B + beta * C, C m x n, A m x k, B k x n, each given by a base and two strides:
 * A(i,l) = a[i*ai + l*al], B(l,j) = b[l*bl + j*bj], C(i,j) = c[i*ci + j*cj], one stride of each
 * being 1 (as every caller's is), through OpenBLAS. beta 0: C is not read (it is cleared
 * first: it may hold NaN garbage); alpha 0 or k 0: A and B are not read (as the reference BLAS). */
void gemm(int m, int n, int k, float alpha, const float *a, ptrdiff_t ai, ptrdiff_t al, const float *b,
          ptrdiff_t bl, ptrdiff_t bj, float beta, float *c, ptrdiff_t ci, ptrdiff_t cj)
{
    static const int one_thread = (openblas_set_num_threads(1), 1);   /* small products: threads only spin */
    (void)one_thread;
    if (m <= 0 || n <= 0) return;
    if (cj != 1) {                      /* C^T = B^T A^T: a row-major C */
        gemm(n, m, k, alpha, b, bj, bl, a, al, ai, beta, c, cj, ci);
        return;
    }
    if (beta == 0.f)
        for (int i = 0; i < m; i++) memset(c + i * ci, 0, sizeof(float) * n);
    if (k <= 0 || alpha == 0.f) {
        if (beta != 0.f)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) c[i * ci + j] *= beta;
        return;
    }
    const bool na = al == 1 && ai >= k, nb = bj == 1 && bl >= n;
    if ((!na && !(ai == 1 && al >= m)) || (!nb && !(bl == 1 && bj >= k)) || ci < n)
        fatal("gemm: strides (%td, %td), (%td, %td), (%td, 1) for %d x %d x %d are not a BLAS layout", ai, al, bl, bj,
                     ci, m, n, k);
    cblas_sgemm(CblasRowMajor, na ? CblasNoTrans : CblasTrans, nb ? CblasNoTrans : CblasTrans, m, n, k, alpha, a,
                (int)(na ? ai : al), b, (int)(nb ? bl : bj), beta, c, (int)ci);
}
} // namespace cuemu

extern "C" {

#define NAME(s) case s: return #s
const char *cublasGetStatusString(cublasStatus_t status)
{
    switch (status) {
    NAME(CUBLAS_STATUS_SUCCESS);
    NAME(CUBLAS_STATUS_NOT_INITIALIZED);
    NAME(CUBLAS_STATUS_ALLOC_FAILED);
    NAME(CUBLAS_STATUS_INVALID_VALUE);
    NAME(CUBLAS_STATUS_ARCH_MISMATCH);
    NAME(CUBLAS_STATUS_MAPPING_ERROR);
    NAME(CUBLAS_STATUS_EXECUTION_FAILED);
    NAME(CUBLAS_STATUS_INTERNAL_ERROR);
    NAME(CUBLAS_STATUS_NOT_SUPPORTED);
    NAME(CUBLAS_STATUS_LICENSE_ERROR);
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
#undef NAME
}

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle)
{
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = (cublasHandle_t)calloc(1, sizeof **handle);
    return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle)
{
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId)
{
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = streamId;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    const int base = mode & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base != CUBLAS_DEFAULT_MATH && base != CUBLAS_TENSOR_OP_MATH && base != CUBLAS_PEDANTIC_MATH &&
        base != CUBLAS_TF32_TENSOR_OP_MATH)
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

} /* extern "C" */

/* Bytes from the lowest to the highest element of count rows x cols column-major operands
 * ld apart, stride elements from one to the next; *lo: the lowest element's offset. */
static size_t blas_extent(int rows, int cols, int ld, long long stride, int count, long long *lo)
{
    const long long one = (long long)(cols - 1) * ld + rows, span = (long long)(count - 1) * stride;
    *lo = span < 0 ? span : 0;
    return sizeof(float) * (size_t)(one + (span < 0 ? -span : span));
}

/* cublasSgemm_v2 and cublasSgemmStridedBatched: C[i] = alpha op(A[i]) op(B[i]) + beta C[i]. */
static cublasStatus_t sgemm_batched(const char *api, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                                    int n, int k, const float *alpha, const float *A, int lda, long long sA, const float *B,
                                    int ldb, long long sB, const float *beta, float *C, int ldc, long long sC, int count)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    const bool ok_a = ta == CUBLAS_OP_N || ta == CUBLAS_OP_T || ta == CUBLAS_OP_C;
    const bool ok_b = tb == CUBLAS_OP_N || tb == CUBLAS_OP_T || tb == CUBLAS_OP_C;
    if (!ok_a || !ok_b || m < 0 || n < 0 || k < 0 || count < 0 || !alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    const bool na = ta == CUBLAS_OP_N, nb = tb == CUBLAS_OP_N;   /* C (conjugate transpose) is T for reals */
    const int ar = na ? m : k, ac = na ? k : m, br = nb ? k : n, bc = nb ? n : k;
    if (lda < (ar > 1 ? ar : 1) || ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0 || count == 0) return CUBLAS_STATUS_SUCCESS;
    const float a = *alpha, b = *beta;
    long long lo;
    if (k > 0 && a != 0.f) {
        size_t bytes = blas_extent(ar, ac, lda, sA, count, &lo);
        cuemu::check_device(A + lo, bytes, api, "A");
        bytes = blas_extent(br, bc, ldb, sB, count, &lo);
        cuemu::check_device(B + lo, bytes, api, "B");
    }
    const size_t bytes = blas_extent(m, n, ldc, sC, count, &lo);
    cuemu::check_device(C + lo, bytes, api, "C");
    /* TF32 tensor op math reads A and B as TF32 (copies of their whole extents, rounded) */
    const bool tf32 = k > 0 && a != 0.f && (h->math & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) == CUBLAS_TF32_TENSOR_OP_MATH;
    cuemu::enqueue(h->stream, [=] {
        std::vector<float> ta, tb;
        const float *pa = A, *pb = B;
        if (tf32) {
            long long la, lb;
            const size_t ea = blas_extent(ar, ac, lda, sA, count, &la) / sizeof(float);
            const size_t eb = blas_extent(br, bc, ldb, sB, count, &lb) / sizeof(float);
            ta.assign(A + la, A + la + ea);
            tb.assign(B + lb, B + lb + eb);
            cuemu::tf32_round(ta.data(), ea);
            cuemu::tf32_round(tb.data(), eb);
            pa = ta.data() - la;
            pb = tb.data() - lb;
        }
        for (int i = 0; i < count; i++)
            cuemu::gemm(m, n, k, a, pa + i * sA, na ? 1 : lda, na ? lda : 1, pb + i * sB, nb ? 1 : ldb, nb ? ldb : 1, b,
                        C + i * sC, 1, ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" {

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                              const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                              float *C, int ldc)
{
    return sgemm_batched("cublasSgemm", handle, transa, transb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                         int n, int k, const float *alpha, const float *A, int lda, long long int strideA,
                                         const float *B, int ldb, long long int strideB, const float *beta, float *C,
                                         int ldc, long long int strideC, int batchCount)
{
    return sgemm_batched("cublasSgemmStridedBatched", handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb,
                         strideB, beta, C, ldc, strideC, batchCount);
}

} /* extern "C" */
