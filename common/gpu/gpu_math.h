/* common/gpu/gpu_math.h : the per-element arithmetic of the GPU kernels, written once for
 * both compilers: nvcc builds it into the kernels (gpu_kernels.cu), gcc into
 * tests/test_gpu_math.c, which checks it against the CPU backend (common/nn) on machines
 * without a GPU. Plain float math in the CPU backend's order of operations. */
#ifndef SEG_GPU_MATH_H
#define SEG_GPU_MATH_H
#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define GM_FN static __host__ __device__ __forceinline__
#else
#define GM_FN static inline
#endif

/* Target bit of pixel p in a plane (LSB first). */
GM_FN int gm_bit(const uint8_t *plane, long p) { return (plane[p >> 3] >> (p & 7)) & 1; }

/* Presence bit of channel c of sample n (C channels, (C+7)/8 bytes per sample). */
GM_FN int gm_present(const uint8_t *presence, int C, int n, int c)
{
    return (presence[(long)n * ((C + 7) / 8) + (c >> 3)] >> (c & 7)) & 1;
}

/* BCE-with-logits of one element: max(z,0) + log(1 + exp(-|z|)) - z*t. */
GM_FN float gm_bce(float z, int t)
{
    const float l = (z > 0.f ? z : 0.f) + log1pf(expf(-fabsf(z)));
    return t ? l - z : l;
}

/* d bce / d z times scale: (sigmoid(z) - t) * scale, sigmoid without overflow. */
GM_FN float gm_bce_grad(float z, int t, float scale)
{
    const float e = expf(-fabsf(z)), r = 1.f / (1.f + e);
    float s = z < 0.f ? e * r : r;
    if (t) s -= 1.f;
    return s * scale;
}

/* sigmoid(z) without overflow: 1/(1+e) for z >= 0, e/(1+e) below, e = exp(-|z|). */
GM_FN float gm_sigmoid(float z)
{
    const float e = expf(-fabsf(z)), r = 1.f / (1.f + e);
    return z < 0.f ? e * r : r;
}

/* gm_bce_grad plus the soft-Dice part: (sigmoid(z) - t)*scale + (a*t + b)*p*(1-p), with
 * p*(1-p) = e/(1+e)^2 (exact where 1 - p would round to 0); nn_bce_grad_row's order. */
GM_FN float gm_loss_grad(float z, int t, float scale, float a, float b)
{
    const float e = expf(-fabsf(z)), r = 1.f / (1.f + e);
    float s = z < 0.f ? e * r : r;
    if (t) s -= 1.f;
    return fmaf(t ? a + b : b, e * r * r, s * scale);
}

/* Adam on one element (PyTorch's single-tensor path; a1 = 1-b1, a2 = 1-b2, step_size =
 * lr/(1-b1^t), bc2s = sqrt(1-b2^t)). */
GM_FN void gm_adam(float *p, float *m, float *v, float g, float b1, float b2, float a1, float a2,
                   float eps, float step_size, float bc2s)
{
    const float mm = *m * b1 + a1 * g;
    const float vv = *v * b2 + a2 * (g * g);
    *m = mm;
    *v = vv;
    const float denom = sqrtf(vv) / bc2s + eps;
    *p += -step_size * (mm / denom);
}

/* Window element (0..3, row-major) of a 2x2 max pool: the first strictly largest. */
GM_FN int gm_argmax4(float a, float b, float c, float d)
{
    int k = 0;
    float m = a;
    if (b > m) { m = b; k = 1; }
    if (c > m) { m = c; k = 2; }
    if (d > m) { k = 3; }
    return k;
}

#endif
