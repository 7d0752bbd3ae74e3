/* common/gpu/gpu_kernels.cu : our own CUDA kernels (see gpu_kernels.h). The arithmetic per
 * element comes from gpu_math.h, shared with the CPU test that checks it. Reductions
 * accumulate in double and combine in a fixed order, so results do not depend on timing. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "gpu_kernels.h"
#include "gpu_math.h"

#define TPB 256

static unsigned grid_for(long n, long per_block)
{
    long b = (n + per_block - 1) / per_block;
    if (b < 1) b = 1;
    if (b > 65535L * 16) b = 65535L * 16;
    return (unsigned)b;
}

/* Sum of v over the block (blockDim.x a multiple of 32, at most 1024); valid in thread 0.
 * T: double (float sums) or unsigned long long (counts). */
template <typename T> __device__ static T block_sum(T v)
{
    __shared__ T warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) warp_sums[wid] = v;
    __syncthreads();
    v = 0;
    if (wid == 0) {
        v = lane < nw ? warp_sums[lane] : (T)0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    }
    __syncthreads();
    return v;
}

/* ---- elementwise ---------------------------------------------------------------------------- */
__global__ static void k_relu(float *y, long n)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = y[i] > 0.f ? y[i] : 0.f;
}

__global__ static void k_relu_bwd(float *g, const float *a, long n)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        if (!(a[i] > 0.f)) g[i] = 0.f;
}

__global__ static void k_scale(float *x, size_t n, float a)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) x[i] *= a;
}

__global__ static void k_adam(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
                              float a1, float a2, float eps, float step_size, float bc2s)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        gm_adam(p + i, m + i, v + i, g[i], b1, b2, a1, a2, eps, step_size, bc2s);
}

__global__ static void k_inc(float *buf, const int *off, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) buf[off[i]] += 1.f;
}

template <typename T> __device__ static T from_f(float x);
template <> __device__ float from_f<float>(float x) { return x; }
template <> __device__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __half from_f<__half>(float x) { return __float2half(x); }
__device__ static float to_f(float x) { return x; }
__device__ static float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ static float to_f(__half x) { return __half2float(x); }

/* Per sample z: y (K x R) = x (R x K)^T, converting Ti -> To on the way: 32x32 tiles through
 * shared memory, so both the reads and the writes are coalesced. NCHW -> NHWC is R = C,
 * K = HW; NHWC -> NCHW is R = HW, K = C. grid (K/32, R/32, N), block 32x8. */
template <typename Ti, typename To> __global__ static void k_transpose(const Ti *x, To *y, long R, long K)
{
    __shared__ float tile[32][33];
    const long k0 = (long)blockIdx.x * 32, r0 = (long)blockIdx.y * 32, base = (long)blockIdx.z * R * K;
    for (int j = threadIdx.y; j < 32; j += 8) {
        const long r = r0 + j, k = k0 + threadIdx.x;
        if (r < R && k < K) tile[j][threadIdx.x] = to_f(x[base + r * K + k]);
    }
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += 8) {
        const long k = k0 + j, r = r0 + threadIdx.x;
        if (k < K && r < R) y[base + k * R + r] = from_f<To>(tile[threadIdx.x][j]);
    }
}

template <typename Ti, typename To> static void transpose(cudaStream_t s, const Ti *x, To *y, int N, long R, long K)
{
    const dim3 grid((unsigned)((K + 31) / 32), (unsigned)((R + 31) / 32), (unsigned)N), block(32, 8);
    k_transpose<Ti, To><<<grid, block, 0, s>>>(x, y, R, K);
}

/* ---- layout ---------------------------------------------------------------------------------- */
__global__ static void k_pool_fwd(const float *x, float *y, long NC, int H, int W)
{
    const int Ho = H / 2, Wo = W / 2;
    const long n = NC * Ho * Wo;
    for (long o = blockIdx.x * (long)blockDim.x + threadIdx.x; o < n; o += (long)gridDim.x * blockDim.x) {
        const long pl = o / ((long)Ho * Wo);
        const int r = (int)(o % ((long)Ho * Wo)), i = r / Wo, j = r % Wo;
        const float *p = x + (pl * H + 2 * i) * (long)W + 2 * j;
        const float v[4] = { p[0], p[1], p[W], p[W + 1] };
        y[o] = v[gm_argmax4(v[0], v[1], v[2], v[3])];
    }
}

__global__ static void k_pool_bwd(const float *x, const float *dy, float *dx, long NC, int H, int W)
{
    const int Ho = H / 2, Wo = W / 2;
    const long n = NC * Ho * Wo;
    for (long o = blockIdx.x * (long)blockDim.x + threadIdx.x; o < n; o += (long)gridDim.x * blockDim.x) {
        const long pl = o / ((long)Ho * Wo);
        const int r = (int)(o % ((long)Ho * Wo)), i = r / Wo, j = r % Wo;
        const long base = (pl * H + 2 * i) * (long)W + 2 * j;
        const float *p = x + base;
        const int k = gm_argmax4(p[0], p[1], p[W], p[W + 1]);
        dx[base + (k >> 1) * (long)W + (k & 1)] += dy[o];
    }
}

__global__ static void k_concat(const float *a, const float *b, float *y, int N, int Ca, int Cb, long HW)
{
    const long per = (long)(Ca + Cb) * HW, n = (long)N * per;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long s = i / per, r = i % per, c = r / HW, q = r % HW;
        y[i] = c < Ca ? a[(s * Ca + c) * HW + q] : b[(s * Cb + (c - Ca)) * HW + q];
    }
}

__global__ static void k_split(const float *y, float *a, float *b, int N, int Ca, int Cb, long HW)
{
    const long per = (long)(Ca + Cb) * HW, n = (long)N * per;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long s = i / per, r = i % per, c = r / HW, q = r % HW;
        if (c < Ca) a[(s * Ca + c) * HW + q] = y[i];
        else b[(s * Cb + (c - Ca)) * HW + q] = y[i];
    }
}

__global__ static void k_bias_add(float *y, const float *bias, int C, long HW, long n)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] += bias[(i / HW) % C];
}

/* grid (GK_CSUM_SPLIT, C): block x of channel c sums its share of the N*HW values */
__global__ static void k_channel_part(const float *dy, int N, int C, long HW, double *part)
{
    const int c = blockIdx.y;
    const long total = (long)N * HW, per = (total + gridDim.x - 1) / gridDim.x;
    const long i0 = blockIdx.x * per, i1 = i0 + per < total ? i0 + per : total;
    double s = 0;
    for (long n = i0 / HW; n * HW < i1; n++) {       /* the planes this range touches, each contiguous */
        const long q0 = n * HW > i0 ? 0 : i0 - n * HW, q1 = (n + 1) * HW < i1 ? HW : i1 - n * HW;
        const float *p = dy + (n * C + c) * HW;
        for (long q = q0 + threadIdx.x; q < q1; q += blockDim.x) s += p[q];
    }
    s = block_sum(s);
    if (threadIdx.x == 0) part[(long)c * gridDim.x + blockIdx.x] = s;
}

__global__ static void k_channel_final(const double *part, int C, float *out)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double s = 0;
    for (int k = 0; k < GK_CSUM_SPLIT; k++) s += part[(long)c * GK_CSUM_SPLIT + k];
    out[c] = (float)s;
}

/* ---- loss and metrics: one block per (n, c) plane -------------------------------------------- */
__global__ static void k_bce_sum(const float *z, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
                                 int C, long HW, int dice, double *partial)
{
    const long pl = blockIdx.x;
    const int n = (int)(pl / C), c = (int)(pl % C);
    /* an unlabelled plane reads nothing and its sums come out 0; every block still takes the
     * same barriers (the emulator, tests/cuemu, runs blocks that agree on them) */
    const long end = labelled && !gm_present(labelled, C, n, c) ? 0 : HW;
    const int pr = gm_present(presence, C, n, c);
    const float *zp = z + pl * HW;
    const uint8_t *bp = bits + pl * (HW / 8);
    double s = 0, sp = 0, si = 0, sy = 0;
    for (long q = threadIdx.x; q < end; q += blockDim.x) {
        const int t = pr && gm_bit(bp, q);
        s += gm_bce(zp[q], t);
        if (dice) {
            const float p = gm_sigmoid(zp[q]);
            sp += p;
            if (t) { si += p; sy += 1.0; }
        }
    }
    s = block_sum(s);
    if (threadIdx.x == 0) partial[pl * 4] = s;
    if (!dice) return;                                /* uniform over the block: no barrier skipped by some */
    sp = block_sum(sp);
    si = block_sum(si);
    sy = block_sum(sy);
    if (threadIdx.x == 0) {
        partial[pl * 4 + 1] = sp;
        partial[pl * 4 + 2] = si;
        partial[pl * 4 + 3] = sy;
    }
}

__global__ static void k_bce_grad(const float *z, const uint8_t *bits, const uint8_t *presence,
                                  const uint8_t *labelled, int C, long HW, long n, float scale, const float *a, const float *b, float cscale, float *d)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const long pl = i / HW, q = i % HW;
        const int c = (int)(pl % C);
        if (labelled && !gm_present(labelled, C, (int)(pl / C), c)) { d[i] = 0.f; continue; }
        const int t = gm_present(presence, C, (int)(pl / C), c) && gm_bit(bits + pl * (HW / 8), q);
        d[i] = a ? gm_loss_grad(z[i], t, scale, a[c] * cscale, b[c] * cscale) : gm_bce_grad(z[i], t, scale);
    }
}

__global__ static void k_dice(const float *z, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
                              int C, long HW, unsigned long long *tp, unsigned long long *fp, unsigned long long *fn)
{
    const long pl = blockIdx.x;
    const int n = (int)(pl / C), c = (int)(pl % C);
    const long end = labelled && !gm_present(labelled, C, n, c) ? 0 : HW;   /* unlabelled: counts nothing */
    const int pr = gm_present(presence, C, n, c);
    const float *zp = z + pl * HW;
    const uint8_t *bp = bits + pl * (HW / 8);
    unsigned long long a = 0, b = 0, e = 0;
    for (long q = threadIdx.x; q < end; q += blockDim.x) {
        const int p = zp[q] > 0.f, t = pr && gm_bit(bp, q);
        a += p && t;
        b += p && !t;
        e += !p && t;
    }
    a = block_sum(a);
    b = block_sum(b);
    e = block_sum(e);
    if (threadIdx.x == 0) {
        atomicAdd(tp + c, a);
        atomicAdd(fp + c, b);
        atomicAdd(fn + c, e);
    }
}

__global__ static void k_sumsq(const float *x, size_t n, double *partial)
{
    const size_t per = (n + gridDim.x - 1) / gridDim.x, i0 = blockIdx.x * per;
    const size_t i1 = i0 + per < n ? i0 + per : n;
    double s = 0;
    for (size_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) s += (double)x[i] * x[i];
    s = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

/* ---- launchers ------------------------------------------------------------------------------- */
void gk_relu(cudaStream_t s, float *y, long n) { k_relu<<<grid_for(n, TPB * 4), TPB, 0, s>>>(y, n); }
void gk_relu_bwd(cudaStream_t s, float *g, const float *a, long n) { k_relu_bwd<<<grid_for(n, TPB * 4), TPB, 0, s>>>(g, a, n); }

void gk_pool_fwd(cudaStream_t s, const float *x, float *y, long NC, int H, int W)
{
    k_pool_fwd<<<grid_for(NC * (H / 2) * (W / 2), TPB), TPB, 0, s>>>(x, y, NC, H, W);
}

void gk_pool_bwd(cudaStream_t s, const float *x, const float *dy, float *dx, long NC, int H, int W)
{
    k_pool_bwd<<<grid_for(NC * (H / 2) * (W / 2), TPB), TPB, 0, s>>>(x, dy, dx, NC, H, W);
}

void gk_concat(cudaStream_t s, const float *a, const float *b, float *y, int N, int Ca, int Cb, long HW)
{
    k_concat<<<grid_for((long)N * (Ca + Cb) * HW, TPB * 4), TPB, 0, s>>>(a, b, y, N, Ca, Cb, HW);
}

void gk_split(cudaStream_t s, const float *y, float *a, float *b, int N, int Ca, int Cb, long HW)
{
    k_split<<<grid_for((long)N * (Ca + Cb) * HW, TPB * 4), TPB, 0, s>>>(y, a, b, N, Ca, Cb, HW);
}

void gk_bias_add(cudaStream_t s, float *y, const float *bias, int N, int C, long HW)
{
    const long n = (long)N * C * HW;
    k_bias_add<<<grid_for(n, TPB * 4), TPB, 0, s>>>(y, bias, C, HW, n);
}

void gk_channel_sum(cudaStream_t s, const float *dy, int N, int C, long HW, float *out, double *scratch)
{
    k_channel_part<<<dim3(GK_CSUM_SPLIT, C), 512, 0, s>>>(dy, N, C, HW, scratch);
    k_channel_final<<<(C + 127) / 128, 128, 0, s>>>(scratch, C, out);
}

void gk_bce_sum(cudaStream_t s, const float *z, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
                int N, int C, long HW, int dice, double *partial)
{
    k_bce_sum<<<N * C, TPB, 0, s>>>(z, bits, presence, labelled, C, HW, dice, partial);
}

void gk_bce_grad(cudaStream_t s, const float *z, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
                 int N, int C, long HW, float scale, const float *a, const float *b, float cscale, float *d)
{
    const long n = (long)N * C * HW;
    k_bce_grad<<<grid_for(n, TPB * 4), TPB, 0, s>>>(z, bits, presence, labelled, C, HW, n, scale, a, b, cscale, d);
}

void gk_dice(cudaStream_t s, const float *z, const uint8_t *bits, const uint8_t *presence, const uint8_t *labelled,
             int N, int C, long HW, unsigned long long *tp, unsigned long long *fp, unsigned long long *fn)
{
    k_dice<<<N * C, TPB, 0, s>>>(z, bits, presence, labelled, C, HW, tp, fp, fn);
}

void gk_sumsq(cudaStream_t s, const float *x, size_t n, double *partial)
{
    k_sumsq<<<GK_SUMSQ_BLOCKS, TPB, 0, s>>>(x, n, partial);
}

void gk_scale(cudaStream_t s, float *x, size_t n, float a) { k_scale<<<grid_for((long)n, TPB * 8), TPB, 0, s>>>(x, n, a); }

void gk_adam(cudaStream_t s, float *p, const float *g, float *m, float *v, size_t n, float b1, float b2, float a1,
             float a2, float eps, float step_size, float bc2s)
{
    k_adam<<<grid_for((long)n, TPB * 4), TPB, 0, s>>>(p, g, m, v, n, b1, b2, a1, a2, eps, step_size, bc2s);
}

void gk_inc(cudaStream_t s, float *buf, const int *off, int n)
{
    if (n > 0) k_inc<<<(n + TPB - 1) / TPB, TPB, 0, s>>>(buf, off, n);
}

void gk_to_half_nhwc(cudaStream_t s, int kind, const float *x, void *y, int N, int C, long HW)
{
    if (kind == 1) transpose(s, x, (__nv_bfloat16 *)y, N, C, HW);
    else transpose(s, x, (__half *)y, N, C, HW);
}

void gk_from_half_nhwc(cudaStream_t s, int kind, const void *x, float *y, int N, int C, long HW)
{
    if (kind == 1) transpose(s, (const __nv_bfloat16 *)x, y, N, HW, C);
    else transpose(s, (const __half *)x, y, N, HW, C);
}

int gk_check_image(void)
{
    cudaFuncAttributes a;
    const cudaError_t e = cudaFuncGetAttributes(&a, k_relu);
    if (e != cudaSuccess) cudaGetLastError();
    return (int)e;
}
