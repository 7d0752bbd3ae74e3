/* tests/cuemu/cuemu_dnn.cpp : the cuDNN subset that common/gpu/gpu_net.cu calls,
 * for the CUDA emulator (see cuemu_internal.h). The prototypes are the real headers' own; the
 * results are computed on the CPU by reference loops: convolutions as im2col + one
 * SGEMM (cuemu_blas.cpp) over float copies of the tensors (float accumulation), BatchNorm statistics and
 * sums in double.
 * As in the real libraries, descriptors and host scalars (alpha, beta) are read when the
 * call is made and the work runs later, in order, on the handle's stream; the arguments
 * real cuDNN 9 / cuBLAS reject get the status they would return, and every tensor, filter,
 * workspace and BatchNorm vector must lie in device memory over its full extent.
 * Float convolutions without FMA math read their operands as TF32, as tensor cores do (so
 * --amp off must pin FMA math to match the CPU).
 * Test hooks: a convolution overwrites the workspace bytes its algorithm uses with garbage
 * (scratch: a caller that reads them back has a bug), and CUEMU_DNN_DECLINE=1 makes the
 * first algorithm the heuristics offer for each kind of convolution return
 * CUDNN_STATUS_NOT_SUPPORTED when run, so that the caller's fallback gets exercised. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudnn.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "cuemu_internal.h"

/* ---- handles and descriptors ----------------------------------------------------------------- */
struct Dims {                           /* a 4-d tensor; a filter is one with n = k, h = r, w = s */
    bool set;                           /* false until a Set call: using it is BAD_PARAM */
    cudnnTensorFormat_t fmt;            /* NCHW or NHWC (filters: KCRS or KRSC) */
    cudnnDataType_t dt;                 /* FLOAT, HALF or BFLOAT16 */
    int n, c, h, w;
};
struct cudnnContext { cudaStream_t stream; };
struct cudnnTensorStruct { Dims d; };
struct cudnnFilterStruct { Dims d; };
struct cudnnConvolutionStruct {
    bool set;
    int pad_h, pad_w, u, v, dil_h, dil_w;
    cudnnConvolutionMode_t mode;
    cudnnDataType_t compute;
    cudnnMathType_t math;
};

static size_t dt_size(cudnnDataType_t t) { return t == CUDNN_DATA_FLOAT ? 4 : 2; }
static size_t dims_count(const Dims &d) { return (size_t)d.n * d.c * d.h * d.w; }
static size_t dims_bytes(const Dims &d) { return dims_count(d) * dt_size(d.dt); }

static cudnnStatus_t dims_set(Dims *d, cudnnTensorFormat_t fmt, cudnnDataType_t dt, int n, int c, int h, int w)
{
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    if (fmt != CUDNN_TENSOR_NCHW && fmt != CUDNN_TENSOR_NHWC) return CUDNN_STATUS_BAD_PARAM;
    if (dt != CUDNN_DATA_FLOAT && dt != CUDNN_DATA_HALF && dt != CUDNN_DATA_BFLOAT16) return CUDNN_STATUS_BAD_PARAM;
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if ((double)n * c * h * w > INT_MAX) return CUDNN_STATUS_NOT_SUPPORTED;   /* cuDNN's 2 Giga-element limit */
    d->set = true;
    d->fmt = fmt;
    d->dt = dt;
    d->n = n, d->c = c, d->h = h, d->w = w;
    return CUDNN_STATUS_SUCCESS;
}

/* Offset of element (n, c, 0, 0), and the step from one (h, w) position to the next. */
static size_t plane_at(const Dims &d, int n, int c)
{
    const size_t hw = (size_t)d.h * d.w;
    return d.fmt == CUDNN_TENSOR_NCHW ? ((size_t)n * d.c + c) * hw : (size_t)n * hw * d.c + c;
}
static size_t plane_step(const Dims &d) { return d.fmt == CUDNN_TENSOR_NCHW ? 1 : (size_t)d.c; }

/* ---- element types ---------------------------------------------------------------------------- */
static inline float to_f(float x) { return x; }
static inline float to_f(__half x) { return __half2float(x); }
static inline float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
static inline void from_f(float *p, float x) { *p = x; }
static inline void from_f(__half *p, float x) { *p = __float2half_rn(x); }
static inline void from_f(__nv_bfloat16 *p, float x) { *p = __float2bfloat16_rn(x); }

/* dst[n*sn + c*sc + hw] = element (n, c, hw) of tensor p, as float. */
template <typename T> static void gather_t(const Dims &d, const T *p, float *dst, size_t sn, size_t sc)
{
    const size_t hw = (size_t)d.h * d.w, st = plane_step(d);
    for (int n = 0; n < d.n; n++)
        for (int c = 0; c < d.c; c++) {
            const T *s = p + plane_at(d, n, c);
            float *o = dst + n * sn + c * sc;
            for (size_t i = 0; i < hw; i++) o[i] = to_f(s[i * st]);
        }
}
static void gather(const Dims &d, const void *p, float *dst, size_t sn, size_t sc)
{
    if (d.dt == CUDNN_DATA_HALF) gather_t(d, (const __half *)p, dst, sn, sc);
    else if (d.dt == CUDNN_DATA_BFLOAT16) gather_t(d, (const __nv_bfloat16 *)p, dst, sn, sc);
    else gather_t(d, (const float *)p, dst, sn, sc);
}

/* Element (n, c, hw) of p = alpha * src[n*sn + c*sc + hw] + beta * itself, rounded to p's
 * type; with beta 0 the old value is not read (it may be garbage, NaN included). */
template <typename T>
static void blend_t(const Dims &d, T *p, const float *src, size_t sn, size_t sc, float alpha, float beta)
{
    const size_t hw = (size_t)d.h * d.w, st = plane_step(d);
    for (int n = 0; n < d.n; n++)
        for (int c = 0; c < d.c; c++) {
            T *o = p + plane_at(d, n, c);
            const float *s = src + n * sn + c * sc;
            if (beta == 0.f)
                for (size_t i = 0; i < hw; i++) from_f(o + i * st, alpha * s[i]);
            else
                for (size_t i = 0; i < hw; i++) from_f(o + i * st, alpha * s[i] + beta * to_f(o[i * st]));
        }
}
static void blend(const Dims &d, void *p, const float *src, size_t sn, size_t sc, float alpha, float beta)
{
    if (d.dt == CUDNN_DATA_HALF) blend_t(d, (__half *)p, src, sn, sc, alpha, beta);
    else if (d.dt == CUDNN_DATA_BFLOAT16) blend_t(d, (__nv_bfloat16 *)p, src, sn, sc, alpha, beta);
    else blend_t(d, (float *)p, src, sn, sc, alpha, beta);
}

/* Scratch for the queued work. Queued ops run one at a time (the runtime drains streams
 * under its lock), so each slot is reused from op to op and only grows. */
enum { S_X, S_W, S_Y, S_COL, S_N };
static float *scratch(int slot, size_t n)
{
    static std::vector<float> s[S_N];
    if (s[slot].size() < n) s[slot].resize(n);
    return s[slot].data();
}

/* ---- convolutions: geometry and algorithms ------------------------------------------------------ */
struct Conv {                           /* a checked convolution, copied for the queued work */
    Dims x, w, y;                       /* input, filter, output (of the forward direction) */
    int pad_h, pad_w, u, v;
    bool flip;                          /* CUDNN_CONVOLUTION: the filter is applied flipped */
    bool tf32;                          /* float data without FMA math: tensor cores read TF32 */
};

static cudnnStatus_t conv_check(const cudnnTensorStruct *xd, const cudnnFilterStruct *wd, const cudnnConvolutionStruct *cv,
                                const cudnnTensorStruct *yd, Conv *k)
{
    if (!xd || !wd || !cv || !yd || !xd->d.set || !wd->d.set || !cv->set || !yd->d.set) return CUDNN_STATUS_BAD_PARAM;
    const Dims &x = xd->d, &w = wd->d, &y = yd->d;
    if (x.dt != w.dt || x.dt != y.dt || x.fmt != w.fmt || x.fmt != y.fmt) return CUDNN_STATUS_BAD_PARAM;
    if (x.n != y.n || x.c != w.c || y.c != w.n) return CUDNN_STATUS_BAD_PARAM;
    const long eh = (long)x.h + 2L * cv->pad_h - ((long)(w.h - 1) * cv->dil_h + 1);
    const long ew = (long)x.w + 2L * cv->pad_w - ((long)(w.w - 1) * cv->dil_w + 1);
    if (eh < 0 || ew < 0 || y.h != eh / cv->u + 1 || y.w != ew / cv->v + 1) return CUDNN_STATUS_BAD_PARAM;
    if (cv->dil_h != 1 || cv->dil_w != 1) return CUDNN_STATUS_NOT_SUPPORTED;
    /* float compute for every data type; half compute for half data ("true half") */
    if (cv->compute != CUDNN_DATA_FLOAT && !(cv->compute == CUDNN_DATA_HALF && x.dt == CUDNN_DATA_HALF))
        return CUDNN_STATUS_NOT_SUPPORTED;
    /* Our model of a real hazard: FMA math means the fp32 CUDA-core kernels, and cuDNN 9's
     * legacy convolutions have no half or bf16 path among them. */
    if (cv->math == CUDNN_FMA_MATH && x.dt != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    k->x = x, k->w = w, k->y = y;
    k->pad_h = cv->pad_h, k->pad_w = cv->pad_w, k->u = cv->u, k->v = cv->v;
    k->flip = cv->mode == CUDNN_CONVOLUTION;
    /* cuDNN's default math lets float convolutions run on TF32 tensor cores; FMA math does not */
    k->tf32 = x.dt == CUDNN_DATA_FLOAT && cv->math != CUDNN_FMA_MATH;
    return CUDNN_STATUS_SUCCESS;
}

enum { OP_FWD, OP_BWD_DATA, OP_BWD_FILTER, OP_N };
enum { N_OFFERED = 3 };
/* What the heuristics offer, best first; the others in the enums are NOT_SUPPORTED here. */
static const int offered[OP_N][N_OFFERED] = {
    { CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
      CUDNN_CONVOLUTION_FWD_ALGO_GEMM },
    { CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING },
    { CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING },
};
static const int algo_count[OP_N] = { CUDNN_CONVOLUTION_FWD_ALGO_COUNT, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT };
static const char *const op_api[OP_N] = { "cudnnConvolutionForward", "cudnnConvolutionBackwardData",
                                          "cudnnConvolutionBackwardFilter" };

/* Index of algo among those offered for op: -1 not offered, -2 not in the enum. */
static int offered_index(int op, int algo)
{
    if (algo < 0 || algo >= algo_count[op]) return -2;
    for (int i = 0; i < N_OFFERED; i++)
        if (offered[op][i] == algo) return i;
    return -1;
}

/* Backward ALGO_0 sums with atomics on a GPU, as the header says. */
static bool deterministic(int op, int i) { return !(op != OP_FWD && i == 1); }

/* Workspace bytes offered algorithm i of op needs for k (invented, but shaped like the real ones). */
static size_t algo_ws(int op, int i, const Conv &k)
{
    const size_t es = dt_size(k.x.dt), crs = (size_t)k.w.c * k.w.h * k.w.w, K = (size_t)k.w.n;
    const size_t tiles = 4 * 64 * ((size_t)k.x.n * (k.x.c + k.y.c) + (size_t)k.x.c * k.y.c);
    switch (op * N_OFFERED + i) {
    case 0: return (size_t)1 << 20;                            /* precomputed indices */
    case 2: return es * crs * k.y.h * k.y.w;                   /* one image's im2col */
    case 3: return es * K * crs;                               /* a rearranged filter */
    case 6: return 4 * K * crs;                                /* fp32 partial filter */
    case 5: case 8: return tiles;                              /* FFT tiles */
    default: return 0;
    }
}

/* CUEMU_DNN_DECLINE=1: the first algorithm offered for each op declines to run. */
static bool declines(int op, int algo)
{
    static const bool on = [] { const char *s = getenv("CUEMU_DNN_DECLINE"); return s && !strcmp(s, "1"); }();
    return on && algo == offered[op][0];
}

/* The checks every convolution call makes; *need: the workspace bytes algo uses. */
static cudnnStatus_t conv_prepare(int op, cudnnHandle_t h, const void *alpha, const void *beta, const cudnnTensorStruct *xd,
                                  const cudnnFilterStruct *wd, const cudnnConvolutionStruct *cv, const cudnnTensorStruct *yd,
                                  int algo, const void *ws, size_t ws_bytes, Conv *k, size_t *need)
{
    if (!h || !alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
    const cudnnStatus_t st = conv_check(xd, wd, cv, yd, k);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    const int i = offered_index(op, algo);
    if (i == -2) return CUDNN_STATUS_BAD_PARAM;
    if (i < 0) return CUDNN_STATUS_NOT_SUPPORTED;
    *need = algo_ws(op, i, *k);
    if (*need > 0 && (!ws || ws_bytes < *need)) return CUDNN_STATUS_BAD_PARAM;
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t ws_query(int op, cudnnHandle_t h, const cudnnTensorStruct *xd, const cudnnFilterStruct *wd,
                              const cudnnConvolutionStruct *cv, const cudnnTensorStruct *yd, int algo, size_t *size)
{
    Conv k;
    if (!h || !size) return CUDNN_STATUS_BAD_PARAM;
    const cudnnStatus_t st = conv_check(xd, wd, cv, yd, &k);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    const int i = offered_index(op, algo);
    if (i == -2) return CUDNN_STATUS_BAD_PARAM;
    if (i < 0) return CUDNN_STATUS_NOT_SUPPORTED;
    *size = algo_ws(op, i, k);
    return CUDNN_STATUS_SUCCESS;
}

/* The _v7 heuristics: the offered algorithms in order (each NOT_SUPPORTED when the
 * convolution is, e.g. half data with FMA math); BAD_PARAM for inconsistent descriptors. */
template <typename Perf>
static cudnnStatus_t heuristics(int op, cudnnHandle_t h, const cudnnTensorStruct *xd, const cudnnFilterStruct *wd,
                                const cudnnConvolutionStruct *cv, const cudnnTensorStruct *yd, int requested, int *returned,
                                Perf *perf)
{
    Conv k;
    if (!h || !returned || !perf || requested < 1) return CUDNN_STATUS_BAD_PARAM;
    const cudnnStatus_t st = conv_check(xd, wd, cv, yd, &k);
    if (st == CUDNN_STATUS_BAD_PARAM) return st;
    const int n = requested < N_OFFERED ? requested : N_OFFERED;
    for (int i = 0; i < n; i++) {
        memset(&perf[i], 0, sizeof perf[i]);
        perf[i].algo = (decltype(perf[i].algo))offered[op][i];
        perf[i].status = st;
        perf[i].time = 0.1f * (float)(i + 1);
        perf[i].memory = st == CUDNN_STATUS_SUCCESS ? algo_ws(op, i, k) : 0;
        perf[i].determinism = deterministic(op, i) ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        perf[i].mathType = cv->math;
    }
    *returned = n;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- convolutions: the computation --------------------------------------------------------------- */
/* Images per im2col batch: all of them, unless the column matrix would pass 16 MiB. */
static int group_of(int n, size_t floats_per_image)
{
    const size_t lim = (size_t)1 << 22;
    if (floats_per_image * n <= lim) return n;
    const size_t g = lim / floats_per_image;
    return g < 1 ? 1 : (int)g;
}

/* col[(c*R + r)*S + s][j*P*Q + p*Q + q] = x[c][n0 + j][p*u + r - pad_h][q*v + s - pad_w] (0 outside
 * the image) for the g images from n0; x is float CNHW. add: the other way, x[...] += col[...]
 * (col2im, for the data gradient). */
static void im2col(const Conv &k, float *x, float *col, int n0, int g, bool add)
{
    const int N = k.x.n, C = k.x.c, H = k.x.h, W = k.x.w, R = k.w.h, S = k.w.w, P = k.y.h, Q = k.y.w;
    const size_t ld = (size_t)g * P * Q;
    for (int c = 0; c < C; c++)
        for (int r = 0; r < R; r++)
            for (int s = 0; s < S; s++) {
                float *row = col + ((size_t)(c * R + r) * S + s) * ld;
                const int off = s - k.pad_w;    /* input column of output column q: q*v + off */
                int q0 = 0, q1 = Q;
                while (q0 < Q && q0 * k.v + off < 0) q0++;
                while (q1 > q0 && (q1 - 1) * k.v + off >= W) q1--;
                for (int j = 0; j < g; j++)
                    for (int p = 0; p < P; p++) {
                        float *o = row + ((size_t)j * P + p) * Q;
                        const int ih = p * k.u + r - k.pad_h;
                        if (ih < 0 || ih >= H) {
                            if (!add) memset(o, 0, sizeof(float) * Q);
                            continue;
                        }
                        float *xr = x + (((size_t)c * N + n0 + j) * H + ih) * W;
                        if (add) {
                            for (int q = q0; q < q1; q++) xr[q * k.v + off] += o[q];
                            continue;
                        }
                        for (int q = 0; q < q0; q++) o[q] = 0.f;
                        if (k.v == 1)
                            for (int q = q0; q < q1; q++) o[q] = xr[q + off];
                        else
                            for (int q = q0; q < q1; q++) o[q] = xr[q * k.v + off];
                        for (int q = q1; q < Q; q++) o[q] = 0.f;
                    }
            }
}

/* Turn each of the kc R x S kernels of a float KCRS filter by 180 degrees. */
static void flip_rs(float *f, size_t kc, int rs)
{
    for (size_t i = 0; i < kc; i++) {
        float *p = f + i * rs;
        for (int a = 0, b = rs - 1; a < b; a++, b--) {
            const float t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
    }
}

/* The filter as float KCRS, turned for CUDNN_CONVOLUTION. */
static float *filter_f(const Conv &k, const void *w)
{
    const int K = k.w.n, C = k.w.c, RS = k.w.h * k.w.w;
    float *f = scratch(S_W, (size_t)K * C * RS);
    gather(k.w, w, f, (size_t)C * RS, RS);
    if (k.flip) flip_rs(f, (size_t)K * C, RS);
    if (k.tf32) cuemu::tf32_round(f, (size_t)K * C * RS);
    return f;
}

/* y = alpha * conv(x, w) + beta * y. */
static void conv_fwd_run(const Conv &k, float alpha, float beta, const void *x, const void *w, void *y)
{
    const int N = k.x.n, K = k.w.n;
    const size_t HW = (size_t)k.x.h * k.x.w, PQ = (size_t)k.y.h * k.y.w, CRS = (size_t)k.w.c * k.w.h * k.w.w;
    float *xf = scratch(S_X, (size_t)k.x.c * N * HW);          /* float CNHW copies */
    gather(k.x, x, xf, HW, N * HW);
    if (k.tf32) cuemu::tf32_round(xf, (size_t)k.x.c * N * HW);
    const float *wf = filter_f(k, w);
    float *yf = scratch(S_Y, (size_t)K * N * PQ);
    const int g = group_of(N, CRS * PQ);
    float *col = scratch(S_COL, CRS * g * PQ);
    for (int n0 = 0; n0 < N; n0 += g) {
        const int gn = N - n0 < g ? N - n0 : g;
        im2col(k, xf, col, n0, gn, false);
        cuemu::gemm(K, (int)(gn * PQ), (int)CRS, 1.f, wf, (ptrdiff_t)CRS, 1, col, (ptrdiff_t)(gn * PQ), 1, 0.f, yf + n0 * PQ,
             (ptrdiff_t)(N * PQ), 1);
    }
    blend(k.y, y, yf, PQ, N * PQ, alpha, beta);
}

/* dx = alpha * conv^T(dy, w) + beta * dx. */
static void conv_bwd_data_run(const Conv &k, float alpha, float beta, const void *w, const void *dy, void *dx)
{
    const int N = k.x.n, K = k.w.n;
    const size_t HW = (size_t)k.x.h * k.x.w, PQ = (size_t)k.y.h * k.y.w, CRS = (size_t)k.w.c * k.w.h * k.w.w;
    const float *wf = filter_f(k, w);
    float *dyf = scratch(S_Y, (size_t)K * N * PQ);
    gather(k.y, dy, dyf, PQ, N * PQ);
    if (k.tf32) cuemu::tf32_round(dyf, (size_t)K * N * PQ);
    float *dxf = scratch(S_X, (size_t)k.x.c * N * HW);
    memset(dxf, 0, sizeof(float) * k.x.c * N * HW);
    const int g = group_of(N, CRS * PQ);
    float *col = scratch(S_COL, CRS * g * PQ);
    for (int n0 = 0; n0 < N; n0 += g) {
        const int gn = N - n0 < g ? N - n0 : g;
        cuemu::gemm((int)CRS, (int)(gn * PQ), K, 1.f, wf, 1, (ptrdiff_t)CRS, dyf + n0 * PQ, (ptrdiff_t)(N * PQ), 1, 0.f, col,
             (ptrdiff_t)(gn * PQ), 1);
        im2col(k, dxf, col, n0, gn, true);
    }
    blend(k.x, dx, dxf, HW, N * HW, alpha, beta);
}

/* dw = alpha * (the filter gradient from x and dy) + beta * dw. */
static void conv_bwd_filter_run(const Conv &k, float alpha, float beta, const void *x, const void *dy, void *dw)
{
    const int N = k.x.n, K = k.w.n, RS = k.w.h * k.w.w;
    const size_t HW = (size_t)k.x.h * k.x.w, PQ = (size_t)k.y.h * k.y.w, CRS = (size_t)k.w.c * RS;
    float *xf = scratch(S_X, (size_t)k.x.c * N * HW);
    gather(k.x, x, xf, HW, N * HW);
    float *dyf = scratch(S_Y, (size_t)K * N * PQ);
    gather(k.y, dy, dyf, PQ, N * PQ);
    if (k.tf32) { cuemu::tf32_round(xf, (size_t)k.x.c * N * HW); cuemu::tf32_round(dyf, (size_t)K * N * PQ); }
    float *dwf = scratch(S_W, (size_t)K * CRS);
    const int g = group_of(N, CRS * PQ);
    float *col = scratch(S_COL, CRS * g * PQ);
    for (int n0 = 0; n0 < N; n0 += g) {
        const int gn = N - n0 < g ? N - n0 : g;
        im2col(k, xf, col, n0, gn, false);
        cuemu::gemm(K, (int)CRS, (int)(gn * PQ), 1.f, dyf + n0 * PQ, (ptrdiff_t)(N * PQ), 1, col, 1, (ptrdiff_t)(gn * PQ),
             n0 ? 1.f : 0.f, dwf, (ptrdiff_t)CRS, 1);
    }
    if (k.flip) flip_rs(dwf, (size_t)K * k.w.c, RS);          /* the gradient of the turned filter */
    blend(k.w, dw, dwf, CRS, RS, alpha, beta);
}

/* The checked call's common tail: pointers must be device memory, then (unless declined)
 * the work is queued, scribbling over the workspace first. */
template <typename Run>
static cudnnStatus_t conv_launch(int op, cudnnHandle_t h, const Conv &k, int algo, void *ws, size_t need, const void *in1,
                                 const char *in1_name, size_t in1_bytes, const void *in2, const char *in2_name,
                                 size_t in2_bytes, void *out, const char *out_name, size_t out_bytes, Run run)
{
    cuemu::check_device(in1, in1_bytes, op_api[op], in1_name);
    cuemu::check_device(in2, in2_bytes, op_api[op], in2_name);
    cuemu::check_device(out, out_bytes, op_api[op], out_name);
    if (need) cuemu::check_device(ws, need, op_api[op], "workSpace");
    if (declines(op, algo)) return CUDNN_STATUS_NOT_SUPPORTED;
    cuemu::enqueue(h->stream, [=] {
        if (need) memset(ws, 0xff, need);   /* NaN in every float type */
        run(k);
    });
    return CUDNN_STATUS_SUCCESS;
}

/* ---- BatchNorm ------------------------------------------------------------------------------- */
struct Bn { Dims x, y; };              /* x and y: float, the same n, c, h, w; layouts may differ */

static cudnnStatus_t bn_check(cudnnHandle_t h, cudnnBatchNormMode_t mode, const cudnnTensorStruct *xd,
                              const cudnnTensorStruct *yd, const cudnnTensorStruct *bnd, double eps, Bn *b)
{
    if (!h) return CUDNN_STATUS_BAD_PARAM;
    if (mode == CUDNN_BATCHNORM_PER_ACTIVATION || mode == CUDNN_BATCHNORM_SPATIAL_PERSISTENT)
        return CUDNN_STATUS_NOT_SUPPORTED;
    if (mode != CUDNN_BATCHNORM_SPATIAL) return CUDNN_STATUS_BAD_PARAM;
    if (!xd || !yd || !bnd || !xd->d.set || !yd->d.set || !bnd->d.set) return CUDNN_STATUS_BAD_PARAM;
    const Dims &x = xd->d, &y = yd->d, &p = bnd->d;
    if (x.n != y.n || x.c != y.c || x.h != y.h || x.w != y.w) return CUDNN_STATUS_BAD_PARAM;
    if (p.dt != CUDNN_DATA_FLOAT || p.n != 1 || p.c != x.c || p.h != 1 || p.w != 1) return CUDNN_STATUS_BAD_PARAM;
    if (!(eps >= CUDNN_BN_MIN_EPSILON)) return CUDNN_STATUS_BAD_PARAM;
    if (x.dt != CUDNN_DATA_FLOAT || y.dt != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    b->x = x, b->y = y;
    return CUDNN_STATUS_SUCCESS;
}

/* Channel c's mean and 1/sqrt(var + eps) (var biased) of x, in double; *var_out: var. */
static void bn_stats(const Dims &d, const float *x, int c, double eps, double *mean, double *inv, double *var_out)
{
    const size_t hw = (size_t)d.h * d.w, st = plane_step(d);
    const double M = (double)d.n * hw;
    double s = 0, q = 0;
    for (int n = 0; n < d.n; n++) {
        const float *p = x + plane_at(d, n, c);
        for (size_t i = 0; i < hw; i++) s += p[i * st];
    }
    const double m = s / M;
    for (int n = 0; n < d.n; n++) {
        const float *p = x + plane_at(d, n, c);
        for (size_t i = 0; i < hw; i++) q += (p[i * st] - m) * (p[i * st] - m);
    }
    *mean = m;
    *var_out = q / M;
    *inv = 1.0 / sqrt(q / M + eps);
}

/* y = alpha * (scale * (x - mean) * inv + bias) + beta * y for channel c (x and y may alias). */
static void bn_apply(const Bn &b, const float *x, float *y, int c, double mean, double inv, double scale, double bias,
                     float alpha, float beta)
{
    const size_t hw = (size_t)b.x.h * b.x.w, sx = plane_step(b.x), sy = plane_step(b.y);
    for (int n = 0; n < b.x.n; n++) {
        const float *px = x + plane_at(b.x, n, c);
        float *py = y + plane_at(b.y, n, c);
        for (size_t i = 0; i < hw; i++) {
            const float v = (float)(scale * (px[i * sx] - mean) * inv + bias);
            py[i * sy] = beta == 0.f ? alpha * v : alpha * v + beta * py[i * sy];
        }
    }
}

/* *out = a new zeroed T: every cudnnCreate* function. */
template <typename T> static cudnnStatus_t make(T **out)
{
    if (!out) return CUDNN_STATUS_BAD_PARAM;
    *out = (T *)calloc(1, sizeof **out);
    return *out ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
}

/* ---- cuDNN: handles and descriptors ----------------------------------------------------------------- */
extern "C" {

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

const char *cudnnGetErrorString(cudnnStatus_t status)
{
#define NAME(s) case s: return #s
    switch ((int)status) {
    NAME(CUDNN_STATUS_SUCCESS);
    NAME(CUDNN_STATUS_NOT_INITIALIZED);
    NAME(CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH);
    NAME(CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH);
    NAME(CUDNN_STATUS_DEPRECATED);
    NAME(CUDNN_STATUS_LICENSE_ERROR);
    NAME(CUDNN_STATUS_RUNTIME_IN_PROGRESS);
    NAME(CUDNN_STATUS_RUNTIME_FP_OVERFLOW);
    NAME(CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED);
    NAME(CUDNN_STATUS_BAD_PARAM);
    NAME(CUDNN_STATUS_INVALID_VALUE);
    NAME(CUDNN_STATUS_BAD_PARAM_NULL_POINTER);
    NAME(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER);
    NAME(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED);
    NAME(CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND);
    NAME(CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT);
    NAME(CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH);
    NAME(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH);
    NAME(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES);
    NAME(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE);
    NAME(CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH);
    NAME(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE);
    NAME(CUDNN_STATUS_NOT_SUPPORTED);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_SHAPE);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_PADDING);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API);
    NAME(CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE);
    NAME(CUDNN_STATUS_INTERNAL_ERROR);
    NAME(CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED);
    NAME(CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE);
    NAME(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED);
    NAME(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED);
    NAME(CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM);
    NAME(CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED);
    NAME(CUDNN_STATUS_EXECUTION_FAILED);
    NAME(CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER);
    NAME(CUDNN_STATUS_EXECUTION_FAILED_CUBLAS);
    NAME(CUDNN_STATUS_EXECUTION_FAILED_CUDART);
    NAME(CUDNN_STATUS_EXECUTION_FAILED_CURAND);
    default: return "CUDNN_STATUS_UNKNOWN";
    }
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) { return make(handle); }

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) { free(handle); return CUDNN_STATUS_SUCCESS; }

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId)
{
    if (!handle) return CUDNN_STATUS_BAD_PARAM;
    handle->stream = streamId;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *tensorDesc) { return make(tensorDesc); }

cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t tensorDesc) { free(tensorDesc); return CUDNN_STATUS_SUCCESS; }

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t tensorDesc, cudnnTensorFormat_t format,
                                         cudnnDataType_t dataType, int n, int c, int h, int w)
{
    return dims_set(tensorDesc ? &tensorDesc->d : NULL, format, dataType, n, c, h, w);
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *filterDesc) { return make(filterDesc); }

cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t filterDesc) { free(filterDesc); return CUDNN_STATUS_SUCCESS; }

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t filterDesc, cudnnDataType_t dataType,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w)
{
    return dims_set(filterDesc ? &filterDesc->d : NULL, format, dataType, k, c, h, w);
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *convDesc)
{
    const cudnnStatus_t st = make(convDesc);
    if (st == CUDNN_STATUS_SUCCESS) (*convDesc)->math = CUDNN_DEFAULT_MATH;
    return st;
}

cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t convDesc) { free(convDesc); return CUDNN_STATUS_SUCCESS; }

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t convDesc, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t computeType)
{
    if (!convDesc || pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0)
        return CUDNN_STATUS_BAD_PARAM;
    if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION) return CUDNN_STATUS_BAD_PARAM;
    convDesc->set = true;
    convDesc->pad_h = pad_h, convDesc->pad_w = pad_w, convDesc->u = u, convDesc->v = v;
    convDesc->dil_h = dilation_h, convDesc->dil_w = dilation_w;
    convDesc->mode = mode;
    convDesc->compute = computeType;   /* checked against the data type when used */
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t convDesc, cudnnMathType_t mathType)
{
    if (!convDesc) return CUDNN_STATUS_BAD_PARAM;
    if (mathType != CUDNN_DEFAULT_MATH && mathType != CUDNN_TENSOR_OP_MATH &&
        mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && mathType != CUDNN_FMA_MATH)
        return CUDNN_STATUS_BAD_PARAM;
    convDesc->math = mathType;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- cuDNN: convolutions ---------------------------------------------------------------------- */
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
                                                     const cudnnFilterDescriptor_t filterDesc,
                                                     const cudnnConvolutionDescriptor_t convDesc,
                                                     const cudnnTensorDescriptor_t destDesc, const int requestedAlgoCount,
                                                     int *returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t *perfResults)
{
    return heuristics(OP_FWD, handle, srcDesc, filterDesc, convDesc, destDesc, requestedAlgoCount, returnedAlgoCount,
                      perfResults);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc,
                                                          const cudnnTensorDescriptor_t diffDesc,
                                                          const cudnnConvolutionDescriptor_t convDesc,
                                                          const cudnnTensorDescriptor_t gradDesc,
                                                          const int requestedAlgoCount, int *returnedAlgoCount,
                                                          cudnnConvolutionBwdDataAlgoPerf_t *perfResults)
{
    return heuristics(OP_BWD_DATA, handle, gradDesc, filterDesc, convDesc, diffDesc, requestedAlgoCount, returnedAlgoCount,
                      perfResults);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc,
                                                            const cudnnTensorDescriptor_t diffDesc,
                                                            const cudnnConvolutionDescriptor_t convDesc,
                                                            const cudnnFilterDescriptor_t gradDesc,
                                                            const int requestedAlgoCount, int *returnedAlgoCount,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t *perfResults)
{
    return heuristics(OP_BWD_FILTER, handle, srcDesc, gradDesc, convDesc, diffDesc, requestedAlgoCount, returnedAlgoCount,
                      perfResults);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc,
                                                      const cudnnFilterDescriptor_t wDesc,
                                                      const cudnnConvolutionDescriptor_t convDesc,
                                                      const cudnnTensorDescriptor_t yDesc, cudnnConvolutionFwdAlgo_t algo,
                                                      size_t *sizeInBytes)
{
    return ws_query(OP_FWD, handle, xDesc, wDesc, convDesc, yDesc, (int)algo, sizeInBytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc,
                                                           const cudnnTensorDescriptor_t dyDesc,
                                                           const cudnnConvolutionDescriptor_t convDesc,
                                                           const cudnnTensorDescriptor_t dxDesc,
                                                           cudnnConvolutionBwdDataAlgo_t algo, size_t *sizeInBytes)
{
    return ws_query(OP_BWD_DATA, handle, dxDesc, wDesc, convDesc, dyDesc, (int)algo, sizeInBytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc,
                                                             const cudnnTensorDescriptor_t dyDesc,
                                                             const cudnnConvolutionDescriptor_t convDesc,
                                                             const cudnnFilterDescriptor_t gradDesc,
                                                             cudnnConvolutionBwdFilterAlgo_t algo, size_t *sizeInBytes)
{
    return ws_query(OP_BWD_FILTER, handle, xDesc, gradDesc, convDesc, dyDesc, (int)algo, sizeInBytes);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xDesc,
                                      const void *x, const cudnnFilterDescriptor_t wDesc, const void *w,
                                      const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionFwdAlgo_t algo,
                                      void *workSpace, size_t workSpaceSizeInBytes, const void *beta,
                                      const cudnnTensorDescriptor_t yDesc, void *y)
{
    Conv k;
    size_t need = 0;
    const cudnnStatus_t st = conv_prepare(OP_FWD, handle, alpha, beta, xDesc, wDesc, convDesc, yDesc, (int)algo, workSpace,
                                          workSpaceSizeInBytes, &k, &need);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    const float a = *(const float *)alpha, b = *(const float *)beta;
    return conv_launch(OP_FWD, handle, k, (int)algo, workSpace, need, x, "x", dims_bytes(k.x), w, "w", dims_bytes(k.w), y,
                       "y", dims_bytes(k.y), [=](const Conv &c) { conv_fwd_run(c, a, b, x, w, y); });
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void *alpha, const cudnnFilterDescriptor_t wDesc,
                                           const void *w, const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                           const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionBwdDataAlgo_t algo,
                                           void *workSpace, size_t workSpaceSizeInBytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxDesc, void *dx)
{
    Conv k;
    size_t need = 0;
    const cudnnStatus_t st = conv_prepare(OP_BWD_DATA, handle, alpha, beta, dxDesc, wDesc, convDesc, dyDesc, (int)algo,
                                          workSpace, workSpaceSizeInBytes, &k, &need);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    const float a = *(const float *)alpha, b = *(const float *)beta;
    return conv_launch(OP_BWD_DATA, handle, k, (int)algo, workSpace, need, w, "w", dims_bytes(k.w), dy, "dy",
                       dims_bytes(k.y), dx, "dx", dims_bytes(k.x),
                       [=](const Conv &c) { conv_bwd_data_run(c, a, b, w, dy, dx); });
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xDesc,
                                             const void *x, const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                             const cudnnConvolutionDescriptor_t convDesc,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *workSpace,
                                             size_t workSpaceSizeInBytes, const void *beta,
                                             const cudnnFilterDescriptor_t dwDesc, void *dw)
{
    Conv k;
    size_t need = 0;
    const cudnnStatus_t st = conv_prepare(OP_BWD_FILTER, handle, alpha, beta, xDesc, dwDesc, convDesc, dyDesc, (int)algo,
                                          workSpace, workSpaceSizeInBytes, &k, &need);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    const float a = *(const float *)alpha, b = *(const float *)beta;
    return conv_launch(OP_BWD_FILTER, handle, k, (int)algo, workSpace, need, x, "x", dims_bytes(k.x), dy, "dy",
                       dims_bytes(k.y), dw, "dw", dims_bytes(k.w),
                       [=](const Conv &c) { conv_bwd_filter_run(c, a, b, x, dy, dw); });
}

/* ---- cuDNN: BatchNorm ---------------------------------------------------------------------------- */
cudnnStatus_t cudnnDeriveBNTensorDescriptor(cudnnTensorDescriptor_t derivedBnDesc, const cudnnTensorDescriptor_t xDesc,
                                            cudnnBatchNormMode_t mode)
{
    if (!derivedBnDesc || !xDesc || !xDesc->d.set) return CUDNN_STATUS_BAD_PARAM;
    if (mode == CUDNN_BATCHNORM_PER_ACTIVATION) return CUDNN_STATUS_NOT_SUPPORTED;
    if (mode != CUDNN_BATCHNORM_SPATIAL && mode != CUDNN_BATCHNORM_SPATIAL_PERSISTENT) return CUDNN_STATUS_BAD_PARAM;
    return dims_set(&derivedBnDesc->d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, xDesc->d.c, 1, 1);
}

cudnnStatus_t cudnnBatchNormalizationForwardTraining(cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void *alpha,
                                                     const void *beta, const cudnnTensorDescriptor_t xDesc, const void *x,
                                                     const cudnnTensorDescriptor_t yDesc, void *y,
                                                     const cudnnTensorDescriptor_t bnScaleBiasMeanVarDesc,
                                                     const void *bnScale, const void *bnBias,
                                                     double exponentialAverageFactor, void *resultRunningMean,
                                                     void *resultRunningVariance, double epsilon, void *resultSaveMean,
                                                     void *resultSaveInvVariance)
{
    static const char api[] = "cudnnBatchNormalizationForwardTraining";
    Bn b;
    const cudnnStatus_t st = bn_check(handle, mode, xDesc, yDesc, bnScaleBiasMeanVarDesc, epsilon, &b);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
    /* each optional pair: both or neither */
    if (!resultRunningMean != !resultRunningVariance || !resultSaveMean != !resultSaveInvVariance)
        return CUDNN_STATUS_BAD_PARAM;
    const size_t vb = sizeof(float) * b.x.c;
    cuemu::check_device(x, dims_bytes(b.x), api, "x");
    cuemu::check_device(y, dims_bytes(b.y), api, "y");
    cuemu::check_device(bnScale, vb, api, "bnScale");
    cuemu::check_device(bnBias, vb, api, "bnBias");
    if (resultRunningMean) cuemu::check_device(resultRunningMean, vb, api, "resultRunningMean");
    if (resultRunningVariance) cuemu::check_device(resultRunningVariance, vb, api, "resultRunningVariance");
    if (resultSaveMean) cuemu::check_device(resultSaveMean, vb, api, "resultSaveMean");
    if (resultSaveInvVariance) cuemu::check_device(resultSaveInvVariance, vb, api, "resultSaveInvVariance");
    const float al = *(const float *)alpha, be = *(const float *)beta;
    const double f = exponentialAverageFactor;
    const float *px = (const float *)x, *ps = (const float *)bnScale, *pb = (const float *)bnBias;
    float *py = (float *)y, *rm = (float *)resultRunningMean, *rv = (float *)resultRunningVariance;
    float *sm = (float *)resultSaveMean, *si = (float *)resultSaveInvVariance;
    cuemu::enqueue(handle->stream, [=] {
        const double M = (double)b.x.n * b.x.h * b.x.w;
        for (int c = 0; c < b.x.c; c++) {
            double mean, inv, var;
            bn_stats(b.x, px, c, epsilon, &mean, &inv, &var);
            bn_apply(b, px, py, c, mean, inv, ps[c], pb[c], al, be);
            if (rm) {
                /* the running variance is the unbiased one (cuDNN, PyTorch); one value: no correction */
                rm[c] = (float)((1 - f) * rm[c] + f * mean);
                rv[c] = (float)((1 - f) * rv[c] + f * (M > 1 ? var * M / (M - 1) : var));
            }
            if (sm) {
                sm[c] = (float)mean;
                si[c] = (float)inv;
            }
        }
    });
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBatchNormalizationForwardInference(cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void *alpha,
                                                      const void *beta, const cudnnTensorDescriptor_t xDesc, const void *x,
                                                      const cudnnTensorDescriptor_t yDesc, void *y,
                                                      const cudnnTensorDescriptor_t bnScaleBiasMeanVarDesc,
                                                      const void *bnScale, const void *bnBias, const void *estimatedMean,
                                                      const void *estimatedVariance, double epsilon)
{
    static const char api[] = "cudnnBatchNormalizationForwardInference";
    Bn b;
    const cudnnStatus_t st = bn_check(handle, mode, xDesc, yDesc, bnScaleBiasMeanVarDesc, epsilon, &b);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
    const size_t vb = sizeof(float) * b.x.c;
    cuemu::check_device(x, dims_bytes(b.x), api, "x");
    cuemu::check_device(y, dims_bytes(b.y), api, "y");
    cuemu::check_device(bnScale, vb, api, "bnScale");
    cuemu::check_device(bnBias, vb, api, "bnBias");
    cuemu::check_device(estimatedMean, vb, api, "estimatedMean");
    cuemu::check_device(estimatedVariance, vb, api, "estimatedVariance");
    const float al = *(const float *)alpha, be = *(const float *)beta;
    const float *px = (const float *)x, *ps = (const float *)bnScale, *pb = (const float *)bnBias;
    const float *em = (const float *)estimatedMean, *ev = (const float *)estimatedVariance;
    float *py = (float *)y;
    cuemu::enqueue(handle->stream, [=] {
        for (int c = 0; c < b.x.c; c++)
            bn_apply(b, px, py, c, em[c], 1.0 / sqrt((double)ev[c] + epsilon), ps[c], pb[c], al, be);
    });
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBatchNormalizationBackward(cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void *alphaDataDiff,
                                              const void *betaDataDiff, const void *alphaParamDiff,
                                              const void *betaParamDiff, const cudnnTensorDescriptor_t xDesc, const void *x,
                                              const cudnnTensorDescriptor_t dyDesc, const void *dy,
                                              const cudnnTensorDescriptor_t dxDesc, void *dx,
                                              const cudnnTensorDescriptor_t dBnScaleBiasDesc, const void *bnScale,
                                              void *dBnScaleResult, void *dBnBiasResult, double epsilon,
                                              const void *savedMean, const void *savedInvVariance)
{
    static const char api[] = "cudnnBatchNormalizationBackward";
    Bn b, bd;
    cudnnStatus_t st = bn_check(handle, mode, xDesc, dyDesc, dBnScaleBiasDesc, epsilon, &b);
    if (st == CUDNN_STATUS_SUCCESS) st = bn_check(handle, mode, xDesc, dxDesc, dBnScaleBiasDesc, epsilon, &bd);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!alphaDataDiff || !betaDataDiff || !alphaParamDiff || !betaParamDiff) return CUDNN_STATUS_BAD_PARAM;
    if (!savedMean != !savedInvVariance) return CUDNN_STATUS_BAD_PARAM;
    const size_t vb = sizeof(float) * b.x.c;
    cuemu::check_device(x, dims_bytes(b.x), api, "x");
    cuemu::check_device(dy, dims_bytes(b.y), api, "dy");
    cuemu::check_device(dx, dims_bytes(bd.y), api, "dx");
    cuemu::check_device(bnScale, vb, api, "bnScale");
    cuemu::check_device(dBnScaleResult, vb, api, "dBnScaleResult");
    cuemu::check_device(dBnBiasResult, vb, api, "dBnBiasResult");
    if (savedMean) cuemu::check_device(savedMean, vb, api, "savedMean");
    if (savedInvVariance) cuemu::check_device(savedInvVariance, vb, api, "savedInvVariance");
    const float ad = *(const float *)alphaDataDiff, bdd = *(const float *)betaDataDiff;
    const float ap = *(const float *)alphaParamDiff, bp = *(const float *)betaParamDiff;
    const Dims X = b.x, DY = b.y, DX = bd.y;
    const float *px = (const float *)x, *pdy = (const float *)dy, *ps = (const float *)bnScale;
    const float *smean = (const float *)savedMean, *sinv = (const float *)savedInvVariance;
    float *pdx = (float *)dx, *ds = (float *)dBnScaleResult, *db = (float *)dBnBiasResult;
    cuemu::enqueue(handle->stream, [=] {
        const size_t hw = (size_t)X.h * X.w, sx = plane_step(X), sdy = plane_step(DY), sdx = plane_step(DX);
        const double M = (double)X.n * hw;
        for (int c = 0; c < X.c; c++) {
            double mean, inv, var;
            if (smean) mean = smean[c], inv = sinv[c];
            else bn_stats(X, px, c, epsilon, &mean, &inv, &var);
            double sb = 0, ss = 0;                          /* sum dy, sum dy * xhat */
            for (int n = 0; n < X.n; n++) {
                const float *xr = px + plane_at(X, n, c), *gr = pdy + plane_at(DY, n, c);
                for (size_t i = 0; i < hw; i++) {
                    sb += gr[i * sdy];
                    ss += gr[i * sdy] * ((xr[i * sx] - mean) * inv);
                }
            }
            const double k = ps[c] * inv / M;
            for (int n = 0; n < X.n; n++) {
                const float *xr = px + plane_at(X, n, c), *gr = pdy + plane_at(DY, n, c);
                float *o = pdx + plane_at(DX, n, c);
                for (size_t i = 0; i < hw; i++) {
                    const double xhat = (xr[i * sx] - mean) * inv;
                    const float v = (float)(k * (M * gr[i * sdy] - sb - xhat * ss));
                    o[i * sdx] = bdd == 0.f ? ad * v : ad * v + bdd * o[i * sdx];
                }
            }
            ds[c] = bp == 0.f ? ap * (float)ss : ap * (float)ss + bp * ds[c];
            db[c] = bp == 0.f ? ap * (float)sb : ap * (float)sb + bp * db[c];
        }
    });
    return CUDNN_STATUS_SUCCESS;
}

} /* extern "C" */
